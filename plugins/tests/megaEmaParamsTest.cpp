/*
 * megaEmaParamsTest.cpp: MegaEma's host rules against the torch op's (reference/ops/mega_ema.py, _check) and the
 * node contract (common/nodeContract.h, generated from runtime/contract.py).
 */
#include "common/status.h"
#include "megaEmaPlugin/megaEmaParams.h"
#include "tests/testing.h"

#include <random>

using namespace tensorkiln::plugin;

namespace
{

using Extents = std::vector<std::vector<int64_t>>;

Extents inputs(int64_t b, int64_t l, int64_t d, int64_t n, bool bidirectional, bool prev = false)
{
    int64_t const k = bidirectional ? 2 * d : d;
    Extents extents{{b, l, d}, {k, n, 1}, {k, n, 1}, {k, n, 1}, {k, n}};
    if (prev)
    {
        extents.push_back({b, d, n});
    }
    return extents;
}

MegaEmaAttributes attrs(bool bidirectional, int64_t truncation = 0)
{
    MegaEmaAttributes a;
    a.bidirectional = bidirectional;
    a.truncation = truncation;
    return a;
}

} // namespace

TK_TEST(megaEmaAttributesDefaultsAndValidation)
{
    setLogSink([](LogSeverity, char const*) noexcept {});
    MegaEmaAttributes const defaults = parseMegaEmaAttributes(FieldReader("MegaEma", {}));
    TK_EXPECT(!defaults.bidirectional);
    TK_EXPECT_EQ(defaults.truncation, 0);

    int32_t const one = 1;
    int64_t const five = 5;
    int32_t const extra = 3;
    MegaEmaAttributes const parsed = parseMegaEmaAttributes(FieldReader("MegaEma",
        {{"bidirectional", FieldType::kINT32, &one, 1}, {"truncation", FieldType::kINT64, &five, 1},
            {"plugin_version", FieldType::kINT32, &extra, 1}}));
    TK_EXPECT(parsed.bidirectional);
    TK_EXPECT_EQ(parsed.truncation, 5);

    int32_t const two = 2;
    int32_t const negative = -1;
    int64_t const huge = int64_t{1} << 40;
    TK_EXPECT_THROWS(parseMegaEmaAttributes(FieldReader("MegaEma", {{"bidirectional", FieldType::kINT32, &two, 1}})),
        "field 'bidirectional' must be 0 or 1, got 2");
    TK_EXPECT_THROWS(
        parseMegaEmaAttributes(FieldReader("MegaEma", {{"truncation", FieldType::kINT32, &negative, 1}})),
        "'truncation' must be 0 (none) or positive, got -1");
    TK_EXPECT_THROWS(parseMegaEmaAttributes(FieldReader("MegaEma", {{"truncation", FieldType::kINT64, &huge, 1}})),
        "must fit in int32");
    float const asFloat = 1.0F;
    TK_EXPECT_THROWS(
        parseMegaEmaAttributes(FieldReader("MegaEma", {{"bidirectional", FieldType::kFLOAT32, &asFloat, 1}})),
        "'bidirectional' must be an integer");
    setLogSink(nullptr);
}

TK_TEST(megaEmaShapesAcceptTheContract)
{
    MegaEmaShape const uni = checkMegaEmaShapes(inputs(2, 7, 3, 4, false), attrs(false));
    TK_EXPECT(uni.batch == 2 && uni.length == 7 && uni.channels == 3 && uni.ndim == 4 && !uni.hasPrevState);
    MegaEmaShape const bi = checkMegaEmaShapes(inputs(2, 7, 3, 4, true), attrs(true, 5));
    TK_EXPECT(bi.channels == 3 && bi.ndim == 4);
    MegaEmaShape const prev = checkMegaEmaShapes(inputs(2, 7, 3, 4, false, true), attrs(false));
    TK_EXPECT(prev.hasPrevState);
    // Build time: unknown (-1) batch and length are wildcards.
    MegaEmaShape const dynamic = checkMegaEmaShapes(inputs(-1, -1, 3, 4, false, true), attrs(false));
    TK_EXPECT(dynamic.batch == -1 && dynamic.length == -1 && dynamic.channels == 3);

    std::array<std::vector<int64_t>, 2> const outputs = megaEmaOutputExtents(uni);
    TK_EXPECT(outputs[0] == (std::vector<int64_t>{2, 7, 3}));
    TK_EXPECT(outputs[1] == (std::vector<int64_t>{2, 3, 4}));
}

