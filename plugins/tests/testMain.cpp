/*
 * testMain.cpp: runs every TK_TEST (optionally filtered by a substring of its name) and reports failures.
 */
#include "tests/testing.h"

#include <cstdio>
#include <cstring>

namespace tensorkiln::testing
{
namespace
{
int gFailures = 0;
} // namespace

std::vector<TestCase>& registry()
{
    static std::vector<TestCase> sTests;
    return sTests;
}

void recordFailure(char const* file, int line, std::string const& message)
{
    ++gFailures;
    std::fprintf(stderr, "  FAILED %s:%d: %s\n", file, line, message.c_str());
}

} // namespace tensorkiln::testing

int main(int argc, char** argv)
{
    using namespace tensorkiln::testing;
    char const* filter = argc > 1 ? argv[1] : "";
    int run = 0;
    int failedTests = 0;
    for (TestCase const& test : registry())
    {
        if (std::strstr(test.name, filter) == nullptr)
        {
            continue;
        }
        int const before = gFailures;
        try
        {
            test.body();
        }
        catch (std::exception const& error)
        {
            recordFailure(test.name, 0, std::string("unexpected exception: ") + error.what());
        }
        ++run;
        bool const ok = gFailures == before;
        failedTests += ok ? 0 : 1;
        std::printf("[%s] %s\n", ok ? "  OK  " : "FAILED", test.name);
    }
    std::printf("%d tests, %d failed\n", run, failedTests);
    return (failedTests == 0 && run > 0) ? 0 : 1;
}
