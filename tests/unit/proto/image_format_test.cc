#include "proto/image_format.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "core/crypto.h"
#include "proto/image_file.h"
#include "tests/unit/test_dir.h"

namespace kiln::proto::image {
namespace {

constexpr std::uint32_t kChunk = 256 * 1024;

Manifest golden_manifest() {
  Manifest m;
  m.name = "web";
  m.version = "1.0";
  m.created_at = "2026-11-22T00:00:00.000Z";
  m.size = kChunk * 3 + 100;
  m.chunk_size = kChunk;
  m.sha256 = std::string(64, 'f');
  m.chunks = {{ChunkKind::kData, std::string(64, 'a'), 1234},
              {ChunkKind::kZero, "", 0},
              {ChunkKind::kUnmapped, "", 0},
              {ChunkKind::kRaw, std::string(64, 'b'), 100}};
  m.partition_tables = {{0, 17408}};
  m.labels = {{"os", "debian"}};
  return m;
}

TEST(ImageFormat, ManifestGoldenBytes) {
  const std::string want =
      R"({"chunk_size":262144,"chunks":[["D","aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",1234],)"
      R"(["Z"],["U"],["R","bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",100]],)"
      R"("created_at":"2026-11-22T00:00:00.000Z","format":1,"labels":{"os":"debian"},"name":"web",)"
      R"("partition_tables":[{"length":17408,"offset":0}],"sector_size":512,)"
      R"("sha256":"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff","size":786532,)"
      R"("version":"1.0"})";
  EXPECT_EQ(to_canonical_json(golden_manifest()), want);
  auto parsed = parse_manifest(want);
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(*parsed, golden_manifest());
  EXPECT_EQ(to_canonical_json(*parsed), want) << "canonical form is a fixed point";
}

TEST(ImageFormat, ManifestRefusals) {
  const std::string good = to_canonical_json(golden_manifest());
  auto refuse = [&](std::string bytes, const std::string& why) {
    auto r = parse_manifest(bytes);
    EXPECT_FALSE(r) << why;
    if (!r) {
      EXPECT_NE(r.error().message.find("manifest"), std::string::npos);
    }
  };
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    auto at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    s.replace(at, from.size(), to);
    return s;
  };
  refuse(replace("\"format\":1", "\"format\":2"), "unknown format");
  refuse(replace("\"size\":786532", "\"size\":986532"), "chunk count does not fit size");
  refuse(replace("\"chunk_size\":262144", "\"chunk_size\":262145"),
         "chunk size not a power of two");
  refuse(replace("[\"Z\"]", "[\"Q\"]"), "unknown kind");
  refuse(replace("[\"Z\"]", "[\"Z\",\"x\"]"), "zero chunk with payload");
  refuse(replace(",100]]", ",99]]"), "RAW payload size must equal chunk length");
  refuse(replace("\"labels\"", "\"lables\""), "unknown key");
  refuse(replace("\"sector_size\":512", "\"sector_size\":1024"), "sector size");
  refuse(good.substr(0, good.size() - 1), "truncated JSON");
  refuse(replace("\"format\":1", "\"format\": 1"), "whitespace is not canonical");
  refuse(replace("\"format\":1", "\"format\":4294967297"), "out-of-range format");
  refuse(replace("\"format\":1", "\"format\":1,\"format\":1"), "duplicate key");
  refuse(replace("\"length\":17408", "\"length\":17408.0"), "float");
  refuse(replace("\"name\":\"web\"", "\"name\":\"w\\u001beb\""), "control characters in the name");
  refuse(replace("\"size\":786532", "\"size\":18446744073709551615"),
         "size overflowing the chunk count");
  refuse(replace("[[\"D\"", "[[[[\"D\"") + "]]", "nested too deep");
}

// The agent's decoder: whatever payload a store serves for the content (another compression
// level, or raw), checked by hash into a caller's buffer.
TEST(ImageFormat, ChunkDecoderAcceptsAnyValidPayloadAndChecksTheHash) {
  std::string text;
  while (text.size() < kChunk) text += "every chunk is verified before it is written. ";
  text.resize(kChunk);
  ChunkEncoder enc1(1), enc9(9);
  auto a = enc1.encode(text), b = enc9.encode(text);
  ASSERT_EQ(a.chunk.kind, ChunkKind::kData);
  ChunkDecoder dec;
  std::string out(kChunk, 'x');
  // A level-9 frame for a chunk a level-1 manifest describes: accepted (same content).
  ASSERT_TRUE(dec.decode(ChunkKind::kData, b.payload, a.chunk.sha256, kChunk, out.data()));
  EXPECT_EQ(out, text);
  // The same content served raw.
  ASSERT_TRUE(dec.decode(ChunkKind::kRaw, text, a.chunk.sha256, kChunk, out.data()));
  // One flipped bit in the frame, a truncated frame, a frame for other content, a wrong length.
  std::string bad = a.payload;
  bad[bad.size() / 2] ^= 0x01;
  auto st = dec.decode(ChunkKind::kData, bad, a.chunk.sha256, kChunk, out.data());
  EXPECT_FALSE(st);
  EXPECT_FALSE(dec.decode(ChunkKind::kData, a.payload.substr(0, a.payload.size() - 3),
                          a.chunk.sha256, kChunk, out.data()));
  std::string other = text;
  other[0] = '#';
  auto c = enc1.encode(other);
  st = dec.decode(ChunkKind::kData, c.payload, a.chunk.sha256, kChunk, out.data());
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("SHA-256 mismatch"), std::string::npos);
  EXPECT_FALSE(dec.decode(ChunkKind::kRaw, text.substr(1), a.chunk.sha256, kChunk, out.data()));
  EXPECT_FALSE(dec.decode(ChunkKind::kZero, "", a.chunk.sha256, kChunk, out.data()));
}

