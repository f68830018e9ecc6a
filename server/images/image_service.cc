#include "images/image_service.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <chrono>
#include <limits>

namespace kiln::images {

namespace {

// The server's temporary path means nothing to the client.
Error scrub(Error e, const std::string& path) {
  if (auto at = e.message.find(path); at != std::string::npos) {
    e.message.replace(at, path.size(), "upload");
  }
  return e;
}

}  // namespace

ImageService::ImageService(ChunkStore& chunks, std::vector<proto::image::Key> trusted,
                           std::shared_ptr<spdlog::logger> log, ImportLimits limits)
    : chunks_(chunks), trusted_(std::move(trusted)), log_(std::move(log)), limits_(limits) {}

ImageService::~ImageService() {
  shutdown();
  executor_.join();
}

void ImageService::shutdown() {
  std::lock_guard lock(mu_);
  if (!stopping_ && !jobs_.empty()) {
    log_->info("event=images.imports_cancelled reason=shutdown imports={}", jobs_.size());
  }
  stopping_ = true;
  for (auto& [key, job] : jobs_) {
    int none = 0;
    job->cancelled.compare_exchange_strong(none, kStopping);
    job->stop = true;
  }
}

bool ImageService::cancel(const std::string& name, const std::string& version) {
  std::lock_guard lock(mu_);
  bool any = false;
  auto [from, to] = jobs_.equal_range(name + ":" + version);
  for (auto it = from; it != to; ++it) {
    int none = 0;
    it->second->cancelled.compare_exchange_strong(none, kDeleted);
    it->second->stop = true;
    any = true;
  }
  if (any) log_->warn("event=images.import_cancelled image={}:{} reason=deleted", name, version);
  return any;
}

Error ImageService::cancelled_error(const Job& job, const std::string& name,
                                    const std::string& version) const {
  if (job.cancelled == kDeleted) {
    return make_error(Errc::kConflict, "the import of " + name + ":" + version +
                                           " was cancelled: the version was deleted");
  }
  return make_error(Errc::kUnavailable, "the import of " + name + ":" + version +
                                            " was cancelled: the server is shutting down");
}

UploadSlot ImageService::reserve_upload(std::optional<std::uint64_t> announced_bytes) {
  UploadSlot out;
  if (limits_.min_free_bytes > 0) {
    const auto free = chunks_.available_bytes();
    // The upload file, then the chunks it becomes: about twice its length, for a while.
    const std::uint64_t len = announced_bytes.value_or(0);
    const std::uint64_t need =
        len > (std::numeric_limits<std::uint64_t>::max() - limits_.min_free_bytes) / 2
            ? std::numeric_limits<std::uint64_t>::max()
            : limits_.min_free_bytes + 2 * len;
    if (!free) {
      log_->error("event=images.free_space_unknown err=\"{}\"", free.error().message);
    } else if (*free < need) {
      out.refused = UploadSlot::kNoSpace;
      out.message = "not enough free space for this upload: " + std::to_string(*free) +
                    " bytes free, the upload needs about " + std::to_string(2 * len) +
                    " and images.min_free_bytes keeps " + std::to_string(limits_.min_free_bytes) +
                    " free for the database";
      log_->warn(
          "event=images.upload_refused reason=min_free_bytes free={} announced={} "
          "reserve={}",
          *free, len, limits_.min_free_bytes);
      return out;
    }
  }
  const int cap = limits_.max_concurrent_uploads;
  int n = uploads_->load();
  do {
    if (cap > 0 && n >= cap) {
      out.refused = UploadSlot::kBusy;
      out.message = "the limit of " + std::to_string(cap) +
                    " concurrent uploads (images.max_concurrent_uploads) is reached; retry later";
      log_->warn("event=images.upload_refused reason=max_concurrent_uploads limit={}", cap);
      return out;
    }
  } while (!uploads_->compare_exchange_weak(n, n + 1));
  // The hold may outlive the service (a connection torn down late): it owns the counter.
  out.hold = std::shared_ptr<void>(uploads_.get(), [count = uploads_](void*) { --*count; });
  return out;
}

void ImageService::import(std::string name, std::string version, std::string path, Admit admit,
                          ImportDone done) {
  auto job = std::make_shared<Job>();
  const std::string key = name + ":" + version;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      job->cancelled = kStopping;
      job->stop = true;
    }
    jobs_.emplace(key, job);
  }
  boost::asio::post(
      executor_, [this, job, key, name = std::move(name), version = std::move(version),
                  path = std::move(path), admit = std::move(admit), done = std::move(done)] {
        Result<ImportOutcome> out = make_error(Errc::kInternal, "import not run");
        try {
          out = import_now(name, version, path, admit, *job);
        } catch (const std::exception& e) {
          log_->error("event=images.import_failed image={}:{} err=\"{}\"", name, version, e.what());
          out = make_error(Errc::kInternal, "internal error");
        }
        {
          std::lock_guard lock(mu_);
          auto [from, to] = jobs_.equal_range(key);
          for (auto it = from; it != to; ++it) {
            if (it->second == job) {
              jobs_.erase(it);
              break;
            }
          }
        }
        // Deleted after it finished but before it was registered: registering would bring the
        // version back.
        if (out && job->cancelled != 0) {
          if (!out->report.already_present) forget(name, version);
          out = cancelled_error(*job, name, version);
        }
        if (!out && job->cancelled != 0) {
          log_->info("event=images.import_stopped image={}:{} err=\"{}\"", name, version,
                     out.error().message);
        }
        try {
          done(std::move(out));
        } catch (const std::exception& e) {
          log_->error("event=images.import_callback_failed image={}:{} err=\"{}\"", name, version,
                      e.what());
        }
      });
}

