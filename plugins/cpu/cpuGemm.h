/*
 * cpuGemm.h: the register-blocked matrix-product kernel of the CPU kernels, compiled once per build in the namespace
 * TK_CPU_ISA_NS (see cpuSimd.h). C (kMR rows, kNV vectors of 8) += A B with A read one element at a time and
 * broadcast (any strides: rows of K, columns of P^T, rows of block means) and B one row of kNV vectors per step.
 * kMR = 6, kNV = 2 keeps 12 accumulators, 2 B vectors and a broadcast in 15 of AVX2's 16 registers, enough
 * independent FMAs to cover their latency.
 */
#pragma once

#include "cpu/cpuSimd.h"

#include <cstdint>

namespace tensorkiln::cpu::TK_CPU_ISA_NS
{

static inline float* alignFloats(float* p) noexcept
{
    auto const address = reinterpret_cast<uintptr_t>(p);
    return reinterpret_cast<float*>((address + 63) & ~static_cast<uintptr_t>(63));
}

//! acc (kMR rows, kNV vectors) += A (kMR rows, depth) B (depth rows of kNV vectors);
//! A(r, k) = a[r * aRow + k * aDepth], B(k, :) = b + k * ldb.
template <int kMR, int kNV>
static inline void gemmBlock(float const* a, int64_t aRow, int64_t aDepth, float const* b, int64_t ldb,
    int64_t depth, VecF (&acc)[kMR][kNV]) noexcept
{
    for (int64_t k = 0; k < depth; ++k)
    {
        VecF bv[kNV];
        for (int v = 0; v < kNV; ++v)
        {
            bv[v] = vload(b + v * kVEC_F);
        }
        for (int r = 0; r < kMR; ++r)
        {
            VecF const av = vset(a[r * aRow]);
            for (int v = 0; v < kNV; ++v)
            {
                acc[r][v] = vfma(av, bv[v], acc[r][v]);
            }
        }
        a += aDepth;
        b += ldb;
    }
}

template <int kMR, int kNV>
static inline void zeroBlock(VecF (&acc)[kMR][kNV]) noexcept
{
    for (int r = 0; r < kMR; ++r)
    {
        for (int v = 0; v < kNV; ++v)
        {
            acc[r][v] = vzero();
        }
    }
}

template <int kMR, int kNV>
static inline void loadBlock(float const* c, int64_t ldc, VecF (&acc)[kMR][kNV]) noexcept
{
    for (int r = 0; r < kMR; ++r)
    {
        for (int v = 0; v < kNV; ++v)
        {
            acc[r][v] = vload(c + r * ldc + v * kVEC_F);
        }
    }
}

template <int kMR, int kNV>
static inline void storeBlock(float* c, int64_t ldc, VecF const (&acc)[kMR][kNV]) noexcept
{
    for (int r = 0; r < kMR; ++r)
    {
        for (int v = 0; v < kNV; ++v)
        {
            vstore(c + r * ldc + v * kVEC_F, acc[r][v]);
        }
    }
}

//! The callers' main blocking: 6 rows x 16 columns, over rows 0..29 of a 32-row tile (2 x 32 for rows 30 and 31).
constexpr int kMAIN_ROWS = 6;
constexpr int64_t kMAIN_EXTENT = 30;

} // namespace tensorkiln::cpu::TK_CPU_ISA_NS
