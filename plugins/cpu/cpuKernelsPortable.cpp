/*
 * cpuKernelsPortable.cpp: the portable build of the hot loops (plain C++ over cpuSimd.h's array vectors, which the
 * compiler vectorises for the target's baseline ISA). Compile with the project's ordinary flags.
 */
#include "cpu/cpuDispatch.h"

#define TK_CPU_ISA_NS portable
#include "cpu/megaEmaRecurrence.h"
#include "cpu/mraAttentionBlocks.h"
#include "cpu/mraAttentionTiles.h"

namespace tensorkiln::cpu::portable
{

CpuKernelTable const* kernelTable() noexcept
{
    static CpuKernelTable const table{&prepareHead, &blockRows, &emaItems};
    return &table;
}

} // namespace tensorkiln::cpu::portable
