#include "agent/disk.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "core/crypto.h"
#include "core/io.h"

namespace kiln::agent {

namespace {

Error os_error(const std::string& what) {
  return make_error(Errc::kInternal, what + ": " + std::strerror(errno));
}

std::string read_small(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::string s;
  std::getline(in, s);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
  return s;
}

constexpr std::string_view kSinkPrefix = "sink:";

}  // namespace

// The hash-checked sink (disk.h): a virtual all-zero disk of `size` bytes in 64 KiB blocks,
// each held as one of: zeroes, the CRC-32 of its bytes, or its bytes (written partially).
struct Disk::Sink {
  using Clock = std::chrono::steady_clock;
  static constexpr std::uint64_t kBlock = 64 << 10;
  static constexpr std::uint64_t kMaxSize = 1ull << 40;             // 1 TiB: 80 MiB of tables
  static constexpr std::size_t kMaxSamples = std::size_t{1} << 22;  // chunk_ms kept, then counted
  enum State : std::uint8_t { kZeroes, kCrc, kBytes };

  std::uint64_t size = 0;
  std::string stats_path;
  std::thread::id opener = std::this_thread::get_id();

  std::mutex mu;  // guards everything below
  std::vector<std::uint32_t> crc;
  std::vector<State> state;
  std::unordered_map<std::uint64_t, std::string> bytes;  // kBytes blocks
  std::uint64_t writes = 0, written_bytes = 0, zeroed_bytes = 0;
  std::vector<float> chunk_ms;
  std::uint64_t chunk_samples = 0;
  Clock::time_point last_flush = Clock::now();
  std::uint64_t flush_gen = 0;

  std::uint64_t blocks() const { return (size + kBlock - 1) / kBlock; }
  std::size_t block_len(std::uint64_t b) const {
    return static_cast<std::size_t>(std::min(kBlock, size - b * kBlock));
  }
  static std::uint32_t crc_of(const char* p, std::size_t n) {
    return static_cast<std::uint32_t>(
        crc32(crc32(0, nullptr, 0), reinterpret_cast<const Bytef*>(p), static_cast<uInt>(n)));
  }
  static std::uint32_t zero_crc(std::size_t n) {
    static const std::string zeroes(kBlock, '\0');
    return crc_of(zeroes.data(), n);
  }

  // The thread's previous write (or the last flush): the start of its current chunk.
  struct Cursor {
    const Sink* owner = nullptr;
    std::uint64_t gen = 0;
    Clock::time_point last;
  };
  static Cursor& cursor() {
    thread_local Cursor c;
    return c;
  }

  Status range_check(std::uint64_t offset, std::uint64_t n, const char* what) const {
    if (offset > size || n > size - offset) {
      return make_error(Errc::kInvalid, std::string("sink: ") + what + " of " + std::to_string(n) +
                                            " bytes at offset " + std::to_string(offset) +
                                            " past the end (" + std::to_string(size) + ")");
    }
    return ok_status();
  }

  static void copy_or_zero(char* to, const char* src, std::size_t k) {
    if (src) {
      std::memcpy(to, src, k);
    } else {
      std::memset(to, 0, k);
    }
  }

  // The bytes of block `b` for a partial update (mu held); null when only its CRC is known.
  std::string* held_bytes(std::uint64_t b) {
    if (state[b] == kBytes) return &bytes[b];
    if (state[b] == kCrc) return nullptr;
    state[b] = kBytes;
    return &(bytes[b] = std::string(block_len(b), '\0'));
  }

  // Applies `data` (or zeroes when null) to [offset, offset + n).
  Status apply(std::uint64_t offset, const char* data, std::uint64_t n) {
    std::uint64_t done = 0;
    while (done < n) {
      const std::uint64_t at = offset + done, b = at / kBlock, in = at - b * kBlock;
      const std::size_t len = block_len(b);
      const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(len - in, n - done));
      const char* src = data ? data + done : nullptr;
      if (k == len) {
        const std::uint32_t c = src ? crc_of(src, k) : 0;  // outside the lock: the costly part
        std::lock_guard lock(mu);
        if (state[b] == kBytes) {
          copy_or_zero(bytes[b].data(), src, k);
        } else {
          state[b] = src ? kCrc : kZeroes;
          crc[b] = c;
        }
      } else {
        std::lock_guard lock(mu);
        std::string* held = held_bytes(b);
        if (!held) {
          return make_error(Errc::kInternal,
                            "sink: a partial write at offset " + std::to_string(at) +
                                " over block " + std::to_string(b) +
                                ", whose bytes the sink did not keep (only their CRC)");
        }
        copy_or_zero(held->data() + in, src, k);
      }
      done += k;
    }
    return ok_status();
  }

