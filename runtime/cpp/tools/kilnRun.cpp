/*
 * kilnRun.cpp: kiln-run, the smallest real service over libtensorkiln_runtime and the C++ runtime's test driver.
 *
 *   kiln-run run EXPORT_DIR [--input NAME=FILE.npy]... [--inputs-dir DIR] [--inputs-json FILE] --out DIR
 *   kiln-run generate EXPORT_DIR (--ids 5,6,7 | --input-ids FILE.npy) [--attention-mask FILE.npy]
 *            [--max-new-tokens N] [--do-sample] [--temperature T] [--top-k K] [--top-p P] [--seed S]
 *            [--options JSON] [--out FILE.npy]          (each step's tokens printed on a line as they come)
 *   kiln-run stress EXPORT_DIR --inputs-dir DIR... [--workers 8] [--runs 100]
 *   kiln-run info EXPORT_DIR
 *
 * Every command also takes --backend, --kernels, --threads, --provider (repeatable), --onnxruntime-library and
 * --no-check, as tensorkiln::LoadOptions. A problem prints "kiln-run: error: <the Python runtime's message>" and
 * exits 2 (1 for a failed check), as `kiln` does.
 */
#include "commands.h"

#include "tensorkiln/tensorkiln.h"

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <stdexcept>

namespace
{

char const kUSAGE[] = "usage: kiln-run {run,generate,stress,info} EXPORT_DIR [options]\n"
                      "  run       run an export on inputs from .npy files (or JSON); write its outputs as .npy\n"
                      "  generate  continue token ids with a causal LM export, printing each step's tokens\n"
                      "  stress    run on several threads at once and compare with sequential runs\n"
                      "  info      print the export's inputs, outputs, backend and custom-node kernels (JSON)\n";

std::set<std::string> const kLOAD{"backend", "kernels", "threads", "provider", "onnxruntime-library"};
//! Each command's options beyond the load options; an option of another command is refused, not ignored.
std::map<std::string, std::set<std::string>> const kCOMMAND_OPTIONS{
    {"run", {"input", "inputs-dir", "inputs-json", "out"}},
    {"generate", {"ids", "input-ids", "attention-mask", "max-new-tokens", "temperature", "top-k", "top-p", "seed",
                     "options", "out"}},
    {"stress", {"inputs-dir", "workers", "runs"}},
    {"info", {}},
};
std::set<std::string> const kFLAGS{"no-check", "do-sample", "help"};

std::set<std::string> valuedOptions(std::string const& command)
{
    auto const found = kCOMMAND_OPTIONS.find(command);
    if (found == kCOMMAND_OPTIONS.end())
        throw std::invalid_argument("unknown command '" + command + "' (choose run, generate, stress or info)");
    std::set<std::string> options = kLOAD;
    options.insert(found->second.begin(), found->second.end());
    return options;
}

int fail(std::string const& message, int status)
{
    std::cerr << "kiln-run: error: " << message << std::endl;
    return status;
}

int dispatch(std::string const& command, tensorkiln::tools::Arguments const& args)
{
    using namespace tensorkiln::tools;
    if (args.positional().size() != 1)
    {
        throw std::invalid_argument(command + " takes one EXPORT_DIR (got " + std::to_string(args.positional().size())
            + " positional arguments)");
    }
    if (command == "run")
        return runCommand(args);
    if (command == "generate")
        return generateCommand(args);
    if (command == "stress")
        return stressCommand(args);
    return infoCommand(args);
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)
    {
        std::fputs(kUSAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    try
    {
        tensorkiln::tools::Arguments const args(argc, argv, 2, valuedOptions(argv[1]), kFLAGS);
        if (args.flag("help"))
        {
            std::fputs(kUSAGE, stdout);
            return 0;
        }
        return dispatch(argv[1], args);
    }
    catch (tensorkiln::Error const& error)
    {
        return fail(error.what(), error.exitCode());
    }
    catch (std::invalid_argument const& error)
    {
        return fail(error.what(), 2);
    }
    catch (std::runtime_error const& error)
    {
        return fail(error.what(), 2);
    }
    catch (std::exception const& error)
    {
        return fail(std::string("unexpected failure (a bug): ") + error.what(), 1);
    }
}
