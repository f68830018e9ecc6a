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
#pragma once

#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "images/chunk_store.h"
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

class ImageService {
 public:
  // Called on the executor after the image verified and before anything is stored; an error
  // refuses the import with that error.
  using Admit = std::function<Status(const proto::image::Manifest&)>;
  using ImportDone = std::function<void(Result<ImportOutcome>)>;
  using RemoveDone = std::function<void(Status)>;

  ImageService(ChunkStore& chunks, std::vector<proto::image::Key> trusted,
               std::shared_ptr<spdlog::logger> log);
  // Waits for queued jobs: their callbacks run before the service goes.
  ~ImageService();
  ImageService(const ImageService&) = delete;
  ImageService& operator=(const ImageService&) = delete;

  // Imports the packed image at `path` as name:version. Errors: kInvalid (not a valid image,
  // or it is another name:version), kForbidden (signature), kConflict, kInternal; messages
  // never contain `path`. `done` runs on the executor; an exception from it is logged.
  void import(std::string name, std::string version, std::string path, Admit admit,
              ImportDone done);
  // Undoes the storing part of an import whose registration failed (on the calling thread:
  // call it from an ImportDone).
  void forget(const std::string& name, const std::string& version);
  // Forgets the version's manifest, then collects garbage; `done` runs on the executor.
  // A collection that cannot list the store removes nothing and is logged.
  void remove(std::string name, std::string version, RemoveDone done);

  Result<std::string> manifest(const std::string& name, const std::string& version) const;
  Result<std::string> signature(const std::string& name, const std::string& version) const;
  const std::vector<proto::image::Key>& trusted() const { return trusted_; }

 private:
  Result<ImportOutcome> import_now(const std::string& name, const std::string& version,
                                   const std::string& path, const Admit& admit);

  ChunkStore& chunks_;
  const std::vector<proto::image::Key> trusted_;
  std::shared_ptr<spdlog::logger> log_;
  boost::asio::thread_pool executor_{1};
};

}  // namespace kiln::images
