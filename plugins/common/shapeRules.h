/*
 * shapeRules.h: helpers the plugins' shape rules share: printing an input's extents and unifying the symbolic
 * sizes (B, L, D, ...) that several inputs must agree on, where -1 means "not known yet" (a dynamic dimension).
 */
#pragma once

#include "common/status.h"

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace tensorkiln::plugin
{

//! "(2, 128, 64)", or "(5,)" for rank 1, as Python prints shapes (the ONNX side's messages read the same).
inline std::string extentsToString(std::vector<int64_t> const& extents)
{
    std::ostringstream text;
    text << "(";
    for (std::size_t i = 0; i < extents.size(); ++i)
    {
        text << (i > 0 ? ", " : "") << extents[i];
    }
    text << (extents.size() == 1 ? ",)" : ")");
    return text.str();
}

//! Merge a known-or-unknown extent into `symbol`, failing with a message naming the plugin `owner` on a conflict.
inline void unifyExtent(
    char const* owner, int64_t& symbol, int64_t extent, char const* symbolName, char const* input, std::size_t axis)
{
    if (extent < 0)
    {
        return;
    }
    TK_CHECK(symbol < 0 || symbol == extent, owner << ": " << input << " has " << symbolName << " = " << extent
                                                   << " on axis " << axis << ", but another input says " << symbolName
                                                   << " = " << symbol);
    symbol = extent;
}

} // namespace tensorkiln::plugin
