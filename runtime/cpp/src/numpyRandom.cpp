/*
 * numpyRandom.cpp: SeedSequence (pool of 4 32-bit words, hashmix/mix with numpy's constants) -> generate_state(4,
 * uint64) -> PCG64 seeding (state from words 0-1, increment from words 2-3) -> XSL-RR 64-bit outputs (see
 * numpyRandom.h).
 */
#include "numpyRandom.h"

#include <array>
#include <random>
#include <vector>

namespace tensorkiln
{
namespace
{

constexpr uint32_t kINIT_A = 0x43b0d7e5u;
constexpr uint32_t kMULT_A = 0x931e8875u;
constexpr uint32_t kINIT_B = 0x8b51f9ddu;
constexpr uint32_t kMULT_B = 0x58f38dedu;
constexpr uint32_t kMIX_MULT_L = 0xca01f9ddu;
constexpr uint32_t kMIX_MULT_R = 0x4973f715u;
constexpr unsigned kXSHIFT = 16;
constexpr std::size_t kPOOL_SIZE = 4;

uint32_t hashmix(uint32_t value, uint32_t& hashConst)
{
    value ^= hashConst;
    hashConst *= kMULT_A;
    value *= hashConst;
    value ^= value >> kXSHIFT;
    return value;
}

uint32_t mix(uint32_t x, uint32_t y)
{
    uint32_t result = kMIX_MULT_L * x - kMIX_MULT_R * y;
    result ^= result >> kXSHIFT;
    return result;
}

//! SeedSequence(entropy).generate_state(4, np.uint64), for entropy given as little-endian 32-bit words.
std::array<uint64_t, 4> seedState(std::vector<uint32_t> const& entropy)
{
    std::array<uint32_t, kPOOL_SIZE> pool{};
    uint32_t hashConst = kINIT_A;
    for (std::size_t i = 0; i < kPOOL_SIZE; ++i)
    {
        pool[i] = hashmix(i < entropy.size() ? entropy[i] : 0u, hashConst);
    }
    for (std::size_t src = 0; src < kPOOL_SIZE; ++src)
    {
        for (std::size_t dst = 0; dst < kPOOL_SIZE; ++dst)
        {
            if (src != dst)
            {
                pool[dst] = mix(pool[dst], hashmix(pool[src], hashConst));
            }
        }
    }
    for (std::size_t src = kPOOL_SIZE; src < entropy.size(); ++src)
    {
        for (std::size_t dst = 0; dst < kPOOL_SIZE; ++dst)
        {
            pool[dst] = mix(pool[dst], hashmix(entropy[src], hashConst));
        }
    }
    std::array<uint32_t, 8> words{};
    uint32_t hashB = kINIT_B;
    for (std::size_t i = 0; i < words.size(); ++i)
    {
        uint32_t value = pool[i % kPOOL_SIZE];
        value ^= hashB;
        hashB *= kMULT_B;
        value *= hashB;
        value ^= value >> kXSHIFT;
        words[i] = value;
    }
    std::array<uint64_t, 4> state{};
    for (std::size_t i = 0; i < state.size(); ++i)
    {
        state[i] = static_cast<uint64_t>(words[2 * i]) | (static_cast<uint64_t>(words[2 * i + 1]) << 32);
    }
    return state;
}

unsigned __int128 multiplier()
{
    return (static_cast<unsigned __int128>(2549297995355413924ull) << 64) | 4865540595714422341ull;
}

} // namespace

NumpyGenerator::NumpyGenerator(std::optional<uint64_t> seed)
{
    std::vector<uint32_t> entropy;
    if (seed)
    {
        uint64_t value = *seed;
        do // numpy's _int_to_uint32_array: little-endian words, [0] for zero
        {
            entropy.push_back(static_cast<uint32_t>(value & 0xffffffffu));
            value >>= 32;
        } while (value != 0);
    }
    else
    {
        std::random_device device;
        for (int i = 0; i < 4; ++i)
        {
            entropy.push_back(device());
        }
    }
    std::array<uint64_t, 4> const state = seedState(entropy);
    unsigned __int128 const initState = (static_cast<unsigned __int128>(state[0]) << 64) | state[1];
    unsigned __int128 const initSequence = (static_cast<unsigned __int128>(state[2]) << 64) | state[3];
    mState = 0;
    mIncrement = (initSequence << 1) | 1u;
    mState = mState * multiplier() + mIncrement;
    mState += initState;
    mState = mState * multiplier() + mIncrement;
}

uint64_t NumpyGenerator::next64()
{
    mState = mState * multiplier() + mIncrement;
    uint64_t const high = static_cast<uint64_t>(mState >> 64);
    uint64_t const low = static_cast<uint64_t>(mState);
    unsigned const rotation = static_cast<unsigned>(mState >> 122);
    uint64_t const value = high ^ low;
    return (value >> rotation) | (value << ((64u - rotation) & 63u));
}

double NumpyGenerator::random()
{
    return static_cast<double>(next64() >> 11) * (1.0 / 9007199254740992.0);
}

} // namespace tensorkiln
