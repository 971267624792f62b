/*
 * pyFormat.cpp: Python's repr() and str() of the values the runtime's messages show (see pyFormat.h). Checked
 * against CPython 3.11's unicode_repr and float_repr_style 'short' (tests/pyFormatTest.cpp).
 */
#include "pyFormat.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace tensorkiln
{

std::string pyRepr(std::string const& text)
{
    bool const hasSingle = text.find('\'') != std::string::npos;
    bool const hasDouble = text.find('"') != std::string::npos;
    char const quote = (hasSingle && !hasDouble) ? '"' : '\'';
    std::string out(1, quote);
    for (std::size_t i = 0; i < text.size(); ++i)
    {
        auto const byte = static_cast<unsigned char>(text[i]);
        char buffer[8];
        if (byte == '\\' || byte == static_cast<unsigned char>(quote))
        {
            out += '\\';
            out += static_cast<char>(byte);
        }
        else if (byte == '\t')
        {
            out += "\\t";
        }
        else if (byte == '\n')
        {
            out += "\\n";
        }
        else if (byte == '\r')
        {
            out += "\\r";
        }
        else if (byte < 0x20 || byte == 0x7f)
        {
            std::snprintf(buffer, sizeof(buffer), "\\x%02x", byte);
            out += buffer;
        }
        else if (byte == 0xc2 && i + 1 < text.size()
            && (static_cast<unsigned char>(text[i + 1]) <= 0xa0 || static_cast<unsigned char>(text[i + 1]) == 0xad))
        {
            // U+0080..U+00A0 and U+00AD are not printable: Python writes them as \xNN.
            std::snprintf(buffer, sizeof(buffer), "\\x%02x", static_cast<unsigned char>(text[i + 1]));
            out += buffer;
            ++i;
        }
        else
        {
            out += static_cast<char>(byte);
        }
    }
    out += quote;
    return out;
}

std::string pyFloat(double value)
{
    if (std::isnan(value))
    {
        return "nan";
    }
    if (std::isinf(value))
    {
        return value > 0 ? "inf" : "-inf";
    }
    if (value == 0.0)
    {
        return std::signbit(value) ? "-0.0" : "0.0";
    }
    // The shortest %e form that reads back as the same double, then Python's layout of its digits.
    char buffer[64];
    for (int precision = 0; precision < 17; ++precision)
    {
        std::snprintf(buffer, sizeof(buffer), "%.*e", precision, value);
        if (std::strtod(buffer, nullptr) == value)
        {
            break;
        }
    }
    std::string const scientific = buffer;
    std::size_t const ePos = scientific.find('e');
    int const exponent = std::atoi(scientific.c_str() + ePos + 1);
    std::string digits;
    bool const negative = scientific[0] == '-';
    for (std::size_t i = negative ? 1 : 0; i < ePos; ++i)
    {
        if (scientific[i] != '.')
        {
            digits += scientific[i];
        }
    }
    while (digits.size() > 1 && digits.back() == '0')
    {
        digits.pop_back();
    }
    std::string out = negative ? "-" : "";
    if (exponent < -4 || exponent >= 16)
    {
        out += digits.substr(0, 1);
        if (digits.size() > 1)
        {
            out += "." + digits.substr(1);
        }
        std::snprintf(buffer, sizeof(buffer), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
        return out + buffer;
    }
    if (exponent < 0)
    {
        return out + "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    }
    auto const whole = static_cast<std::size_t>(exponent) + 1;
    if (digits.size() <= whole)
    {
        return out + digits + std::string(whole - digits.size(), '0') + ".0";
    }
    return out + digits.substr(0, whole) + "." + digits.substr(whole);
}

std::string pyShape(std::vector<int64_t> const& shape)
{
    std::string out = "(";
    for (std::size_t i = 0; i < shape.size(); ++i)
    {
        out += (i ? ", " : "") + std::to_string(shape[i]);
    }
    return out + (shape.size() == 1 ? ",)" : ")");
}

std::string pyIntList(std::vector<int64_t> const& values)
{
    std::string out = "[";
    for (std::size_t i = 0; i < values.size(); ++i)
    {
        out += (i ? ", " : "") + std::to_string(values[i]);
    }
    return out + "]";
}

std::string pyStringList(std::vector<std::string> const& values)
{
    return "[" + joinRepr(values) + "]";
}

std::string join(std::vector<std::string> const& items, std::string const& separator)
{
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i)
    {
        out += (i ? separator : "") + items[i];
    }
    return out;
}

std::string joinRepr(std::vector<std::string> const& items)
{
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i)
    {
        out += (i ? ", " : "") + pyRepr(items[i]);
    }
    return out;
}

std::string pyPath(std::string const& path)
{
    if (path.empty())
    {
        return ".";
    }
    std::string root;
    if (path[0] == '/')
    {
        // POSIX keeps exactly two leading slashes; one or three and more become one.
        root = (path.size() > 1 && path[1] == '/' && (path.size() == 2 || path[2] != '/')) ? "//" : "/";
    }
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (start <= path.size())
    {
        std::size_t const end = path.find('/', start);
        std::string const part = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
        if (!part.empty() && part != ".")
        {
            parts.push_back(part);
        }
        if (end == std::string::npos)
        {
            break;
        }
        start = end + 1;
    }
    std::string const body = join(parts, "/");
    if (root.empty() && body.empty())
    {
        return ".";
    }
    return root + body;
}

std::string pyPrefix(std::string const& text, std::size_t count)
{
    std::size_t i = 0;
    for (std::size_t seen = 0; i < text.size() && seen < count; ++seen)
    {
        auto const byte = static_cast<unsigned char>(text[i]);
        i += byte < 0x80 ? 1 : byte < 0xe0 ? 2 : byte < 0xf0 ? 3 : 4;
    }
    return text.substr(0, std::min(i, text.size()));
}

} // namespace tensorkiln
