/*
 * ortBackend.h: the ONNX Runtime backend: one Ort::Session over the export's model (every graph optimisation on,
 * errors-only logging, the chosen execution providers and threads), with libtensorkiln_ort.so registered when the
 * kernel plan says so: runtime/backends.py's choose_providers and ort_session and runtime/session.py's _open and
 * native.describe in C++.
 */
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "manifest.h"

namespace tensorkiln
{

//! The execution providers for `backend` ("auto" or "onnxruntime"): explicit `providers` win (each must be in
//! the loaded onnxruntime); "auto" takes CUDA first where available.
std::vector<std::string> chooseProviders(std::vector<std::string> const& providers);

//! An ONNX Runtime session over `modelPath` for the export `manifest`.
std::unique_ptr<Backend> openOrtBackend(std::string const& modelPath, Manifest const& manifest,
    std::vector<std::string> const& providers, int threads, std::string const& kernels, std::string const& ortVersion);

} // namespace tensorkiln
