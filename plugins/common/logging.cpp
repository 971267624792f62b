/*
 * logging.cpp: the sink switch and the default stderr sink (errors and warnings only, as TensorRT's default logger).
 */
#include "common/logging.h"

#include <atomic>
#include <cstdio>
#include <string>

namespace tensorkiln::plugin
{
namespace
{

void stderrSink(LogSeverity severity, char const* message) noexcept
{
    if (severity == LogSeverity::kERROR || severity == LogSeverity::kWARNING)
    {
        std::fprintf(stderr, "%s\n", message);
    }
}

std::atomic<LogSink> gSink{&stderrSink};

} // namespace

void setLogSink(LogSink sink) noexcept
{
    gSink.store(sink != nullptr ? sink : &stderrSink);
}

void logMessage(LogSeverity severity, std::string_view where, std::string_view message) noexcept
{
    try
    {
        std::string line;
        line.reserve(where.size() + message.size() + 16);
        line.append("tensorkiln[").append(where).append("]: ").append(message);
        gSink.load()(severity, line.c_str());
    }
    catch (...)
    {
        // Out of memory while formatting a log line: nothing sensible is left to report it to.
    }
}

} // namespace tensorkiln::plugin