  Status write(std::uint64_t offset, const char* data, std::size_t n) {
    const auto start = Clock::now();
    if (auto st = range_check(offset, n, "write"); !st) return st;
    auto& cur = cursor();
    if (std::this_thread::get_id() != opener) {
      std::lock_guard lock(mu);
      const auto from = cur.owner == this && cur.gen == flush_gen ? cur.last : last_flush;
      ++chunk_samples;
      if (chunk_ms.size() < kMaxSamples) {
        chunk_ms.push_back(std::chrono::duration<float, std::milli>(start - from).count());
      }
    }
    auto st = apply(offset, data, n);
    std::lock_guard lock(mu);
    ++writes;
    written_bytes += n;
    cur = {this, flush_gen, Clock::now()};
    return st;
  }

  Status zero(std::uint64_t offset, std::uint64_t n) {
    if (auto st = range_check(offset, n, "zero-out"); !st) return st;
    auto st = apply(offset, nullptr, n);
    std::lock_guard lock(mu);
    zeroed_bytes += n;
    cursor() = {this, flush_gen, Clock::now()};
    return st;
  }

  // Rewrites the stats file (write to a temporary name, then rename).
  Status flush() {
    std::lock_guard lock(mu);
    std::string crcs;
    crcs.reserve(blocks() * 4);
    for (std::uint64_t b = 0; b < blocks(); ++b) {
      const std::uint32_t c = state[b] == kZeroes ? zero_crc(block_len(b))
                              : state[b] == kCrc  ? crc[b]
                                                  : crc_of(bytes[b].data(), bytes[b].size());
      for (int i = 0; i < 4; ++i) crcs.push_back(static_cast<char>((c >> (8 * i)) & 0xff));
    }
    std::vector<float> sorted = chunk_ms;
    std::sort(sorted.begin(), sorted.end());
    auto pct = [&](double p) -> double {
      if (sorted.empty()) return 0;
      const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
      return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
    };
    char text[1024];
    std::snprintf(text, sizeof text,
                  "{\"target\":\"sink\",\"size\":%llu,\"block_size\":%llu,\"digest\":\"%s\","
                  "\"writes\":%llu,\"written_bytes\":%llu,\"zeroed_bytes\":%llu,"
                  "\"partial_blocks\":%zu,\"chunk_ms\":{\"count\":%llu,\"p50\":%.3f,"
                  "\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
                  static_cast<unsigned long long>(size), static_cast<unsigned long long>(kBlock),
                  sha256_hex(crcs).c_str(), static_cast<unsigned long long>(writes),
                  static_cast<unsigned long long>(written_bytes),
                  static_cast<unsigned long long>(zeroed_bytes), bytes.size(),
                  static_cast<unsigned long long>(chunk_samples), pct(0.50), pct(0.90), pct(0.99),
                  sorted.empty() ? 0.0 : static_cast<double>(sorted.back()));
    const std::string tmp = stats_path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << text;
      out.flush();
      if (!out) return make_error(Errc::kInternal, "sink: cannot write " + tmp);
    }
    std::error_code ec;
    std::filesystem::rename(tmp, stats_path, ec);
    if (ec)
      return make_error(Errc::kInternal, "sink: rename to " + stats_path + ": " + ec.message());
    last_flush = Clock::now();
    ++flush_gen;
    return ok_status();
  }
};

