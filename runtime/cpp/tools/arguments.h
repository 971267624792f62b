/*
 * arguments.h: kiln-run's command line: a command, its positional arguments, "--name value" options (repeatable)
 * and "--flag" switches, with the usage errors Python's argparse would give in spirit (unknown option, missing value).
 */
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace tensorkiln::tools
{

class Arguments
{
public:
    //! Parse argv[first..]; `flags` are the switches that take no value. std::invalid_argument on a bad line.
    Arguments(int argc, char** argv, int first, std::set<std::string> const& valued, std::set<std::string> const& flags);

    std::vector<std::string> const& positional() const
    {
        return mPositional;
    }
    bool flag(std::string const& name) const;
    std::optional<std::string> value(std::string const& name) const;
    std::vector<std::string> values(std::string const& name) const;
    std::optional<long long> integer(std::string const& name) const;

private:
    std::vector<std::string> mPositional;
    std::multimap<std::string, std::string> mValues;
    std::set<std::string> mFlags;
};

} // namespace tensorkiln::tools
