/*
 * classify.cpp: the smallest service over libtensorkiln_runtime: load an export once, run token ids through it,
 * print each output's shape and its first values; for a causal LM, also stream a few greedy tokens.
 *
 *   classify EXPORT_DIR 5 6 7 8
 */
#include <tensorkiln/tensorkiln.h>

#include <cstdlib>
#include <iostream>

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        std::cerr << "usage: classify EXPORT_DIR TOKEN_ID...\n";
        return 2;
    }
    try
    {
        tensorkiln::Session const session = tensorkiln::load(argv[1]);
        std::vector<int64_t> ids;
        for (int i = 2; i < argc; ++i)
            ids.push_back(std::atoll(argv[i]));
        tensorkiln::Tensor const inputIds = tensorkiln::Tensor::of<int64_t>({1, static_cast<int64_t>(ids.size())}, ids);
        for (auto const& [name, tensor] : session.run({{"input_ids", inputIds}})) // attention_mask defaults to ones
        {
            std::vector<double> const values = tensor.toFloat64();
            std::cout << name << " " << tensorkiln::dtypeName(tensor.dtype()) << " [" << tensor.shape().size()
                      << "-d] first value " << (values.empty() ? 0.0 : values[0]) << "\n";
        }
        if (session.isCausalLm())
        {
            tensorkiln::GenerationOptions options;
            options.maxNewTokens = 5;
            session.generate(inputIds, nullptr, options,
                [](std::vector<int64_t> const& tokens) { std::cout << "token " << tokens[0] << std::endl; });
        }
        return 0;
    }
    catch (tensorkiln::Error const& error) // the Python runtime's message, word for word
    {
        std::cerr << "classify: error: " << error.what() << "\n";
        return error.exitCode();
    }
}
