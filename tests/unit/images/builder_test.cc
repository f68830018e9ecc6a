#include "images/builder.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/crypto.h"
#include "proto/image_file.h"
#include "tests/unit/test_dir.h"

namespace kiln::images {
namespace {

using proto::image::ChunkKind;
using proto::image::Key;
using proto::image::kHeaderSize;
using proto::image::kSignatureSize;
using proto::image::kTrailerSize;
using proto::image::PackedImage;
using proto::image::verify_image;

constexpr std::uint32_t kChunk = 256 * 1024;

class BuilderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kiln::testing::make_test_dir("kiln-image-test");
    raw_ = (dir_ / "disk.raw").string();
    // 12 chunks + 1000 bytes: text, noise, zeros, a 2-chunk hole, text again, short tail.
    std::ofstream f(raw_, std::ios::binary);
    std::string text;
    while (text.size() < 4 * kChunk) text += "root:x:0:0:root:/root:/bin/bash\n";
    text.resize(4 * kChunk);
    std::mt19937_64 rng(42);
    std::string noise(2 * kChunk, '\0');
    for (auto& c : noise) c = static_cast<char>(rng());
    f << text << noise << std::string(2 * kChunk, '\0');
    f.seekp(static_cast<std::streamoff>(10) * kChunk);  // chunks 8, 9 stay a hole
    f << text.substr(0, 2 * kChunk) << std::string(1000, 'z');
    f.close();
    content_sha_ = sha256_hex(read_all(raw_));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string read_all(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static void write_all(const std::string& p, const std::string& s) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << s;
  }

  BuildOptions options(const std::string& out) {
    BuildOptions o;
    o.input = raw_;
    o.output = out;
    o.name = "test";
    o.version = "1";
    o.chunk_size = kChunk;
    o.threads = 2;
    o.created_at = "2026-11-22T00:00:00.000Z";
    return o;
  }

  std::filesystem::path dir_;
  std::string raw_;
  std::string content_sha_;
};

TEST_F(BuilderTest, BuildOpenVerifyRoundTrip) {
  const std::string out = (dir_ / "img.kiln").string();
  auto o = options(out);
  o.free_holes = true;
  auto r = build_image(o);
  ASSERT_TRUE(r) << r.error().message;
  const auto& m = r->manifest;
  EXPECT_EQ(m.size, 12ull * kChunk + 1000);
  EXPECT_EQ(m.sha256, content_sha_) << "whole-image hash equals sha256sum of the input";
  std::string kinds;
  for (const auto& c : m.chunks) kinds.push_back(static_cast<char>(c.kind));
  EXPECT_EQ(kinds, "DDDDRRZZUUDDD");
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().string().find(".partial"), std::string::npos) << e.path();
  }

  auto img = PackedImage::open(out);
  ASSERT_TRUE(img) << img.error().message;
  EXPECT_EQ(img->manifest(), m);
  auto v = verify_image(*img, {}, 2);
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->chunks, 13u);

  // Reproducible: the same input and options give the same bytes.
  const std::string again = (dir_ / "again.kiln").string();
  auto o2 = o;
  o2.output = again;
  ASSERT_TRUE(build_image(o2));
  EXPECT_EQ(read_all(again), read_all(out));

  // Without --free-holes, holes are ZERO (they must read back as zeroes).
  auto z = build_image(options((dir_ / "z.kiln").string()));
  ASSERT_TRUE(z);
  EXPECT_EQ(z->manifest.chunks[8].kind, ChunkKind::kZero);
}

TEST_F(BuilderTest, EveryByteFlipIsDetected) {
  const std::string out = (dir_ / "img.kiln").string();
  const std::string pub = (dir_ / "key.pub").string();
  const std::string priv = (dir_ / "key.pem").string();
  ASSERT_TRUE(Key::generate(priv, pub));
  auto o = options(out);
  o.sign_key = priv;
  ASSERT_TRUE(build_image(o));
  std::vector<Key> trusted;
  trusted.push_back(std::move(*Key::load_public(pub)));
  const std::string good = read_all(out);
  auto img = PackedImage::open(out);
  ASSERT_TRUE(img);
  const auto& m = img->manifest();
  const std::uint64_t manifest_at =
      img->file_size() - kTrailerSize - kSignatureSize - img->manifest_bytes().size();
  // One flip in each region: header, a DATA frame, a RAW payload, the manifest, the
  // signature, the trailer. Each must be refused, chunks named by index.
  struct Case {
    std::uint64_t at;
    std::string expect;
  };
  std::vector<Case> cases = {{3, "header magic"},
                             {30, "reserved"},
                             {img->payload_offset(1) + m.chunks[1].payload_size / 2, "chunk 1 "},
                             {img->payload_offset(5) + 7, "chunk 5 "},
                             {manifest_at + 40, "checksum"},
                             {img->file_size() - kTrailerSize - 10, "checksum"},
                             {img->file_size() - 20, "trailer"}};
  ASSERT_EQ(m.chunks[1].kind, ChunkKind::kData);
  ASSERT_EQ(m.chunks[5].kind, ChunkKind::kRaw);
  for (const auto& c : cases) {
    std::string bad = good;
    bad[c.at] ^= 0x20;
    write_all(out, bad);
    std::string error;
    auto opened = PackedImage::open(out);
    if (!opened) {
      error = opened.error().message;
    } else {
      auto v = verify_image(*opened, trusted, 2);
      ASSERT_FALSE(v) << "flip at " << c.at << " went unnoticed";
      error = v.error().message;
    }
    EXPECT_NE(error.find(c.expect), std::string::npos) << "flip at " << c.at << ": " << error;
  }
  // Every single byte of the header and the trailer matters.
  for (std::uint64_t at = 0; at < good.size(); ++at) {
    if (at == kHeaderSize) at = good.size() - kTrailerSize;
    std::string bad = good;
    bad[at] ^= 0x01;
    write_all(out, bad);
    auto opened = PackedImage::open(out, trusted);
    EXPECT_FALSE(opened && verify_image(*opened, trusted, 2)) << "flip at " << at;
  }
  write_all(out, good);
  ASSERT_TRUE(verify_image(*PackedImage::open(out), trusted, 2));
}

