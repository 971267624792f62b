/*
 * mraAttentionParamsTest.cpp: MraAttention's host rules against the torch op's (reference/ops/mra_attention.py,
 * _check_inputs) and the node contract (common/nodeContract.h, generated from runtime/contract.py), and the exact
 * workspace layout of the kernels.
 */
#include "mraAttentionPlugin/mraAttentionParams.h"
#include "common/status.h"
#include "tests/testing.h"

#include <cmath>
#include <limits>

using namespace tensorkiln::plugin;

namespace
{

using Extents = std::vector<std::vector<int64_t>>;

Extents inputs(int64_t b, int64_t h, int64_t l, int64_t d)
{
    return Extents{{b, h, l, d}, {b, h, l, d}, {b, h, l, d}, {b, l}};
}

void quietLog()
{
    setLogSink([](LogSeverity, char const*) noexcept {});
}

} // namespace

TK_TEST(mraAttributesRequiredDefaultsAndUnknown)
{
    quietLog();
    int32_t const four = 4;
    float const scale = 0.125F;
    int32_t const extra = 1;
    MraAttributes const parsed = parseMraAttributes(FieldReader(
        "MraAttention", {{"num_blocks", FieldType::kINT32, &four, 1}, {"scale", FieldType::kFLOAT32, &scale, 1},
                            {"plugin_version", FieldType::kINT32, &extra, 1}}));
    TK_EXPECT_EQ(parsed.numBlocks, 4);
    TK_EXPECT_EQ(parsed.scale, 0.125);
    TK_EXPECT(parsed.approxMode == MraApproxMode::kFULL);
    TK_EXPECT_EQ(parsed.priorFirstNBlocks, 0);
    TK_EXPECT_EQ(parsed.priorDiagonalNBlocks, 0);

    int64_t const blocks64 = 64;
    double const scale64 = 0.17677669529663687;
    char const sparse[] = "sparse";
    int64_t const firstN = 2;
    int16_t const diagonalN = 3;
    MraAttributes const full = parseMraAttributes(FieldReader(
        "MraAttention", {{"num_blocks", FieldType::kINT64, &blocks64, 1}, {"scale", FieldType::kFLOAT64, &scale64, 1},
                            {"approx_mode", FieldType::kCHAR, sparse, static_cast<int32_t>(sizeof(sparse))},
                            {"initial_prior_first_n_blocks", FieldType::kINT64, &firstN, 1},
                            {"initial_prior_diagonal_n_blocks", FieldType::kINT16, &diagonalN, 1}}));
    TK_EXPECT_EQ(full.numBlocks, 64);
    TK_EXPECT_EQ(full.scale, scale64); // a double field keeps its double (the torch op's scale is a double)
    TK_EXPECT(full.approxMode == MraApproxMode::kSPARSE);
    TK_EXPECT_EQ(full.priorFirstNBlocks, 2);
    TK_EXPECT_EQ(full.priorDiagonalNBlocks, 3);
    setLogSink(nullptr);
}

TK_TEST(mraAttributesRejectWhatTheTorchOpRejects)
{
    int32_t const one = 1;
    int32_t const zero = 0;
    int32_t const negative = -1;
    int64_t const huge = int64_t{1} << 40;
    float const scale = 0.5F;
    float const zeroScale = 0.0F;
    float const negativeScale = -0.25F;
    float const nanScale = std::numeric_limits<float>::quiet_NaN();
    float const infScale = std::numeric_limits<float>::infinity();
    char const dense[] = "dense";
    auto const parse
        = [](std::vector<Field> fields) { return parseMraAttributes(FieldReader("MraAttention", fields)); };
    Field const numBlocks{"num_blocks", FieldType::kINT32, &one, 1};
    Field const goodScale{"scale", FieldType::kFLOAT32, &scale, 1};

    TK_EXPECT_THROWS(parse({goodScale}), "MraAttention: required field 'num_blocks' is missing");
    TK_EXPECT_THROWS(parse({numBlocks}), "MraAttention: required field 'scale' is missing");
    TK_EXPECT_THROWS(parse({{"num_blocks", FieldType::kINT32, &zero, 1}, goodScale}),
        "field 'num_blocks' must be at least 1, got 0");
    TK_EXPECT_THROWS(
        parse({{"num_blocks", FieldType::kINT64, &huge, 1}, goodScale}), "field 'num_blocks' must fit in int32");
    TK_EXPECT_THROWS(
        parse({numBlocks, {"scale", FieldType::kFLOAT32, &zeroScale, 1}}), "field 'scale' must be positive");
    TK_EXPECT_THROWS(
        parse({numBlocks, {"scale", FieldType::kFLOAT32, &negativeScale, 1}}), "field 'scale' must be positive");
    TK_EXPECT_THROWS(
        parse({numBlocks, {"scale", FieldType::kFLOAT32, &nanScale, 1}}), "field 'scale' must be positive");
    TK_EXPECT_THROWS(
        parse({numBlocks, {"scale", FieldType::kFLOAT32, &infScale, 1}}), "field 'scale' must be positive");
    TK_EXPECT_THROWS(parse({numBlocks, goodScale, {"approx_mode", FieldType::kCHAR, dense, 5}}),
        "field 'approx_mode' must be 'full' or 'sparse', got 'dense'");
    TK_EXPECT_THROWS(parse({numBlocks, goodScale, {"approx_mode", FieldType::kINT32, &one, 1}}),
        "field 'approx_mode' must be a string");
    TK_EXPECT_THROWS(parse({numBlocks, goodScale, {"initial_prior_first_n_blocks", FieldType::kINT32, &negative, 1}}),
        "'initial_prior_first_n_blocks' and 'initial_prior_diagonal_n_blocks' must be >= 0");
    TK_EXPECT_THROWS(
        parse({numBlocks, goodScale, {"initial_prior_diagonal_n_blocks", FieldType::kINT32, &negative, 1}}),
        "must be >= 0, got 0 and -1");
}

