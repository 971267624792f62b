/*
 * nativeKernels.h: where libtensorkiln_ort.so (the custom nodes' native kernels, `kiln build-kernels`) lives and
 * whether a session registers it: runtime/native.py's cache_dir, library_path and plan_kernels in C++, with the same
 * choices ("auto", "native", "function"), environment variables (TENSORKILN_ORT_LIBRARY, TENSORKILN_CACHE_DIR,
 * XDG_CACHE_HOME) and messages. The build record's tensorkiln version and ONNX Runtime API version are checked;
 * its sources digest is not (the C++ runtime has no source checkout to compare it with).
 */
#pragma once

#include <optional>
#include <string>

namespace tensorkiln
{

//! tensorkiln's cache folder: $TENSORKILN_CACHE_DIR, else $XDG_CACHE_HOME/tensorkiln, else ~/.cache/tensorkiln.
std::string cacheDir();

struct KernelPlan
{
    std::string kernels;
    std::optional<std::string> library; //!< the library to register; none: the function bodies
    std::string reason;                 //!< why not, when there is none
};

//! Decide for `kernels`; BackendUnavailableError for "native" when the library cannot serve; UsageError for a
//! choice that is none of the three. `ortVersion` is the loaded ONNX Runtime's ("1.32.0").
KernelPlan planKernels(std::string const& kernels, bool hasCustomNodes, std::string const& ortVersion);
//! The UsageError of a `kernels` value that is none of auto/native/function (checked before anything loads).
void checkKernelsChoice(std::string const& kernels);

} // namespace tensorkiln
