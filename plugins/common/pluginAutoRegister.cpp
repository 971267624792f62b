/*
 * pluginAutoRegister.cpp: static self-registration for loaders that only dlopen the library and expect its plugins
 * to appear in TensorRT's global registry: ctypes.CDLL, LD_PRELOAD, Polygraphy --plugins, Triton's TensorRT backend.
 *
 * REGISTER_TENSORRT_PLUGIN calls getPluginRegistry(), a libnvinfer symbol, so this translation unit goes only into
 * the tensorkiln_plugins_autoreg variant, which links libnvinfer. That variant deliberately has no getCreators():
 * loadLibrary() on it would register every creator a second time.
 */
#include "common/logging.h"
#include "megaEmaPlugin/megaEmaPlugin.h"
#include "mraAttentionPlugin/mraAttentionPlugin.h"

#include <NvInferRuntime.h>

#include <cstdio>

namespace tensorkiln::plugin
{
namespace
{

//! Without setLoggerFinder(), TensorRT's global logger (libnvinfer's getLogger()) is the best destination.
void globalLoggerSink(LogSeverity severity, char const* message) noexcept
{
    nvinfer1::ILogger* logger = ::getLogger();
    if (logger == nullptr)
    {
        std::fprintf(stderr, "%s\n", message);
        return;
    }
    switch (severity)
    {
    case LogSeverity::kERROR: logger->log(nvinfer1::ILogger::Severity::kERROR, message); break;
    case LogSeverity::kWARNING: logger->log(nvinfer1::ILogger::Severity::kWARNING, message); break;
    case LogSeverity::kINFO: logger->log(nvinfer1::ILogger::Severity::kINFO, message); break;
    case LogSeverity::kVERBOSE: logger->log(nvinfer1::ILogger::Severity::kVERBOSE, message); break;
    }
}

struct LoggerInstaller
{
    LoggerInstaller() noexcept
    {
        setLogSink(&globalLoggerSink);
    }
};

LoggerInstaller const gLoggerInstaller;

} // namespace

REGISTER_TENSORRT_PLUGIN(MegaEmaPluginCreator);
REGISTER_TENSORRT_PLUGIN(MraAttentionPluginCreator);

} // namespace tensorkiln::plugin