TEST_F(BuilderTest, SignaturesAndTruncation) {
  const std::string out = (dir_ / "img.kiln").string();
  const std::string priv = (dir_ / "a.pem").string(), pub = (dir_ / "a.pub").string();
  const std::string priv2 = (dir_ / "b.pem").string(), pub2 = (dir_ / "b.pub").string();
  ASSERT_TRUE(Key::generate(priv, pub));
  ASSERT_TRUE(Key::generate(priv2, pub2));
  EXPECT_FALSE(Key::generate(priv, pub)) << "never overwrites a private key";
  auto o = options(out);
  o.sign_key = priv;
  ASSERT_TRUE(build_image(o));
  std::vector<Key> right, wrong;
  right.push_back(std::move(*Key::load_public(pub)));
  wrong.push_back(std::move(*Key::load_public(pub2)));
  EXPECT_TRUE(verify_image(*PackedImage::open(out), right, 2));
  auto w = verify_image(*PackedImage::open(out), wrong, 2);
  ASSERT_FALSE(w);
  EXPECT_NE(w.error().message.find("signature"), std::string::npos);

  const std::string unsigned_out = (dir_ / "unsigned.kiln").string();
  ASSERT_TRUE(build_image(options(unsigned_out)));
  auto u = verify_image(*PackedImage::open(unsigned_out), right, 2);
  ASSERT_FALSE(u) << "unsigned images are refused where a trust key is configured";
  EXPECT_TRUE(verify_image(*PackedImage::open(unsigned_out), {}, 2));

  const std::string good = read_all(out);
  for (std::size_t len : {std::size_t{0}, std::size_t{10}, std::size_t{64}, good.size() / 2,
                          good.size() - 65, good.size() - 1}) {
    write_all(out, good.substr(0, len));
    EXPECT_FALSE(PackedImage::open(out)) << "truncated to " << len;
  }
}

TEST_F(BuilderTest, CompressedInputsAreDecoded) {
  ASSERT_EQ(std::system(("gzip -k -1 " + raw_).c_str()), 0);
  auto o = options((dir_ / "gz.kiln").string());
  o.input = raw_ + ".gz";
  auto r = build_image(o);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->manifest.size, 12ull * kChunk + 1000);
  EXPECT_EQ(r->manifest.sha256, content_sha_);
  EXPECT_TRUE(verify_image(*PackedImage::open(o.output), {}, 2));
  // A truncated compressed input is an error, not a shorter image.
  const std::string gz = read_all(raw_ + ".gz");
  write_all(raw_ + ".gz", gz.substr(0, gz.size() / 2));
  auto t = build_image(o);
  EXPECT_FALSE(t) << "truncated gzip accepted";
}

TEST_F(BuilderTest, SameBytesWhateverTheThreadCount) {
  auto one = options((dir_ / "one.kiln").string());
  one.threads = 1;
  auto three = options((dir_ / "three.kiln").string());
  three.threads = 3;
  ASSERT_TRUE(build_image(one));
  ASSERT_TRUE(build_image(three));
  EXPECT_EQ(read_all(one.output), read_all(three.output));
}

TEST_F(BuilderTest, RefusesSizesTheFormatDoesNotAllow) {
  struct Case {
    std::uint32_t chunk_size;
    std::uint32_t sector_size;
  };
  for (const auto& c : std::vector<Case>{{kChunk / 2, 0},
                                         {kChunk + 1, 0},
                                         {3 * kChunk, 0},
                                         {128u << 20, 0},
                                         {kChunk, 1024},
                                         {kChunk, 511}}) {
    auto o = options((dir_ / "bad.kiln").string());
    o.chunk_size = c.chunk_size;
    o.sector_size = c.sector_size;
    auto r = build_image(o);
    EXPECT_FALSE(r) << c.chunk_size << "/" << c.sector_size;
    if (!r) {
      EXPECT_EQ(r.error().code, Errc::kInvalid);
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "bad.kiln"));
}

}  // namespace
}  // namespace kiln::images
