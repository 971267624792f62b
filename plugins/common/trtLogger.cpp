/*
 * trtLogger.cpp: the logger bridge. TensorRT passes an ILoggerFinder to setLoggerFinder(); the logger it finds is
 * per calling thread ("must be called from the thread in which the plugin method was called"), so the finder is
 * kept and asked at every message, never the logger itself.
 */
#include "common/logging.h"
#include "common/trtUtils.h"

#include <atomic>
#include <cstdio>

namespace tensorkiln::plugin
{
namespace
{

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

nvinfer1::ILogger::Severity toTrtSeverity(LogSeverity severity) noexcept
{
    switch (severity)
    {
    case LogSeverity::kERROR: return nvinfer1::ILogger::Severity::kERROR;
    case LogSeverity::kWARNING: return nvinfer1::ILogger::Severity::kWARNING;
    case LogSeverity::kINFO: return nvinfer1::ILogger::Severity::kINFO;
    case LogSeverity::kVERBOSE: return nvinfer1::ILogger::Severity::kVERBOSE;
    }
    return nvinfer1::ILogger::Severity::kERROR;
}

void trtSink(LogSeverity severity, char const* message) noexcept
{
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
    nvinfer1::ILogger* logger = nullptr;
    try
    {
        logger = finder != nullptr ? finder->findLogger() : nullptr;
    }
    catch (...)
    {
        logger = nullptr;
    }
    if (logger != nullptr)
    {
        logger->log(toTrtSeverity(severity), message);
        return;
    }
    // No logger for this thread (e.g. a call from outside TensorRT): keep errors visible.
    if (severity == LogSeverity::kERROR || severity == LogSeverity::kWARNING)
    {
        std::fprintf(stderr, "%s\n", message);
    }
}

} // namespace

void installLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
    setLogSink(finder != nullptr ? &trtSink : nullptr);
}

} // namespace tensorkiln::plugin
