/*
 * cpuKernels.h: the CPU kernels of the two custom nodes, for the ONNX Runtime custom-op library (plugins/ort/) and
 * its tests. Plain C++17: no ONNX Runtime, no TensorRT, no CUDA. Each kernel computes exactly what the torch op
 * computes (reference/ops/mra_attention.py, reference/ops/mega_ema.py; the node contract is runtime/contract.py):
 * same block selection and tie-break, same masking, fp32 results within tolerances.OP_VS_ORACLE_MAX_ABS (1e-5).
 *
 * Inputs are contiguous fp32 tensors (the ORT op converts or rejects other dtypes). The caller owns every buffer and
 * supplies the parallelism: a kernel splits its work into independent items and calls `parallel` once or more; the
 * ORT op passes ORT's intra-op thread pool, tests pass a serial loop or a std::thread pool.
 *
 * No exception leaves these functions: they return a Status whose message names the problem.
 */
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace tensorkiln::cpu
{

struct Status
{
    bool ok{true};
    std::string message;

    static Status success()
    {
        return {};
    }
    static Status error(std::string text)
    {
        return {false, std::move(text)};
    }
};

//! Run task(begin, end) over [0, count) split into chunks, possibly on several threads; returns when all are done.
//! `cost` is a rough number of floating-point operations per item, for choosing the chunk size.
using ParallelFor = std::function<void(int64_t count, double cost, std::function<void(int64_t, int64_t)> const&)>;

//! The serial ParallelFor: task(0, count) on the calling thread.
ParallelFor serialParallelFor();

//! Which instruction set the kernels dispatched to on this CPU at run time ("avx2+fma" or "portable").
char const* cpuKernelIsa() noexcept;

//! tensorkiln::MraAttention. Shapes: query/key/value/output (B, H, L, D), attention_mask (B, L) (1 = token,
//! 0 = padding). Attributes as the node's: num_blocks (>= 1, clamped to the blocks that exist), scale (> 0),
//! approx_mode "full" (fullMode = true) or "sparse", initial_prior_first_n_blocks, initial_prior_diagonal_n_blocks.
struct MraAttentionArgs
{
    float const* query{nullptr};
    float const* key{nullptr};
    float const* value{nullptr};
    float const* attentionMask{nullptr};
    float* output{nullptr};
    int64_t batch{0};
    int64_t heads{0};
    int64_t length{0};
    int64_t headDim{0};
    int64_t numBlocks{0};
    float scale{1.0F};
    bool fullMode{true};
    int64_t initialPriorFirstNBlocks{0};
    int64_t initialPriorDiagonalNBlocks{0};
};

Status mraAttention(MraAttentionArgs const& args, ParallelFor const& parallel) noexcept;

//! tensorkiln::MegaEma. K = 2D when bidirectional, else D. x/output (B, L, D); damping_factor, decay_factor,
//! ema_expansion_matrix (K, N, 1); kernel_projection_matrix (K, N); prev_state (B, D, N) or nullptr (only
//! unidirectional without truncation, as the op); final_state (B, D, N): the exact forward state after x[:, L-1].
struct MegaEmaArgs
{
    float const* x{nullptr};
    float const* dampingFactor{nullptr};
    float const* decayFactor{nullptr};
    float const* emaExpansionMatrix{nullptr};
    float const* kernelProjectionMatrix{nullptr};
    float const* prevState{nullptr};
    float* output{nullptr};
    float* finalState{nullptr};
    int64_t batch{0};
    int64_t length{0};
    int64_t channels{0};
    int64_t ndim{0};
    bool bidirectional{false};
    int64_t truncation{0};
};

Status megaEma(MegaEmaArgs const& args, ParallelFor const& parallel) noexcept;

} // namespace tensorkiln::cpu
