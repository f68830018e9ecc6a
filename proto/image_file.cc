#include "proto/image_file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>
#include <cstring>
#include <deque>
#include <future>
#include <thread>

#include "core/crypto.h"
#include "core/io.h"

namespace kiln::proto::image {
namespace {

// Reads exactly `length` bytes at `offset`; a short read is an error, never a shorter result.
Result<std::string> pread_exact(int fd, std::uint64_t offset, std::uint64_t length) {
  std::string out(length, '\0');
  auto got = pread_full(fd, out.data(), out.size(), offset);
  if (!got) return got.error();
  if (*got < length) return make_error(Errc::kInvalid, "unexpected end of file");
  return out;
}

}  // namespace

Result<PackedImage> PackedImage::open(const std::string& path, const std::vector<Key>& trusted) {
  PackedImage img;
  img.fd_ = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!img.fd_)
    return make_error(Errc::kInvalid, "cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(img.fd_.get(), &st) != 0) return make_error(Errc::kInvalid, "cannot stat " + path);
  img.file_size_ = static_cast<std::uint64_t>(st.st_size);
  if (img.file_size_ < kHeaderSize + kTrailerSize) {
    return make_error(Errc::kInvalid, path + ": too short to be a kiln image (truncated?)");
  }
  auto header = pread_exact(img.fd_.get(), 0, kHeaderSize);
  if (!header) return header.error();
  if (auto s = check_header(*header); !s)
    return make_error(s.error().code, path + ": " + s.error().message);
  auto tb = pread_exact(img.fd_.get(), img.file_size_ - kTrailerSize, kTrailerSize);
  if (!tb) return tb.error();
  auto t = decode_trailer(*tb, img.file_size_);
  if (!t) return make_error(t.error().code, path + ": " + t.error().message);
  auto mb = pread_exact(img.fd_.get(), t->manifest_offset, t->manifest_length);
  if (!mb) return mb.error();
  img.manifest_bytes_ = std::move(*mb);
  if (t->signature_length) {
    auto sig = pread_exact(img.fd_.get(), t->signature_offset, t->signature_length);
    if (!sig) return sig.error();
    img.signature_ = std::move(*sig);
  }
  if (manifest_digest(*header, img.manifest_bytes_, img.signature_) != t->manifest_digest) {
    return make_error(Errc::kInvalid,
                      path + ": header, manifest or signature damaged (checksum mismatch)");
  }
  if (auto s = verify_signature(img.manifest_bytes_, img.signature_, trusted); !s) {
    return make_error(s.error().code, path + ": " + s.error().message);
  }
  auto m = parse_manifest(img.manifest_bytes_);
  if (!m) return make_error(m.error().code, path + ": " + m.error().message);
  img.manifest_ = std::move(*m);
  std::uint64_t off = kHeaderSize;
  img.offsets_.reserve(img.manifest_.chunks.size());
  for (const auto& c : img.manifest_.chunks) {
    img.offsets_.push_back(off);
    off += c.payload_size;
  }
  if (off != t->manifest_offset) {
    return make_error(Errc::kInvalid, path + ": payloads end at " + std::to_string(off) +
                                          " but the manifest starts at " +
                                          std::to_string(t->manifest_offset));
  }
  return img;
}

Result<std::string> PackedImage::read_payload(std::size_t i) const {
  return pread_exact(fd_.get(), offsets_[i], manifest_.chunks[i].payload_size);
}

Result<VerifyReport> verify_image(const PackedImage& img, const std::vector<Key>& trusted,
                                  int threads, const std::atomic<bool>* stop) {
  const auto& m = img.manifest();
  VerifyReport r;
  if (auto s = verify_signature(img.manifest_bytes(), img.signature(), trusted); !s)
    return s.error();
  r.signature_checked = !trusted.empty();
  const int n =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  boost::asio::thread_pool pool(n);
  std::deque<std::future<Result<std::string>>> window;
  Sha256 whole;
  std::size_t next_out = 0;
  auto chunk_error = [&](std::size_t i, const std::string& what) {
    return make_error(Errc::kInvalid, "chunk " + std::to_string(i) + " (offset " +
                                          std::to_string(m.chunk_offset(i)) + "): " + what);
  };
  auto consume = [&]() -> Status {
    if (stop && stop->load()) return make_error(Errc::kUnavailable, "verification cancelled");
    const std::size_t i = next_out++;
    auto data = window.front().get();
    window.pop_front();
    if (!data) return chunk_error(i, data.error().message);
    if (data->empty()) {
      whole.update_zeros(m.chunk_length(i));
    } else {
      whole.update(data->data(), data->size());
    }
    return ok_status();
  };
  for (std::size_t i = 0; i < m.chunks.size(); ++i) {
    const Chunk& c = m.chunks[i];
    const std::uint64_t len = m.chunk_length(i);
    if (!has_payload(c.kind)) {
      std::promise<Result<std::string>> ready;
      ready.set_value(std::string());
      window.push_back(ready.get_future());
    } else {
      window.push_back(boost::asio::post(
          pool, boost::asio::use_future([&img, &c, i, len]() -> Result<std::string> {
            auto payload = img.read_payload(i);
            if (!payload) return payload.error();
            std::string out;
            if (auto s = decode_chunk(c, *payload, len, out); !s) return s.error();
            return out;
          })));
      r.payload_bytes += c.payload_size;
    }
    while (window.size() > static_cast<std::size_t>(2 * n)) {
      if (auto s = consume(); !s) {
        for (auto& f : window) f.wait();  // workers reference this frame: let them finish
        return s.error();
      }
    }
  }
  while (!window.empty()) {
    if (auto s = consume(); !s) {
      for (auto& f : window) f.wait();
      return s.error();
    }
  }
  if (whole.hex_digest() != m.sha256) {
    return make_error(Errc::kInvalid,
                      "whole-image SHA-256 mismatch (manifest says " + m.sha256 + ")");
  }
  r.chunks = m.chunks.size();
  return r;
}

}  // namespace kiln::proto::image
