// images/image_service.h — image import, removal and garbage collection, on the service's own
// executor (one thread: an import already hashes on every core), never on a caller's thread.
//
// The API hands an uploaded `.kiln` file to `import`; the service opens and verifies it
// (signature against the trusted keys, every chunk, the whole-image hash), asks the caller's
// `admit` whether this name:version may be stored (the caller knows the catalogue; images/
// does not), stores the missing chunks and the manifest, and calls `done` with the outcome.
// `remove` forgets a version's manifest and collects unreferenced chunks. Both complete on the
// executor, so an HTTP I/O thread never waits on the chunk store's lock, which an import holds
// for its whole duration. Thread-safety: every method may be called from any thread.
//
// Limits (ImportLimits): an import's cost follows the image's *declared* size, which a few
// bytes of upload can set to terabytes; images larger than max_image_bytes or with more than
// max_chunks chunks are refused before any verification. Uploads are admitted (before their
// body is received) only while fewer than max_concurrent_uploads are in progress and the
// store's filesystem keeps min_free_bytes free after them. A queued or running import ends
// promptly when its version is deleted (cancel) or the service is destroyed.
#pragma once

#include <atomic>
#include <boost/asio/thread_pool.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "images/chunk_store.h"
#include "images/peer_fetch.h"
#include "proto/image_file.h"

namespace spdlog {
class logger;
}

namespace kiln::images {

struct ImportOutcome {
  proto::image::Manifest manifest;
  ImportReport report;
  bool is_signed = false;
  double ms = 0;  // opening, verifying and storing, in milliseconds
};

struct ImportLimits {
  std::uint64_t max_image_bytes = std::uint64_t{1} << 40;  // declared (uncompressed) size; 0: none
  std::uint64_t max_chunks = std::uint64_t{1} << 20;       // manifest entries; 0: none
  int max_concurrent_uploads = 4;                          // received or importing; 0: none
  // Free bytes the store's filesystem must keep after an upload (which needs about twice its
  // length: the upload file, then its chunks). The data directory usually holds the database
  // too: the reserve keeps room for lease and event commits. 0: no check.
  std::uint64_t min_free_bytes = std::uint64_t{1} << 30;
};

// The answer to an upload announced by its header, before its body is received.
struct UploadSlot {
  enum Refusal { kNone, kBusy, kNoSpace } refused = kNone;
  std::string message;         // for a refusal
  std::shared_ptr<void> hold;  // kNone: the upload counts until the last copy is released
};

class ImageService {
 public:
  // Called on the executor after the image verified and before anything is stored; an error
  // refuses the import with that error.
  using Admit = std::function<Status(const proto::image::Manifest&)>;
  using ImportDone = std::function<void(Result<ImportOutcome>)>;
  using RemoveDone = std::function<void(Status)>;

  ImageService(ChunkStore& chunks, std::vector<proto::image::Key> trusted,
               std::shared_ptr<spdlog::logger> log, ImportLimits limits = {});
  // shutdown(), then waits for queued jobs: their callbacks run before the service goes.
  ~ImageService();
  ImageService(const ImageService&) = delete;
  ImageService& operator=(const ImageService&) = delete;

  // Imports the packed image at `path` as name:version. Errors: kInvalid (not a valid image,
  // or it is another name:version), kTooLarge (past max_image_bytes or max_chunks),
  // kForbidden (signature), kConflict (also: cancelled by cancel()), kUnavailable (cancelled
  // by shutdown), kInternal; messages never contain `path`. `done` runs on the executor; an
  // exception from it is logged.
  void import(std::string name, std::string version, std::string path, Admit admit,
              ImportDone done);
  // Asks for a place for an upload of `announced_bytes` (its Content-Length; unknown for a
  // chunked body, then only the reserve is checked): kBusy past max_concurrent_uploads,
  // kNoSpace when the store's filesystem would keep less than min_free_bytes.
  UploadSlot reserve_upload(std::optional<std::uint64_t> announced_bytes);
  // Cancels the queued or running imports of name:version (its version is being deleted):
  // they stop within a chunk and end with kConflict. True if there was one.
  bool cancel(const std::string& name, const std::string& version);
  // Cancels every queued and running import, and imports started later: they end promptly
  // with kUnavailable (their callbacks still run). For daemon shutdown: an upload waiting for
  // its import would otherwise hold its connection (and the shutdown) until it ends.
  void shutdown();
  const ImportLimits& limits() const { return limits_; }
  // Undoes the storing part of an import whose registration failed (on the calling thread:
  // call it from an ImportDone).
  void forget(const std::string& name, const std::string& version);
  // Forgets the version's manifest, then collects garbage; `done` runs on the executor.
  // A collection that cannot list the store removes nothing and is logged.
  void remove(std::string name, std::string version, RemoveDone done);

  // A manifest missing here is fetched from the cluster's other instances when a fallback is
  // set (images/peer_fetch.h; blocking, bounded by its timeout per source).
  Result<std::string> manifest(const std::string& name, const std::string& version) const;
  Result<std::string> signature(const std::string& name, const std::string& version) const;
  const std::vector<proto::image::Key>& trusted() const { return trusted_; }
  // Where manifests missing from the local store come from (cluster peers); null: nowhere.
  // Set before the service is shared; must outlive it.
  void set_fallback(PeerFetcher* fetcher) { fallback_ = fetcher; }

 private:
  // Why a job was cancelled: 0 not, kDeleted, kStopping.
  static constexpr int kDeleted = 1, kStopping = 2;
  struct Job {
    std::atomic<int> cancelled{0};
    std::atomic<bool> stop{false};  // set with `cancelled`: what the chunk store polls
  };
  Result<ImportOutcome> import_now(const std::string& name, const std::string& version,
                                   const std::string& path, const Admit& admit, const Job& job);
  Error cancelled_error(const Job& job, const std::string& name, const std::string& version) const;

  ChunkStore& chunks_;
  PeerFetcher* fallback_ = nullptr;
  const std::vector<proto::image::Key> trusted_;
  std::shared_ptr<spdlog::logger> log_;
  const ImportLimits limits_;
  std::mutex mu_;                                          // guards jobs_ and stopping_
  std::multimap<std::string, std::shared_ptr<Job>> jobs_;  // by "name:version"
  bool stopping_ = false;
  std::shared_ptr<std::atomic<int>> uploads_ = std::make_shared<std::atomic<int>>(0);
  boost::asio::thread_pool executor_{1};  // last: joined (in ~ImageService) before the rest goes
};

}  // namespace kiln::images