namespace {

// "sink:SIZE:STATS" -> the sink; SIZE in bytes or with a K, M, G or T (binary) suffix.
Result<std::shared_ptr<Disk::Sink>> parse_sink(const std::string& target) {
  auto bad = [&](const std::string& why) {
    return make_error(Errc::kInvalid, "--disk " + target + ": " + why +
                                          " (the benchmark sink is sink:SIZE:STATS_FILE)");
  };
  const std::string_view rest = std::string_view(target).substr(kSinkPrefix.size());
  const auto colon = rest.find(':');
  if (colon == std::string_view::npos || colon + 1 == rest.size()) return bad("no stats file");
  std::string_view num = rest.substr(0, colon);
  std::uint64_t unit = 1;
  if (!num.empty()) {
    const std::string_view units = "KMGT";
    if (const auto u = units.find(num.back()); u != std::string_view::npos) {
      unit = 1ull << (10 * (u + 1));
      num.remove_suffix(1);
    }
  }
  std::uint64_t n = 0;
  const auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
  if (num.empty() || ec != std::errc() || ptr != num.data() + num.size()) {
    return bad("SIZE is not a number");
  }
  if (n == 0 || n > Disk::Sink::kMaxSize / unit || (n * unit) % 512 != 0) {
    return bad("SIZE must be a multiple of 512 bytes, at most 1 TiB");
  }
  auto s = std::make_shared<Disk::Sink>();
  s->size = n * unit;
  s->stats_path = std::string(rest.substr(colon + 1));
  s->crc.assign(s->blocks(), 0);
  s->state.assign(s->blocks(), Disk::Sink::kZeroes);
  return s;
}

}  // namespace

bool is_sink_target(const std::string& target) { return target.rfind(kSinkPrefix, 0) == 0; }

void AlignedBuffer::Free::operator()(char* p) const { std::free(p); }

AlignedBuffer::AlignedBuffer(std::size_t size) : size_(size) {
  void* p = nullptr;
  if (posix_memalign(&p, 4096, size ? size : 4096) != 0) throw std::bad_alloc();
  p_.reset(static_cast<char*>(p));
}

Result<Disk> Disk::open(const std::string& path, bool direct) {
  Disk d;
  d.path_ = path;
  if (is_sink_target(path)) {
    auto sink = parse_sink(path);
    if (!sink) return sink.error();
    d.sink_ = std::move(*sink);
    d.size_ = d.sink_->size;
    if (auto st = d.sink_->flush(); !st) return st.error();  // the stats file is writable
    return d;
  }
  d.fd_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!d.fd_) return os_error("cannot open " + path + " for writing");
  struct stat st {};
  if (::fstat(d.fd_.get(), &st) != 0) return os_error("stat " + path);
  if (S_ISBLK(st.st_mode)) {
    d.block_ = true;
    if (::ioctl(d.fd_.get(), BLKGETSIZE64, &d.size_) != 0) return os_error("BLKGETSIZE64 " + path);
    int ss = 0;
    if (::ioctl(d.fd_.get(), BLKSSZGET, &ss) == 0 && ss > 0)
      d.sector_ = static_cast<std::uint32_t>(ss);
  } else if (S_ISREG(st.st_mode)) {
    d.size_ = static_cast<std::uint64_t>(st.st_size);
  } else {
    return make_error(Errc::kInvalid, path + " is neither a block device nor a regular file");
  }
  if (direct) {
    // Refused by some filesystems (tmpfs): then everything goes through the page cache.
    d.direct_fd_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_DIRECT));
  }
  return d;
}

Status Disk::write(std::uint64_t offset, const char* data, std::size_t n) const {
  if (sink_) return sink_->write(offset, data, n);
  const std::size_t align = std::max<std::size_t>(sector_, 4096);
  std::size_t done = 0;
  const bool aligned_buf = reinterpret_cast<std::uintptr_t>(data) % 4096 == 0;
  while (done < n) {
    const std::size_t left = n - done;
    const bool use_direct = direct_fd_.get() >= 0 && aligned_buf && (offset + done) % align == 0 &&
                            left >= align && done % 4096 == 0;
    const std::size_t want = use_direct ? left - left % align : left;
    const auto at = static_cast<off_t>(offset + done);
    ssize_t w = retry_eintr(
        [&] { return ::pwrite(use_direct ? direct_fd_.get() : fd_.get(), data + done, want, at); });
    if (w < 0 && use_direct && errno == EINVAL) {
      // O_DIRECT refused for this request after all: buffered from here on.
      w = retry_eintr([&] { return ::pwrite(fd_.get(), data + done, want, at); });
    }
    if (w <= 0) return os_error("write " + path_ + " at offset " + std::to_string(offset + done));
    done += static_cast<std::size_t>(w);
  }
  return ok_status();
}

