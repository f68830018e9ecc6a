// proto/image_file.h — opening and verifying packed `.kiln` images (proto/image-format.md).
//
// PackedImage reads the layout back; verify_image() checks every chunk (and the signature
// when trusted keys are given) and names the first bad chunk. The builder that writes these
// files is images/builder.h; both take the layout from proto/image_format.h (header, payloads
// in chunk order from kHeaderSize, manifest, signature, trailer), so they cannot drift.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/unique_fd.h"
#include "proto/image_format.h"

namespace kiln::proto::image {

class PackedImage {
 public:
  // Reads and checks header, trailer, manifest and layout; does not read payloads. With
  // trusted keys, the signature is checked on the manifest's bytes before they are parsed.
  static Result<PackedImage> open(const std::string& path, const std::vector<Key>& trusted = {});
  const Manifest& manifest() const { return manifest_; }
  const std::string& manifest_bytes() const { return manifest_bytes_; }
  const std::string& signature() const { return signature_; }
  std::uint64_t file_size() const { return file_size_; }
  // Offset in the file of chunk i's payload (DATA/RAW chunks only).
  std::uint64_t payload_offset(std::size_t i) const { return offsets_[i]; }
  // Reads chunk i's payload (thread-safe: pread).
  Result<std::string> read_payload(std::size_t i) const;

 private:
  UniqueFd fd_;
  std::uint64_t file_size_ = 0;
  Manifest manifest_;
  std::string manifest_bytes_;
  std::string signature_;
  std::vector<std::uint64_t> offsets_;
};

struct VerifyReport {
  std::uint64_t chunks = 0;
  std::uint64_t payload_bytes = 0;
  bool signature_checked = false;
};

// Verifies the signature (against `trusted`, when not empty), every chunk and the whole-image
// SHA-256. The error names the first bad chunk: "chunk 17 (offset 71303168): SHA-256 mismatch".
// `stop`, when given, is polled once per chunk: once set, verification ends with kUnavailable
// (an import being cancelled; a declared size of terabytes of zeroes is otherwise hours).
Result<VerifyReport> verify_image(const PackedImage& image, const std::vector<Key>& trusted,
                                  int threads = 0, const std::atomic<bool>* stop = nullptr);

}  // namespace kiln::proto::image
