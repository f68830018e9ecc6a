// proto/image_file.h — building, opening and verifying packed `.kiln` images
// (proto/image-format.md).
//
// build_image() reads a raw disk image, a block device, or a compressed raw image (gz, xz,
// zstd, bz2 via libarchive's raw format and filters), cuts it into chunks, compresses them on
// a pool of threads and writes the packed file in one pass. Memory stays bounded by a window
// of 4 x threads chunks whatever the image size. The output appears atomically (written to
// "<out>.partial", then renamed) so an interrupted build leaves nothing behind.
//
// PackedImage reads the layout back; verify_image() checks every chunk (and the signature
// when trusted keys are given) and names the first bad chunk.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/unique_fd.h"
#include "proto/image_format.h"

namespace kiln::proto::image {

struct BuildOptions {
  std::string input;
  std::string output;
  std::string name;
  std::string version;
  std::uint32_t chunk_size = kDefaultChunkSize;
  int level = 3;                  // zstd level
  int threads = 0;                // 0: one per core
  bool free_holes = false;        // holes of a sparse input are free space: UNMAPPED, not ZERO
  std::uint32_t sector_size = 0;  // 0: detect from the partition table (default 512)
  std::string sign_key;           // PEM Ed25519 private key; empty: unsigned
  std::map<std::string, std::string> labels;
  std::optional<BootHints> boot;
  std::string created_at;  // empty: now (set it for reproducible builds)
};

struct Progress {
  std::uint64_t bytes_in = 0;
  std::optional<std::uint64_t> total;  // unknown for compressed inputs
  std::uint64_t bytes_out = 0;
};
using ProgressFn = std::function<void(const Progress&)>;

struct BuildReport {
  Manifest manifest;
  std::uint64_t output_bytes = 0;
  bool signed_ = false;
};

Result<BuildReport> build_image(const BuildOptions& options, const ProgressFn& progress = {});

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
Result<VerifyReport> verify_image(const PackedImage& image, const std::vector<Key>& trusted,
                                  int threads = 0);

}  // namespace kiln::proto::image
