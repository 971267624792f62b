/*
 * jsonFile.h: a JSON file a person or a tool handed us read into one clear error, and its fields read with an error
 * naming the key path: runtime/jsonfile.py (read_json_object, Fields) in C++, message for message.
 *
 * Objects keep their keys in file order (nlohmann::ordered_json), as Python's dicts do, so "the first bad name"
 * is the same one in both runtimes.
 */
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tensorkiln/error.h"

namespace tensorkiln
{

using Json = nlohmann::ordered_json;

//! The largest JSON file read (runtime/jsonfile.py's MAX_JSON_BYTES).
constexpr std::size_t kMAX_JSON_BYTES = 64u * 1024u * 1024u;
//! Deeper nesting is refused, as Python's parser refuses it (its recursion limit).
constexpr int kMAX_JSON_DEPTH = 990;

//! The JSON object in `path`; an Error of `kind` naming the file (and `what` it is for) otherwise.
Json readJsonObject(std::string const& path, ErrorKind kind, std::string const& what = "");
//! Parse `text` as JSON the way readJsonObject does (depth limit, NaN refused); `label` names it in errors.
Json parseJsonText(std::string const& text, std::string const& label, ErrorKind kind);

//! Python's _kind(value): "null", "a boolean", "a number (5)", "a string ('x')", "a list", "an object".
std::string jsonKind(Json const& value);
//! Python's repr() of the value json.loads would return for `value` (True, None, 'x', [1, 2], {'a': 1}).
std::string jsonRepr(Json const& value);
//! True for a JSON integer (Python int), false for floats and everything else.
bool isJsonInteger(Json const& value);

//! Typed access to one JSON object; every error is of `kind`, naming `label` and the key path.
class Fields
{
public:
    Fields(Json const& data, std::string label, ErrorKind kind, std::string path = "");

    Json const& data() const
    {
        return *mData;
    }
    std::string keyPath(std::string const& key) const;
    Error fail(std::string const& key, std::string const& expected, Json const& value) const;
    //! The value at `key`, or an error naming the missing key.
    Json const& get(std::string const& key) const;
    //! The value at `key`, or nullptr when it is absent.
    Json const* find(std::string const& key) const;

    std::string string(std::string const& key) const;
    std::string string(std::string const& key, std::string const& fallback) const;
    //! Absent or null: nullopt (Python's string(key, None)).
    std::optional<std::string> optionalString(std::string const& key) const;
    int64_t integer(std::string const& key, std::optional<int64_t> minimum = std::nullopt) const;
    //! Absent or null: nullopt (Python's integer(key, None, minimum=...)).
    std::optional<int64_t> optionalInteger(std::string const& key, std::optional<int64_t> minimum = std::nullopt) const;
    double number(std::string const& key) const;
    Fields object(std::string const& key) const;
    //! Absent or null: nullopt.
    std::optional<Fields> optionalObject(std::string const& key) const;
    //! A list of objects.
    std::vector<Fields> objects(std::string const& key) const;
    //! An object of string values, in file order; absent: `fallbackEmpty` gives {} instead of an error.
    std::vector<std::pair<std::string, std::string>> strings(std::string const& key, bool fallbackEmpty = false) const;

private:
    Json const* mData;
    std::string mLabel;
    ErrorKind mKind;
    std::string mPath;
};

} // namespace tensorkiln
