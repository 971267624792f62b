/*
 * exportFolder.cpp: runtime/manifest.py's folder checks in C++ (see exportFolder.h). Hashes are OpenSSL's sha256.
 */
#include "exportFolder.h"

#include "onnxExternal.h"
#include "paths.h"
#include "pyFormat.h"
#include "sha256.h"

#include <algorithm>
#include <filesystem>

namespace tensorkiln
{
namespace
{

namespace fs = std::filesystem;

std::string manifestPath(std::string const& folder)
{
    return pyPath(folder + "/" + kMANIFEST_NAME);
}

} // namespace

Manifest readManifest(std::string const& folder, bool checkFiles)
{
    std::error_code ec;
    std::string const path = manifestPath(folder);
    if (!fs::is_directory(folder, ec))
    {
        std::string const what = fs::exists(folder, ec) ? "a file" : "missing";
        throw Error(ErrorKind::kMANIFEST, pyRepr(pyPath(folder)) + " is " + what
                + ", not a folder: pass the OUT_DIR that `kiln export` wrote." + hubHint(pyPath(folder), true));
    }
    if (!fs::exists(path, ec))
    {
        throw Error(ErrorKind::kMANIFEST, pyRepr(path) + " is missing: is " + pyRepr(pyPath(folder))
                + " a folder written by `kiln export`?" + hubHint(pyPath(folder), true));
    }
    Manifest manifest = manifestFromJson(readJsonObject(path, ErrorKind::kMANIFEST), pyRepr(path));
    for (auto const& [name, digest] : manifest.files)
    {
        resolveInside(folder, name, path, "'files' entry");
    }
    if (!checkFiles)
    {
        return manifest;
    }
    auto sorted = manifest.files;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::string> problems;
    for (auto const& [name, expected] : sorted)
    {
        std::string const file = filePath(folder, manifest, name);
        if (!fs::is_regular_file(file, ec))
        {
            problems.push_back(name + " is missing");
            continue;
        }
        std::string digest;
        try
        {
            digest = sha256File(file);
        }
        catch (std::exception const& error)
        {
            throw Error(ErrorKind::kMANIFEST, pyRepr(file) + " cannot be read: " + error.what());
        }
        if (digest != expected)
        {
            problems.push_back(name + " has sha256 " + digest.substr(0, 12) + "..., the manifest says "
                + expected.substr(0, 12) + "...");
        }
    }
    if (!problems.empty())
    {
        throw Error(ErrorKind::kMANIFEST, pyRepr(pyPath(folder)) + " does not match its manifest: "
                + join(problems, "; ") + ". Re-export the model (a file was changed, truncated or replaced)");
    }
    return manifest;
}

std::string filePath(std::string const& folder, Manifest const& manifest, std::string const& name)
{
    if (!manifest.hasFile(name))
    {
        throw Error(ErrorKind::kMANIFEST, pyRepr(pyPath(folder)) + ": " + pyRepr(name)
                + " is not among the manifest's hashed files");
    }
    return resolveInside(folder, name, manifestPath(folder), "'files' entry");
}

std::string checkModelFiles(std::string const& folder, Manifest const& manifest)
{
    std::string const model = filePath(folder, manifest, manifest.modelFile);
    std::string const base = fs::path(manifest.modelFile).parent_path().string();
    for (std::string const& location : externalLocations(model))
    {
        std::string const clean = checkName(location, pyRepr(model), "external-data location");
        std::string const name = base.empty() || base == "." ? clean : normalizeName(base + "/" + clean);
        if (!manifest.hasFile(name))
        {
            throw Error(ErrorKind::kMANIFEST, pyRepr(model) + " keeps weights in " + pyRepr(location)
                    + ", which the manifest's 'files' does not list, so its sha256 cannot be checked: re-export the "
                      "model");
        }
        filePath(folder, manifest, name);
    }
    return model;
}

} // namespace tensorkiln
