#include "core/secret_box.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>

#include "core/crypto.h"
#include "core/io.h"
#include "core/unique_fd.h"

namespace kiln {
namespace {

constexpr std::string_view kPrefix = "v1:";
constexpr std::size_t kNonceSize = 12;
constexpr std::size_t kTagSize = 16;

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

const unsigned char* u8(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}
unsigned char* u8(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }

std::string errno_text(int e) { return std::strerror(e); }

Status fsync_dir(const std::filesystem::path& dir) {
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d || ::fsync(d.get()) != 0) {
    return make_error(Errc::kInternal,
                      "cannot fsync directory " + dir.string() + ": " + errno_text(errno));
  }
  return ok_status();
}

Result<std::string> load_key(const std::string& path, int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return make_error(Errc::kInternal, "secret key file " + path + ": " + errno_text(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(Errc::kInvalid, "secret key file " + path + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return make_error(Errc::kInvalid, "secret key file " + path + " has mode " + mode +
                                          ": it must be readable by its owner only (chmod 600 " +
                                          path + ")");
  }
  if (static_cast<std::size_t>(st.st_size) != SecretBox::kKeySize) {
    return make_error(Errc::kInvalid,
                      "secret key file " + path + " holds " + std::to_string(st.st_size) +
                          " bytes, not " + std::to_string(SecretBox::kKeySize) +
                          ": it is damaged or not a kiln key (restore it from a backup; a new "
                          "key cannot open the secrets sealed with the old one)");
  }
  std::string key(SecretBox::kKeySize, '\0');
  auto n = read_full(fd, key.data(), key.size());
  if (!n) return make_error(Errc::kInternal, "secret key file " + path + ": " + n.error().message);
  if (*n != key.size()) {
    return make_error(Errc::kInvalid, "secret key file " + path + " is shorter than it says");
  }
  return key;
}

}  // namespace

Result<SecretBox> SecretBox::from_key(std::string key) {
  if (key.size() != kKeySize) {
    return make_error(Errc::kInvalid, "a secret key is " + std::to_string(kKeySize) + " bytes");
  }
  SecretBox box(key);
  OPENSSL_cleanse(key.data(), key.size());
  return box;
}

Result<SecretBox> SecretBox::open_or_create(const std::string& path) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd) {
      auto key = load_key(path, fd.get());
      if (!key) return key.error();
      SecretBox box(*key);
      OPENSSL_cleanse(key->data(), key->size());
      return box;
    }
    if (errno == ELOOP) {
      return make_error(Errc::kInvalid, "secret key file " + path + " is a symbolic link");
    }
    if (errno != ENOENT) {
      return make_error(Errc::kInternal,
                        "cannot open secret key file " + path + ": " + errno_text(errno));
    }
    // First start: write the key to a private temporary file, then link it into place. link()
    // fails when another process got there first; then its key is the one.
    const std::filesystem::path final_path(path);
    const std::string tmp = path + ".tmp-" + random_hex(8);
    UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out) {
      return make_error(Errc::kInternal,
                        "cannot create secret key file " + tmp + ": " + errno_text(errno));
    }
    std::string key(kKeySize, '\0');
    if (RAND_bytes(u8(key), static_cast<int>(key.size())) != 1) {
      ::unlink(tmp.c_str());
      throw std::runtime_error("RAND_bytes failed");
    }
    Status st = write_full(out.get(), key);
    if (st && ::fchmod(out.get(), 0600) != 0) {
      st = make_error(Errc::kInternal, "chmod: " + errno_text(errno));
    }
    if (st && ::fsync(out.get()) != 0) {
      st = make_error(Errc::kInternal, "fsync: " + errno_text(errno));
    }
    out.reset();
    if (!st) {
      ::unlink(tmp.c_str());
      OPENSSL_cleanse(key.data(), key.size());
      return make_error(Errc::kInternal,
                        "cannot write secret key file " + tmp + ": " + st.error().message);
    }
    const int linked = ::link(tmp.c_str(), path.c_str());
    const int link_errno = errno;
    ::unlink(tmp.c_str());
    if (linked != 0) {
      OPENSSL_cleanse(key.data(), key.size());
      if (link_errno == EEXIST) continue;  // another start created it: load that one
      return make_error(Errc::kInternal,
                        "cannot create secret key file " + path + ": " + errno_text(link_errno));
    }
    auto dir = final_path.parent_path();
    SecretBox box(key);
    OPENSSL_cleanse(key.data(), key.size());
    if (auto s = fsync_dir(dir.empty() ? std::filesystem::path(".") : dir); !s) return s.error();
    return box;
  }
  return make_error(Errc::kInternal, "secret key file " + path + " keeps changing");
}

