/*
 * pluginCreators.h: the one list of this library's plugin creators, shared by getCreators() (pluginEntry.cpp) and
 * by anything else that wants to enumerate them.
 */
#pragma once

#include <NvInferRuntime.h>

#include <vector>

namespace tensorkiln::plugin
{

using PluginCreators = std::vector<nvinfer1::IPluginCreatorInterface*>;

//! Every creator in this library, each a function-local static (built on first use, never destroyed before exit).
PluginCreators const& pluginCreators();

} // namespace tensorkiln::plugin
