/*
 * ortApi.h: ONNX Runtime's C++ API, initialised by hand from the library ortLibrary.cpp loads (never linked).
 */
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include <onnxruntime_cxx_api.h>
