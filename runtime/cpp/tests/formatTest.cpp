/*
 * formatTest.cpp: Python's repr() and str() as the messages need them; expected strings are what CPython 3.11
 * prints for repr(1e-05), repr("it's"), repr((4,)), str(PurePosixPath("a//./b/")), and so on.
 */
#include "pyFormat.h"
#include "testing.h"

TK_TEST(floatsAreWrittenAsPythonReprWritesThem)
{
    CHECK_EQ(tensorkiln::pyFloat(1e-05), std::string("1e-05"));
    CHECK_EQ(tensorkiln::pyFloat(0.1), std::string("0.1"));
    CHECK_EQ(tensorkiln::pyFloat(2.0), std::string("2.0"));
    CHECK_EQ(tensorkiln::pyFloat(1e16), std::string("1e+16"));
    CHECK_EQ(tensorkiln::pyFloat(123456789012345.0), std::string("123456789012345.0"));
    CHECK_EQ(tensorkiln::pyFloat(-0.5), std::string("-0.5"));
}

TK_TEST(stringsShapesAndPathsAreWrittenAsPythonWritesThem)
{
    CHECK_EQ(tensorkiln::pyRepr("x"), std::string("'x'"));
    CHECK_EQ(tensorkiln::pyRepr("it's"), std::string("\"it's\""));
    CHECK_EQ(tensorkiln::pyRepr("a\nb"), std::string("'a\\nb'"));
    CHECK_EQ(tensorkiln::pyShape({4}), std::string("(4,)"));
    CHECK_EQ(tensorkiln::pyShape({2, 3}), std::string("(2, 3)"));
    CHECK_EQ(tensorkiln::pyShape({}), std::string("()"));
    CHECK_EQ(tensorkiln::pyStringList({"a", "b"}), std::string("['a', 'b']"));
    CHECK_EQ(tensorkiln::pyPath("a//./b/"), std::string("a/b"));
    CHECK_EQ(tensorkiln::pyPath("./x"), std::string("x"));
}