Status Disk::read(std::uint64_t offset, char* data, std::size_t n) const {
  if (sink_) return make_error(Errc::kInvalid, "the benchmark sink keeps no data to read");
  const std::size_t align = std::max<std::size_t>(sector_, 4096);
  const bool use_direct = direct_fd_.get() >= 0 &&
                          reinterpret_cast<std::uintptr_t>(data) % 4096 == 0 &&
                          offset % align == 0 && n % align == 0;
  auto got = pread_full(use_direct ? direct_fd_.get() : fd_.get(), data, n, offset);
  if (!got) {
    return make_error(Errc::kInternal, "read " + path_ + " at offset " + std::to_string(offset) +
                                           ": " + got.error().message);
  }
  if (*got < n)
    return make_error(Errc::kInvalid, "short read at offset " + std::to_string(offset + *got));
  return ok_status();
}

Status Disk::zero(std::uint64_t offset, std::uint64_t n) const {
  if (n == 0) return ok_status();
  if (sink_) return sink_->zero(offset, n);
  if (punch(offset, n)) return ok_status();
  if (block_ && offset % 512 == 0 && n % 512 == 0) {
    std::uint64_t range[2] = {offset, n};
    if (::ioctl(fd_.get(), BLKZEROOUT, range) == 0) return ok_status();
  }
  // Neither is available: write the zeroes.
  const std::size_t piece = 1 << 20;
  AlignedBuffer z(piece);
  std::memset(z.data(), 0, piece);
  for (std::uint64_t done = 0; done < n;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(piece, n - done));
    if (auto st = write(offset + done, z.data(), k); !st) return st;
    done += k;
  }
  return ok_status();
}

bool Disk::punch(std::uint64_t offset, std::uint64_t n) const {
  // A zero-out that may deallocate (on a block device the device's WRITE ZEROES with unmap
  // allowed, never a software fallback): a thin LUN or a loop device over a sparse file stays
  // unallocated. BLKZEROOUT forbids unmapping: on a loop device it allocates the whole range in
  // the backing file (ext4: unwritten extents), so a 100 GiB image of ZERO chunks needed 100 GiB.
  if (sink_ || n == 0 || (block_ && (offset % sector_ != 0 || n % sector_ != 0))) return false;
  return ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                     static_cast<off_t>(offset), static_cast<off_t>(n)) == 0;
}

Status Disk::flush() const {
  if (sink_) return sink_->flush();
  if (::fsync(fd_.get()) != 0) return os_error("fsync " + path_);
  if (block_) (void)::ioctl(fd_.get(), BLKFLSBUF, 0);
  return ok_status();
}

std::string Disk::reread_partitions() const {
  if (!block_) return "not a block device";
  if (::ioctl(fd_.get(), BLKRRPART, 0) == 0) return "";
  return std::strerror(errno);
}

Result<std::string> resolve_disk(const std::string& hint) {
  if (hint.empty()) return make_error(Errc::kInvalid, "no target disk given");
  if (hint.front() == '/' || is_sink_target(hint)) return hint;
  namespace fs = std::filesystem;
  struct Cand {
    std::string dev;
    std::uint64_t bytes;
    std::string serial;
  };
  std::vector<Cand> cands;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/sys/block", ec)) {
    const std::string name = e.path().filename().string();
    for (const char* skip : {"loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"}) {
      if (name.rfind(skip, 0) == 0) goto next;
    }
    if (read_small(e.path() / "removable") == "1") continue;
    {
      const std::string sectors = read_small(e.path() / "size");
      std::uint64_t count = 0;  // unreadable or garbled: not a candidate
      std::from_chars(sectors.data(), sectors.data() + sectors.size(), count);
      const std::uint64_t bytes = count * 512;
      if (bytes == 0) continue;
      std::string serial = read_small(e.path() / "device" / "serial");
      if (serial.empty()) serial = read_small(e.path() / "serial");
      cands.push_back({"/dev/" + name, bytes, serial});
    }
  next:;
  }
  if (hint.rfind("serial=", 0) == 0) {
    const auto want = hint.substr(7);
    for (const auto& c : cands) {
      if (c.serial == want) return c.dev;
    }
    return make_error(Errc::kNotFound, "no disk with serial '" + want + "'");
  }
  if (cands.empty())
    return make_error(Errc::kNotFound, "no non-removable disk found in /sys/block");
  if (hint == "smallest" || hint == "largest") {
    auto best = cands.front();
    for (const auto& c : cands) {
      if (hint == "smallest" ? c.bytes < best.bytes : c.bytes > best.bytes) best = c;
    }
    return best.dev;
  }
  return make_error(
      Errc::kInvalid,
      "disk hint must be a path, 'smallest', 'largest' or 'serial=...', got '" + hint + "'");
}

}  // namespace kiln::agent
