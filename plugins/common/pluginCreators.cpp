/*
 * pluginCreators.cpp: instantiate each plugin's creator once. A new plugin folder joins the list here (and its
 * sources join plugins/sources.json).
 */
#include "common/pluginCreators.h"

#include "megaEmaPlugin/megaEmaPlugin.h"
#include "mraAttentionPlugin/mraAttentionPlugin.h"

namespace tensorkiln::plugin
{

PluginCreators const& pluginCreators()
{
    static MegaEmaPluginCreator sMegaEma;
    static MraAttentionPluginCreator sMraAttention;
    static PluginCreators const sCreators{
        &sMegaEma,
        &sMraAttention,
    };
    return sCreators;
}

} // namespace tensorkiln::plugin
