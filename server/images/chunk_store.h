// images/chunk_store.h — the server's content-addressed store of image chunks and manifests.
//
// Layout under the root directory:
//   chunks/<aa>/<sha256>.zst | .raw   one payload per distinct chunk content (DATA frame or RAW
//                                     bytes), named by the SHA-256 of the uncompressed content
//   manifests/<name>/<version>.json   the canonical manifest bytes, as signed
//   manifests/<name>/<version>.sig    its Ed25519 signature (absent if unsigned)
//   tmp/                              files being written; renamed into place when complete
// Versions share chunks: importing a version writes only the chunks the store does not have.
// A chunk file holds *a* valid payload for its content (two versions may have compressed the
// same content differently); readers verify content, not payload bytes. Every file appears
// atomically (tmp + fsync + rename). Thread-safe: import and collect_garbage serialize on an
// internal mutex, so a collection never removes a chunk an import is about to reference.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "proto/image_file.h"

namespace kiln::images {

// The filesystem a store lives on (statvfs): its size, and what an unprivileged writer may
// still use of it (f_bavail).
struct FilesystemSpace {
  std::uint64_t size = 0;
  std::uint64_t available = 0;
};
Result<FilesystemSpace> filesystem_space(const std::filesystem::path& dir);
// Bytes held by the chunk files of the store rooted at `root`. A file removed while it is
// counted (a collection running) counts as gone; the walk never throws.
std::uint64_t chunk_file_bytes(const std::filesystem::path& root);

struct ImportReport {
  std::uint64_t chunks = 0;      // DATA/RAW chunks in the manifest
  std::uint64_t new_chunks = 0;  // written by this import
  std::uint64_t new_bytes = 0;
  bool already_present = false;  // the same manifest was stored before (idempotent)
};

struct GcReport {
  std::uint64_t removed_chunks = 0;
  std::uint64_t removed_bytes = 0;
};

struct ChunkFile {
  std::filesystem::path path;
  proto::image::ChunkKind kind;  // kData (.zst) or kRaw (.raw)
};

class ChunkStore {
 public:
  // Opens (creating directories as needed) the store rooted at `root`.
  static Result<std::unique_ptr<ChunkStore>> open(const std::filesystem::path& root);

  // Verifies `image` (signature against `trusted` when given, every chunk, the whole-image
  // hash) before anything is stored, then stores its missing chunks and its manifest. A
  // different manifest under an existing name/version is a conflict (versions are immutable).
  // `stop`, when given, is polled between chunks (verifying and storing): once set, the
  // import ends with kUnavailable; chunks already stored are garbage until collected.
  Result<ImportReport> import(const proto::image::PackedImage& image,
                              const std::vector<proto::image::Key>& trusted, int threads = 0,
                              const std::atomic<bool>* stop = nullptr);
  std::optional<ChunkFile> chunk_file(const std::string& sha256) const;
  // Stores one chunk payload fetched from elsewhere (a peer instance, an upstream cache). The
  // caller has verified it (its content hashes to `sha256`); atomic, idempotent, and it does
  // not wait for a running import. Unreferenced by any local manifest, it goes at the next
  // collection unless a manifest referencing it arrives first.
  Status put_chunk(const std::string& sha256, proto::image::ChunkKind kind,
                   std::string_view payload);
  // Stores a verified manifest (and its signature, "" when unsigned) fetched from elsewhere.
  // The same bytes again are fine; different bytes under a stored name/version are kConflict.
  Status put_manifest(const std::string& name, const std::string& version,
                      std::string_view manifest, std::string_view signature);
  Result<std::string> manifest(const std::string& name, const std::string& version) const;
  // The manifest's signature; empty if the version was stored unsigned.
  Result<std::string> signature(const std::string& name, const std::string& version) const;
  // Forgets a version's manifest; its chunks go at the next collection if nothing else uses them.
  Status remove(const std::string& name, const std::string& version);
  // Removes every chunk file that no stored manifest references.
  Result<GcReport> collect_garbage();
  // Bytes held by chunk files.
  std::uint64_t chunk_bytes() const;
  // Bytes an unprivileged writer may still use on the store's filesystem (statvfs f_bavail).
  Result<std::uint64_t> available_bytes() const;

 private:
  explicit ChunkStore(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path chunk_path(const std::string& sha, proto::image::ChunkKind kind) const;
  std::filesystem::path manifest_path(const std::string& name, const std::string& version) const;
  Status write_atomically(const std::filesystem::path& dest, std::string_view bytes);

  const std::filesystem::path root_;
  std::mutex mu_;
};

}  // namespace kiln::images
