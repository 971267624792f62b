/*
 * paths.cpp: runtime/paths.py and runtime/hub.py in C++ (see paths.h). Symlinks are resolved as pathlib's
 * Path.resolve() does (std::filesystem::weakly_canonical: as far as the path exists, then lexically).
 */
#include "paths.h"

#include "pyFormat.h"

#include <filesystem>
#include <regex>

namespace tensorkiln
{
namespace
{

namespace fs = std::filesystem;

std::string resolved(std::string const& path)
{
    std::error_code ec;
    fs::path const absolute = fs::absolute(path, ec);
    fs::path const real = fs::weakly_canonical(absolute, ec);
    return pyPath(ec ? absolute.lexically_normal().string() : real.string());
}

bool hasParentPart(std::string const& name)
{
    std::size_t start = 0;
    while (true)
    {
        std::size_t const end = name.find('/', start);
        if (name.compare(start, end == std::string::npos ? std::string::npos : end - start, "..") == 0
            && (end == std::string::npos ? name.size() - start : end - start) == 2)
        {
            return true;
        }
        if (end == std::string::npos)
        {
            return false;
        }
        start = end + 1;
    }
}

} // namespace

std::string nameProblem(std::string const& name)
{
    if (name.empty() || name == "." || name == "./")
    {
        return "is empty";
    }
    if (name.find('\0') != std::string::npos)
    {
        return "holds a NUL character";
    }
    if (name.find('\\') != std::string::npos)
    {
        return "holds a backslash (names are POSIX paths: use '/')";
    }
    if (name[0] == '/' || (name.size() > 1 && std::isalpha(static_cast<unsigned char>(name[0])) && name[1] == ':'))
    {
        return "is an absolute path";
    }
    if (hasParentPart(name))
    {
        return "goes up out of its folder ('..')";
    }
    return "";
}

std::string normalizeName(std::string const& name)
{
    return pyPath(name);
}

std::string checkName(std::string const& name, std::string const& where, std::string const& key)
{
    std::string const problem = nameProblem(name);
    if (!problem.empty())
    {
        throw Error(ErrorKind::kMANIFEST, where + ": " + key + " " + pyRepr(name) + " " + problem
                + "; every name there must be a relative path inside its folder. Fix or regenerate that file");
    }
    return normalizeName(name);
}

std::string resolveInside(std::string const& root, std::string const& name, std::string const& source,
    std::string const& key)
{
    std::string const clean = checkName(name, pyRepr(pyPath(source)), key);
    std::string const path = pyPath(root + "/" + clean);
    std::string const realRoot = resolved(root);
    std::string const real = resolved(path);
    bool const inside = real == realRoot
        || (real.size() > realRoot.size() && real.compare(0, realRoot.size(), realRoot) == 0
            && (realRoot == "/" || real[realRoot.size()] == '/'));
    if (!inside)
    {
        throw Error(ErrorKind::kMANIFEST, pyRepr(pyPath(source)) + ": " + key + " " + pyRepr(name) + " resolves to "
                + pyRepr(real) + ", outside " + pyRepr(realRoot)
                + " (through a symbolic link); every file must be inside its folder. Replace the link by the file "
                  "itself");
    }
    return path;
}

std::string hubHint(std::string const& path, bool forExport)
{
    static std::regex const hubId("[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}");
    std::error_code ec;
    if (!std::regex_match(path, hubId) || path.find("..") != std::string::npos || fs::exists(path, ec))
    {
        return "";
    }
    std::string const local = path.substr(path.find('/') + 1);
    std::string then = " and pass " + local;
    if (forExport)
    {
        then = ", export it with `kiln export " + local + " " + local + "-onnx` and pass " + local + "-onnx";
    }
    return " " + pyRepr(path) + " looks like a Hugging Face Hub id; tensorkiln reads local folders only: download it "
                                "first with `huggingface-cli download "
        + path + " --local-dir " + local + "`" + then;
}

} // namespace tensorkiln
