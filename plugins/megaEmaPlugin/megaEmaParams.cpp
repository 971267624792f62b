/*
 * megaEmaParams.cpp: MegaEma's attribute, shape, dtype and workspace rules (see megaEmaParams.h).
 */
#include "megaEmaPlugin/megaEmaParams.h"

#include "common/shapeRules.h"
#include "common/status.h"

#include <limits>
#include <sstream>
#include <string>

namespace tensorkiln::plugin
{
namespace
{

constexpr char const* kOWNER = MegaEmaContract::kOP_TYPE;

std::size_t alignUp(std::size_t bytes) noexcept
{
    constexpr std::size_t kALIGNMENT = 256;
    return (bytes + kALIGNMENT - 1) / kALIGNMENT * kALIGNMENT;
}

uint32_t maskOf(ElementType type) noexcept
{
    return 1U << static_cast<uint32_t>(type);
}

} // namespace

MegaEmaAttributes parseMegaEmaAttributes(FieldReader const& fields)
{
    MegaEmaAttributes attributes;
    int64_t const bidirectional
        = fields.readInt(MegaEmaContract::kATTR_BIDIRECTIONAL, MegaEmaContract::kDEFAULT_BIDIRECTIONAL);
    TK_CHECK(bidirectional == 0 || bidirectional == 1,
        kOWNER << ": field 'bidirectional' must be 0 or 1, got " << bidirectional);
    attributes.bidirectional = bidirectional == 1;
    attributes.truncation = fields.readInt(MegaEmaContract::kATTR_TRUNCATION, MegaEmaContract::kDEFAULT_TRUNCATION);
    validateMegaEmaAttributes(attributes);
    for (std::string const& name :
        fields.unknownNames({MegaEmaContract::kATTR_BIDIRECTIONAL, MegaEmaContract::kATTR_TRUNCATION}))
    {
        logWarning(kOWNER, "ignoring unknown field '" + name + "'");
    }
    return attributes;
}

void validateMegaEmaAttributes(MegaEmaAttributes const& attributes)
{
    TK_CHECK(attributes.truncation >= 0,
        kOWNER << ": field 'truncation' must be 0 (none) or positive, got " << attributes.truncation);
    TK_CHECK(attributes.truncation <= std::numeric_limits<int32_t>::max(),
        kOWNER << ": field 'truncation' must fit in int32, got " << attributes.truncation);
}

MegaEmaShape checkMegaEmaShapes(
    std::vector<std::vector<int64_t>> const& inputExtents, MegaEmaAttributes const& attributes)
{
    std::size_t const nbInputs = inputExtents.size();
    TK_CHECK(nbInputs == MegaEmaContract::kNB_REQUIRED_INPUTS || nbInputs == MegaEmaContract::kNB_INPUTS,
        kOWNER << ": expects " << MegaEmaContract::kNB_REQUIRED_INPUTS << " inputs (or " << MegaEmaContract::kNB_INPUTS
               << " with prev_state), got " << nbInputs);
    for (std::size_t i = 0; i < nbInputs; ++i)
    {
        auto const rank = static_cast<std::size_t>(MegaEmaContract::kINPUT_RANKS[i]);
        TK_CHECK(inputExtents[i].size() == rank, kOWNER << ": " << MegaEmaContract::kINPUT_NAMES[i]
                                                        << " must have rank " << rank << ", got shape "
                                                        << extentsToString(inputExtents[i]));
    }

    MegaEmaShape shape;
    std::vector<int64_t> const& x = inputExtents[MegaEmaContract::kIN_X];
    shape.batch = x[0];
    shape.length = x[1];
    shape.channels = x[2];

    // The four parameter tensors: (K, N, 1) x3 and (K, N).
    int64_t rows = -1;
    for (int32_t input : {MegaEmaContract::kIN_DAMPING_FACTOR, MegaEmaContract::kIN_DECAY_FACTOR,
             MegaEmaContract::kIN_EMA_EXPANSION_MATRIX, MegaEmaContract::kIN_KERNEL_PROJECTION_MATRIX})
    {
        std::vector<int64_t> const& extents = inputExtents[static_cast<std::size_t>(input)];
        char const* name = MegaEmaContract::kINPUT_NAMES[static_cast<std::size_t>(input)];
        unifyExtent(kOWNER, rows, extents[0], "K", name, 0);
        unifyExtent(kOWNER, shape.ndim, extents[1], "N", name, 1);
        if (extents.size() == 3)
        {
            TK_CHECK(extents[2] < 0 || extents[2] == 1,
                kOWNER << ": " << name << " must be (K, N, 1), got " << extentsToString(extents));
        }
    }
    TK_CHECK(shape.ndim < 0 || shape.ndim >= 1, kOWNER << ": the EMA needs N >= 1 dimensions, got N = " << shape.ndim);
    if (rows >= 0 && shape.channels >= 0)
    {
        int64_t const expected = attributes.bidirectional ? 2 * shape.channels : shape.channels;
        TK_CHECK(rows == expected,
            kOWNER << ": the parameters have K=" << rows << " rows but x has D=" << shape.channels << " channels ("
                   << (attributes.bidirectional ? "bidirectional: K = 2 * D" : "unidirectional: K = D") << " = "
                   << expected << "); check the bidirectional field");
    }
    if (rows >= 0 && attributes.bidirectional)
    {
        TK_CHECK(rows % 2 == 0, kOWNER << ": bidirectional needs an even number of parameter rows, got K=" << rows);
    }

    shape.hasPrevState = nbInputs == MegaEmaContract::kNB_INPUTS;
    if (shape.hasPrevState)
    {
        TK_CHECK(!attributes.bidirectional,
            kOWNER << ": prev_state is only defined for a unidirectional EMA (bidirectional=0)");
        TK_CHECK(attributes.truncation == 0,
            kOWNER << ": prev_state needs truncation=0: a truncated kernel has no recurrent state");
        std::vector<int64_t> const& prev = inputExtents[MegaEmaContract::kIN_PREV_STATE];
        unifyExtent(kOWNER, shape.batch, prev[0], "B", "prev_state", 0);
        unifyExtent(kOWNER, shape.channels, prev[1], "D", "prev_state", 1);
        unifyExtent(kOWNER, shape.ndim, prev[2], "N", "prev_state", 2);
    }
    return shape;
}

std::array<std::vector<int64_t>, 2> megaEmaOutputExtents(MegaEmaShape const& shape)
{
    return {std::vector<int64_t>{shape.batch, shape.length, shape.channels},
        std::vector<int64_t>{shape.batch, shape.channels, shape.ndim}};
}

bool megaEmaSupportsType(int32_t position, int32_t nbInputs, ElementType type, ElementType xType) noexcept
{
    if (type == ElementType::kFLOAT64 || position < 0 || position >= nbInputs + MegaEmaContract::kNB_OUTPUTS)
    {
        return false;
    }
    bool const isInput = position < nbInputs;
    auto const index = static_cast<std::size_t>(isInput ? position : position - nbInputs);
    uint32_t const allowed = isInput ? MegaEmaContract::kINPUT_DTYPES[index] : MegaEmaContract::kOUTPUT_DTYPES[index];
    int32_t const sameAs
        = isInput ? MegaEmaContract::kINPUT_SAME_DTYPE_AS[index] : MegaEmaContract::kOUTPUT_SAME_DTYPE_AS[index];
    if ((allowed & maskOf(type)) == 0)
    {
        return false;
    }
    // Only x's type is known to every later position (TensorRT asks in order); every same_dtype_as is x.
    return sameAs < 0 || (sameAs == MegaEmaContract::kIN_X && type == xType);
}

void checkMegaEmaTypes(std::vector<ElementType> const& inputTypes, bool allowFloat64)
{
    TK_CHECK(
        inputTypes.size() == MegaEmaContract::kNB_REQUIRED_INPUTS || inputTypes.size() == MegaEmaContract::kNB_INPUTS,
        kOWNER << ": expects 5 or 6 input types, got " << inputTypes.size());
    ElementType const xType = inputTypes[MegaEmaContract::kIN_X];
    for (std::size_t i = 0; i < inputTypes.size(); ++i)
    {
        ElementType const type = inputTypes[i];
        bool allowed = (MegaEmaContract::kINPUT_DTYPES[i] & maskOf(type)) != 0;
        // The ops compute fp64 inputs in fp64; the contract (an ONNX/TensorRT contract) has no fp64 x.
        allowed = allowed || (allowFloat64 && type == ElementType::kFLOAT64);
        TK_CHECK(
            allowed, kOWNER << ": " << MegaEmaContract::kINPUT_NAMES[i] << " may not be " << elementTypeName(type));
        int32_t const sameAs = MegaEmaContract::kINPUT_SAME_DTYPE_AS[i];
        TK_CHECK(sameAs < 0 || type == inputTypes[static_cast<std::size_t>(sameAs)],
            kOWNER << ": " << MegaEmaContract::kINPUT_NAMES[i] << " must have x's dtype " << elementTypeName(xType)
                   << ", got " << elementTypeName(type));
    }
}

MegaEmaScanLayout megaEmaScanLayout(MegaEmaShape const& shape, MegaEmaAttributes const& attributes, ElementType xType)
{
    validateMegaEmaAttributes(attributes);
    TK_CHECK(shape.batch >= 0 && shape.length >= 0 && shape.channels >= 0 && shape.ndim >= 1,
        kOWNER << ": the scan needs a fully known shape, got B=" << shape.batch << " L=" << shape.length
               << " D=" << shape.channels << " N=" << shape.ndim);
    TK_CHECK(!(shape.hasPrevState && (attributes.bidirectional || attributes.truncation != 0)),
        kOWNER << ": prev_state needs bidirectional=0 and truncation=0");

    MegaEmaScanLayout layout{};
    MegaEmaGeometry& g = layout.geometry;
    g.batch = shape.batch;
    g.length = shape.length;
    g.channels = shape.channels;
    g.ndim = shape.ndim;
    g.directions = attributes.bidirectional ? 2 : 1;
    g.rows = g.directions * shape.channels;
    g.chunks = (shape.length + kMEGA_EMA_CHUNK - 1) / kMEGA_EMA_CHUNK;
    g.truncation = (attributes.truncation > 0 && attributes.truncation < shape.length) ? attributes.truncation : 0;
    g.useCarries = g.chunks > 1 || g.truncation > 0;
    g.hasPrevState = shape.hasPrevState;

    // Launch limits: blocks over (batch, channel tiles, chunks) in grid.x; channel tiles x chunks x batch < 2^31.
    int64_t const channelTiles = (shape.channels + kMEGA_EMA_LANES - 1) / kMEGA_EMA_LANES;
    double const blocks
        = static_cast<double>(channelTiles) * static_cast<double>(g.chunks) * static_cast<double>(g.batch);
    TK_CHECK(blocks < 2147483647.0, kOWNER << ": problem too large for one launch (B=" << g.batch << " L=" << g.length
                                           << " D=" << g.channels << ")");

    layout.accumulatorBytes = xType == ElementType::kFLOAT64 ? 8 : 4;
    if (g.useCarries)
    {
        auto const states = static_cast<std::size_t>(g.chunks) * static_cast<std::size_t>(g.batch)
                            * static_cast<std::size_t>(g.ndim) * layout.accumulatorBytes;
        layout.carryOffset = 0;
        std::size_t const carryBytes = alignUp(states * static_cast<std::size_t>(g.rows));
        layout.exactOffset = carryBytes;
        std::size_t const exactBytes = g.truncation > 0 ? alignUp(states * static_cast<std::size_t>(g.channels)) : 0;
        layout.workspaceBytes = carryBytes + exactBytes;
    }
    return layout;
}

std::size_t megaEmaWorkspaceSize(MegaEmaShape const& shape, MegaEmaAttributes const& attributes, ElementType xType)
{
    return megaEmaScanLayout(shape, attributes, xType).workspaceBytes;
}

} // namespace tensorkiln::plugin
