// core/secret_box.h — secrets at rest: AES-256-GCM (OpenSSL EVP) under one key kept in a file.
//
// kilnd seals what it must store but never show (BMC passwords, cloud-init user-data) with
// seal() before it reaches the database, and opens it only where it is used. The key is 32
// random bytes in a 0600 file in the data directory, created at first start; losing it loses
// every sealed secret (they must be set again), so the file is written once, atomically, and a
// damaged or over-exposed key file stops kilnd with a clear error instead of being replaced.
//
// Sealed form (text, fits a TEXT column): "v1:" + base64(nonce(12) || ciphertext || tag(16)).
// A fresh random nonce per seal(). The additional authenticated data (AAD) names the row the
// secret belongs to (e.g. "bmc:<machine id>"): a ciphertext copied into another row does not
// open. Thread-safety: a SecretBox is immutable after construction; seal()/open() may run
// concurrently.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "core/result.h"

namespace kiln {

class SecretBox {
 public:
  static constexpr std::size_t kKeySize = 32;

  // Loads the key in `path`, or creates it when the file does not exist (0600, written to a
  // temporary file, fsynced and linked into place, so a crash never leaves a half key and two
  // starts racing agree on one key). Errors (kInvalid): the file is not a regular file, has
  // group or other permission bits, is not exactly 32 bytes; (kInternal) I/O errors. Every
  // error names the file.
  static Result<SecretBox> open_or_create(const std::string& path);
  // A box over `key` (exactly kKeySize bytes; kInvalid otherwise). For tests and tools.
  static Result<SecretBox> from_key(std::string key);

  SecretBox(SecretBox&& other) noexcept;
  SecretBox& operator=(SecretBox&& other) noexcept;
  SecretBox(const SecretBox&) = delete;
  SecretBox& operator=(const SecretBox&) = delete;
  ~SecretBox();  // wipes the key

  // Encrypts and authenticates `plain`, bound to `aad`. Throws only if OpenSSL fails
  // (a broken invariant, e.g. no randomness).
  std::string seal(std::string_view plain, std::string_view aad) const;
  // The plaintext of `sealed`. kInvalid (one message, no detail about which part failed) on a
  // bad format, a wrong key, a different `aad` or any modified byte.
  Result<std::string> open(std::string_view sealed, std::string_view aad) const;
  // Whether `text` has the sealed form's prefix (a stored value that is sealed, not plain).
  static bool looks_sealed(std::string_view text);

 private:
  explicit SecretBox(std::string_view key);
  std::array<unsigned char, kKeySize> key_{};
};

}  // namespace kiln
