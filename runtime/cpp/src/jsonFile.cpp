/*
 * jsonFile.cpp: runtime/jsonfile.py in C++ (see jsonFile.h). The checks run in the Python order: a folder, not a
 * regular file, missing or unreadable, over 64 MiB, not UTF-8 (the offset of the first bad sequence, as Python's
 * decoder reports it), not JSON (NaN and Infinity refused, nesting deeper than Python's parser takes), not an
 * object. The parser's own description of a syntax error is nlohmann's, not Python's json module's.
 */
#include "jsonFile.h"

#include "pyFormat.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace tensorkiln
{
namespace
{

namespace fs = std::filesystem;

struct TooDeep
{
};

//! Offset of the first byte sequence Python's strict UTF-8 decoder refuses, or npos.
std::size_t firstInvalidUtf8(std::string const& raw)
{
    auto at = [&](std::size_t i) { return static_cast<unsigned char>(raw[i]); };
    std::size_t i = 0;
    while (i < raw.size())
    {
        unsigned char const lead = at(i);
        std::size_t length = 0;
        unsigned char low = 0x80, high = 0xbf; // the allowed range of the second byte
        if (lead < 0x80)
        {
            ++i;
            continue;
        }
        if (lead >= 0xc2 && lead <= 0xdf)
            length = 2;
        else if (lead >= 0xe0 && lead <= 0xef)
        {
            length = 3;
            low = lead == 0xe0 ? 0xa0 : 0x80;
            high = lead == 0xed ? 0x9f : 0xbf;
        }
        else if (lead >= 0xf0 && lead <= 0xf4)
        {
            length = 4;
            low = lead == 0xf0 ? 0x90 : 0x80;
            high = lead == 0xf4 ? 0x8f : 0xbf;
        }
        else
            return i;
        for (std::size_t k = 1; k < length; ++k)
        {
            if (i + k >= raw.size())
                return i;
            unsigned char const byte = at(i + k);
            if ((k == 1 && (byte < low || byte > high)) || (k > 1 && (byte < 0x80 || byte > 0xbf)))
                return i;
        }
        i += length;
    }
    return std::string::npos;
}

//! The name Python's json module gives a non-JSON constant found where the parser stopped ("NaN", ...), or "".
std::string constantAt(std::string const& text, std::size_t errorByte)
{
    std::size_t pos = errorByte > 0 ? errorByte - 1 : 0;
    while (pos > 0 && (std::isalpha(static_cast<unsigned char>(text[pos - 1])) || text[pos - 1] == '-'))
    {
        --pos;
    }
    for (char const* name : {"-Infinity", "Infinity", "NaN"})
    {
        if (text.compare(pos, std::strlen(name), name) == 0)
        {
            return name;
        }
    }
    return "";
}

std::string parserDetail(nlohmann::json::parse_error const& error)
{
    std::string detail = error.what();
    std::size_t const bracket = detail.find("] ");
    return bracket == std::string::npos ? detail : detail.substr(bracket + 2);
}

} // namespace

Json parseJsonText(std::string const& text, std::string const& label, ErrorKind kind)
{
    Json::parser_callback_t depthGuard = [](int depth, Json::parse_event_t event, Json&) {
        if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start)
            && depth >= kMAX_JSON_DEPTH)
        {
            throw TooDeep{};
        }
        return true;
    };
    try
    {
        return Json::parse(text, depthGuard);
    }
    catch (TooDeep const&)
    {
        throw Error(kind, label + " nests its JSON too deeply to be a real file of this kind");
    }
    catch (nlohmann::json::parse_error const& error)
    {
        std::string const constant = constantAt(text, error.byte);
        std::string const detail = constant.empty() ? parserDetail(error) : constant + " is not a JSON number";
        throw Error(kind, label + " is not valid JSON: " + detail);
    }
}

