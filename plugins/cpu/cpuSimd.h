/*
 * cpuSimd.h: the vector types the hot loops are written in, VecF (8 x fp32) and VecD (4 x fp64), in two builds:
 * AVX2+FMA intrinsics when the including translation unit is compiled with -mavx2 -mfma, else plain arrays that
 * the compiler vectorises for the baseline ISA. Every function lives in the namespace named by TK_CPU_ISA_NS, which
 * the including .cpp defines (avx2 or portable): each build keeps its own copy, and no inline function compiled with
 * AVX2 can be merged into the portable build by the linker.
 *
 * vexp is Cephes' expf scheme (round to the nearest power of two, ln2 split in two, degree-6 polynomial): within
 * 2 ulp of expf over the softmax's range (x <= 0), 0 below log(FLT_MIN), as the op's exp(-1e4) == 0.
 */
#pragma once

#ifndef TK_CPU_ISA_NS
#error "define TK_CPU_ISA_NS (avx2 or portable) before including cpu/cpuSimd.h"
#endif

#if defined(__AVX2__) && defined(__FMA__)
#define TK_SIMD_AVX2 1
#include <immintrin.h>
#else
#define TK_SIMD_AVX2 0
#endif

#include <math.h>
#include <cstdint>
#include <string.h>

namespace tensorkiln::cpu::TK_CPU_ISA_NS
{

constexpr int kVEC_F = 8;
constexpr int kVEC_D = 4;

// Cephes expf constants.
constexpr float kEXP_HIGH = 88.0F;
constexpr float kEXP_LOW = -87.33654F; // log(FLT_MIN): below it the result is 0 (the op's exp underflows there too)
constexpr float kLOG2E = 1.44269504088896341F;
constexpr float kLN2_HI = 0.693359375F;
constexpr float kLN2_LO = -2.12194440e-4F;
constexpr float kEXP_P0 = 1.9875691500e-4F;
constexpr float kEXP_P1 = 1.3981999507e-3F;
constexpr float kEXP_P2 = 8.3334519073e-3F;
constexpr float kEXP_P3 = 4.1665795894e-2F;
constexpr float kEXP_P4 = 1.6666665459e-1F;
constexpr float kEXP_P5 = 5.0000001201e-1F;

#if TK_SIMD_AVX2

struct VecF
{
    __m256 v;
};
struct VecD
{
    __m256d v;
};

static inline VecF vzero() noexcept
{
    return {_mm256_setzero_ps()};
}
static inline VecF vset(float x) noexcept
{
    return {_mm256_set1_ps(x)};
}
static inline VecF vload(float const* p) noexcept
{
    return {_mm256_loadu_ps(p)};
}
static inline void vstore(float* p, VecF a) noexcept
{
    _mm256_storeu_ps(p, a.v);
}
static inline VecF vadd(VecF a, VecF b) noexcept
{
    return {_mm256_add_ps(a.v, b.v)};
}
static inline VecF vsub(VecF a, VecF b) noexcept
{
    return {_mm256_sub_ps(a.v, b.v)};
}
static inline VecF vmul(VecF a, VecF b) noexcept
{
    return {_mm256_mul_ps(a.v, b.v)};
}
static inline VecF vdiv(VecF a, VecF b) noexcept
{
    return {_mm256_div_ps(a.v, b.v)};
}
//! a * b + c
static inline VecF vfma(VecF a, VecF b, VecF c) noexcept
{
    return {_mm256_fmadd_ps(a.v, b.v, c.v)};
}
static inline VecF vmax(VecF a, VecF b) noexcept
{
    return {_mm256_max_ps(a.v, b.v)};
}
static inline float hsum(VecF a) noexcept
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float hmax(VecF a) noexcept
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline VecF vexp(VecF a) noexcept
{
    // min/max return their second operand when either is NaN: NaN goes through as NaN.
    __m256 const x = _mm256_min_ps(_mm256_set1_ps(kEXP_HIGH), a.v);
    __m256 const underflow = _mm256_cmp_ps(x, _mm256_set1_ps(kEXP_LOW), _CMP_LT_OQ);
    __m256 const xc = _mm256_max_ps(_mm256_set1_ps(kEXP_LOW), x);
    __m256 const n
        = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLN2_HI), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLN2_LO), r);
    __m256 const r2 = _mm256_mul_ps(r, r);
    __m256 y = _mm256_set1_ps(kEXP_P0);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kEXP_P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kEXP_P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kEXP_P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kEXP_P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kEXP_P5));
    y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0F)));
    __m256i const exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(exponent));
    return {_mm256_andnot_ps(underflow, y)};
}

