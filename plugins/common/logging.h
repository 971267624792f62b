/*
 * logging.h: one log function for host logic, kernels' launchers and plugins, with a replaceable sink.
 *
 * Host code (attribute parsing, shape rules) must log without TensorRT, so the sink is a plain function pointer. The
 * plugin library installs a sink that forwards to the logger TensorRT hands over through setLoggerFinder()
 * (common/trtLogger.cpp); until then, and in tests, errors and warnings go to stderr.
 */
#pragma once

#include <cstdint>
#include <string_view>

namespace tensorkiln::plugin
{

//! Severities in TensorRT's order (nvinfer1::ILogger::Severity without kINTERNAL_ERROR).
enum class LogSeverity : int32_t
{
    kERROR,
    kWARNING,
    kINFO,
    kVERBOSE,
};

//! A sink receives a finished, NUL-terminated line. It must not throw.
using LogSink = void (*)(LogSeverity severity, char const* message) noexcept;

//! Replace the sink; nullptr restores the stderr sink. Thread-safe.
void setLogSink(LogSink sink) noexcept;

//! Log "tensorkiln[where]: message". Never throws: a failure to format or deliver the line is swallowed.
void logMessage(LogSeverity severity, std::string_view where, std::string_view message) noexcept;

inline void logError(std::string_view where, std::string_view message) noexcept
{
    logMessage(LogSeverity::kERROR, where, message);
}

inline void logWarning(std::string_view where, std::string_view message) noexcept
{
    logMessage(LogSeverity::kWARNING, where, message);
}

} // namespace tensorkiln::plugin
