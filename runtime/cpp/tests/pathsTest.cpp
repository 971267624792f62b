/*
 * pathsTest.cpp: names from a manifest stay inside their folder (runtime/paths.py's rules): relative POSIX names
 * only, no "..", and no symlink that leads out. tests/test_cpp_runtime.py checks the messages against Python's.
 */
#include "paths.h"
#include "testing.h"

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using tensorkiln::ErrorKind;

TK_TEST(namesMustBeRelativeAndInside)
{
    CHECK(tensorkiln::nameProblem("model.onnx").empty());
    CHECK(tensorkiln::nameProblem("weights/a.bin").empty());
    for (char const* bad : {"../model.onnx", "a/../../b", "/etc/passwd", "a\\b", "", "C:x"})
        CHECK(!tensorkiln::nameProblem(bad).empty());
    CHECK_EQ(tensorkiln::normalizeName("./a//b"), std::string("a/b"));
    CHECK_THROWS_KIND(tensorkiln::checkName("../x", "'m.json'", "files entry"), ErrorKind::kMANIFEST,
        "'m.json': files entry '../x' ");
}

TK_TEST(symlinkOutOfTheFolderIsRefused)
{
    fs::path const root = fs::temp_directory_path() / "tk_paths_test";
    fs::remove_all(root);
    fs::create_directories(root / "export");
    std::ofstream(root / "outside.bin") << "x";
    std::ofstream(root / "export" / "inside.bin") << "x";
    fs::create_symlink(root / "outside.bin", root / "export" / "link.bin");
    std::string const folder = (root / "export").string();
    CHECK_EQ(tensorkiln::resolveInside(folder, "inside.bin", "m.json", "files entry"), folder + "/inside.bin");
    CHECK_THROWS_KIND(tensorkiln::resolveInside(folder, "link.bin", "m.json", "files entry"), ErrorKind::kMANIFEST,
        "through a symbolic link");
    fs::remove_all(root);
}
