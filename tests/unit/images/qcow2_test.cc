#include "images/qcow2.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "core/crypto.h"
#include "images/builder.h"
#include "tests/unit/test_dir.h"

namespace kiln::images {
namespace {

void put_be(std::string& s, std::size_t at, std::uint64_t v, int bytes) {
  if (s.size() < at + bytes) s.resize(at + bytes, '\0');
  for (int i = bytes - 1; i >= 0; --i, v >>= 8) s[at + i] = static_cast<char>(v & 0xff);
}

// A guest cluster of a crafted image.
enum class C { kUnallocated, kZeroFlag, kData, kCompressed, kSubclusters };
struct Cluster {
  C kind = C::kUnallocated;
  std::uint32_t alloc = 0, zero = 0;  // kSubclusters: the bitmap halves
};

// A small qcow2 file written the way the spec lays it out: header in cluster 0, the L1 table in
// cluster 1, L2 tables next, then data clusters, then compressed data packed byte by byte.
// `raw` is what the virtual disk reads as.
struct Crafted {
  std::string file;
  std::string raw;
  std::uint64_t l1_offset = 0;
  std::uint64_t first_l2 = 0;
  std::uint64_t first_data = 0;
};

struct Spec {
  int version = 3;
  int cluster_bits = 16;
  bool zstd = false;
  bool extended_l2 = false;
  std::uint64_t size = 0;  // 0: clusters * cluster size
  std::vector<Cluster> clusters;
};

std::string compress(const std::string& data, bool zstd) {
  if (zstd) {
    std::string out(ZSTD_compressBound(data.size()), '\0');
    out.resize(ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3));
    return out;
  }
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  return out;
}

Crafted craft(const Spec& s) {
  Crafted c;
  const std::uint64_t cs = 1ull << s.cluster_bits;
  const std::uint64_t size = s.size ? s.size : s.clusters.size() * cs;
  const std::uint64_t l2_entries = cs / (s.extended_l2 ? 16 : 8);
  const std::uint64_t n_clusters = (size + cs - 1) / cs;
  const std::uint64_t l1_entries = (n_clusters + l2_entries - 1) / l2_entries;
  c.l1_offset = cs;
  c.first_l2 = 2 * cs;
  c.first_data = c.first_l2 + l1_entries * cs;
  std::string& f = c.file;
  f.assign(c.first_data, '\0');
  f.replace(0, 4, "QFI\xfb", 4);
  put_be(f, 4, s.version, 4);
  put_be(f, 20, s.cluster_bits, 4);
  put_be(f, 24, size, 8);
  put_be(f, 36, l1_entries, 4);
  put_be(f, 40, c.l1_offset, 8);
  if (s.version == 3) {
    put_be(f, 72, (s.zstd ? 8 : 0) | (s.extended_l2 ? 16 : 0), 8);
    put_be(f, 96, 4, 4);
    put_be(f, 100, 112, 4);
    f[104] = s.zstd ? 1 : 0;
  }
  for (std::uint64_t i = 0; i < l1_entries; ++i) {
    put_be(f, c.l1_offset + 8 * i, (1ull << 63) | (c.first_l2 + i * cs), 8);
  }
  std::mt19937_64 rng(7);
  std::vector<std::pair<std::uint64_t, std::string>> compressed;  // L2 entry offset, data
  for (std::uint64_t i = 0; i < n_clusters; ++i) {
    const Cluster& k = i < s.clusters.size() ? s.clusters[i] : Cluster{};
    std::string content(cs, '\0');
    // Half text, half noise: compressible but not trivially.
    for (std::uint64_t b = 0; b < cs; ++b) {
      content[b] = b < cs / 2 ? static_cast<char>('a' + (b + i) % 26) : static_cast<char>(rng());
    }
    const std::uint64_t entry =
        c.first_l2 + (i / l2_entries) * cs + (i % l2_entries) * (s.extended_l2 ? 16 : 8);
    std::string reads(cs, '\0');
    switch (k.kind) {
      case C::kUnallocated:
        break;
      case C::kZeroFlag:
        put_be(f, entry, (1ull << 63) | 1, 8);  // zero flag, no host cluster
        break;
      case C::kData:
      case C::kSubclusters: {
        const std::uint64_t host = f.size();
        f += content;
        put_be(f, entry, (1ull << 63) | host, 8);
        if (k.kind == C::kData) {
          if (s.extended_l2) put_be(f, entry + 8, 0xffffffffull, 8);
          reads = content;
        } else {
          put_be(f, entry + 8, (static_cast<std::uint64_t>(k.zero) << 32) | k.alloc, 8);
          const std::uint64_t sub = cs / 32;
          for (int b = 0; b < 32; ++b) {
            if ((k.alloc >> b) & 1) reads.replace(b * sub, sub, content, b * sub, sub);
          }
        }
        break;
      }
      case C::kCompressed:
        compressed.emplace_back(entry, compress(content, s.zstd));
        reads = content;
        break;
    }
    c.raw += reads;
  }
  // Compressed clusters go after the data clusters, unaligned, one after the other.
  const int x = 62 - (s.cluster_bits - 8);
  for (const auto& [entry, data] : compressed) {
    const std::uint64_t host = f.size() + 100;  // not sector-aligned on purpose
    f.resize(host);
    f += data;
    const std::uint64_t extra = (host + data.size() - 1) / 512 - host / 512;
    EXPECT_LT(extra, 1ull << (s.cluster_bits - 8)) << "cluster too small to compress";
    put_be(f, entry, (1ull << 62) | (extra << x) | host, 8);
  }
  c.raw.resize(size);
  return c;
}

class Qcow2Test : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = kiln::testing::make_test_dir("kiln-qcow2-test"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& bytes, const std::string& name = "disk.qcow2") {
    const auto p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
    return p;
  }
  Result<std::unique_ptr<Qcow2Reader>> open(const std::string& bytes) {
    const auto p = write(bytes);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    return Qcow2Reader::open(std::move(fd), bytes.size(), "disk.qcow2");
  }
  // Reads the whole virtual disk in pieces of `step` bytes.
  static std::string read_all(Qcow2Reader& r, std::size_t step) {
    std::string out(r.size(), '\0');
    for (std::uint64_t off = 0; off < r.size(); off += step) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(step, r.size() - off));
      auto s = r.read(off, out.data() + off, n);
      EXPECT_TRUE(s) << s.error().message;
    }
    return out;
  }
  // The open error's message for a crafted file (empty if it opened).
  std::string open_error(const std::string& bytes) {
    auto r = open(bytes);
    return r ? std::string() : r.error().message;
  }

  std::filesystem::path dir_;
};