Result<ImportOutcome> ImageService::import_now(const std::string& name, const std::string& version,
                                               const std::string& path, const Admit& admit,
                                               const Job& job) {
  if (job.stop) return cancelled_error(job, name, version);
  const auto started = std::chrono::steady_clock::now();
  auto opened = proto::image::PackedImage::open(path, trusted_);
  if (!opened) {
    auto e = scrub(opened.error(), path);
    if (e.code != Errc::kForbidden && e.code != Errc::kInternal) e.code = Errc::kInvalid;
    return e;
  }
  const auto& m = opened->manifest();
  if (m.name != name || m.version != version) {
    return make_error(Errc::kInvalid, "the image is " + m.name + ":" + m.version +
                                          ", uploaded as " + name + ":" + version);
  }
  // What the image declares decides what verifying it costs: refuse before any of it.
  if (limits_.max_image_bytes > 0 && m.size > limits_.max_image_bytes) {
    return make_error(Errc::kTooLarge, "the image declares " + std::to_string(m.size) +
                                           " bytes; this server accepts images of at most " +
                                           std::to_string(limits_.max_image_bytes) +
                                           " bytes (images.max_image_bytes)");
  }
  if (limits_.max_chunks > 0 && m.chunks.size() > limits_.max_chunks) {
    return make_error(Errc::kTooLarge, "the image has " + std::to_string(m.chunks.size()) +
                                           " chunks; this server accepts at most " +
                                           std::to_string(limits_.max_chunks) +
                                           " (images.max_chunks); build it with a larger "
                                           "--chunk-size");
  }
  if (auto st = admit(m); !st) return st.error();
  log_->info("event=images.import_started image={}:{} size={} chunks={}", name, version, m.size,
             m.chunks.size());
  auto report = chunks_.import(*opened, trusted_, 0, &job.stop);
  if (!report && job.stop) return cancelled_error(job, name, version);
  if (!report) {
    auto e = scrub(report.error(), path);
    if (e.code != Errc::kConflict && e.code != Errc::kForbidden && e.code != Errc::kInternal) {
      e.code = Errc::kInvalid;
    }
    return e;
  }
  const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - started;
  return ImportOutcome{m, *report, !opened->signature().empty(), took.count()};
}

void ImageService::forget(const std::string& name, const std::string& version) {
  if (auto st = chunks_.remove(name, version); !st) {
    log_->warn("event=images.manifest_remove_failed image={}:{} err=\"{}\"", name, version,
               st.error().message);
  }
}

void ImageService::remove(std::string name, std::string version, RemoveDone done) {
  boost::asio::post(executor_, [this, name = std::move(name), version = std::move(version),
                                done = std::move(done)] {
    Status out = ok_status();
    try {
      forget(name, version);
      if (auto gc = chunks_.collect_garbage(); gc) {
        log_->info("event=images.gc removed_chunks={} removed_bytes={}", gc->removed_chunks,
                   gc->removed_bytes);
      } else {
        log_->error("event=images.gc_failed err=\"{}\"", gc.error().message);
      }
    } catch (const std::exception& e) {
      log_->error("event=images.remove_failed image={}:{} err=\"{}\"", name, version, e.what());
      out = make_error(Errc::kInternal, "internal error");
    }
    try {
      done(std::move(out));
    } catch (const std::exception& e) {
      log_->error("event=images.remove_callback_failed err=\"{}\"", e.what());
    }
  });
}

Result<std::string> ImageService::manifest(const std::string& name,
                                           const std::string& version) const {
  auto m = chunks_.manifest(name, version);
  if (m || m.error().code != Errc::kNotFound || !fallback_) return m;
  // Another instance of the cluster may hold it (uploaded there): fetched, verified, kept.
  if (auto st = fallback_->fetch_manifest(name, version); !st) return m;
  return chunks_.manifest(name, version);
}

Result<std::string> ImageService::signature(const std::string& name,
                                            const std::string& version) const {
  auto sig = chunks_.signature(name, version);
  if (sig || sig.error().code != Errc::kNotFound || !fallback_) return sig;
  if (auto st = fallback_->fetch_manifest(name, version); !st) return sig;
  return chunks_.signature(name, version);
}

}  // namespace kiln::images
