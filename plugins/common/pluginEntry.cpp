/*
 * pluginEntry.cpp: the two C entry points through which TensorRT loads libtensorkiln_plugins.so
 * (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, the runtime's plugin loader).
 *
 * Nothing here, nor in any plugin, needs a libnvinfer symbol: the library links with -Wl,--no-undefined against
 * cudart alone. Static self-registration (REGISTER_TENSORRT_PLUGIN, which calls getPluginRegistry() from libnvinfer)
 * lives in the separate tensorkiln_plugins_autoreg variant (common/pluginAutoRegister.cpp).
 */
#include "common/pluginCreators.h"
#include "common/status.h"
#include "common/trtUtils.h"

// TensorRT's TENSORRTAPI is empty outside TensorRT's own build, and this library builds with -fvisibility=hidden.
#define TK_PLUGIN_EXPORT __attribute__((visibility("default")))

extern "C" TK_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    nbCreators = 0;
    return tensorkiln::plugin::guarded("getCreators", static_cast<nvinfer1::IPluginCreatorInterface* const*>(nullptr),
        [&nbCreators]() {
            tensorkiln::plugin::PluginCreators const& creators = tensorkiln::plugin::pluginCreators();
            nbCreators = static_cast<int32_t>(creators.size());
            return creators.data();
        });
}

extern "C" TK_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    tensorkiln::plugin::installLoggerFinder(finder);
}