Spec mixed(int version, bool zstd) {
  Spec s;
  s.version = version;
  s.zstd = zstd;
  s.clusters = {{C::kData},       {C::kUnallocated}, {C::kCompressed}, {C::kData},
                {C::kCompressed}, {C::kUnallocated}, {C::kData},       {C::kUnallocated}};
  if (version == 3) s.clusters[5].kind = C::kZeroFlag;
  return s;
}

TEST_F(Qcow2Test, ReadsEveryClusterKindInAnyPieces) {
  for (auto [version, zstd] : {std::pair{3, false}, {3, true}, {2, false}}) {
    SCOPED_TRACE("version " + std::to_string(version) + (zstd ? " zstd" : " zlib"));
    const Crafted c = craft(mixed(version, zstd));
    auto r = open(c.file);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ((*r)->size(), 8u << 16);
    EXPECT_EQ((*r)->version(), version);
    // Pieces that split clusters, compressed ones included, and a whole-disk read.
    for (std::size_t step : {4096u, 100000u, 8u << 16}) {
      EXPECT_TRUE(read_all(**r, step) == c.raw) << "step " << step;
    }
    const std::uint64_t cs = 1 << 16;
    EXPECT_FALSE((*r)->is_hole(0, cs));
    EXPECT_TRUE((*r)->is_hole(cs, cs));             // unallocated
    EXPECT_TRUE((*r)->is_hole(5 * cs, cs));         // zero flag (v3) or unallocated (v2)
    EXPECT_TRUE((*r)->is_hole(7 * cs + 512, 512));  // a piece of one
    EXPECT_FALSE((*r)->is_hole(2 * cs, cs));        // compressed
    EXPECT_FALSE((*r)->is_hole(cs, 2 * cs));        // a hole, then data
    EXPECT_FALSE((*r)->is_hole(7 * cs, 2 * cs));    // beyond the virtual size
  }
}

