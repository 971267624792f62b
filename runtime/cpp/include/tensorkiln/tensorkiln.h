/*
 * tensorkiln/tensorkiln.h: the whole C++ API of libtensorkiln_runtime (link tensorkiln::runtime).
 *
 *   error.h       tensorkiln::Error: the Python runtime's error types and messages
 *   tensor.h      tensorkiln::Tensor: a host tensor with numpy's dtype names
 *   session.h     tensorkiln::load, tensorkiln::Session: run and generate
 *   generation.h  tensorkiln::GenerationOptions, GenerationResult, StepCallback
 *   c_api.h       the same for C and FFI callers (no exception crosses it)
 */
#pragma once

#include "tensorkiln/error.h"
#include "tensorkiln/generation.h"
#include "tensorkiln/session.h"
#include "tensorkiln/tensor.h"
