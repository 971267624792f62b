/*
 * sha256Test.cpp: the OpenSSL-backed digests against FIPS 180-2's published vectors (which hashlib.sha256 gives too).
 */
#include "sha256.h"
#include "testing.h"

#include <cstdio>
#include <fstream>

TK_TEST(sha256MatchesFips180Vectors)
{
    CHECK_EQ(tensorkiln::sha256Bytes("abc"), std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    CHECK_EQ(tensorkiln::sha256Bytes(""), std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    CHECK_EQ(tensorkiln::sha256Bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        std::string("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
}

TK_TEST(sha256FileHashesTheFileBytes)
{
    std::string const path = "tk_sha256_test.bin";
    {
        std::ofstream file(path, std::ios::binary);
        file << std::string(1 << 20, 'a') << "abc"; // longer than one read buffer
    }
    CHECK_EQ(tensorkiln::sha256File(path), tensorkiln::sha256Bytes(std::string(1 << 20, 'a') + "abc"));
    std::remove(path.c_str());
    bool threw = false;
    try
    {
        tensorkiln::sha256File("no-such-file.bin");
    }
    catch (std::runtime_error const&)
    {
        threw = true;
    }
    CHECK(threw);
}
