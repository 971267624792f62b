/*
 * testing.h: the smallest test harness (no third-party framework to fetch): TK_TEST registers a function, CHECK
 * records a failure with its line and goes on, CHECK_THROWS_KIND expects a tensorkiln::Error of one kind.
 */
#pragma once

#include "tensorkiln/error.h"

#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace tktest
{

struct Case
{
    char const* name;
    std::function<void()> body;
};

inline std::vector<Case>& cases()
{
    static std::vector<Case> all;
    return all;
}

inline int& failures()
{
    static int count = 0;
    return count;
}

struct Register
{
    Register(char const* name, std::function<void()> body)
    {
        cases().push_back({name, std::move(body)});
    }
};

inline void fail(char const* file, int line, std::string const& what)
{
    ++failures();
    std::cerr << file << ":" << line << ": FAILED: " << what << std::endl;
}

} // namespace tktest

#define TK_TEST(name)                                                                                                  \
    static void name();                                                                                                \
    static tktest::Register const name##Registered(#name, name);                                                      \
    static void name()

#define CHECK(condition)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(condition))                                                                                              \
            tktest::fail(__FILE__, __LINE__, #condition);                                                              \
    } while (0)

#define CHECK_EQ(actual, expected)                                                                                     \
    do                                                                                                                 \
    {                                                                                                                  \
        auto const tkActual = (actual);                                                                                \
        auto const tkExpected = (expected);                                                                            \
        if (!(tkActual == tkExpected))                                                                                 \
            tktest::fail(__FILE__, __LINE__, std::string(#actual " == " #expected));                                  \
    } while (0)

//! `statement` must throw a tensorkiln::Error of `errorKind` whose message contains `fragment`.
#define CHECK_THROWS_KIND(statement, errorKind, fragment)                                                              \
    do                                                                                                                 \
    {                                                                                                                  \
        try                                                                                                            \
        {                                                                                                              \
            statement;                                                                                                 \
            tktest::fail(__FILE__, __LINE__, "no error from " #statement);                                             \
        }                                                                                                              \
        catch (tensorkiln::Error const& tkError)                                                                       \
        {                                                                                                              \
            if (tkError.kind() != (errorKind) || std::string(tkError.what()).find(fragment) == std::string::npos)     \
                tktest::fail(__FILE__, __LINE__, std::string("unexpected error: ") + tkError.what());                 \
        }                                                                                                              \
    } while (0)
