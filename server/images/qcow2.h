// images/qcow2.h — a reader of QEMU's qcow2 disk images, so `kiln image build` takes a generic
// cloud image as it is published.
//
// The format is QEMU's docs/interop/qcow2.txt (versions 2 and 3). Supported: standard, zero
// (v3 zero flag), unallocated and compressed clusters (deflate, and zstd when the header's
// compression_type says so), extended L2 entries (subclusters). Refused with the reason: a
// backing file, encryption, an external data file, unknown incompatible features, the dirty
// and corrupt bits, tables or clusters outside the file, a virtual size that is not a whole
// number of 512-byte sectors or above kMaxVirtualSize. Only the active L1 table is read
// (internal snapshots are ignored); refcounts are not needed for reading.
//
// Memory is bounded whatever the header says: the part of the L1 table that covers the virtual
// size (at most kMaxL1Bytes, and never more than the file holds), one L2 table and one
// decompressed cluster (clusters are at most 2 MiB). Thread-compatible: one reader per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "core/unique_fd.h"

namespace kiln::images {

// True if `head` (the file's first bytes) starts with qcow's magic "QFI\xfb".
bool is_qcow2(std::string_view head);

class Qcow2Reader {
 public:
  static constexpr std::uint64_t kMaxL1Bytes = 32u << 20;        // QEMU's own limit
  static constexpr std::uint64_t kMaxVirtualSize = 64ull << 40;  // 64 TiB
  static constexpr int kMaxClusterBits = 21;                     // 2 MiB, QEMU's limit

  // Reads and checks the header and the L1 table of the qcow2 file open on `fd`, `file_size`
  // bytes long. `name` is used in error messages. Errors are Errc::kInvalid with the reason.
  static Result<std::unique_ptr<Qcow2Reader>> open(UniqueFd fd, std::uint64_t file_size,
                                                   const std::string& name);
  ~Qcow2Reader();
  Qcow2Reader(const Qcow2Reader&) = delete;
  Qcow2Reader& operator=(const Qcow2Reader&) = delete;

  // The virtual disk's size in bytes (a multiple of 512).
  std::uint64_t size() const { return size_; }
  std::uint64_t cluster_size() const { return cluster_size_; }
  int version() const { return version_; }

  // Fills `buf` with the `n` bytes of the virtual disk at `offset` (offset + n <= size()).
  // Fastest when called with increasing offsets (one L2 table and one cluster are cached).
  Status read(std::uint64_t offset, char* buf, std::size_t n);
  // True if [offset, offset + len) stores no data and reads as zeros: unallocated clusters and
  // zero clusters or subclusters only (there is never a backing file). False on an error
  // (read() of the same range reports it).
  bool is_hole(std::uint64_t offset, std::uint64_t len);

 private:
  // A run of the virtual disk from one offset to at most the end of its cluster (or of its L2
  // table's range for an absent L2 table).
  struct Extent {
    enum Kind { kZero, kData, kCompressed } kind = kZero;
    std::uint64_t len = 0;
    std::uint64_t host = 0;        // kData: file offset of the extent's first byte
    std::uint64_t cluster = 0;     // kCompressed: guest cluster index
    std::uint64_t in_cluster = 0;  // kCompressed: offset of the extent in its cluster
    std::uint64_t comp_offset = 0, comp_length = 0;  // kCompressed: bytes in the file
  };
  struct Codecs;

  Qcow2Reader() = default;
  Result<Extent> map(std::uint64_t offset);
  Status load_l2(std::uint64_t l1_index);
  Status decompress(const Extent& e);
  Error bad(const std::string& why) const;

  UniqueFd fd_;
  std::string name_;
  std::uint64_t file_size_ = 0;
  std::uint64_t size_ = 0;
  int version_ = 0;
  int cluster_bits_ = 0;
  std::uint64_t cluster_size_ = 0;
  bool extended_l2_ = false;
  bool zstd_ = false;
  std::uint64_t l2_entries_ = 0;
  std::vector<std::uint64_t> l1_;        // the entries that cover size_
  std::uint64_t l2_index_ = UINT64_MAX;  // which L1 entry's table l2_ holds
  std::string l2_;
  std::uint64_t zcluster_ = UINT64_MAX;  // which guest cluster zbuf_ holds
  std::string zbuf_, cbuf_;
  std::unique_ptr<Codecs> codecs_;
};

}  // namespace kiln::images
