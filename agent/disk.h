// agent/disk.h — the target the agent writes: a block device (or, for tests and benchmarks, a
// regular file). Writes go through O_DIRECT with aligned buffers where the target accepts it
// (falling back to buffered I/O where O_DIRECT is refused, and for unaligned tails); zeroes
// become BLKZEROOUT on a block device or a punched hole in a file, never a silent skip.
// Thread-safe: positional I/O only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/unique_fd.h"

namespace kiln::agent {

// A heap buffer aligned for O_DIRECT.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(std::size_t size);
  char* data() { return p_.get(); }
  std::size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(char* p) const;
  };
  std::unique_ptr<char, Free> p_;
  std::size_t size_;
};

class Disk {
 public:
  static Result<Disk> open(const std::string& path, bool direct = true);
  std::uint64_t size() const { return size_; }
  std::uint32_t sector_size() const { return sector_; }
  bool block_device() const { return block_; }
  bool direct() const { return direct_fd_.get() >= 0; }
  const std::string& path() const { return path_; }

  Status write(std::uint64_t offset, const char* data, std::size_t n) const;
  Status read(std::uint64_t offset, char* data, std::size_t n) const;
  // The range reads back as zeroes afterwards.
  Status zero(std::uint64_t offset, std::uint64_t n) const;
  Status flush() const;
  // Asks the kernel to re-read the partition table (block devices; errors are not fatal).
  std::string reread_partitions() const;

 private:
  std::string path_;
  UniqueFd fd_;         // buffered
  UniqueFd direct_fd_;  // O_DIRECT, or -1
  std::uint64_t size_ = 0;
  std::uint32_t sector_ = 512;
  bool block_ = false;
};

// Picks a target from a hint: a path (/dev/sda), "smallest" or "largest" (non-removable,
// non-virtual disks in /sys/block), or "serial=XYZ".
Result<std::string> resolve_disk(const std::string& hint);

}  // namespace kiln::agent