TK_TEST(megaEmaShapesRejectWhatTheOpRejects)
{
    TK_EXPECT_THROWS(checkMegaEmaShapes(inputs(2, 7, 3, 4, true), attrs(false)),
        "K=6 rows but x has D=3 channels (unidirectional: K = D = 3); check the bidirectional field");
    TK_EXPECT_THROWS(checkMegaEmaShapes(inputs(2, 7, 3, 4, false), attrs(true)), "bidirectional: K = 2 * D = 6");
    Extents wrongRank = inputs(2, 7, 3, 4, false);
    wrongRank[0] = {2, 7};
    TK_EXPECT_THROWS(checkMegaEmaShapes(wrongRank, attrs(false)), "x must have rank 3, got shape (2, 7)");
    Extents wrongN = inputs(2, 7, 3, 4, false);
    wrongN[4] = {3, 5};
    TK_EXPECT_THROWS(checkMegaEmaShapes(wrongN, attrs(false)), "kernel_projection_matrix has N = 5 on axis 1");
    Extents notOne = inputs(2, 7, 3, 4, false);
    notOne[2] = {3, 4, 2};
    TK_EXPECT_THROWS(checkMegaEmaShapes(notOne, attrs(false)), "decay_factor must be (K, N, 1), got (3, 4, 2)");
    TK_EXPECT_THROWS(checkMegaEmaShapes(inputs(2, 7, 3, 4, true, true), attrs(true)),
        "prev_state is only defined for a unidirectional EMA");
    TK_EXPECT_THROWS(checkMegaEmaShapes(inputs(2, 7, 3, 4, false, true), attrs(false, 3)),
        "prev_state needs truncation=0");
    Extents wrongPrev = inputs(2, 7, 3, 4, false, true);
    wrongPrev[5] = {2, 3, 5};
    TK_EXPECT_THROWS(checkMegaEmaShapes(wrongPrev, attrs(false)), "prev_state has N = 5");
    Extents tooFew = inputs(2, 7, 3, 4, false);
    tooFew.pop_back();
    TK_EXPECT_THROWS(checkMegaEmaShapes(tooFew, attrs(false)), "expects 5 inputs (or 6 with prev_state), got 4");
    TK_EXPECT_THROWS(checkMegaEmaShapes(inputs(2, 7, 3, 0, false), attrs(false)), "N >= 1");
}

TK_TEST(megaEmaTypesFollowTheContract)
{
    using E = ElementType;
    for (E x : {E::kFLOAT32, E::kFLOAT16, E::kBFLOAT16})
    {
        TK_EXPECT(megaEmaSupportsType(0, 6, x, x));
        for (int32_t param = 1; param <= 4; ++param)
        {
            // Parameters are free of x's dtype (fp64 excepted: TensorRT has no fp64 tensors).
            TK_EXPECT(megaEmaSupportsType(param, 6, E::kFLOAT32, x));
            TK_EXPECT(megaEmaSupportsType(param, 6, E::kBFLOAT16, x));
            TK_EXPECT(!megaEmaSupportsType(param, 6, E::kFLOAT64, x));
        }
        for (E other : {E::kFLOAT32, E::kFLOAT16, E::kBFLOAT16})
        {
            bool const same = other == x;
            TK_EXPECT_EQ(megaEmaSupportsType(5, 6, other, x), same); // prev_state
            TK_EXPECT_EQ(megaEmaSupportsType(6, 6, other, x), same); // output
            TK_EXPECT_EQ(megaEmaSupportsType(7, 6, other, x), same); // final_state
            TK_EXPECT_EQ(megaEmaSupportsType(5, 5, other, x), same); // output, without prev_state
        }
    }
    TK_EXPECT(!megaEmaSupportsType(0, 5, E::kFLOAT64, E::kFLOAT64));
    TK_EXPECT(!megaEmaSupportsType(8, 6, E::kFLOAT32, E::kFLOAT32));

    checkMegaEmaTypes({E::kFLOAT16, E::kFLOAT32, E::kFLOAT32, E::kFLOAT16, E::kBFLOAT16, E::kFLOAT16}, false);
    checkMegaEmaTypes({E::kFLOAT64, E::kFLOAT64, E::kFLOAT64, E::kFLOAT64, E::kFLOAT64}, true);
    TK_EXPECT_THROWS(checkMegaEmaTypes({E::kFLOAT64, E::kFLOAT32, E::kFLOAT32, E::kFLOAT32, E::kFLOAT32}, false),
        "x may not be float64");
    TK_EXPECT_THROWS(
        checkMegaEmaTypes({E::kFLOAT16, E::kFLOAT32, E::kFLOAT32, E::kFLOAT32, E::kFLOAT32, E::kFLOAT32}, false),
        "prev_state must have x's dtype float16, got float32");
}

