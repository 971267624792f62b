/*
 * megaEmaParams.h: the host logic of the MegaEma node, free of TensorRT and CUDA so that ctest covers it:
 * attribute parsing and validation, the contract's shape and dtype rules, output extents, and the chunked scan's
 * geometry and workspace layout (shared by the plugin, the torch binding and the launcher).
 *
 * The rules are those of tensorkiln::mega_ema (reference/ops/mega_ema.py, _check); names and positions come from
 * common/nodeContract.h, which is generated from runtime/contract.py.
 */
#pragma once

#include "common/elementType.h"
#include "common/fields.h"
#include "common/nodeContract.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace tensorkiln::plugin
{

using MegaEmaContract = contract::MegaEma;

//! The node's attributes, validated.
struct MegaEmaAttributes
{
    bool bidirectional{MegaEmaContract::kDEFAULT_BIDIRECTIONAL != 0};
    //! 0: the full kernel; T > 0: the kernel cut to min(T, L) taps. Fits int32 (TensorRT passes INT fields as int32).
    int64_t truncation{MegaEmaContract::kDEFAULT_TRUNCATION};
};

//! Read and validate the fields (absent ones take the contract's defaults; unknown ones are logged and ignored).
MegaEmaAttributes parseMegaEmaAttributes(FieldReader const& fields);
//! Throws PluginError unless the attributes are valid (bidirectional 0/1 was checked while parsing).
void validateMegaEmaAttributes(MegaEmaAttributes const& attributes);

//! The problem's sizes. An extent of -1 is not known yet (TensorRT's build phase) and checks skip it.
struct MegaEmaShape
{
    int64_t batch{-1};
    int64_t length{-1};
    int64_t channels{-1};
    int64_t ndim{-1};
    bool hasPrevState{false};
};

//! Check the inputs' extents (5 inputs, or 6 with prev_state) against the contract; -1 extents are wildcards.
//! Throws PluginError naming the input and the rule, as the torch op does.
MegaEmaShape checkMegaEmaShapes(std::vector<std::vector<int64_t>> const& inputExtents,
    MegaEmaAttributes const& attributes);

//! Output extents: output (B, L, D) and final_state (B, D, N).
std::array<std::vector<int64_t>, 2> megaEmaOutputExtents(MegaEmaShape const& shape);

//! Whether the element type at `position` (inputs 0..nbInputs-1, then outputs) is supported, given x's type.
//! TensorRT has no fp64 tensors, so the plugin supports the contract's dtypes less float64.
bool megaEmaSupportsType(int32_t position, int32_t nbInputs, ElementType type, ElementType xType) noexcept;
//! Check a full set of input types (the torch binding's path; fp64 allowed there when x is fp64).
void checkMegaEmaTypes(std::vector<ElementType> const& inputTypes, bool allowFloat64);

//! Time steps per chunk of the parallel scan. Fixed, so the workspace is a monotone function of the shape.
constexpr int64_t kMEGA_EMA_CHUNK = 64;
//! d-lanes per thread block (one warp across channels: coalesced loads of x and stores of the output).
constexpr int32_t kMEGA_EMA_LANES = 32;

//! Everything the kernels need to know about the problem's decomposition. Plain data: passed by value to kernels.
struct MegaEmaGeometry
{
    int64_t batch;
    int64_t length;
    int64_t channels;
    int64_t ndim;
    int64_t rows;       //!< K: channels, or 2 * channels when bidirectional
    int32_t directions; //!< 1, or 2 when bidirectional
    int64_t chunks;     //!< ceil(length / kMEGA_EMA_CHUNK); 0 for an empty sequence
    int64_t truncation; //!< the effective truncation: 0 when the given one is 0 or >= length (the full kernel)
    bool useCarries;    //!< chunks > 1 or truncation > 0: phases A and B run and fill the workspace
    bool hasPrevState;
};

//! The geometry plus where its arrays sit in the workspace (byte offsets, 256-byte aligned).
struct MegaEmaScanLayout
{
    MegaEmaGeometry geometry;
    std::size_t accumulatorBytes; //!< 4 (fp32) or 8 (fp64 inputs, torch binding only)
    std::size_t carryOffset;      //!< [chunks][batch][rows][ndim]: chunk-local states, then incoming states
    std::size_t exactOffset;      //!< [chunks][batch][channels][ndim]: untruncated forward states (truncation > 0)
    std::size_t workspaceBytes;   //!< 0 when useCarries is false
};

//! The layout for a fully known shape (no -1). Throws PluginError if the problem exceeds the launch limits.
MegaEmaScanLayout megaEmaScanLayout(MegaEmaShape const& shape, MegaEmaAttributes const& attributes, ElementType xType);

//! Workspace bytes for a shape. Monotone in every extent, so the size at a profile's maximum dims covers every
//! smaller shape (TensorRT's getWorkspaceSize contract).
std::size_t megaEmaWorkspaceSize(MegaEmaShape const& shape, MegaEmaAttributes const& attributes, ElementType xType);

} // namespace tensorkiln::plugin
