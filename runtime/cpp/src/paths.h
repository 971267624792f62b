/*
 * paths.h: names read from files, kept inside their folder: runtime/paths.py (check_name, resolve_inside) and
 * runtime/hub.py (hub_hint) in C++, message for message.
 *
 * A name must be a relative POSIX path (not absolute, no drive, no backslash, no "..", not empty, no NUL) and, once
 * every symlink is resolved, still lie inside its folder.
 */
#pragma once

#include <string>

#include "tensorkiln/error.h"

namespace tensorkiln
{

//! Why `name` is not a relative path inside its folder, or "" when it is.
std::string nameProblem(std::string const& name);
//! `name` without "." parts and doubled slashes (PurePosixPath(name).as_posix()).
std::string normalizeName(std::string const& name);
//! `name` normalised, or a ManifestError naming `where` (a label already quoted), `key` and the problem.
std::string checkName(std::string const& name, std::string const& where, std::string const& key);
//! root/name, once it is known to stay inside root after resolving every symlink; `source` is the file (a path)
//! the name was read from.
std::string resolveInside(std::string const& root, std::string const& name, std::string const& source,
    std::string const& key);
//! " 'owner/name' looks like a Hugging Face Hub id; ..." for a missing path shaped like a Hub id, else "".
std::string hubHint(std::string const& path, bool forExport);

} // namespace tensorkiln
