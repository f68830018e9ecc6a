// core/crypto.h — the few cryptographic helpers every module shares (OpenSSL underneath).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);
// `n` bytes from the OS CSPRNG, hex-encoded (2n characters). Throws if the CSPRNG fails.
std::string random_hex(std::size_t n);
// Streaming SHA-256 (OpenSSL EVP). Owns its context; move-only. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&& other) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, std::size_t n);
  void update(std::string_view data) { update(data.data(), data.size()); }
  // Hashes `n` zero bytes without the caller allocating them.
  void update_zeros(std::uint64_t n);
  // The 32-byte digest; the hasher starts over afterwards.
  std::string digest();
  // The digest as 64 lower-case hex digits; the hasher starts over afterwards.
  std::string hex_digest();

 private:
  void* ctx_;  // EVP_MD_CTX
};

// Standard base64 (RFC 4648, with padding).
std::string base64_encode(std::string_view bytes);
// Strict standard base64 with padding; nullopt on anything else.
std::optional<std::string> base64_decode(std::string_view text);

// Constant-time comparison of two strings of equal length (false if lengths differ).
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace kiln
