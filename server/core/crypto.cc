#include "core/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "core/hex.h"

namespace kiln {
namespace {

std::string to_hex(const unsigned char* p, std::size_t n) {
  return hex_encode(std::string_view(reinterpret_cast<const char*>(p), n));
}

EVP_MD_CTX* md(void* p) { return static_cast<EVP_MD_CTX*>(p); }

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(md(ctx_), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("EVP_DigestInit(sha256) failed");
  }
}
Sha256::~Sha256() { EVP_MD_CTX_free(md(ctx_)); }
Sha256::Sha256(Sha256&& other) noexcept : ctx_(other.ctx_) { other.ctx_ = nullptr; }
Sha256& Sha256::operator=(Sha256&& other) noexcept {
  if (this != &other) {
    EVP_MD_CTX_free(md(ctx_));
    ctx_ = other.ctx_;
    other.ctx_ = nullptr;
  }
  return *this;
}

void Sha256::update(const void* data, std::size_t n) {
  if (EVP_DigestUpdate(md(ctx_), data, n) != 1) throw std::runtime_error("EVP_DigestUpdate failed");
}

void Sha256::update_zeros(std::uint64_t n) {
  static const std::string kZeros(1 << 20, '\0');
  while (n > 0) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(n, kZeros.size()));
    update(kZeros.data(), k);
    n -= k;
  }
}

std::string Sha256::digest() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(md(ctx_), out, &len) != 1 ||
      EVP_DigestInit_ex(md(ctx_), EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("EVP_DigestFinal(sha256) failed");
  }
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string Sha256::hex_digest() { return hex_encode(digest()); }

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("EVP_Digest(sha256) failed");
  }
  return to_hex(md, len);
}

std::string random_hex(std::size_t n) {
  std::vector<unsigned char> buf(n);
  if (RAND_bytes(buf.data(), static_cast<int>(n)) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  return to_hex(buf.data(), n);
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace kiln
