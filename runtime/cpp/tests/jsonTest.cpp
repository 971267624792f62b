/*
 * jsonTest.cpp: JSON read as runtime/jsonfile.py reads it: malformed text, NaN and non-objects are errors of the
 * caller's kind naming the file; nesting deeper than Python's parser takes is refused; object order is kept.
 */
#include "jsonFile.h"
#include "manifest.h"
#include "testing.h"

#include <cstdio>
#include <fstream>

using tensorkiln::ErrorKind;

TK_TEST(jsonParsingKeepsOrderAndRefusesWhatPythonRefuses)
{
    tensorkiln::Json const data = tensorkiln::parseJsonText(R"({"b": 1, "a": [true, null]})", "'x.json'",
        ErrorKind::kMANIFEST);
    CHECK_EQ(data.begin().key(), std::string("b"));
    CHECK_THROWS_KIND(tensorkiln::parseJsonText("{bad", "'x.json'", ErrorKind::kMANIFEST), ErrorKind::kMANIFEST,
        "x.json");
    CHECK_THROWS_KIND(tensorkiln::parseJsonText("{\"a\": NaN}", "'x.json'", ErrorKind::kUSAGE), ErrorKind::kUSAGE, "");
    std::string const deep = std::string(2000, '[') + std::string(2000, ']');
    CHECK_THROWS_KIND(tensorkiln::parseJsonText(deep, "'x.json'", ErrorKind::kMANIFEST), ErrorKind::kMANIFEST, "");
}

TK_TEST(jsonKindsAndReprsArePythons)
{
    using tensorkiln::Json;
    CHECK_EQ(tensorkiln::jsonKind(Json(5)), std::string("a number (5)"));
    CHECK_EQ(tensorkiln::jsonKind(Json("x")), std::string("a string ('x')"));
    CHECK_EQ(tensorkiln::jsonRepr(Json::parse(R"({"a": [1, true, null]})")), std::string("{'a': [1, True, None]}"));
    CHECK(tensorkiln::isJsonInteger(Json(3)) && !tensorkiln::isJsonInteger(Json(3.0)));
}

TK_TEST(readJsonObjectRefusesNonObjects)
{
    std::string const path = "tk_json_test.json";
    std::ofstream(path) << "[1, 2]";
    CHECK_THROWS_KIND(tensorkiln::readJsonObject(path, ErrorKind::kMANIFEST, "the export's config"),
        ErrorKind::kMANIFEST, "tk_json_test.json");
    std::remove(path.c_str());
}

TK_TEST(manifestKeysOfTheWrongTypeAreNamed)
{
    tensorkiln::Json const data = tensorkiln::parseJsonText(R"({"format_version": "2"})", "'m.json'",
        ErrorKind::kMANIFEST);
    CHECK_THROWS_KIND(tensorkiln::manifestFromJson(data, "'m.json'"), ErrorKind::kMANIFEST, "format_version");
}
