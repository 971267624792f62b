/*
 * stress.cpp: kiln-run stress: the same Session run from several threads at once must give, run for run, the bytes
 * the sequential runs gave. Each worker cycles through the input sets (worker w's run r takes set (w + r) % sets),
 * so concurrent runs differ in their inputs, and a run that picked up another's state would show.
 */
#include "commands.h"

#include "inputFiles.h"
#include "tensorkiln/tensorkiln.h"

#include <atomic>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

namespace tensorkiln::tools
{
namespace
{

bool sameBytes(NamedTensors const& a, NamedTensors const& b)
{
    if (a.size() != b.size())
        return false;
    for (auto const& [name, tensor] : a)
    {
        auto const other = b.find(name);
        if (other == b.end() || other->second.dtype() != tensor.dtype() || other->second.shape() != tensor.shape()
            || std::memcmp(other->second.raw(), tensor.raw(), tensor.byteSize()) != 0)
            return false;
    }
    return true;
}

} // namespace

int stressCommand(Arguments const& args)
{
    std::vector<NamedTensors> sets;
    for (std::string const& folder : args.values("inputs-dir"))
        sets.push_back(readInputsDir(folder));
    if (sets.empty())
        throw std::invalid_argument("stress needs at least one --inputs-dir DIR (a folder of NAME.npy inputs)");
    long long const workers = args.integer("workers").value_or(8);
    long long const runs = args.integer("runs").value_or(100);
    Session const session = load(args.positional().at(0), loadOptions(args));
    std::vector<NamedTensors> expected;
    for (NamedTensors const& inputs : sets)
        expected.push_back(session.run(inputs));

    std::atomic<long long> differing{0}, failed{0};
    std::vector<std::thread> threads;
    for (long long worker = 0; worker < workers; ++worker)
    {
        threads.emplace_back([&, worker] {
            for (long long run = 0; run < runs; ++run)
            {
                std::size_t const set = static_cast<std::size_t>(worker + run) % sets.size();
                try
                {
                    differing += sameBytes(session.run(sets[set]), expected[set]) ? 0 : 1;
                }
                catch (std::exception const& error)
                {
                    failed += 1;
                }
            }
        });
    }
    for (std::thread& thread : threads)
        thread.join();
    std::cout << "{\"workers\": " << workers << ", \"runs\": " << runs << ", \"sets\": " << sets.size()
              << ", \"differing\": " << differing << ", \"failed\": " << failed << "}" << std::endl;
    return differing == 0 && failed == 0 ? 0 : 1;
}

} // namespace tensorkiln::tools
