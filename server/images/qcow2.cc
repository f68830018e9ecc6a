#include "images/qcow2.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "core/io.h"

namespace kiln::images {

namespace {

constexpr std::uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55
constexpr std::uint64_t kCopied = 1ull << 63;
constexpr std::uint64_t kCompressed = 1ull << 62;
constexpr std::uint64_t kZeroFlag = 1;

// Incompatible feature bits.
constexpr std::uint64_t kDirty = 1u << 0;
constexpr std::uint64_t kCorrupt = 1u << 1;
constexpr std::uint64_t kExternalData = 1u << 2;
constexpr std::uint64_t kCompressionType = 1u << 3;
constexpr std::uint64_t kExtendedL2 = 1u << 4;
constexpr std::uint64_t kKnownIncompatible =
    kDirty | kCorrupt | kExternalData | kCompressionType | kExtendedL2;

constexpr std::size_t kV2HeaderLength = 72;
constexpr std::size_t kV3HeaderLength = 104;
constexpr std::size_t kHeaderRead = 112;  // through compression_type and its padding

std::uint64_t be64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
std::uint32_t be32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string hex(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

bool is_qcow2(std::string_view head) { return head.substr(0, 4) == std::string_view("QFI\xfb", 4); }

struct Qcow2Reader::Codecs {
  z_stream z{};
  bool z_ready = false;
  ZSTD_DCtx* zstd = nullptr;
  ~Codecs() {
    if (z_ready) inflateEnd(&z);
    if (zstd) ZSTD_freeDCtx(zstd);
  }
};

Qcow2Reader::~Qcow2Reader() = default;

Error Qcow2Reader::bad(const std::string& why) const {
  return make_error(Errc::kInvalid, name_ + ": qcow2: " + why);
}

Result<std::unique_ptr<Qcow2Reader>> Qcow2Reader::open(UniqueFd fd, std::uint64_t file_size,
                                                       const std::string& name) {
  std::unique_ptr<Qcow2Reader> r(new Qcow2Reader);
  r->fd_ = std::move(fd);
  r->name_ = name;
  r->file_size_ = file_size;
  char h[kHeaderRead] = {};
  auto got = pread_full(r->fd_.get(), h, sizeof h, 0);
  if (!got) return got.error();
  if (*got < 4 || !is_qcow2(std::string_view(h, *got))) return r->bad("no qcow magic");
  if (*got < kV2HeaderLength) return r->bad("the header is truncated");

  const std::uint32_t version = be32(h + 4);
  if (version != 2 && version != 3) {
    return r->bad("version " + std::to_string(version) +
                  " is not supported (only qcow2 versions 2 and 3; convert it with "
                  "`qemu-img convert -O qcow2`)");
  }
  r->version_ = static_cast<int>(version);
  const std::uint64_t backing_offset = be64(h + 8);
  const std::uint32_t backing_size = be32(h + 16);
  const std::uint32_t cluster_bits = be32(h + 20);
  const std::uint64_t size = be64(h + 24);
  const std::uint32_t crypt_method = be32(h + 32);
  const std::uint32_t l1_size = be32(h + 36);
  const std::uint64_t l1_offset = be64(h + 40);
  std::uint64_t incompatible = 0;
  std::size_t header_length = kV2HeaderLength;
  if (version == 3) {
    if (*got < kV3HeaderLength) return r->bad("the header is truncated");
    incompatible = be64(h + 72);
    header_length = be32(h + 100);
  }

  if (cluster_bits < 9 || cluster_bits > kMaxClusterBits) {
    return r->bad("cluster_bits " + std::to_string(cluster_bits) +
                  " is outside 9..21 (512 bytes to 2 MiB clusters)");
  }
  r->cluster_bits_ = static_cast<int>(cluster_bits);
  r->cluster_size_ = 1ull << cluster_bits;
  if (version == 3 && (header_length < kV3HeaderLength || header_length % 8 != 0 ||
                       header_length > r->cluster_size_)) {
    return r->bad("header_length " + std::to_string(header_length) + " is invalid");
  }
  if (file_size < header_length) return r->bad("the header is truncated");

  if (crypt_method != 0) {
    return r->bad(std::string("the image is encrypted (") +
                  (crypt_method == 1   ? "AES"
                   : crypt_method == 2 ? "LUKS"
                                       : "unknown method") +
                  "); decrypt it first with `qemu-img convert -O qcow2`");
  }
  if (backing_offset != 0) {
    std::string backing;
    if (backing_size > 0 && backing_size <= 1023 && backing_offset < file_size &&
        backing_size <= file_size - backing_offset) {
      backing.resize(backing_size);
      auto b = pread_full(r->fd_.get(), backing.data(), backing.size(), backing_offset);
      backing.resize(b ? *b : 0);
    }
    return r->bad("the image has a backing file" +
                  (backing.empty() ? std::string() : " (" + backing + ")") +
                  ", which kiln does not read; flatten it first with `qemu-img convert -O qcow2 "
                  "<this> <flat.qcow2>`");
  }
  if (incompatible & kDirty) {
    return r->bad(
        "the image is marked dirty (it was not closed cleanly); repair it with "
        "`qemu-img check -r all` first");
  }
  if (incompatible & kCorrupt) {
    return r->bad("the image is marked corrupt; repair it with `qemu-img check -r all` first");
  }
  if (incompatible & kExternalData) {
    return r->bad(
        "the image keeps its data in an external data file, which is not supported; "
        "convert it with `qemu-img convert -O qcow2`");
  }
  if (incompatible & ~kKnownIncompatible) {
    return r->bad("unknown incompatible features " + hex(incompatible & ~kKnownIncompatible) +
                  " are set; convert it with `qemu-img convert -O qcow2`");
  }
  r->extended_l2_ = (incompatible & kExtendedL2) != 0;
  if (r->extended_l2_ && cluster_bits < 14) {
    return r->bad("extended L2 entries need clusters of at least 16 KiB");
  }
  const unsigned compression_type =
      header_length > kV3HeaderLength ? static_cast<unsigned char>(h[104]) : 0;
  if (incompatible & kCompressionType) {
    if (compression_type == 0) {
      return r->bad("the compression type feature is set but compression_type is zlib");
    }
    if (compression_type != 1) {
      return r->bad("compression_type " + std::to_string(compression_type) +
                    " is not supported (zlib and zstd are)");
    }
    r->zstd_ = true;
  } else if (compression_type != 0) {
    return r->bad("compression_type " + std::to_string(compression_type) +
                  " is set without the compression type feature bit");
  }

  if (size % 512 != 0) {
    return r->bad("the virtual size " + std::to_string(size) +
                  " is not a whole number of 512-byte sectors");
  }
  if (size > kMaxVirtualSize) {
    return r->bad("the virtual size " + std::to_string(size) + " is above the 64 TiB limit");
  }
  r->size_ = size;
  r->l2_entries_ = r->cluster_size_ / (r->extended_l2_ ? 16 : 8);
  const std::uint64_t per_l2 = r->l2_entries_ * r->cluster_size_;
  const std::uint64_t needed = (size + per_l2 - 1) / per_l2;
  if (static_cast<std::uint64_t>(l1_size) * 8 > kMaxL1Bytes) {
    return r->bad("the L1 table (" + std::to_string(l1_size) + " entries) is above 32 MiB");
  }
  if (l1_size < needed) {
    return r->bad("the L1 table has " + std::to_string(l1_size) +
                  " entries; the virtual size needs " + std::to_string(needed));
  }
  if (l1_offset % r->cluster_size_ != 0) {
    return r->bad("the L1 table offset " + hex(l1_offset) + " is not cluster-aligned");
  }
  if (l1_offset > file_size || static_cast<std::uint64_t>(l1_size) * 8 > file_size - l1_offset) {
    return r->bad("the L1 table at " + hex(l1_offset) + " lies outside the file (" +
                  std::to_string(file_size) + " bytes)");
  }
  std::string l1(needed * 8, '\0');
  auto l1_got = pread_full(r->fd_.get(), l1.data(), l1.size(), l1_offset);
  if (!l1_got) return l1_got.error();
  if (*l1_got != l1.size()) return r->bad("the L1 table is truncated");
  r->l1_.resize(needed);
  for (std::uint64_t i = 0; i < needed; ++i) {
    const std::uint64_t e = be64(l1.data() + 8 * i);
    const std::uint64_t l2 = e & kOffsetMask;
    if (l2 == 0) {
      r->l1_[i] = 0;
      continue;
    }
    if (l2 % r->cluster_size_ != 0) {
      return r->bad("L1 entry " + std::to_string(i) + ": L2 table offset " + hex(l2) +
                    " is not cluster-aligned");
    }
    if (l2 > file_size || r->cluster_size_ > file_size - l2) {
      return r->bad("L1 entry " + std::to_string(i) + ": L2 table at " + hex(l2) +
                    " lies outside the file (" + std::to_string(file_size) + " bytes)");
    }
    r->l1_[i] = l2;
  }
  r->codecs_ = std::make_unique<Codecs>();
  return r;
}

Status Qcow2Reader::load_l2(std::uint64_t l1_index) {
  if (l2_index_ == l1_index) return ok_status();
  l2_index_ = UINT64_MAX;
  l2_.resize(cluster_size_);
  auto got = pread_full(fd_.get(), l2_.data(), l2_.size(), l1_[l1_index]);
  if (!got) return got.error();
  if (*got != l2_.size()) return bad("the L2 table at " + hex(l1_[l1_index]) + " is truncated");
  l2_index_ = l1_index;
  return ok_status();
}

Result<Qcow2Reader::Extent> Qcow2Reader::map(std::uint64_t offset) {
  const std::uint64_t cluster = offset >> cluster_bits_;
  const std::uint64_t in = offset & (cluster_size_ - 1);
  const std::uint64_t cluster_start = cluster << cluster_bits_;
  const std::uint64_t to_end = size_ - offset;
  const std::uint64_t l1_index = cluster / l2_entries_;
  const std::uint64_t l2_index = cluster % l2_entries_;
  Extent x;
  if (l1_[l1_index] == 0) {  // no L2 table: its whole range is unallocated
    const std::uint64_t range_end = (l1_index + 1) * l2_entries_ * cluster_size_;
    x.len = std::min(range_end - offset, to_end);
    return x;
  }
  if (auto s = load_l2(l1_index); !s) return s.error();
  const char* p = l2_.data() + l2_index * (extended_l2_ ? 16 : 8);
  const std::uint64_t e = be64(p);
  auto where = [&] { return "cluster at virtual offset " + std::to_string(cluster_start); };
  if (e & kCompressed) {
    const int x_bits = 62 - (cluster_bits_ - 8);
    const std::uint64_t host = e & ((1ull << x_bits) - 1);
    const std::uint64_t sectors = (e >> x_bits) & ((1ull << (cluster_bits_ - 8)) - 1);
    if (host >= file_size_) {
      return bad(where() + ": compressed data at " + hex(host) + " lies outside the file (" +
                 std::to_string(file_size_) + " bytes)");
    }
    x.kind = Extent::kCompressed;
    x.cluster = cluster;
    x.in_cluster = in;
    x.comp_offset = host;
    // The last sector may be shared with the next compressed cluster, or cut by the file's end.
    x.comp_length = std::min((sectors + 1) * 512 - (host & 511), file_size_ - host);
    x.len = std::min(cluster_size_ - in, to_end);
    return x;
  }
  const std::uint64_t host = e & kOffsetMask;
  bool allocated;
  std::uint64_t run_end = cluster_size_;  // end of the run of same-kind subclusters
  if (extended_l2_) {
    const std::uint64_t bitmap = be64(p + 8);
    const std::uint32_t alloc = static_cast<std::uint32_t>(bitmap);
    const std::uint32_t zero = static_cast<std::uint32_t>(bitmap >> 32);
    if (alloc & zero) return bad(where() + ": a subcluster is both allocated and zero");
    const std::uint64_t sub = cluster_size_ / 32;
    std::uint64_t s = in / sub;
    allocated = (alloc >> s) & 1;
    while (s + 1 < 32 && ((alloc >> (s + 1)) & 1) == allocated) ++s;
    run_end = (s + 1) * sub;
  } else if (e & kZeroFlag) {
    if (version_ == 2) return bad(where() + ": the zero flag is set in a version 2 image");
    allocated = false;
  } else {
    allocated = host != 0;
    if (host == 0 && (e & kCopied)) {
      return bad(where() +
                 ": host offset 0 is marked in use (only valid with an external data "
                 "file)");
    }
  }
  x.len = std::min(run_end - in, to_end);
  if (!allocated) return x;
  if (host == 0) return bad(where() + ": an allocated subcluster has no host offset");
  if (host % cluster_size_ != 0) {
    return bad(where() + ": host offset " + hex(host) + " is not cluster-aligned");
  }
  // The bytes read must be in the file (a subcluster image may end inside its last cluster).
  if (host + in > file_size_ || x.len > file_size_ - (host + in)) {
    return bad(where() + ": data at " + hex(host + in) + " lies outside the file (" +
               std::to_string(file_size_) + " bytes)");
  }
  x.kind = Extent::kData;
  x.host = host + in;
  return x;
}

Status Qcow2Reader::decompress(const Extent& x) {
  if (zcluster_ == x.cluster) return ok_status();
  zcluster_ = UINT64_MAX;
  cbuf_.resize(x.comp_length);
  auto got = pread_full(fd_.get(), cbuf_.data(), cbuf_.size(), x.comp_offset);
  if (!got) return got.error();
  if (*got != cbuf_.size())
    return bad("compressed data at " + hex(x.comp_offset) + " is truncated");
  zbuf_.resize(cluster_size_);
  const std::string where =
      "compressed cluster at virtual offset " + std::to_string(x.cluster << cluster_bits_);
  std::size_t produced = 0;
  if (zstd_) {
    if (!codecs_->zstd) {
      codecs_->zstd = ZSTD_createDCtx();
      if (!codecs_->zstd) throw std::bad_alloc();
      // Clusters are at most 2 MiB: a frame asking for a larger window is not qcow2's.
      ZSTD_DCtx_setParameter(codecs_->zstd, ZSTD_d_windowLogMax, kMaxClusterBits + 2);
    }
    ZSTD_DCtx_reset(codecs_->zstd, ZSTD_reset_session_only);
    ZSTD_inBuffer in{cbuf_.data(), cbuf_.size(), 0};
    ZSTD_outBuffer out{zbuf_.data(), zbuf_.size(), 0};
    while (out.pos < out.size) {
      const std::size_t before_in = in.pos, before_out = out.pos;
      const std::size_t r = ZSTD_decompressStream(codecs_->zstd, &out, &in);
      if (ZSTD_isError(r)) return bad(where + ": zstd: " + ZSTD_getErrorName(r));
      if (in.pos == before_in && out.pos == before_out) break;  // input exhausted
    }
    produced = out.pos;
  } else {
    z_stream& z = codecs_->z;
    if (!codecs_->z_ready) {
      // qcow2's deflate is raw (no zlib header); -15 accepts any window size.
      if (inflateInit2(&z, -15) != Z_OK) throw std::bad_alloc();
      codecs_->z_ready = true;
    } else {
      inflateReset(&z);
    }
    z.next_in = reinterpret_cast<Bytef*>(cbuf_.data());
    z.avail_in = static_cast<uInt>(cbuf_.size());
    z.next_out = reinterpret_cast<Bytef*>(zbuf_.data());
    z.avail_out = static_cast<uInt>(zbuf_.size());
    const int r = inflate(&z, Z_FINISH);
    if (r != Z_STREAM_END && r != Z_OK && r != Z_BUF_ERROR) {
      return bad(where + ": deflate: " + (z.msg ? z.msg : "invalid data"));
    }
    produced = zbuf_.size() - z.avail_out;
  }
  if (produced != cluster_size_) {
    return bad(where + ": decompresses to " + std::to_string(produced) + " bytes, not a cluster");
  }
  zcluster_ = x.cluster;
  return ok_status();
}

Status Qcow2Reader::read(std::uint64_t offset, char* buf, std::size_t n) {
  if (offset > size_ || n > size_ - offset) return bad("read beyond the virtual size");
  // Contiguous data extents are read with one pread.
  char* run_dst = nullptr;
  std::uint64_t run_host = 0, run_len = 0;
  auto flush = [&]() -> Status {
    if (run_len == 0) return ok_status();
    auto got = pread_full(fd_.get(), run_dst, run_len, run_host);
    if (!got) return got.error();
    if (*got != run_len) return bad("data at " + hex(run_host) + " is truncated");
    run_len = 0;
    return ok_status();
  };
  while (n > 0) {
    auto x = map(offset);
    if (!x) return x.error();
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(x->len, n));
    if (x->kind == Extent::kData && run_len > 0 && run_host + run_len == x->host) {
      run_len += take;
    } else {
      if (auto s = flush(); !s) return s;
      switch (x->kind) {
        case Extent::kZero:
          std::memset(buf, 0, take);
          break;
        case Extent::kData:
          run_dst = buf;
          run_host = x->host;
          run_len = take;
          break;
        case Extent::kCompressed:
          if (auto s = decompress(*x); !s) return s;
          std::memcpy(buf, zbuf_.data() + x->in_cluster, take);
          break;
      }
    }
    buf += take;
    offset += take;
    n -= take;
  }
  return flush();
}

bool Qcow2Reader::is_hole(std::uint64_t offset, std::uint64_t len) {
  if (offset > size_ || len > size_ - offset) return false;
  while (len > 0) {
    auto x = map(offset);
    if (!x || x->kind != Extent::kZero) return false;
    const std::uint64_t take = std::min(x->len, len);
    offset += take;
    len -= take;
  }
  return true;
}

}  // namespace kiln::images