TK_TEST(megaEmaLayoutAndWorkspace)
{
    using E = ElementType;
    MegaEmaShape shape{2, 64, 3, 4, false};
    MegaEmaScanLayout layout = megaEmaScanLayout(shape, attrs(false), E::kFLOAT16);
    TK_EXPECT(layout.geometry.chunks == 1 && !layout.geometry.useCarries && layout.workspaceBytes == 0);

    shape.length = 65;
    layout = megaEmaScanLayout(shape, attrs(false), E::kFLOAT32);
    TK_EXPECT(layout.geometry.chunks == 2 && layout.geometry.useCarries);
    TK_EXPECT_EQ(layout.workspaceBytes, std::size_t{256}); // 2*2*3*4 floats = 192 B, aligned to 256

    shape = MegaEmaShape{4, 1000, 48, 16, false};
    layout = megaEmaScanLayout(shape, attrs(true, 10), E::kBFLOAT16);
    TK_EXPECT(layout.geometry.rows == 96 && layout.geometry.directions == 2 && layout.geometry.truncation == 10);
    std::size_t const chunkStates = 16 * 4 * 16 * 4; // chunks * B * N * 4 bytes
    TK_EXPECT_EQ(layout.exactOffset, chunkStates * 96);
    TK_EXPECT_EQ(layout.workspaceBytes, chunkStates * 96 + chunkStates * 48);
    TK_EXPECT_EQ(megaEmaScanLayout(shape, attrs(true, 10), E::kFLOAT64).workspaceBytes, 2 * layout.workspaceBytes);

    // Truncation at or beyond L is the full kernel.
    shape = MegaEmaShape{1, 50, 8, 4, false};
    TK_EXPECT_EQ(megaEmaScanLayout(shape, attrs(false, 50), E::kFLOAT32).geometry.truncation, 0);
    TK_EXPECT_EQ(megaEmaScanLayout(shape, attrs(false, 49), E::kFLOAT32).geometry.truncation, 49);
    TK_EXPECT_EQ(megaEmaWorkspaceSize(shape, attrs(false, 50), E::kFLOAT32), std::size_t{0});

    shape = MegaEmaShape{1, 0, 8, 4, true};
    layout = megaEmaScanLayout(shape, attrs(false), E::kFLOAT32);
    TK_EXPECT(layout.geometry.chunks == 0 && !layout.geometry.useCarries && layout.workspaceBytes == 0);
    TK_EXPECT_THROWS(megaEmaScanLayout(MegaEmaShape{-1, 5, 8, 4, false}, attrs(false), E::kFLOAT32),
        "fully known shape");
}

TK_TEST(megaEmaWorkspaceIsMonotone)
{
    // getWorkspaceSize() sees a profile's maximum dims: the size there must cover every smaller shape.
    std::mt19937 random(7);
    std::uniform_int_distribution<int64_t> extent(0, 300);
    for (int trial = 0; trial < 2000; ++trial)
    {
        MegaEmaShape small{extent(random) % 5, extent(random), extent(random) % 40, 1 + extent(random) % 20, false};
        MegaEmaShape large = small;
        large.batch += extent(random) % 3;
        large.length += extent(random);
        large.channels += extent(random) % 7;
        large.ndim += extent(random) % 5;
        for (bool bidirectional : {false, true})
        {
            for (int64_t truncation : {int64_t{0}, int64_t{1}, int64_t{70}, int64_t{200}})
            {
                MegaEmaAttributes const a = attrs(bidirectional, truncation);
                TK_EXPECT(megaEmaWorkspaceSize(small, a, ElementType::kFLOAT32)
                    <= megaEmaWorkspaceSize(large, a, ElementType::kFLOAT32));
            }
        }
    }
}
