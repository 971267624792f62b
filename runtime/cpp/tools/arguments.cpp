/*
 * arguments.cpp: see arguments.h.
 */
#include "arguments.h"

#include <iterator>
#include <stdexcept>

namespace tensorkiln::tools
{

Arguments::Arguments(
    int argc, char** argv, int first, std::set<std::string> const& valued, std::set<std::string> const& flags)
{
    for (int i = first; i < argc; ++i)
    {
        std::string const word = argv[i];
        if (word.rfind("--", 0) != 0)
        {
            mPositional.push_back(word);
            continue;
        }
        std::string name = word.substr(2);
        std::optional<std::string> inlineValue;
        if (auto const equals = name.find('='); equals != std::string::npos)
        {
            inlineValue = name.substr(equals + 1);
            name = name.substr(0, equals);
        }
        if (flags.count(name) != 0 && !inlineValue)
        {
            mFlags.insert(name);
        }
        else if (valued.count(name) != 0)
        {
            if (!inlineValue && i + 1 >= argc)
            {
                throw std::invalid_argument("argument --" + name + ": expected one argument");
            }
            mValues.emplace(name, inlineValue ? *inlineValue : std::string(argv[++i]));
        }
        else
        {
            throw std::invalid_argument("unrecognized arguments: " + word);
        }
    }
}

bool Arguments::flag(std::string const& name) const
{
    return mFlags.count(name) != 0;
}

std::optional<std::string> Arguments::value(std::string const& name) const
{
    auto const found = mValues.equal_range(name);
    if (found.first == found.second)
    {
        return std::nullopt;
    }
    return std::prev(found.second)->second; // the last one wins, as in argparse
}

std::vector<std::string> Arguments::values(std::string const& name) const
{
    std::vector<std::string> out;
    for (auto [it, end] = mValues.equal_range(name); it != end; ++it)
    {
        out.push_back(it->second);
    }
    return out;
}

std::optional<long long> Arguments::integer(std::string const& name) const
{
    std::optional<std::string> const text = value(name);
    if (!text)
    {
        return std::nullopt;
    }
    std::size_t used = 0;
    long long number = 0;
    try
    {
        number = std::stoll(*text, &used);
    }
    catch (std::exception const&)
    {
        used = 0;
    }
    if (used == 0 || used != text->size())
    {
        throw std::invalid_argument("argument --" + name + ": invalid int value: '" + *text + "'");
    }
    return number;
}

} // namespace tensorkiln::tools
