// core/crypto.h — the few cryptographic helpers every module shares (OpenSSL underneath).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kiln {

// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);
// `n` bytes from the OS CSPRNG, hex-encoded (2n characters). Throws if the CSPRNG fails.
std::string random_hex(std::size_t n);
// Constant-time comparison of two strings of equal length (false if lengths differ).
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace kiln
