/*
 * numpyRandom.h: numpy's default_rng(seed): SeedSequence's entropy mixing, the PCG64 bit generator (128-bit LCG,
 * XSL-RR output) and Generator.random()'s doubles, so a seeded sampling run in C++ draws exactly the numbers the
 * Python runtime draws (runtime/logits_processors.py's sample: one rng.random() per row per step).
 *
 * Written from numpy's documented algorithms (numpy.random.SeedSequence, numpy.random.PCG64); the C++ tests check
 * the first draws of several seeds against numpy's own (tests/numpyRandomTest.cpp).
 */
#pragma once

#include <cstdint>
#include <optional>

namespace tensorkiln
{

class NumpyGenerator
{
public:
    //! default_rng(seed); without a seed, 128 bits from std::random_device, as numpy takes OS entropy.
    explicit NumpyGenerator(std::optional<uint64_t> seed);
    //! The next 64 raw bits (PCG64's next64).
    uint64_t next64();
    //! Generator.random(): a double in [0, 1) from the top 53 bits.
    double random();

private:
    unsigned __int128 mState{0};
    unsigned __int128 mIncrement{0};
};

} // namespace tensorkiln
