/*
 * sha256.h: a file's sha256 in lower-case hex, with OpenSSL's EVP interface (what runtime/manifest.py's
 * sha256_file computes with hashlib).
 */
#pragma once

#include <string>
#include <string_view>

namespace tensorkiln
{

//! The sha256 of the file at `path` as 64 lower-case hex digits; std::runtime_error when it cannot be read.
std::string sha256File(std::string const& path);
//! The sha256 of `bytes`.
std::string sha256Bytes(std::string_view bytes);

} // namespace tensorkiln