TK_TEST(mraApproxModeNamesRoundTrip)
{
    TK_EXPECT(parseMraApproxMode(mraApproxModeName(MraApproxMode::kFULL)) == MraApproxMode::kFULL);
    TK_EXPECT(parseMraApproxMode(mraApproxModeName(MraApproxMode::kSPARSE)) == MraApproxMode::kSPARSE);
    TK_EXPECT_THROWS(parseMraApproxMode("Full"), "must be 'full' or 'sparse'");
    TK_EXPECT_THROWS(parseMraApproxMode(""), "must be 'full' or 'sparse'");
}

TK_TEST(mraShapesFollowTheContract)
{
    MraShape const shape = checkMraShapes(inputs(2, 3, 100, 40));
    TK_EXPECT_EQ(shape.batch, 2);
    TK_EXPECT_EQ(shape.heads, 3);
    TK_EXPECT_EQ(shape.length, 100);
    TK_EXPECT_EQ(shape.headDim, 40);
    TK_EXPECT(mraOutputExtents(shape) == (std::vector<int64_t>{2, 3, 100, 40}));
    // Any L >= 1 (padded inside), any D in [1, 128].
    TK_EXPECT_EQ(checkMraShapes(inputs(1, 1, 1, 1)).length, 1);
    TK_EXPECT_EQ(checkMraShapes(inputs(1, 1, 8193, 128)).headDim, 128);
    TK_EXPECT_EQ(checkMraShapes(inputs(0, 2, 64, 16)).batch, 0);

    Extents badKey = inputs(2, 2, 48, 16);
    badKey[1] = {2, 2, 40, 16};
    TK_EXPECT_THROWS(checkMraShapes(badKey), "key has L = 40 on axis 2, but another input says L = 48");
    Extents badValue = inputs(2, 2, 48, 16);
    badValue[2] = {2, 2, 48, 32};
    TK_EXPECT_THROWS(checkMraShapes(badValue), "value has D = 32 on axis 3");
    Extents badMask = inputs(2, 2, 48, 16);
    badMask[3] = {2, 47};
    TK_EXPECT_THROWS(checkMraShapes(badMask), "attention_mask has L = 47 on axis 1");
    badMask[3] = {3, 48};
    TK_EXPECT_THROWS(checkMraShapes(badMask), "attention_mask has B = 3 on axis 0");
    Extents badRank = inputs(2, 2, 48, 16);
    badRank[0] = {2, 48, 16};
    TK_EXPECT_THROWS(checkMraShapes(badRank), "query must have rank 4, got shape (2, 48, 16)");
    badRank = inputs(2, 2, 48, 16);
    badRank[3] = {2, 1, 48};
    TK_EXPECT_THROWS(checkMraShapes(badRank), "attention_mask must have rank 2");
    TK_EXPECT_THROWS(checkMraShapes(Extents{{1, 1, 32, 8}}), "expects 4 inputs, got 1");
    TK_EXPECT_THROWS(checkMraShapes(inputs(1, 1, 64, 129)), "the head dim D must be in [1, 128], got 129");
    TK_EXPECT_THROWS(checkMraShapes(inputs(1, 1, 64, 0)), "the head dim D must be in [1, 128], got 0");
    TK_EXPECT_THROWS(checkMraShapes(inputs(1, 1, 0, 64)), "the sequence length L must be in [1, ");
    TK_EXPECT_THROWS(checkMraShapes(inputs(1, 1, kMRA_MAX_LENGTH + 1, 64)), "the sequence length L must be in");
    TK_EXPECT_THROWS(checkMraShapes(inputs(int64_t{1} << 20, 1024, 8192, 64)), "problem too large for one launch");
}

