/*
 * testing.h: a minimal test harness for the host-logic tests (no GPU, no TensorRT, no third-party framework).
 *
 *   TK_TEST(fieldsReadIntegers) { TK_EXPECT(reader.readInt("a") == 1); }
 *
 * Each TK_TEST registers itself; testMain.cpp runs them all (or those whose name contains argv[1]) and exits
 * non-zero when any expectation failed, which is what ctest reads.
 */
#pragma once

#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace tensorkiln::testing
{

struct TestCase
{
    char const* name;
    std::function<void()> body;
};

std::vector<TestCase>& registry();
void recordFailure(char const* file, int line, std::string const& message);

struct Registrar
{
    Registrar(char const* name, std::function<void()> body)
    {
        registry().push_back(TestCase{name, std::move(body)});
    }
};

//! The message of the exception `body` throws, or nullopt-like empty marker when it throws nothing.
template <typename F>
bool throwsWith(F&& body, std::string const& needle, std::string& what)
{
    try
    {
        body();
    }
    catch (std::exception const& error)
    {
        what = error.what();
        return what.find(needle) != std::string::npos;
    }
    what = "(no exception)";
    return false;
}

} // namespace tensorkiln::testing

#define TK_TEST(name)                                                                                                  \
    static void tkTest_##name();                                                                                       \
    static ::tensorkiln::testing::Registrar const tkRegistrar_##name{#name, &tkTest_##name};                          \
    static void tkTest_##name()

#define TK_EXPECT(condition)                                                                                           \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(condition))                                                                                              \
        {                                                                                                              \
            ::tensorkiln::testing::recordFailure(__FILE__, __LINE__, "expected " #condition);                          \
        }                                                                                                              \
    } while (false)

#define TK_EXPECT_EQ(actual, expected)                                                                                 \
    do                                                                                                                 \
    {                                                                                                                  \
        auto const tkActual_ = (actual);                                                                               \
        auto const tkExpected_ = (expected);                                                                           \
        if (!(tkActual_ == tkExpected_))                                                                               \
        {                                                                                                              \
            std::ostringstream tkMessage_;                                                                             \
            tkMessage_ << #actual << " == " << tkActual_ << ", expected " << tkExpected_;                              \
            ::tensorkiln::testing::recordFailure(__FILE__, __LINE__, tkMessage_.str());                                \
        }                                                                                                              \
    } while (false)

#define TK_EXPECT_NEAR(actual, expected, tolerance)                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        double const tkActual_ = static_cast<double>(actual);                                                          \
        double const tkExpected_ = static_cast<double>(expected);                                                      \
        if (!(std::fabs(tkActual_ - tkExpected_) <= (tolerance)))                                                      \
        {                                                                                                              \
            std::ostringstream tkMessage_;                                                                             \
            tkMessage_.precision(10);                                                                                  \
            tkMessage_ << #actual << " == " << tkActual_ << ", expected " << tkExpected_ << " +- " << (tolerance);     \
            ::tensorkiln::testing::recordFailure(__FILE__, __LINE__, tkMessage_.str());                                \
        }                                                                                                              \
    } while (false)

//! The statement must throw a std::exception whose what() contains `needle`.
#define TK_EXPECT_THROWS(statement, needle)                                                                            \
    do                                                                                                                 \
    {                                                                                                                  \
        std::string tkWhat_;                                                                                           \
        if (!::tensorkiln::testing::throwsWith([&]() { statement; }, (needle), tkWhat_))                               \
        {                                                                                                              \
            ::tensorkiln::testing::recordFailure(                                                                      \
                __FILE__, __LINE__, std::string(#statement " should throw '") + (needle) + "', got: " + tkWhat_);      \
        }                                                                                                              \
    } while (false)