TEST_F(Qcow2Test, PartialLastClusterAndManyL2Tables) {
  Spec s;
  s.cluster_bits = 9;  // 64 entries per L2 table: several tables, and absent ones
  s.size = 300 * 512;
  for (int i = 0; i < 300; ++i) s.clusters.push_back({i % 3 == 0 ? C::kData : C::kZeroFlag});
  for (int i = 64; i < 128; ++i) s.clusters[i] = {C::kUnallocated};
  Crafted c = craft(s);
  // Drop the second L2 table from L1: its 64 clusters are unallocated.
  put_be(c.file, c.l1_offset + 8, 0, 8);
  auto r = open(c.file);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(read_all(**r, 1536) == c.raw);
  EXPECT_TRUE((*r)->is_hole(64 * 512, 64 * 512));
  EXPECT_FALSE((*r)->is_hole(63 * 512, 2 * 512));
}

TEST_F(Qcow2Test, ExtendedL2Subclusters) {
  Spec s;
  s.cluster_bits = 15;  // 32 KiB clusters, 1 KiB subclusters
  s.extended_l2 = true;
  s.clusters = {{C::kSubclusters, 0x0000ffffu, 0xffff0000u},
                {C::kSubclusters, 0xf0f0f0f0u, 0},
                {C::kCompressed},
                {C::kSubclusters, 0, 0xffffffffu},
                {C::kData}};
  const Crafted c = craft(s);
  auto r = open(c.file);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(read_all(**r, 3000) == c.raw);
  const std::uint64_t cs = 1 << 15, sub = cs / 32;
  EXPECT_FALSE((*r)->is_hole(0, sub));
  EXPECT_TRUE((*r)->is_hole(16 * sub, 16 * sub));  // zero subclusters
  EXPECT_TRUE((*r)->is_hole(cs, 4 * sub));         // unallocated subclusters
  EXPECT_FALSE((*r)->is_hole(cs, 5 * sub));
  EXPECT_TRUE((*r)->is_hole(3 * cs, cs));

  Crafted both = c;  // a subcluster both allocated and zero
  put_be(both.file, both.first_l2 + 8, 0x00010001'00010001ull, 8);
  auto rb = open(both.file);
  ASSERT_TRUE(rb);
  std::string buf(cs, '\0');
  auto st = (*rb)->read(0, buf.data(), buf.size());
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("both allocated and zero"), std::string::npos);
}

