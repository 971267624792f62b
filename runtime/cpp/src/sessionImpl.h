/*
 * sessionImpl.h: what a loaded Session holds (shared, immutable after load, so calls from many threads need no lock):
 * the folder, its manifest and config, the input limits, and the backend; generation_config.json is read on the
 * first generate, as the Python runtime reads it.
 */
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "backend.h"
#include "inputs.h"
#include "manifest.h"
#include "tensorkiln/session.h"

namespace tensorkiln
{

struct Session::Impl
{
    std::string folder;
    Manifest manifest;
    Json config;
    ModelLimits limits;
    std::string backendName;
    std::unique_ptr<Backend> backend;

    mutable std::mutex generationDefaultsMutex;
    mutable std::optional<Json> generationDefaults;

    NamedTensors run(NamedTensors const& inputs) const;
    //! The export's generation_config.json ({} without one), read once.
    Json const& defaults() const;
};

} // namespace tensorkiln
