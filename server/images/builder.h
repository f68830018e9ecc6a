// images/builder.h — building packed `.kiln` images (proto/image-format.md) from raw disks.
//
// build_image() reads a raw disk image, a block device, a qcow2 image (images/qcow2.h), or a
// compressed raw image (gz, xz, zstd, bz2 via libarchive's raw format and filters). Holes (of a
// sparse file; a qcow2 image's unallocated and zero clusters) become ZERO chunks, or UNMAPPED
// with `free_holes`, without being stored. It cuts the input into chunks, compresses them on
// a pool of threads and writes the packed file in one pass. Memory stays bounded by a window
// of 4 x threads chunks whatever the image size. The output appears atomically (written to
// "<out>.partial.<pid>", fsynced, then renamed) so an interrupted build leaves nothing behind.
// The same input and options (with `created_at` set) give the same bytes.
//
// The format itself (constants, chunk encoding, header, trailer, manifest, signatures) is
// proto's (proto/image_format.h); the reader and verifier of what this writes are proto's
// PackedImage and verify_image (proto/image_file.h). Thread-safety: build_image is reentrant;
// it runs its own worker threads and calls `progress` on the caller's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "core/result.h"
#include "proto/image_format.h"

namespace kiln::images {

struct BuildOptions {
  std::string input;
  std::string output;
  std::string name;
  std::string version;
  std::uint32_t chunk_size = proto::image::kDefaultChunkSize;
  int level = 3;                  // zstd level
  int threads = 0;                // 0: one per core
  bool free_holes = false;        // holes of a sparse input are free space: UNMAPPED, not ZERO
  std::uint32_t sector_size = 0;  // 0: detect from the partition table (default 512)
  std::string sign_key;           // PEM Ed25519 private key; empty: unsigned
  std::map<std::string, std::string> labels;
  std::optional<proto::image::BootHints> boot;
  std::string created_at;  // empty: now (set it for reproducible builds)
};

struct Progress {
  std::uint64_t bytes_in = 0;
  std::optional<std::uint64_t> total;  // unknown for compressed inputs
  std::uint64_t bytes_out = 0;
};
using ProgressFn = std::function<void(const Progress&)>;

struct BuildReport {
  proto::image::Manifest manifest;
  std::uint64_t output_bytes = 0;
  bool signed_ = false;
};

Result<BuildReport> build_image(const BuildOptions& options, const ProgressFn& progress = {});

}  // namespace kiln::images