TEST_F(Qcow2Test, RefusesWhatItCannotReadWithTheReason) {
  const Crafted good = craft(mixed(3, false));
  ASSERT_EQ(open_error(good.file), "");
  struct Case {
    std::string name;
    std::function<void(std::string&)> mutate;
    std::string want;
  };
  const std::uint64_t file_size = good.file.size();
  const std::vector<Case> cases = {
      {"qcow version 1", [](std::string& f) { put_be(f, 4, 1, 4); }, "version 1 is not supported"},
      {"version 4", [](std::string& f) { put_be(f, 4, 4, 4); }, "version 4 is not supported"},
      {"backing file",
       [](std::string& f) {
         f.replace(1024, 9, "base.qcow2");
         put_be(f, 8, 1024, 8);
         put_be(f, 16, 10, 4);
       },
       "backing file (base.qcow2)"},
      {"AES", [](std::string& f) { put_be(f, 32, 1, 4); }, "encrypted (AES)"},
      {"LUKS", [](std::string& f) { put_be(f, 32, 2, 4); }, "encrypted (LUKS)"},
      {"dirty", [](std::string& f) { put_be(f, 72, 1, 8); }, "marked dirty"},
      {"corrupt", [](std::string& f) { put_be(f, 72, 2, 8); }, "marked corrupt"},
      {"external data file", [](std::string& f) { put_be(f, 72, 4, 8); }, "external data file"},
      {"unknown feature", [](std::string& f) { put_be(f, 72, 1ull << 40, 8); },
       "unknown incompatible features 0x10000000000"},
      {"zstd bit with zlib type", [](std::string& f) { put_be(f, 72, 8, 8); },
       "compression_type is zlib"},
      {"unknown compression",
       [](std::string& f) {
         put_be(f, 72, 8, 8);
         f[104] = 2;
       },
       "compression_type 2 is not supported"},
      {"compression type without the bit", [](std::string& f) { f[104] = 1; },
       "without the compression type feature bit"},
      {"ragged size", [](std::string& f) { put_be(f, 24, (8u << 16) - 100, 8); },
       "not a whole number of 512-byte sectors"},
      {"absurd size", [](std::string& f) { put_be(f, 24, 1ull << 60, 8); }, "64 TiB limit"},
      {"small clusters", [](std::string& f) { put_be(f, 20, 8, 4); }, "cluster_bits 8"},
      {"huge clusters", [](std::string& f) { put_be(f, 20, 31, 4); }, "cluster_bits 31"},
      {"huge L1", [](std::string& f) { put_be(f, 36, 0xffffffffu, 4); }, "above 32 MiB"},
      {"L1 too small for the size", [](std::string& f) { put_be(f, 36, 0, 4); },
       "the virtual size needs 1"},
      {"L1 outside the file",
       [file_size](std::string& f) { put_be(f, 40, (file_size + (1 << 16)) & ~0xffffull, 8); },
       "L1 table at"},
      {"L1 offset unaligned", [](std::string& f) { put_be(f, 40, 4096 + (1 << 16), 8); },
       "not cluster-aligned"},
      {"L2 outside the file", [&good](std::string& f) { put_be(f, good.l1_offset, 1ull << 40, 8); },
       "L2 table at 0x10000000000 lies outside the file"},
      {"header length", [](std::string& f) { put_be(f, 100, 100, 4); }, "header_length 100"},
      {"truncated header", [](std::string& f) { f.resize(50); }, "header is truncated"},
      {"truncated file", [](std::string& f) { f.resize((2 << 16) + 4096); },
       "L2 table at 0x20000 lies outside the file (135168 bytes)"},
      {"extended L2 with small clusters",
       [](std::string& f) {
         put_be(f, 72, 16, 8);
         put_be(f, 20, 12, 4);
         put_be(f, 40, 1 << 12, 8);
       },
       "clusters of at least 16 KiB"},
  };
  for (const auto& c : cases) {
    std::string f = good.file;
    c.mutate(f);
    const std::string err = open_error(f);
    EXPECT_NE(err.find(c.want), std::string::npos) << c.name << ": got \"" << err << "\"";
    EXPECT_NE(err.find("disk.qcow2: qcow2: "), std::string::npos) << c.name;
  }
}

TEST_F(Qcow2Test, BadClustersFailTheRead) {
  const Crafted good = craft(mixed(3, false));
  const std::uint64_t cs = 1 << 16;
  struct Case {
    std::string name;
    std::uint64_t entry;  // which L2 entry to overwrite
    std::uint64_t value;
    std::string want;
  };
  const std::uint64_t l2 = good.first_l2;
  const std::vector<Case> cases = {
      {"data outside", l2, (1ull << 63) | (1ull << 40), "lies outside the file"},
      {"data unaligned", l2, (1ull << 63) | (good.first_data + 512), "not cluster-aligned"},
      {"offset 0 in use", l2 + 8, 1ull << 63, "host offset 0"},
      {"compressed outside", l2 + 16, (1ull << 62) | ((1ull << 40) - 1),
       "compressed data at 0xffffffffff lies outside"},
      {"compressed garbage", l2 + 16, (1ull << 62) | 8,
       "compressed cluster at virtual offset 131072"},
  };
  for (const auto& c : cases) {
    std::string f = good.file;
    put_be(f, c.entry, c.value, 8);
    auto r = open(f);
    ASSERT_TRUE(r) << c.name << ": " << r.error().message;
    std::string buf(8 * cs, '\0');
    auto s = (*r)->read(0, buf.data(), buf.size());
    ASSERT_FALSE(s) << c.name;
    EXPECT_NE(s.error().message.find(c.want), std::string::npos)
        << c.name << ": got \"" << s.error().message << "\"";
  }
}