TK_TEST(mraShapesTakeUnknownExtents)
{
    // TensorRT's build phase: -1 for dynamic extents. Known ones still have to agree.
    Extents dynamic{{-1, 4, -1, 64}, {-1, 4, -1, 64}, {-1, -1, -1, -1}, {-1, -1}};
    MraShape const shape = checkMraShapes(dynamic);
    TK_EXPECT_EQ(shape.batch, -1);
    TK_EXPECT_EQ(shape.heads, 4);
    TK_EXPECT_EQ(shape.length, -1);
    TK_EXPECT_EQ(shape.headDim, 64);
    Extents fromMask{{-1, 4, -1, 64}, {-1, 4, -1, 64}, {-1, 4, -1, 64}, {3, 77}};
    TK_EXPECT_EQ(checkMraShapes(fromMask).length, 77);
    TK_EXPECT_EQ(checkMraShapes(fromMask).batch, 3);
    Extents conflict{{-1, 4, -1, 64}, {-1, 8, -1, 64}, {-1, 4, -1, 64}, {-1, -1}};
    TK_EXPECT_THROWS(checkMraShapes(conflict), "key has H = 8 on axis 1, but another input says H = 4");
}

TK_TEST(mraTypesFollowTheContract)
{
    ElementType const types[] = {ElementType::kFLOAT32, ElementType::kFLOAT16, ElementType::kBFLOAT16};
    for (ElementType const query : types)
    {
        TK_EXPECT(mraSupportsType(MraContract::kIN_QUERY, query, query));
        for (ElementType const other : types)
        {
            bool const same = other == query;
            TK_EXPECT_EQ(mraSupportsType(MraContract::kIN_KEY, other, query), same);
            TK_EXPECT_EQ(mraSupportsType(MraContract::kIN_VALUE, other, query), same);
            TK_EXPECT_EQ(mraSupportsType(MraContract::kNB_INPUTS + MraContract::kOUT_OUTPUT, other, query), same);
            // The mask has a floating type of its own.
            TK_EXPECT(mraSupportsType(MraContract::kIN_ATTENTION_MASK, other, query));
        }
    }
    // TensorRT has no fp64 tensors here, and there is no sixth position.
    TK_EXPECT(!mraSupportsType(MraContract::kIN_QUERY, ElementType::kFLOAT64, ElementType::kFLOAT64));
    TK_EXPECT(!mraSupportsType(MraContract::kIN_ATTENTION_MASK, ElementType::kFLOAT64, ElementType::kFLOAT32));
    TK_EXPECT(!mraSupportsType(5, ElementType::kFLOAT32, ElementType::kFLOAT32));
    TK_EXPECT(!mraSupportsType(-1, ElementType::kFLOAT32, ElementType::kFLOAT32));

    // The torch binding's full check: an fp64 mask is fine there (the op calls .float() on it), fp64 q/k/v are not.
    checkMraTypes({ElementType::kFLOAT16, ElementType::kFLOAT16, ElementType::kFLOAT16, ElementType::kFLOAT64});
    checkMraTypes({ElementType::kBFLOAT16, ElementType::kBFLOAT16, ElementType::kBFLOAT16, ElementType::kFLOAT32});
    TK_EXPECT_THROWS(
        checkMraTypes({ElementType::kFLOAT64, ElementType::kFLOAT64, ElementType::kFLOAT64, ElementType::kFLOAT32}),
        "query may not be float64");
    TK_EXPECT_THROWS(
        checkMraTypes({ElementType::kFLOAT32, ElementType::kFLOAT16, ElementType::kFLOAT32, ElementType::kFLOAT32}),
        "key dtype float16 must equal query dtype float32");
    TK_EXPECT_THROWS(checkMraTypes({ElementType::kFLOAT32}), "expects 4 input types, got 1");
}