SecretBox::SecretBox(std::string_view key) { std::memcpy(key_.data(), key.data(), key_.size()); }
SecretBox::SecretBox(SecretBox&& other) noexcept : key_(other.key_) {
  OPENSSL_cleanse(other.key_.data(), other.key_.size());
}
SecretBox& SecretBox::operator=(SecretBox&& other) noexcept {
  if (this != &other) {
    key_ = other.key_;
    OPENSSL_cleanse(other.key_.data(), other.key_.size());
  }
  return *this;
}
SecretBox::~SecretBox() { OPENSSL_cleanse(key_.data(), key_.size()); }

bool SecretBox::looks_sealed(std::string_view text) { return text.starts_with(kPrefix); }

std::string SecretBox::seal(std::string_view plain, std::string_view aad) const {
  std::string blob(kNonceSize + plain.size() + kTagSize, '\0');
  unsigned char* nonce = u8(blob);
  unsigned char* ct = nonce + kNonceSize;
  if (RAND_bytes(nonce, kNonceSize) != 1) throw std::runtime_error("RAND_bytes failed");
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  bool ok =
      ctx && EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceSize, nullptr) == 1 &&
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key_.data(), nonce) == 1 &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, u8(aad), static_cast<int>(aad.size())) == 1 &&
      EVP_EncryptUpdate(ctx.get(), ct, &len, u8(plain), static_cast<int>(plain.size())) == 1;
  int fin = 0;
  ok = ok && EVP_EncryptFinal_ex(ctx.get(), ct + len, &fin) == 1 &&
       static_cast<std::size_t>(len + fin) == plain.size() &&
       EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagSize, ct + plain.size()) == 1;
  if (!ok) throw std::runtime_error("AES-256-GCM encryption failed");
  return std::string(kPrefix) + base64_encode(blob);
}

Result<std::string> SecretBox::open(std::string_view sealed, std::string_view aad) const {
  const auto invalid = [] {
    return make_error(Errc::kInvalid,
                      "a sealed secret does not open: damaged, sealed with another key, or "
                      "moved from another record");
  };
  if (!sealed.starts_with(kPrefix)) return invalid();
  auto blob = base64_decode(sealed.substr(kPrefix.size()));
  if (!blob || blob->size() < kNonceSize + kTagSize) return invalid();
  const std::size_t n = blob->size() - kNonceSize - kTagSize;
  const unsigned char* nonce = u8(*blob);
  const unsigned char* ct = nonce + kNonceSize;
  std::string tag = blob->substr(kNonceSize + n);
  std::string plain(n, '\0');
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  bool ok =
      ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceSize, nullptr) == 1 &&
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key_.data(), nonce) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, u8(aad), static_cast<int>(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx.get(), u8(plain), &len, ct, static_cast<int>(n)) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagSize, tag.data()) == 1;
  int fin = 0;
  ok = ok && EVP_DecryptFinal_ex(ctx.get(), u8(plain) + len, &fin) == 1;
  if (!ok) {
    OPENSSL_cleanse(plain.data(), plain.size());
    return invalid();
  }
  return plain;
}

}  // namespace kiln
