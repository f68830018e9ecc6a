// agent/disk.h — the target the agent writes: a block device (or, for tests and benchmarks, a
// regular file). Writes go through O_DIRECT with aligned buffers where the target accepts it
// (falling back to buffered I/O where O_DIRECT is refused, and for unaligned tails); zeroes
// become a deallocating zero-out on a block device (fallocate PUNCH_HOLE, else BLKZEROOUT) or a
// punched hole in a file, never a silent skip.
//
// A third kind of target exists for benchmarks and tests only, never for a machine: the
// hash-checked sink, "sink:SIZE:STATS" (SIZE in bytes, or with a K/M/G/T suffix). It keeps no
// data: every write and zero-out updates a CRC-32 per 64 KiB block of a virtual disk that starts
// all zeroes, and every flush() rewrites STATS (a small JSON file, replaced atomically) with
// `digest`, the SHA-256 of the blocks' CRC-32s (little-endian, in block order, the last block
// possibly short): bench/fleet-write.sh computes the same from the raw image, so a chunk that is
// missing, misplaced or wrong changes it. Blocks written partially keep their bytes (the
// partition tables written last); a partial write over a block it holds only as a CRC fails
// instead of guessing. Reads fail (the agent then fetches every chunk, as on a wiped disk).
// STATS also carries `chunk_ms`: for each write by a thread other than the one that opened the
// sink (the deploy workers), the time since that thread's previous write (or the last flush):
// the agent's fetch, decode and SHA-256 check of one chunk. Memory: 4 bytes per 64 KiB.
// Thread-safe: positional I/O only (the sink: one mutex around its tables).
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
  bool sink() const { return sink_ != nullptr; }
  const std::string& path() const { return path_; }

  Status write(std::uint64_t offset, const char* data, std::size_t n) const;
  Status read(std::uint64_t offset, char* data, std::size_t n) const;
  // The range reads back as zeroes afterwards.
  Status zero(std::uint64_t offset, std::uint64_t n) const;
  // Zeroes the range only if the device can deallocate it (fallocate PUNCH_HOLE: guaranteed
  // zeroes, no software fallback, next to no cost); false when it cannot, and nothing changed.
  bool punch(std::uint64_t offset, std::uint64_t n) const;
  Status flush() const;
  // Asks the kernel to re-read the partition table (block devices; errors are not fatal).
  std::string reread_partitions() const;

  struct Sink;  // the hash-checked sink's state (disk.cc)

 private:
  std::string path_;
  UniqueFd fd_;         // buffered
  UniqueFd direct_fd_;  // O_DIRECT, or -1
  std::uint64_t size_ = 0;
  std::uint32_t sector_ = 512;
  bool block_ = false;
  std::shared_ptr<Sink> sink_;  // set for "sink:..." targets only
};

// True when `target` names the hash-checked sink ("sink:..."), not a device.
bool is_sink_target(const std::string& target);

// Picks a target from a hint: a path (/dev/sda), "smallest" or "largest" (non-removable,
// non-virtual disks in /sys/block), or "serial=XYZ".
Result<std::string> resolve_disk(const std::string& hint);

}  // namespace kiln::agent
