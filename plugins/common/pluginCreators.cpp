/*
 * pluginCreators.cpp: instantiate each plugin's creator once. A plugin folder joins the list here; CMake defines
 * TK_WITH_<PLUGIN> for the plugins whose sources are present.
 */
#include "common/pluginCreators.h"

#include "megaEmaPlugin/megaEmaPlugin.h"
#if TK_WITH_MRA_ATTENTION
#include "mraAttentionPlugin/mraAttentionPlugin.h"
#endif

namespace tensorkiln::plugin
{

PluginCreators const& pluginCreators()
{
    static MegaEmaPluginCreator sMegaEma;
#if TK_WITH_MRA_ATTENTION
    static MraAttentionPluginCreator sMraAttention;
#endif
    static PluginCreators const sCreators{
        &sMegaEma,
#if TK_WITH_MRA_ATTENTION
        &sMraAttention,
#endif
    };
    return sCreators;
}

} // namespace tensorkiln::plugin
