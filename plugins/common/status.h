/*
 * status.h: the error model of plugins/. Host logic throws PluginError (TK_CHECK); every TensorRT entry point runs
 * its body through guarded() / guardedStatus(), which log the message and return an error value, so that no
 * exception ever crosses the plugin ABI. No TensorRT and no CUDA in here: the host tests use it as is.
 */
#pragma once

#include "common/logging.h"

#include <cstdint>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tensorkiln::plugin
{

//! The one exception type of plugins/: invalid attributes, shapes or dtypes, failed CUDA calls.
class PluginError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

[[noreturn]] inline void throwPluginError(std::string message)
{
    throw PluginError(std::move(message));
}

//! TK_CHECK(condition, streamable message): throw PluginError with the message when the condition is false.
#define TK_CHECK(condition, message)                                                                                   \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(condition))                                                                                              \
        {                                                                                                              \
            std::ostringstream tkMessage_;                                                                             \
            tkMessage_ << message;                                                                                     \
            ::tensorkiln::plugin::throwPluginError(tkMessage_.str());                                                  \
        }                                                                                                              \
    } while (false)

//! What TensorRT reads as success / failure from an int32_t entry point.
constexpr int32_t kSTATUS_SUCCESS = 0;
constexpr int32_t kSTATUS_FAILURE = -1;

//! Run body() and return its value; on any exception log it under `where` and return `onError` instead.
template <typename R, typename F>
R guarded(char const* where, R onError, F&& body) noexcept
{
    try
    {
        return std::forward<F>(body)();
    }
    catch (std::exception const& error)
    {
        logError(where, error.what());
    }
    catch (...)
    {
        logError(where, "unknown exception");
    }
    return onError;
}

//! guarded() for a body that returns nothing: kSTATUS_SUCCESS, or kSTATUS_FAILURE after logging the exception.
template <typename F>
int32_t guardedStatus(char const* where, F&& body) noexcept
{
    return guarded(where, kSTATUS_FAILURE, [&body]() {
        body();
        return kSTATUS_SUCCESS;
    });
}

} // namespace tensorkiln::plugin
