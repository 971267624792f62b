/*
 * numpyRandomTest.cpp: NumpyGenerator draws what numpy draws. Expected values printed by numpy 2.4
 * (np.random.default_rng(seed).random(n).tolist()); numpy documents the stream as stable across versions.
 */
#include "numpyRandom.h"
#include "testing.h"

TK_TEST(defaultRngMatchesNumpy)
{
    tensorkiln::NumpyGenerator zero(0);
    CHECK_EQ(zero.random(), 0.6369616873214543);
    CHECK_EQ(zero.random(), 0.2697867137638703);
    CHECK_EQ(zero.random(), 0.04097352393619469);
    tensorkiln::NumpyGenerator other(12345);
    CHECK_EQ(other.random(), 0.22733602246716966);
    CHECK_EQ(other.random(), 0.31675833970975287);
}
