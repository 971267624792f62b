/*
 * ortLibrary.h: ONNX Runtime loaded at run time with dlopen + dlsym("OrtGetApiBase") (ORT_API_MANUAL_INIT), so the
 * runtime works with the libonnxruntime.so.1.x of the onnxruntime wheel, which ships no headers and no unversioned
 * symlink, as well as with a system install.
 *
 * Where the library comes from, first found wins: LoadOptions::onnxruntimeLibrary; $TENSORKILN_ONNXRUNTIME_LIBRARY;
 * the onnxruntime wheel of the active virtual environment ($VIRTUAL_ENV/lib/python3.* /site-packages/onnxruntime/
 * capi/libonnxruntime.so.1.*); the library recorded when this runtime was built (`kiln build-runtime` records the
 * wheel it found); the system's libonnxruntime.so(.1). One ONNX Runtime per process: a later request for another
 * file is refused.
 */
#pragma once

#include <string>
#include <vector>

namespace tensorkiln
{

struct OrtRuntime
{
    std::string path;    //!< the file loaded
    std::string version; //!< "1.32.0"
    int apiVersion{0};   //!< the minor version: the C API versions it serves
};

//! Load ONNX Runtime (once per process) and initialise the C++ API; BackendUnavailableError when it cannot.
OrtRuntime const& ortRuntime(std::string const& requested);
//! The paths tried, in order, for `requested` (for messages and tests).
std::vector<std::string> ortLibraryCandidates(std::string const& requested);

} // namespace tensorkiln
