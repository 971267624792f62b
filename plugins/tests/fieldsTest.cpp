/*
 * fieldsTest.cpp: FieldReader, the by-name attribute access every plugin's createPlugin() goes through.
 */
#include "common/fields.h"
#include "common/status.h"
#include "tests/testing.h"

#include <cstring>

using tensorkiln::plugin::Field;
using tensorkiln::plugin::FieldReader;
using tensorkiln::plugin::FieldType;

TK_TEST(fieldsReadEveryIntegerWidth)
{
    int8_t const i8 = -3;
    int16_t const i16 = 300;
    int32_t const i32 = -70000;
    int64_t const i64 = int64_t{1} << 40;
    FieldReader reader("Test", {{"a", FieldType::kINT8, &i8, 1}, {"b", FieldType::kINT16, &i16, 1},
        {"c", FieldType::kINT32, &i32, 1}, {"d", FieldType::kINT64, &i64, 1}});
    TK_EXPECT_EQ(reader.readInt("a"), -3);
    TK_EXPECT_EQ(reader.readInt("b"), 300);
    TK_EXPECT_EQ(reader.readInt("c"), -70000);
    TK_EXPECT_EQ(reader.readInt("d"), int64_t{1} << 40);
    TK_EXPECT_EQ(reader.readInt("missing", 7), 7);
}

TK_TEST(fieldsReadEveryFloatWidth)
{
    uint16_t const half = 0x3C00;    // 1.0
    uint16_t const halfSub = 0x0001; // 2^-24
    uint16_t const bf16 = 0xC040;    // -3.0
    float const f32 = 0.125F;
    double const f64 = -2.5;
    int32_t const asInt = 4;
    FieldReader reader("Test", {{"h", FieldType::kFLOAT16, &half, 1}, {"s", FieldType::kFLOAT16, &halfSub, 1},
        {"b", FieldType::kBFLOAT16, &bf16, 1}, {"f", FieldType::kFLOAT32, &f32, 1},
        {"d", FieldType::kFLOAT64, &f64, 1}, {"i", FieldType::kINT32, &asInt, 1}});
    TK_EXPECT_EQ(reader.readFloat("h"), 1.0);
    TK_EXPECT_EQ(reader.readFloat("s"), 5.9604644775390625e-08);
    TK_EXPECT_EQ(reader.readFloat("b"), -3.0);
    TK_EXPECT_EQ(reader.readFloat("f"), 0.125);
    TK_EXPECT_EQ(reader.readFloat("d"), -2.5);
    TK_EXPECT_EQ(reader.readFloat("i"), 4.0);
    TK_EXPECT_EQ(reader.readFloat("missing", 0.5), 0.5);
}

TK_TEST(fieldsReadStringsWithAndWithoutNul)
{
    char const withNul[] = "full";
    char const withoutNul[] = {'s', 'p', 'a', 'r', 's', 'e'};
    FieldReader reader("Test", {{"a", FieldType::kCHAR, withNul, static_cast<int32_t>(sizeof(withNul))},
        {"b", FieldType::kCHAR, withoutNul, static_cast<int32_t>(sizeof(withoutNul))}});
    TK_EXPECT_EQ(reader.readString("a"), std::string("full"));
    TK_EXPECT_EQ(reader.readString("b"), std::string("sparse"));
    TK_EXPECT_EQ(reader.readString("c", "x"), std::string("x"));
}

TK_TEST(fieldsErrorsNameThePluginAndTheField)
{
    int32_t const one = 1;
    int32_t const pair[] = {1, 2};
    float const f = 1.5F;
    FieldReader reader("MegaEma", {{"int", FieldType::kINT32, &one, 1}, {"pair", FieldType::kINT32, pair, 2},
        {"float", FieldType::kFLOAT32, &f, 1}, {"empty", FieldType::kINT32, nullptr, 0}});
    TK_EXPECT_THROWS(reader.readInt("absent"), "MegaEma: required field 'absent' is missing");
    TK_EXPECT_THROWS(reader.readInt("pair"), "field 'pair' must be a scalar, got 2 values");
    TK_EXPECT_THROWS(reader.readInt("float"), "field 'float' must be an integer, got float32");
    TK_EXPECT_THROWS(reader.readString("int"), "field 'int' must be a string, got int32");
    TK_EXPECT_THROWS(reader.readInt("empty"), "field 'empty' has no value");
    TK_EXPECT_THROWS(FieldReader("X", {{"a", FieldType::kINT32, &one, 1}, {"a", FieldType::kINT32, &one, 1}}),
        "X: field 'a' is given twice");
}

TK_TEST(fieldsListUnknownNames)
{
    int32_t const one = 1;
    FieldReader reader("Test", {{"known", FieldType::kINT32, &one, 1}, {"extra", FieldType::kINT32, &one, 1}});
    std::vector<std::string> const unknown = reader.unknownNames({"known"});
    TK_EXPECT(unknown.size() == 1 && unknown[0] == "extra");
}

TK_TEST(guardedTurnsExceptionsIntoStatus)
{
    using namespace tensorkiln::plugin;
    setLogSink([](LogSeverity, char const*) noexcept {});
    TK_EXPECT_EQ(guardedStatus("t", [] { TK_CHECK(false, "boom " << 1); }), kSTATUS_FAILURE);
    TK_EXPECT_EQ(guardedStatus("t", [] { throw 42; }), kSTATUS_FAILURE);
    TK_EXPECT_EQ(guardedStatus("t", [] {}), kSTATUS_SUCCESS);
    TK_EXPECT_EQ(guarded("t", -1, [] { return 5; }), 5);
    setLogSink(nullptr);
}