TEST(ImageFormat, TrailerRoundTripAndChecks) {
  Trailer t{1000, 200, 1200, 64, manifest_digest(encode_header(), "m", "s")};
  const std::string bytes = encode_trailer(t);
  ASSERT_EQ(bytes.size(), kTrailerSize);
  EXPECT_EQ(bytes.substr(0, 8), std::string("KILNEND\0", 8));
  auto back = decode_trailer(bytes, 1200 + 64 + kTrailerSize);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, t);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x01;
    EXPECT_FALSE(decode_trailer(bad, 1200 + 64 + kTrailerSize)) << "flip at " << i;
  }
  EXPECT_FALSE(decode_trailer(bytes, 1200 + 64 + kTrailerSize + 1))
      << "offsets must end at the trailer";
  std::string header = encode_header();
  EXPECT_TRUE(check_header(header));
  header[8] = 2;
  auto h = check_header(header);
  ASSERT_FALSE(h);
  EXPECT_NE(h.error().message.find("major version 2"), std::string::npos);
}

TEST(ImageFormat, ChunkEncodingKinds) {
  ChunkEncoder enc(3);
  std::string zeros(kChunk, '\0');
  EXPECT_EQ(enc.encode(zeros).chunk.kind, ChunkKind::kZero);
  std::string text;
  while (text.size() < kChunk) text += "kiln images are chunked and verified. ";
  text.resize(kChunk);
  auto d = enc.encode(text);
  EXPECT_EQ(d.chunk.kind, ChunkKind::kData);
  EXPECT_LT(d.payload.size(), text.size() / 4);
  EXPECT_EQ(d.chunk.sha256, sha256_hex(text));
  std::string out;
  ASSERT_TRUE(decode_chunk(d.chunk, d.payload, text.size(), out));
  EXPECT_EQ(out, text);
  // The identity is the uncompressed bytes': another level, same hash.
  ChunkEncoder enc9(9);
  EXPECT_EQ(enc9.encode(text).chunk.sha256, d.chunk.sha256);

  std::mt19937_64 rng(7);
  std::string noise(kChunk, '\0');
  for (auto& c : noise) c = static_cast<char>(rng());
  auto r = enc.encode(noise);
  EXPECT_EQ(r.chunk.kind, ChunkKind::kRaw);
  EXPECT_EQ(r.payload, noise);

  // Corrupt frames, wrong lengths and wrong hashes are all refused.
  std::string bad = d.payload;
  bad[bad.size() / 2] ^= 0x40;
  EXPECT_FALSE(decode_chunk(d.chunk, bad, text.size(), out));
  EXPECT_FALSE(decode_chunk(d.chunk, d.payload, text.size() - 1, out));
  Chunk wrong = d.chunk;
  wrong.sha256[0] = wrong.sha256[0] == 'a' ? 'b' : 'a';
  auto mismatch = decode_chunk(wrong, d.payload, text.size(), out);
  ASSERT_FALSE(mismatch);
  EXPECT_NE(mismatch.error().message.find("SHA-256 mismatch"), std::string::npos);
  std::string two_frames = d.payload + d.payload;
  Chunk doubled = d.chunk;
  doubled.payload_size = two_frames.size();
  EXPECT_FALSE(decode_chunk(doubled, two_frames, text.size(), out)) << "exactly one frame";
}

class PackedTest : public ::testing::Test {
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

TEST_F(PackedTest, BuildOpenVerifyRoundTrip) {
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

TEST_F(PackedTest, EveryByteFlipIsDetected) {
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

TEST_F(PackedTest, SignaturesAndTruncation) {
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

TEST_F(PackedTest, CompressedInputsAreDecoded) {
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

}  // namespace
}  // namespace kiln::proto::image