Json readJsonObject(std::string const& path, ErrorKind kind, std::string const& what)
{
    std::string const label = pyRepr(pyPath(path)) + (what.empty() ? "" : " (" + what + ")");
    std::error_code ec;
    if (fs::is_directory(path, ec))
    {
        throw Error(kind, label + " is a folder, not a file");
    }
    if (fs::exists(path, ec) && !fs::is_regular_file(path, ec))
    {
        throw Error(kind, label + " is not a regular file");
    }
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (file == nullptr)
    {
        if (errno == ENOENT)
        {
            throw Error(kind, label + " is missing");
        }
        throw Error(kind, label + " cannot be read: " + std::strerror(errno));
    }
    std::string raw;
    char buffer[1 << 16];
    std::size_t got = 0;
    while ((got = std::fread(buffer, 1, sizeof(buffer), file)) > 0 && raw.size() <= kMAX_JSON_BYTES)
    {
        raw.append(buffer, got);
    }
    std::fclose(file);
    if (raw.size() > kMAX_JSON_BYTES)
    {
        throw Error(kind, label + " is more than the " + std::to_string(kMAX_JSON_BYTES >> 20)
                + " MiB a JSON file here may be: it is not the file it should be");
    }
    std::size_t const bad = firstInvalidUtf8(raw);
    if (bad != std::string::npos)
    {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "%#04x", static_cast<unsigned char>(raw[bad]));
        throw Error(kind, label + " is not UTF-8 text (byte " + hex + " at offset " + std::to_string(bad)
                + "): save it as UTF-8 JSON");
    }
    Json data = parseJsonText(raw, label, kind);
    if (!data.is_object())
    {
        throw Error(kind, label + " must hold a JSON object, got " + jsonKind(data));
    }
    return data;
}

bool isJsonInteger(Json const& value)
{
    return value.is_number_integer();
}

std::string jsonRepr(Json const& value)
{
    switch (value.type())
    {
    case Json::value_t::null: return "None";
    case Json::value_t::boolean: return value.get<bool>() ? "True" : "False";
    case Json::value_t::number_integer: return std::to_string(value.get<int64_t>());
    case Json::value_t::number_unsigned: return std::to_string(value.get<uint64_t>());
    case Json::value_t::number_float: return pyFloat(value.get<double>());
    case Json::value_t::string: return pyRepr(value.get<std::string>());
    case Json::value_t::array:
    {
        std::string out = "[";
        bool first = true;
        for (auto const& item : value)
        {
            out += (first ? "" : ", ") + jsonRepr(item);
            first = false;
        }
        return out + "]";
    }
    case Json::value_t::object:
    {
        std::string out = "{";
        bool first = true;
        for (auto const& item : value.items())
        {
            out += (first ? "" : ", ") + pyRepr(item.key()) + ": " + jsonRepr(item.value());
            first = false;
        }
        return out + "}";
    }
    default: return "None";
    }
}

std::string jsonKind(Json const& value)
{
    if (value.is_null())
        return "null";
    if (value.is_boolean())
        return "a boolean";
    if (value.is_number())
        return "a number (" + jsonRepr(value) + ")";
    if (value.is_string())
        return "a string (" + pyRepr(pyPrefix(value.get<std::string>(), 40)) + ")";
    if (value.is_array())
        return "a list";
    if (value.is_object())
        return "an object";
    return "a value";
}

Fields::Fields(Json const& data, std::string label, ErrorKind kind, std::string path)
    : mData(&data)
    , mLabel(std::move(label))
    , mKind(kind)
    , mPath(std::move(path))
{
    if (!data.is_object())
    {
        std::string const where = mPath.empty() ? "content" : "key " + pyRepr(mPath);
        throw Error(mKind, mLabel + " " + where + " must be an object, got " + jsonKind(data));
    }
}

std::string Fields::keyPath(std::string const& key) const
{
    return mPath.empty() ? key : mPath + "." + key;
}

