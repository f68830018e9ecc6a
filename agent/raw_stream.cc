#include "agent/raw_stream.h"

#include <archive.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "agent/http.h"
#include "core/bytes.h"
#include "core/crypto.h"

namespace kiln::agent {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kHold = 1 << 20;  // held back at each end of the image
constexpr std::size_t kBlock = 4 << 20;   // write size

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct ReadCtx {
  HttpStream* http;
  std::vector<char> buf;
  DeployCounters* counters;
  std::string error;
};

la_ssize_t read_cb(struct archive*, void* p, const void** out) {
  auto* c = static_cast<ReadCtx*>(p);
  auto n = c->http->read(c->buf.data(), c->buf.size());
  if (!n) {
    c->error = n.error().message;
    return -1;
  }
  c->counters->fetched += *n;
  *out = c->buf.data();
  return static_cast<la_ssize_t>(*n);
}

struct ArchiveFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// One pass over the stream. Returns the whole-image hash, or an error.
Result<std::string> stream_once(const RawSource& src, const Disk& disk, const DeployOptions& o,
                                DeployCounters& counters, std::string& head, std::string& tail) {
  auto url = parse_agent_url(src.url);
  if (!url) return url.error();
  HttpStream http(*url, o.timeout);
  if (auto st = http.open(); !st) return st.error();
  ReadCtx ctx{&http, std::vector<char>(1 << 20), &counters, {}};
  std::unique_ptr<struct archive, ArchiveFree> a(archive_read_new());
  archive_read_support_filter_gzip(a.get());
  archive_read_support_filter_xz(a.get());
  archive_read_support_filter_zstd(a.get());
  archive_read_support_filter_bzip2(a.get());
  archive_read_support_format_raw(a.get());
  if (archive_read_open(a.get(), &ctx, nullptr, read_cb, nullptr) != ARCHIVE_OK) {
    return make_error(
        Errc::kInvalid,
        src.url + ": " + (ctx.error.empty() ? archive_error_string(a.get()) : ctx.error));
  }
  struct archive_entry* entry = nullptr;
  if (archive_read_next_header(a.get(), &entry) != ARCHIVE_OK) {
    return make_error(Errc::kInvalid,
                      src.url + ": not a raw image: " +
                          (ctx.error.empty() ? archive_error_string(a.get()) : ctx.error));
  }
  Sha256 hash;
  AlignedBuffer block(kBlock);
  std::uint64_t off = 0;  // image offset of block[0]
  std::size_t fill = 0;
  auto flush_block = [&]() -> Status {
    if (fill == 0) return ok_status();
    hash.update(block.data(), fill);
    // Held-back ranges are kept and written as zeroes for now.
    auto hold_back = [&](std::string& keep, std::uint64_t keep_at) {
      const std::uint64_t lo = std::max(off, keep_at);
      const std::uint64_t hi = std::min<std::uint64_t>(off + fill, keep_at + keep.size());
      if (lo >= hi) return;
      std::memcpy(keep.data() + (lo - keep_at), block.data() + (lo - off), hi - lo);
    };
    hold_back(head, 0);
    hold_back(tail, src.size - tail.size());
    for (std::uint64_t keep_at : {std::uint64_t{0}, src.size - tail.size()}) {
      const std::uint64_t lo = std::max(off, keep_at);
      const std::uint64_t hi = std::min<std::uint64_t>(off + fill, keep_at + head.size());
      if (lo < hi) std::memset(block.data() + (lo - off), 0, hi - lo);
    }
    const bool zero = is_all_zero(std::string_view(block.data(), fill));
    Status st = zero ? disk.zero(off, fill) : disk.write(off, block.data(), fill);
    if (!st) return st;
    if (zero) {
      counters.zeroed += fill;
    } else {
      counters.written += fill;
    }
    counters.done += fill;
    off += fill;
    fill = 0;
    return ok_status();
  };
  for (;;) {
    la_ssize_t n = archive_read_data(a.get(), block.data() + fill, kBlock - fill);
    if (n < 0) {
      return make_error(
          Errc::kUnavailable,
          src.url + ": " + (ctx.error.empty() ? archive_error_string(a.get()) : ctx.error));
    }
    if (n == 0) break;
    fill += static_cast<std::size_t>(n);
    if (off + fill > src.size) {
      return make_error(Errc::kInvalid, src.url + " holds more than the registered " +
                                            std::to_string(src.size) + " bytes");
    }
    if (fill == kBlock) {
      if (auto st = flush_block(); !st) return st.error();
    }
  }
  if (auto st = flush_block(); !st) return st.error();
  if (off != src.size) {
    return make_error(Errc::kInvalid, src.url + " holds " + std::to_string(off) +
                                          " bytes, the registered size is " +
                                          std::to_string(src.size));
  }
  return hash.hex_digest();
}

}  // namespace

Result<DeployResult> deploy_raw(const RawSource& src, const Disk& disk, const DeployOptions& o,
                                DeployCounters& counters) {
  if (disk.size() < src.size) {
    return make_error(Errc::kInvalid, disk.path() + " holds " + std::to_string(disk.size()) +
                                          " bytes; the image needs " + std::to_string(src.size));
  }
  DeployResult r;
  r.direct = disk.direct();
  r.workers = 1;
  auto t0 = Clock::now();
  const std::uint64_t hold = std::min(disk.size(), kHold);
  if (auto st = disk.zero(0, hold); !st) return st.error();
  if (auto st = disk.zero(disk.size() - hold, hold); !st) return st.error();
  if (auto st = disk.flush(); !st) return st.error();
  r.invalidate_s = since(t0);

  auto t1 = Clock::now();
  std::string head(std::min(src.size, kHold), '\0');
  std::string tail(std::min(src.size, kHold), '\0');
  Result<std::string> got = make_error(Errc::kUnavailable, "not started");
  for (int attempt = 0; attempt <= o.retries; ++attempt) {
    if (attempt > 0) {
      ++counters.retries;
      if (o.on_retry)
        o.on_retry("the stream, attempt " + std::to_string(attempt + 1) + ": " +
                   got.error().message);
      std::this_thread::sleep_for(o.backoff * (1 << std::min(attempt - 1, 4)));
      counters.done = 0;
    }
    got = stream_once(src, disk, o, counters, head, tail);
    // Bytes that are there but wrong are not fixed by reading them again.
    if (got || got.error().code == Errc::kInvalid) break;
  }
  if (!got) return got.error();
  if (*got != src.sha256) {
    return make_error(Errc::kInvalid, "the image streamed from " + src.url + " has SHA-256 " +
                                          *got + ", expected " + src.sha256 +
                                          "; the disk was left unbootable");
  }
  r.write_s = since(t1);

  auto t2 = Clock::now();
  if (auto st = disk.flush(); !st) return st.error();
  AlignedBuffer b(kHold);
  std::memcpy(b.data(), head.data(), head.size());
  if (auto st = disk.write(0, b.data(), head.size()); !st) return st.error();
  std::memcpy(b.data(), tail.data(), tail.size());
  if (auto st = disk.write(src.size - tail.size(), b.data(), tail.size()); !st) return st.error();
  if (auto st = disk.flush(); !st) return st.error();
  r.reread = disk.reread_partitions();
  r.commit_s = since(t2);
  return r;
}

}  // namespace kiln::agent
