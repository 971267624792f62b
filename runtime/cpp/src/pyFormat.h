/*
 * pyFormat.h: values written the way Python writes them, so the C++ runtime's messages are the Python runtime's
 * word for word: repr() of a string ('x', with Python's choice of quotes and escapes), of a float (the shortest
 * repr that reads back, 1e-05 / 1000000000000.0 / inf / nan), of a shape tuple ((2, 3), (4,)) and of lists of
 * names; str() of a pathlib.Path (repeated and "." parts dropped, no trailing slash).
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tensorkiln
{

//! Python's repr() of a str.
std::string pyRepr(std::string const& text);
//! Python's repr() of a float.
std::string pyFloat(double value);
//! Python's repr() of a tuple of ints (a numpy shape).
std::string pyShape(std::vector<int64_t> const& shape);
//! Python's repr() of a list of ints.
std::string pyIntList(std::vector<int64_t> const& values);
//! Python's repr() of a list of str.
std::string pyStringList(std::vector<std::string> const& values);
//! `items` joined by `separator`, each as it is.
std::string join(std::vector<std::string> const& items, std::string const& separator);
//! `items` joined by ", ", each as Python's repr().
std::string joinRepr(std::vector<std::string> const& items);
//! str(pathlib.PurePosixPath(path)).
std::string pyPath(std::string const& path);
//! The first `count` characters (code points) of UTF-8 `text`, as Python's text[:count].
std::string pyPrefix(std::string const& text, std::size_t count);

} // namespace tensorkiln
