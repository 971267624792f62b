/*
 * testMain.cpp: runs every TK_TEST (or those whose name contains argv[1]) and exits 1 on any failure.
 */
#include "testing.h"

#include <exception>

int main(int argc, char** argv)
{
    std::string const filter = argc > 1 ? argv[1] : "";
    int run = 0;
    for (auto const& test : tktest::cases())
    {
        if (std::string(test.name).find(filter) == std::string::npos)
            continue;
        ++run;
        int const before = tktest::failures();
        try
        {
            test.body();
        }
        catch (std::exception const& error)
        {
            tktest::fail(test.name, 0, std::string("threw: ") + error.what());
        }
        std::cout << (tktest::failures() == before ? "ok   " : "FAIL ") << test.name << std::endl;
    }
    std::cout << run << " tests, " << tktest::failures() << " failed" << std::endl;
    return tktest::failures() == 0 && run > 0 ? 0 : 1;
}
