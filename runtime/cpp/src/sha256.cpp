/*
 * sha256.cpp: sha256 through OpenSSL's EVP digest interface (libcrypto), read in 1 MiB blocks as the Python
 * runtime reads. Checked against hashlib by the C++ tests (tests/sha256Test.cpp: FIPS 180-2 vectors) and every
 * export the tests load.
 */
#include "sha256.h"

#include <openssl/evp.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <vector>

namespace tensorkiln
{
namespace
{

struct ContextDeleter
{
    void operator()(EVP_MD_CTX* context) const
    {
        EVP_MD_CTX_free(context);
    }
};

class Digest
{
public:
    Digest()
        : mContext(EVP_MD_CTX_new())
    {
        if (!mContext || EVP_DigestInit_ex(mContext.get(), EVP_sha256(), nullptr) != 1)
        {
            throw std::runtime_error("OpenSSL could not start a sha256 digest");
        }
    }

    void update(void const* data, std::size_t size)
    {
        if (EVP_DigestUpdate(mContext.get(), data, size) != 1)
        {
            throw std::runtime_error("OpenSSL's sha256 digest failed");
        }
    }

    std::string hex()
    {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        if (EVP_DigestFinal_ex(mContext.get(), digest, &length) != 1)
        {
            throw std::runtime_error("OpenSSL's sha256 digest failed");
        }
        static char const kDIGITS[] = "0123456789abcdef";
        std::string out;
        for (unsigned int i = 0; i < length; ++i)
        {
            out += kDIGITS[digest[i] >> 4];
            out += kDIGITS[digest[i] & 0xf];
        }
        return out;
    }

private:
    std::unique_ptr<EVP_MD_CTX, ContextDeleter> mContext;
};

} // namespace

std::string sha256File(std::string const& path)
{
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file)
    {
        throw std::runtime_error("cannot open " + path);
    }
    Digest digest;
    std::vector<unsigned char> block(1 << 20);
    std::size_t got = 0;
    while ((got = std::fread(block.data(), 1, block.size(), file.get())) > 0)
    {
        digest.update(block.data(), got);
    }
    if (std::ferror(file.get()))
    {
        throw std::runtime_error("cannot read " + path);
    }
    return digest.hex();
}

std::string sha256Bytes(std::string_view bytes)
{
    Digest digest;
    digest.update(bytes.data(), bytes.size());
    return digest.hex();
}

} // namespace tensorkiln