static inline VecD dzero() noexcept
{
    return {_mm256_setzero_pd()};
}
static inline VecD dload(double const* p) noexcept
{
    return {_mm256_loadu_pd(p)};
}
static inline void dstore(double* p, VecD a) noexcept
{
    _mm256_storeu_pd(p, a.v);
}
//! Four floats widened to fp64.
static inline VecD dloadFloats(float const* p) noexcept
{
    return {_mm256_cvtps_pd(_mm_loadu_ps(p))};
}
//! Four fp64 lanes rounded to fp32 and stored.
static inline void dstoreFloats(float* p, VecD a) noexcept
{
    _mm_storeu_ps(p, _mm256_cvtpd_ps(a.v));
}
static inline VecD dadd(VecD a, VecD b) noexcept
{
    return {_mm256_add_pd(a.v, b.v)};
}
static inline VecD dmul(VecD a, VecD b) noexcept
{
    return {_mm256_mul_pd(a.v, b.v)};
}
//! a * b + c
static inline VecD dfma(VecD a, VecD b, VecD c) noexcept
{
    return {_mm256_fmadd_pd(a.v, b.v, c.v)};
}
//! c - a * b
static inline VecD dfnma(VecD a, VecD b, VecD c) noexcept
{
    return {_mm256_fnmadd_pd(a.v, b.v, c.v)};
}

//! dst (8 x 8, rows dstStride apart) = transpose of src (8 x 8, rows srcStride apart).
static inline void transpose8x8(float const* src, int64_t srcStride, float* dst, int64_t dstStride) noexcept
{
    __m256 r[8];
    for (int i = 0; i < 8; ++i)
    {
        r[i] = _mm256_loadu_ps(src + i * srcStride);
    }
    __m256 const t0 = _mm256_unpacklo_ps(r[0], r[1]);
    __m256 const t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 const t2 = _mm256_unpacklo_ps(r[2], r[3]);
    __m256 const t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 const t4 = _mm256_unpacklo_ps(r[4], r[5]);
    __m256 const t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 const t6 = _mm256_unpacklo_ps(r[6], r[7]);
    __m256 const t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 const u0 = _mm256_shuffle_ps(t0, t2, 0x44);
    __m256 const u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 const u2 = _mm256_shuffle_ps(t1, t3, 0x44);
    __m256 const u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 const u4 = _mm256_shuffle_ps(t4, t6, 0x44);
    __m256 const u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 const u6 = _mm256_shuffle_ps(t5, t7, 0x44);
    __m256 const u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst + 0 * dstStride, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + 1 * dstStride, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * dstStride, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * dstStride, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * dstStride, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * dstStride, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * dstStride, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * dstStride, _mm256_permute2f128_ps(u3, u7, 0x31));
}

#else // portable

struct VecF
{
    float v[kVEC_F];
};
struct VecD
{
    double v[kVEC_D];
};

#define TK_LANES_F(expr)                                                                                               \
    VecF out;                                                                                                          \
    for (int i = 0; i < kVEC_F; ++i)                                                                                   \
    {                                                                                                                  \
        out.v[i] = (expr);                                                                                             \
    }                                                                                                                  \
    return out
#define TK_LANES_D(expr)                                                                                               \
    VecD out;                                                                                                          \
    for (int i = 0; i < kVEC_D; ++i)                                                                                   \
    {                                                                                                                  \
        out.v[i] = (expr);                                                                                             \
    }                                                                                                                  \
    return out

