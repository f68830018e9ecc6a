#include "proto/image_format.h"

#include <gtest/gtest.h>

#include <random>

#include "core/crypto.h"

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
  m.chunks = {{ChunkKind::kData, std::string(64, 'a'), 1234, 0, ""},
              {ChunkKind::kZero, "", 0, 0, ""},
              {ChunkKind::kUnmapped, "", 0, 0, ""},
              {ChunkKind::kRaw, std::string(64, 'b'), 100, 0, "0123456789abcdef"}};
  m.partition_tables = {{0, 17408}};
  m.labels = {{"os", "debian"}};
  return m;
}

TEST(ImageFormat, ManifestGoldenBytes) {
  const std::string want =
      R"({"chunk_size":262144,"chunks":[["D","aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",1234],)"
      R"(["Z"],["U"],["R","bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",100,0,)"
      R"("0123456789abcdef"]],)"
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
  refuse(replace(",100,0,", ",99,0,"), "RAW payload size must equal chunk length");
  refuse(replace(",100,0,\"0123456789abcdef\"]", ",100,0]"), "a probe offset without a probe");
  refuse(replace(",100,0,", ",100,4096,"), "probe offset outside the chunk");
  refuse(replace(",1234]", ",1234,4095,\"0123456789abcdef\"]"), "probe offset not block-aligned");
  refuse(replace("0123456789abcdef", "0123456789ABCDEF"), "upper-case probe");
  refuse(replace("0123456789abcdef", "0123456789abcde"), "short probe");
  refuse(replace(",100,0,", ",100,\"0\","), "probe offset not an integer");
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
  // The probe: the first 4 KiB block, hashed short.
  EXPECT_EQ(d.chunk.probe_offset, 0u);
  EXPECT_EQ(d.chunk.probe, probe_hash(std::string_view(text).substr(0, kProbeBlock)));
  EXPECT_EQ(d.chunk.probe, sha256_hex(text.substr(0, kProbeBlock)).substr(0, 16));
  // Leading zero blocks are passed over: the probe is the first block a blank disk cannot hold.
  std::string late = std::string(2 * kProbeBlock + 100, '\0') + text.substr(0, kChunk - 8292);
  auto l = enc.encode(late);
  EXPECT_EQ(l.chunk.probe_offset, 2 * kProbeBlock);
  EXPECT_EQ(l.chunk.probe, probe_hash(std::string_view(late).substr(2 * kProbeBlock, kProbeBlock)));
  // A short last chunk whose only non-zero byte is in its last, partial block.
  std::string tail(3 * kProbeBlock + 10, '\0');
  tail.back() = 1;
  Chunk t;
  set_probe(t, tail);
  EXPECT_EQ(t.probe_offset, 3 * kProbeBlock);
  EXPECT_EQ(t.probe, probe_hash(std::string_view(tail).substr(3 * kProbeBlock)));
  EXPECT_EQ(probe_length(tail.size(), t.probe_offset), 10u);
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

}  // namespace
}  // namespace kiln::proto::image