TK_TEST(mraGeometryHelpers)
{
    TK_EXPECT_EQ(mraNumBlockRows(1), 1);
    TK_EXPECT_EQ(mraNumBlockRows(32), 1);
    TK_EXPECT_EQ(mraNumBlockRows(33), 2);
    TK_EXPECT_EQ(mraNumBlockRows(8192), 256);
    TK_EXPECT_EQ(mraPaddedHeadDim(1), 32);
    TK_EXPECT_EQ(mraPaddedHeadDim(32), 32);
    TK_EXPECT_EQ(mraPaddedHeadDim(33), 64);
    TK_EXPECT_EQ(mraPaddedHeadDim(100), 128);
    TK_EXPECT_EQ(mraPaddedHeadDim(128), 128);
    // The budget is clamped to the blocks that exist (HF's topk would fail instead).
    TK_EXPECT_EQ(mraClampedBudget(64, 100), 16);
    TK_EXPECT_EQ(mraClampedBudget(64, 512), 64);
    TK_EXPECT_EQ(mraClampedBudget(1, 1), 1);
}

TK_TEST(mraWorkspaceLayoutIsExact)
{
    // B=2, H=3, L=100, D=40, budget 5: BH=6, nb=4, Dp=64, K=5. Sizes before rounding up to 256 bytes: means
    // 6 * 4 * 64 floats = 6144 each, token counts 96, low logits 6 * 16 floats = 384, row maxima 96 each,
    // thresholds 24, selected 6 * 5 int32 = 120, row starts 6 * (4 + 1) int32 = 120.
    MraWorkspaceLayout const layout = mraWorkspaceLayout(2, 3, 100, 40, 5);
    TK_EXPECT_EQ(layout.queryMeans, 0U);
    TK_EXPECT_EQ(layout.keyMeans, 6144U);
    TK_EXPECT_EQ(layout.valueMeans, 12288U);
    TK_EXPECT_EQ(layout.tokenCounts, 18432U);
    TK_EXPECT_EQ(layout.lowLogits, 18688U);
    TK_EXPECT_EQ(layout.rankRowMax, 19200U);
    TK_EXPECT_EQ(layout.lowRowMax, 19456U);
    TK_EXPECT_EQ(layout.thresholds, 19712U);
    TK_EXPECT_EQ(layout.selected, 19968U);
    TK_EXPECT_EQ(layout.rowStarts, 20224U);
    TK_EXPECT_EQ(layout.totalBytes, 20480U);
    TK_EXPECT_EQ(mraWorkspaceBytes(2, 3, 100, 40, 5), 20480U);

    MraShape shape;
    shape.batch = 2;
    shape.heads = 3;
    shape.length = 100;
    shape.headDim = 40;
    MraAttributes attributes;
    attributes.numBlocks = 5;
    TK_EXPECT_EQ(mraWorkspaceBytes(shape, attributes), 20480U);

    // The budget beyond the blocks that exist costs nothing; nothing to compute needs nothing.
    TK_EXPECT_EQ(mraWorkspaceBytes(2, 3, 100, 40, 16), mraWorkspaceBytes(2, 3, 100, 40, 1000));
    TK_EXPECT_EQ(mraWorkspaceBytes(0, 3, 100, 40, 5), 0U);
    TK_EXPECT_EQ(mraWorkspaceBytes(2, 0, 100, 40, 5), 0U);

    // The largest sequence the brief names: L = 8192, nb^2 = 65536 candidates per (batch, head).
    MraWorkspaceLayout const large = mraWorkspaceLayout(1, 1, 8192, 64, 65536);
    TK_EXPECT_EQ(large.rankRowMax - large.lowLogits, size_t{65536} * 4);
    TK_EXPECT_EQ(large.rowStarts - large.selected, size_t{65536} * 4);
}

TK_TEST(mraWorkspaceIsMonotone)
{
    // TensorRT sizes the workspace at a profile's maximum dims; every smaller shape must fit in it.
    int64_t const lengths[] = {1, 31, 32, 33, 100, 512, 1000, 4096};
    int64_t const dims[] = {1, 16, 32, 33, 64, 100, 128};
    for (int64_t const l : lengths)
    {
        for (int64_t const d : dims)
        {
            size_t const here = mraWorkspaceBytes(2, 2, l, d, 64);
            TK_EXPECT(here <= mraWorkspaceBytes(2, 2, l + 1, d, 64));
            TK_EXPECT(here <= mraWorkspaceBytes(2, 2, l, d + 1 <= 128 ? d + 1 : d, 64));
            TK_EXPECT(here <= mraWorkspaceBytes(3, 2, l, d, 64));
            TK_EXPECT(here <= mraWorkspaceBytes(2, 3, l, d, 64));
            TK_EXPECT(here % MraWorkspaceLayout::kALIGNMENT == 0);
        }
    }
}