Error Fields::fail(std::string const& key, std::string const& expected, Json const& value) const
{
    return Error(mKind, mLabel + " key " + pyRepr(keyPath(key)) + " must be " + expected + ", got " + jsonKind(value));
}

Json const* Fields::find(std::string const& key) const
{
    auto const found = mData->find(key);
    return found == mData->end() ? nullptr : &*found;
}

Json const& Fields::get(std::string const& key) const
{
    Json const* value = find(key);
    if (value == nullptr)
    {
        throw Error(mKind, mLabel + " is missing the key " + pyRepr(keyPath(key)));
    }
    return *value;
}

std::string Fields::string(std::string const& key) const
{
    Json const& value = get(key);
    if (!value.is_string())
    {
        throw fail(key, "a string", value);
    }
    return value.get<std::string>();
}

std::string Fields::string(std::string const& key, std::string const& fallback) const
{
    return find(key) == nullptr ? fallback : string(key);
}

std::optional<std::string> Fields::optionalString(std::string const& key) const
{
    Json const* value = find(key);
    if (value == nullptr || value->is_null())
    {
        return std::nullopt;
    }
    return string(key);
}

int64_t Fields::integer(std::string const& key, std::optional<int64_t> minimum) const
{
    Json const& value = get(key);
    if (!value.is_number_integer() || (value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX))
    {
        throw fail(key, "an integer", value);
    }
    int64_t const number = value.get<int64_t>();
    if (minimum && number < *minimum)
    {
        throw Error(mKind, mLabel + " key " + pyRepr(keyPath(key)) + " must be at least " + std::to_string(*minimum)
                + ", got " + std::to_string(number));
    }
    return number;
}

std::optional<int64_t> Fields::optionalInteger(std::string const& key, std::optional<int64_t> minimum) const
{
    Json const* value = find(key);
    if (value == nullptr || value->is_null())
    {
        return std::nullopt;
    }
    return integer(key, minimum);
}

double Fields::number(std::string const& key) const
{
    Json const& value = get(key);
    if (value.is_string())
    {
        std::string const text = value.get<std::string>();
        if (text == "inf" || text == "-inf" || text == "nan") // how our reports spell non-finite numbers
        {
            return std::strtod(text.c_str(), nullptr);
        }
    }
    if (!value.is_number())
    {
        throw fail(key, "a number", value);
    }
    return value.get<double>();
}

Fields Fields::object(std::string const& key) const
{
    return Fields(get(key), mLabel, mKind, keyPath(key));
}

std::optional<Fields> Fields::optionalObject(std::string const& key) const
{
    Json const* value = find(key);
    if (value == nullptr || value->is_null())
    {
        return std::nullopt;
    }
    return Fields(*value, mLabel, mKind, keyPath(key));
}

std::vector<Fields> Fields::objects(std::string const& key) const
{
    Json const& value = get(key);
    if (!value.is_array())
    {
        throw fail(key, "a list of objects", value);
    }
    std::vector<Fields> out;
    for (std::size_t i = 0; i < value.size(); ++i)
    {
        out.emplace_back(value[i], mLabel, mKind, keyPath(key) + "[" + std::to_string(i) + "]");
    }
    return out;
}

std::vector<std::pair<std::string, std::string>> Fields::strings(std::string const& key, bool fallbackEmpty) const
{
    Json const* value = find(key);
    if (value == nullptr && fallbackEmpty)
    {
        return {};
    }
    Json const& found = get(key);
    bool allStrings = found.is_object();
    if (allStrings)
    {
        for (auto const& item : found.items())
        {
            allStrings = allStrings && item.value().is_string();
        }
    }
    if (!allStrings)
    {
        throw fail(key, "an object of strings", found);
    }
    std::vector<std::pair<std::string, std::string>> out;
    for (auto const& item : found.items())
    {
        out.emplace_back(item.key(), item.value().get<std::string>());
    }
    return out;
}

} // namespace tensorkiln