// A hostile header cannot make the reader allocate more than the file holds (L1 table) or
// 32 MiB: an L1 size that passes the 32 MiB check must still lie inside the file.
TEST_F(Qcow2Test, HostileL1SizeNeedsTheBytesInTheFile) {
  Crafted c = craft(mixed(3, false));
  put_be(c.file, 24, 4ull << 40, 8);       // 4 TiB virtual size
  put_be(c.file, 36, (32u << 20) / 8, 4);  // a 32 MiB L1 table, in a 900 KiB file
  const std::string err = open_error(c.file);
  EXPECT_NE(err.find("lies outside the file"), std::string::npos) << err;
}

// A header may announce up to 64 TiB of unallocated space in a tiny file: a size whose chunks
// the largest manifest cannot list is refused before reading, not after hours of zeros.
TEST_F(Qcow2Test, BuildRefusesAVirtualSizeNoManifestCanHold) {
  Spec s;
  s.cluster_bits = 21;
  s.clusters = {{C::kData}};
  Crafted c = craft(s);
  put_be(c.file, 24, 16ull << 40, 8);  // 16 TiB: 32 L1 entries of 512 GiB
  put_be(c.file, 36, 32, 4);
  BuildOptions o;
  o.input = write(c.file, "huge.qcow2");
  o.output = (dir_ / "huge.kiln").string();
  o.name = "t";
  o.version = "1";
  o.chunk_size = 256 * 1024;
  auto r = build_image(o);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("the manifest would exceed 64 MiB (67108864 chunks)"),
            std::string::npos)
      << r.error().message;
  EXPECT_FALSE(std::filesystem::exists(o.output));
}

TEST_F(Qcow2Test, BuildsTheSameImageAsTheRawDiskWithHolesAsZeroOrUnmapped) {
  Spec s = mixed(3, true);
  s.cluster_bits = 17;  // 128 KiB clusters, 256 KiB chunks: two clusters per chunk
  s.clusters = {{C::kData}, {C::kCompressed},  {C::kUnallocated}, {C::kZeroFlag}, {C::kCompressed},
                {C::kData}, {C::kUnallocated}, {C::kUnallocated}, {C::kData}};
  s.size = 9 * (1 << 17) - 512;
  const Crafted c = craft(s);
  const std::string raw = write(c.raw, "disk.raw");
  const std::string qcow = write(c.file, "disk.qcow2");
  BuildOptions o;
  o.name = "t";
  o.version = "1";
  o.chunk_size = 256 * 1024;
  o.threads = 2;
  o.created_at = "2026-12-07T00:00:00.000Z";
  o.input = raw;
  o.output = (dir_ / "raw.kiln").string();
  auto from_raw = build_image(o);
  ASSERT_TRUE(from_raw) << from_raw.error().message;
  for (bool free_holes : {false, true}) {
    o.input = qcow;
    o.free_holes = free_holes;
    o.output = (dir_ / "qcow.kiln").string();
    auto from_qcow = build_image(o);
    ASSERT_TRUE(from_qcow) << from_qcow.error().message;
    const auto& m = from_qcow->manifest;
    EXPECT_EQ(m.size, c.raw.size());
    EXPECT_EQ(m.sha256, sha256_hex(c.raw));
    EXPECT_EQ(m.sha256, from_raw->manifest.sha256);
    ASSERT_EQ(m.chunks.size(), 5u);
    const auto hole =
        free_holes ? proto::image::ChunkKind::kUnmapped : proto::image::ChunkKind::kZero;
    EXPECT_EQ(m.chunks[0].kind, proto::image::ChunkKind::kData);
    EXPECT_EQ(m.chunks[1].kind, hole);  // unallocated + zero flag
    EXPECT_EQ(m.chunks[2].kind, proto::image::ChunkKind::kData);
    EXPECT_EQ(m.chunks[3].kind, hole);  // two unallocated
    EXPECT_EQ(m.chunks[4].kind, proto::image::ChunkKind::kData);
    for (std::size_t i : {0, 2, 4}) EXPECT_EQ(m.chunks[i], from_raw->manifest.chunks[i]);
  }
  // A refused input leaves no output behind.
  std::string bad = c.file;
  put_be(bad, 72, 1, 8);
  o.input = write(bad, "dirty.qcow2");
  o.output = (dir_ / "dirty.kiln").string();
  auto refused = build_image(o);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("marked dirty"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(o.output));
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().string().find(".partial"), std::string::npos) << e.path();
  }
}

}  // namespace
}  // namespace kiln::images
