/*
 * mraAttentionParams.cpp: MraAttention's attribute, shape and dtype rules (see mraAttentionParams.h), with the
 * messages of reference/ops/mra_attention.py's _check_inputs where the torch op has the same rule.
 */
#include "mraAttentionPlugin/mraAttentionParams.h"

#include "common/shapeRules.h"
#include "common/status.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

namespace tensorkiln::plugin
{
namespace
{

constexpr char const* kOWNER = "MraAttention";

uint32_t maskOf(ElementType type) noexcept
{
    return 1U << static_cast<uint32_t>(type);
}

int32_t checkedInt32(FieldReader const& fields, char const* name, int64_t fallback, bool required)
{
    int64_t const value = required ? fields.readInt(name) : fields.readInt(name, fallback);
    TK_CHECK(value >= std::numeric_limits<int32_t>::min() && value <= std::numeric_limits<int32_t>::max(),
        kOWNER << ": field '" << name << "' must fit in int32, got " << value);
    return static_cast<int32_t>(value);
}

} // namespace

MraApproxMode parseMraApproxMode(std::string_view text)
{
    if (text == "full")
    {
        return MraApproxMode::kFULL;
    }
    if (text == "sparse")
    {
        return MraApproxMode::kSPARSE;
    }
    throwPluginError(
        std::string(kOWNER) + ": field 'approx_mode' must be 'full' or 'sparse', got '" + std::string(text) + "'");
}

char const* mraApproxModeName(MraApproxMode mode) noexcept
{
    return mode == MraApproxMode::kSPARSE ? "sparse" : "full";
}

MraAttributes parseMraAttributes(FieldReader const& fields)
{
    MraAttributes attributes;
    attributes.numBlocks = checkedInt32(fields, MraContract::kATTR_NUM_BLOCKS, 0, true);
    attributes.scale = fields.readFloat(MraContract::kATTR_SCALE);
    attributes.approxMode
        = parseMraApproxMode(fields.readString(MraContract::kATTR_APPROX_MODE, MraContract::kDEFAULT_APPROX_MODE));
    attributes.priorFirstNBlocks = checkedInt32(fields, MraContract::kATTR_INITIAL_PRIOR_FIRST_N_BLOCKS,
        MraContract::kDEFAULT_INITIAL_PRIOR_FIRST_N_BLOCKS, false);
    attributes.priorDiagonalNBlocks = checkedInt32(fields, MraContract::kATTR_INITIAL_PRIOR_DIAGONAL_N_BLOCKS,
        MraContract::kDEFAULT_INITIAL_PRIOR_DIAGONAL_N_BLOCKS, false);
    validateMraAttributes(attributes);
    for (std::string const& name :
        fields.unknownNames({MraContract::kATTR_NUM_BLOCKS, MraContract::kATTR_SCALE, MraContract::kATTR_APPROX_MODE,
            MraContract::kATTR_INITIAL_PRIOR_FIRST_N_BLOCKS, MraContract::kATTR_INITIAL_PRIOR_DIAGONAL_N_BLOCKS}))
    {
        logWarning(kOWNER, "ignoring unknown field '" + name + "'");
    }
    return attributes;
}

void validateMraAttributes(MraAttributes const& attributes)
{
    TK_CHECK(
        attributes.numBlocks >= 1, kOWNER << ": field 'num_blocks' must be at least 1, got " << attributes.numBlocks);
    TK_CHECK(std::isfinite(attributes.scale) && attributes.scale > 0.0,
        kOWNER << ": field 'scale' must be positive and finite, got " << attributes.scale);
    TK_CHECK(attributes.approxMode == MraApproxMode::kFULL || attributes.approxMode == MraApproxMode::kSPARSE,
        kOWNER << ": field 'approx_mode' must be 'full' or 'sparse', got "
               << static_cast<int32_t>(attributes.approxMode));
    TK_CHECK(attributes.priorFirstNBlocks >= 0 && attributes.priorDiagonalNBlocks >= 0,
        kOWNER << ": fields 'initial_prior_first_n_blocks' and 'initial_prior_diagonal_n_blocks' must be >= 0, got "
               << attributes.priorFirstNBlocks << " and " << attributes.priorDiagonalNBlocks);
}

MraShape checkMraShapes(std::vector<std::vector<int64_t>> const& inputExtents)
{
    TK_CHECK(inputExtents.size() == static_cast<std::size_t>(MraContract::kNB_INPUTS),
        kOWNER << ": expects " << MraContract::kNB_INPUTS << " inputs, got " << inputExtents.size());
    for (std::size_t i = 0; i < inputExtents.size(); ++i)
    {
        auto const rank = static_cast<std::size_t>(MraContract::kINPUT_RANKS[i]);
        TK_CHECK(inputExtents[i].size() == rank, kOWNER << ": " << MraContract::kINPUT_NAMES[i] << " must have rank "
                                                        << rank << ", got shape " << extentsToString(inputExtents[i]));
    }
    MraShape shape;
    char const* const symbols[] = {"B", "H", "L", "D"};
    for (int32_t input : {MraContract::kIN_QUERY, MraContract::kIN_KEY, MraContract::kIN_VALUE})
    {
        std::vector<int64_t> const& extents = inputExtents[static_cast<std::size_t>(input)];
        char const* name = MraContract::kINPUT_NAMES[static_cast<std::size_t>(input)];
        int64_t* fields[] = {&shape.batch, &shape.heads, &shape.length, &shape.headDim};
        for (std::size_t axis = 0; axis < 4; ++axis)
        {
            unifyExtent(kOWNER, *fields[axis], extents[axis], symbols[axis], name, axis);
        }
    }
    std::vector<int64_t> const& mask = inputExtents[MraContract::kIN_ATTENTION_MASK];
    unifyExtent(kOWNER, shape.batch, mask[0], "B", "attention_mask", 0);
    unifyExtent(kOWNER, shape.length, mask[1], "L", "attention_mask", 1);

    TK_CHECK(shape.length < 0 || (shape.length >= 1 && shape.length <= kMRA_MAX_LENGTH),
        kOWNER << ": the sequence length L must be in [1, " << kMRA_MAX_LENGTH << "], got " << shape.length);
    TK_CHECK(shape.headDim < 0 || (shape.headDim >= 1 && shape.headDim <= kMRA_MAX_HEAD_DIM),
        kOWNER << ": the head dim D must be in [1, " << kMRA_MAX_HEAD_DIM << "], got " << shape.headDim);
    if (shape.batch >= 0 && shape.heads >= 0 && shape.length >= 0)
    {
        // Kernels index block rows (B * H * ceil(L / 32) of them) in one grid dimension.
        double const blockRows = static_cast<double>(shape.batch) * static_cast<double>(shape.heads)
                                 * static_cast<double>(mraNumBlockRows(shape.length));
        TK_CHECK(blockRows <= static_cast<double>(std::numeric_limits<int32_t>::max()),
            kOWNER << ": problem too large for one launch (B=" << shape.batch << " H=" << shape.heads
                   << " L=" << shape.length << ")");
    }
    return shape;
}

std::vector<int64_t> mraOutputExtents(MraShape const& shape)
{
    return {shape.batch, shape.heads, shape.length, shape.headDim};
}

bool mraSupportsType(int32_t position, ElementType type, ElementType queryType) noexcept
{
    int32_t const nbInputs = MraContract::kNB_INPUTS;
    if (type == ElementType::kFLOAT64 || position < 0 || position >= nbInputs + MraContract::kNB_OUTPUTS)
    {
        return false;
    }
    bool const isInput = position < nbInputs;
    auto const index = static_cast<std::size_t>(isInput ? position : position - nbInputs);
    uint32_t const allowed = isInput ? MraContract::kINPUT_DTYPES[index] : MraContract::kOUTPUT_DTYPES[index];
    int32_t const sameAs
        = isInput ? MraContract::kINPUT_SAME_DTYPE_AS[index] : MraContract::kOUTPUT_SAME_DTYPE_AS[index];
    if ((allowed & maskOf(type)) == 0)
    {
        return false;
    }
    // TensorRT asks position by position, so only query's type is known to later positions; every same_dtype_as
    // of the contract is query.
    return sameAs < 0 || (sameAs == MraContract::kIN_QUERY && type == queryType);
}

void checkMraTypes(std::vector<ElementType> const& inputTypes)
{
    TK_CHECK(inputTypes.size() == static_cast<std::size_t>(MraContract::kNB_INPUTS),
        kOWNER << ": expects " << MraContract::kNB_INPUTS << " input types, got " << inputTypes.size());
    ElementType const queryType = inputTypes[MraContract::kIN_QUERY];
    for (std::size_t i = 0; i < inputTypes.size(); ++i)
    {
        ElementType const type = inputTypes[i];
        TK_CHECK((MraContract::kINPUT_DTYPES[i] & maskOf(type)) != 0,
            kOWNER << ": " << MraContract::kINPUT_NAMES[i] << " may not be " << elementTypeName(type));
        int32_t const sameAs = MraContract::kINPUT_SAME_DTYPE_AS[i];
        TK_CHECK(sameAs < 0 || type == inputTypes[static_cast<std::size_t>(sameAs)],
            kOWNER << ": " << MraContract::kINPUT_NAMES[i] << " dtype " << elementTypeName(type)
                   << " must equal query dtype " << elementTypeName(queryType));
    }
}

} // namespace tensorkiln::plugin
