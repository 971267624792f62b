/*
 * commands.cpp: kiln-run's run, generate and info commands (stress is in stress.cpp).
 */
#include "commands.h"

#include "inputFiles.h"
#include "npy.h"
#include "tensorkiln/tensorkiln.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace tensorkiln::tools
{
namespace
{

using Json = nlohmann::ordered_json;

Session loadSession(Arguments const& args)
{
    return load(args.positional().at(0), loadOptions(args));
}

std::vector<int64_t> parseIds(std::string const& text)
{
    std::vector<int64_t> ids;
    std::stringstream stream(text);
    std::string item;
    while (std::getline(stream, item, ','))
    {
        std::size_t used = 0;
        try
        {
            ids.push_back(std::stoll(item, &used));
        }
        catch (std::exception const&)
        {
            used = 0;
        }
        if (used == 0 || used != item.size())
            throw std::invalid_argument("--ids takes token ids separated by commas (e.g. 5,6,7), got '" + text + "'");
    }
    return ids;
}

double parseFloat(std::string const& name, std::string const& text)
{
    std::size_t used = 0;
    double value = 0;
    try
    {
        value = std::stod(text, &used);
    }
    catch (std::exception const&)
    {
        used = 0;
    }
    if (used == 0 || used != text.size())
        throw std::invalid_argument("argument --" + name + ": invalid float value: '" + text + "'");
    return value;
}

//! HF-named generation options: --options' JSON object, then the flags over it.
std::string generationOptions(Arguments const& args)
{
    Json options = Json::object();
    if (auto const text = args.value("options"))
    {
        options = Json::parse(*text, nullptr, false);
        if (!options.is_object())
            throw std::invalid_argument("--options takes a JSON object of HF generation options, got " + *text);
    }
    for (auto const& [flag, key] : {std::pair{"max-new-tokens", "max_new_tokens"}, {"top-k", "top_k"}, {"seed", "seed"}})
    {
        if (auto const value = args.integer(flag))
            options[key] = *value;
    }
    for (auto const& [flag, key] : {std::pair{"temperature", "temperature"}, {"top-p", "top_p"}})
    {
        if (auto const value = args.value(flag))
            options[key] = parseFloat(flag, *value);
    }
    if (args.flag("do-sample"))
        options["do_sample"] = true;
    return options.dump();
}

Tensor promptIds(Arguments const& args)
{
    auto const ids = args.value("ids");
    auto const file = args.value("input-ids");
    if (ids.has_value() == file.has_value())
        throw std::invalid_argument("generate takes the prompt as --ids 5,6,7 or as --input-ids FILE.npy (one)");
    if (file)
        return readNpy(*file);
    std::vector<int64_t> const values = parseIds(*ids);
    return Tensor::of<int64_t>({1, static_cast<int64_t>(values.size())}, values);
}

} // namespace

int runCommand(Arguments const& args)
{
    auto const out = args.value("out");
    if (!out)
        throw std::invalid_argument("run needs --out DIR (where each output is written as NAME.npy)");
    Session const session = loadSession(args);
    NamedTensors const outputs = session.run(readInputs(args));
    std::filesystem::create_directories(*out);
    for (auto const& [name, tensor] : outputs)
    {
        writeNpy((std::filesystem::path(*out) / (name + ".npy")).string(), tensor);
        std::cout << name << " " << dtypeName(tensor.dtype()) << " " << Json(tensor.shape()).dump() << "\n";
    }
    return 0;
}

int generateCommand(Arguments const& args)
{
    Session const session = loadSession(args);
    Tensor const ids = promptIds(args);
    std::optional<Tensor> mask;
    if (auto const file = args.value("attention-mask"))
        mask = readNpy(*file);
    auto const printStep = [](std::vector<int64_t> const& tokens) {
        for (std::size_t i = 0; i < tokens.size(); ++i)
            std::cout << (i ? " " : "") << tokens[i];
        std::cout << std::endl; // flushed: the caller sees each step as it comes
    };
    GenerationResult const result = session.generate(ids, mask ? &*mask : nullptr, generationOptions(args), printStep);
    if (auto const out = args.value("out"))
        writeNpy(*out, result.sequences);
    return 0;
}

int infoCommand(Arguments const& args)
{
    Session const session = loadSession(args);
    Json info{{"model_type", session.modelType()}, {"hf_class", session.hfClass()},
        {"precision", session.precision()}, {"backend", session.backend()}, {"providers", session.providers()},
        {"inputs", session.inputNames()}, {"outputs", session.outputNames()}, {"max_length", session.maxLength()},
        {"custom_node_implementations", session.customNodeImplementations()}, {"version", version()}};
    std::cout << info.dump(2) << std::endl;
    return 0;
}

} // namespace tensorkiln::tools
