#include "agent/disk.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

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

}  // namespace

void AlignedBuffer::Free::operator()(char* p) const { std::free(p); }

AlignedBuffer::AlignedBuffer(std::size_t size) : size_(size) {
  void* p = nullptr;
  if (posix_memalign(&p, 4096, size ? size : 4096) != 0) throw std::bad_alloc();
  p_.reset(static_cast<char*>(p));
}

Result<Disk> Disk::open(const std::string& path, bool direct) {
  Disk d;
  d.path_ = path;
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
  if (block_) {
    if (offset % 512 == 0 && n % 512 == 0) {
      std::uint64_t range[2] = {offset, n};
      if (::ioctl(fd_.get(), BLKZEROOUT, range) == 0) return ok_status();
    }
  } else if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         static_cast<off_t>(offset), static_cast<off_t>(n)) == 0) {
    return ok_status();
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

Status Disk::flush() const {
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
  if (hint.front() == '/') return hint;
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
