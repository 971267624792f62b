/*
 * exportFolder.h: the checks load() makes on an export folder before any backend sees it (runtime/manifest.py's
 * read_manifest, verify_files, file_path, model_files), message for message.
 */
#pragma once

#include <string>

#include "manifest.h"

namespace tensorkiln
{

//! folder/manifest.json parsed and checked; every listed file inside the folder, and with `checkFiles` matching its
//! sha256 (a ManifestError listing every file that does not).
Manifest readManifest(std::string const& folder, bool checkFiles);
//! The path of the manifest's file `name` (one of its files), checked to stay inside `folder`.
std::string filePath(std::string const& folder, Manifest const& manifest, std::string const& name);
//! Refuse external-data files outside the folder or not hashed; returns the model's path.
std::string checkModelFiles(std::string const& folder, Manifest const& manifest);

} // namespace tensorkiln
