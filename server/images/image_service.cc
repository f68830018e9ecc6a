#include "images/image_service.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <chrono>

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
                           std::shared_ptr<spdlog::logger> log)
    : chunks_(chunks), trusted_(std::move(trusted)), log_(std::move(log)) {}

ImageService::~ImageService() { executor_.join(); }

void ImageService::import(std::string name, std::string version, std::string path, Admit admit,
                          ImportDone done) {
  boost::asio::post(
      executor_, [this, name = std::move(name), version = std::move(version),
                  path = std::move(path), admit = std::move(admit), done = std::move(done)] {
        Result<ImportOutcome> out = make_error(Errc::kInternal, "import not run");
        try {
          out = import_now(name, version, path, admit);
        } catch (const std::exception& e) {
          log_->error("event=images.import_failed image={}:{} err=\"{}\"", name, version, e.what());
          out = make_error(Errc::kInternal, "internal error");
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
                                               const std::string& path, const Admit& admit) {
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
  if (auto st = admit(m); !st) return st.error();
  auto report = chunks_.import(*opened, trusted_);
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
  return chunks_.manifest(name, version);
}

Result<std::string> ImageService::signature(const std::string& name,
                                            const std::string& version) const {
  return chunks_.signature(name, version);
}

}  // namespace kiln::images