static inline VecF vzero() noexcept
{
    TK_LANES_F(0.0F);
}
static inline VecF vset(float x) noexcept
{
    TK_LANES_F(x);
}
static inline VecF vload(float const* p) noexcept
{
    TK_LANES_F(p[i]);
}
static inline void vstore(float* p, VecF a) noexcept
{
    for (int i = 0; i < kVEC_F; ++i)
    {
        p[i] = a.v[i];
    }
}
static inline VecF vadd(VecF a, VecF b) noexcept
{
    TK_LANES_F(a.v[i] + b.v[i]);
}
static inline VecF vsub(VecF a, VecF b) noexcept
{
    TK_LANES_F(a.v[i] - b.v[i]);
}
static inline VecF vmul(VecF a, VecF b) noexcept
{
    TK_LANES_F(a.v[i] * b.v[i]);
}
static inline VecF vdiv(VecF a, VecF b) noexcept
{
    TK_LANES_F(a.v[i] / b.v[i]);
}
static inline VecF vfma(VecF a, VecF b, VecF c) noexcept
{
    TK_LANES_F(a.v[i] * b.v[i] + c.v[i]);
}
static inline VecF vmax(VecF a, VecF b) noexcept
{
    // _mm256_max_ps's rule (the second operand when either is NaN), so both builds agree.
    TK_LANES_F(a.v[i] > b.v[i] ? a.v[i] : b.v[i]);
}
static inline float hsum(VecF a) noexcept
{
    // The AVX2 build's order: halves, then pairs, then the last two.
    float s[4];
    for (int i = 0; i < 4; ++i)
    {
        s[i] = a.v[i] + a.v[i + 4];
    }
    float const s0 = s[0] + s[2];
    float const s1 = s[1] + s[3];
    return s0 + s1;
}
static inline float hmax(VecF a) noexcept
{
    float m = a.v[0];
    for (int i = 1; i < kVEC_F; ++i)
    {
        m = a.v[i] > m ? a.v[i] : m;
    }
    return m;
}
static inline float expLane(float a) noexcept
{
    float const x = a > kEXP_HIGH ? kEXP_HIGH : a;
    if (!(x >= kEXP_LOW))
    {
        return x < kEXP_LOW ? 0.0F : x; // NaN stays NaN
    }
    float const n = ::nearbyintf(x * kLOG2E);
    float r = x - n * kLN2_HI;
    r = r - n * kLN2_LO;
    float const r2 = r * r;
    float y = kEXP_P0;
    y = y * r + kEXP_P1;
    y = y * r + kEXP_P2;
    y = y * r + kEXP_P3;
    y = y * r + kEXP_P4;
    y = y * r + kEXP_P5;
    y = y * r2 + (r + 1.0F);
    auto const bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
    float scale = 0.0F;
    memcpy(&scale, &bits, sizeof(scale));
    return y * scale;
}
static inline VecF vexp(VecF a) noexcept
{
    TK_LANES_F(expLane(a.v[i]));
}

static inline VecD dzero() noexcept
{
    TK_LANES_D(0.0);
}
static inline VecD dload(double const* p) noexcept
{
    TK_LANES_D(p[i]);
}
static inline void dstore(double* p, VecD a) noexcept
{
    for (int i = 0; i < kVEC_D; ++i)
    {
        p[i] = a.v[i];
    }
}
static inline VecD dloadFloats(float const* p) noexcept
{
    TK_LANES_D(static_cast<double>(p[i]));
}
static inline void dstoreFloats(float* p, VecD a) noexcept
{
    for (int i = 0; i < kVEC_D; ++i)
    {
        p[i] = static_cast<float>(a.v[i]);
    }
}
static inline VecD dadd(VecD a, VecD b) noexcept
{
    TK_LANES_D(a.v[i] + b.v[i]);
}
static inline VecD dmul(VecD a, VecD b) noexcept
{
    TK_LANES_D(a.v[i] * b.v[i]);
}
static inline VecD dfma(VecD a, VecD b, VecD c) noexcept
{
    TK_LANES_D(a.v[i] * b.v[i] + c.v[i]);
}
static inline VecD dfnma(VecD a, VecD b, VecD c) noexcept
{
    TK_LANES_D(c.v[i] - a.v[i] * b.v[i]);
}

static inline void transpose8x8(float const* src, int64_t srcStride, float* dst, int64_t dstStride) noexcept
{
    for (int i = 0; i < 8; ++i)
    {
        for (int j = 0; j < 8; ++j)
        {
            dst[j * dstStride + i] = src[i * srcStride + j];
        }
    }
}

#undef TK_LANES_F
#undef TK_LANES_D

#endif

static inline int64_t minI64(int64_t a, int64_t b) noexcept
{
    return a < b ? a : b;
}

} // namespace tensorkiln::cpu::TK_CPU_ISA_NS
