// The hash-checked sink (agent/disk.h): its digest is the one computed from the bytes the
// writes leave, whatever their order, and a missing, misplaced or wrong write changes it.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "agent/disk.h"
#include "core/crypto.h"

namespace kiln::agent {
namespace {

constexpr std::size_t kBlock = 64 << 10;

// What bench/fleet-write.sh computes from a raw image: SHA-256 of the CRC-32s of its 64 KiB
// blocks, little-endian, in order (the last block possibly short).
std::string reference_digest(const std::string& image) {
  std::string crcs;
  for (std::size_t at = 0; at < image.size(); at += kBlock) {
    const std::size_t n = std::min(kBlock, image.size() - at);
    const auto c = static_cast<std::uint32_t>(
        crc32(crc32(0, nullptr, 0), reinterpret_cast<const Bytef*>(image.data() + at),
              static_cast<uInt>(n)));
    for (int i = 0; i < 4; ++i) crcs.push_back(static_cast<char>((c >> (8 * i)) & 0xff));
  }
  return sha256_hex(crcs);
}

class SinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kiln-sink-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    stats_ = (dir_ / "stats.json").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  nlohmann::json stats() const {
    std::ifstream in(stats_);
    return nlohmann::json::parse(in);
  }
  std::filesystem::path dir_;
  std::string stats_;
};

// 1 MiB + 3 sectors of random data with a zero stretch, as 256 KiB "chunks".
std::string sample_image() {
  std::mt19937_64 rng(7);
  std::string img((1 << 20) + 3 * 512, '\0');
  for (auto& c : img) c = static_cast<char>(rng());
  std::fill(img.begin() + 300000, img.begin() + 600000, '\0');
  return img;
}

Status write_chunks(const Disk& d, const std::string& img, std::size_t chunk,
                    std::size_t skip = SIZE_MAX) {
  for (std::size_t at = 0, i = 0; at < img.size(); at += chunk, ++i) {
    if (i == skip) continue;
    if (auto st = d.write(at, img.data() + at, std::min(chunk, img.size() - at)); !st) return st;
  }
  return ok_status();
}

TEST_F(SinkTest, DigestMatchesTheBytesWrittenInAnyOrderAndThreads) {
  const std::string img = sample_image();
  auto d = Disk::open("sink:" + std::to_string(img.size()) + ":" + stats_);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->size(), img.size());
  EXPECT_TRUE(resolve_disk("sink:1M:" + stats_));  // passes through unchanged
  // Partition-table-like regions: zeroed first, written as zeroes with their chunk, then
  // written last (what deploy() does).
  ASSERT_TRUE(d->zero(0, 17408));
  ASSERT_TRUE(d->zero(img.size() - 16896, 16896));
  std::string masked = img;
  std::fill(masked.begin(), masked.begin() + 17408, '\0');
  std::fill(masked.end() - 16896, masked.end(), '\0');
  const std::size_t chunk = 256 << 10;
  std::vector<std::thread> pool;
  for (int t = 0; t < 3; ++t) {
    pool.emplace_back([&, t] {
      for (std::size_t at = (img.size() / chunk - t) * chunk;; at -= 3 * chunk) {
        EXPECT_TRUE(d->write(at, masked.data() + at, std::min(chunk, img.size() - at)));
        if (at < 3 * chunk) break;
      }
    });
  }
  for (auto& th : pool) th.join();
  ASSERT_TRUE(d->write(0, img.data(), 17408));
  ASSERT_TRUE(d->write(img.size() - 16896, img.data() + img.size() - 16896, 16896));
  ASSERT_TRUE(d->flush());
  const auto s = stats();
  EXPECT_EQ(s["digest"], reference_digest(img));
  EXPECT_EQ(s["size"], img.size());
  EXPECT_EQ(s["chunk_ms"]["count"], 5u);         // the workers' writes only
  EXPECT_FALSE(d->read(0, masked.data(), 512));  // no data to read back
}

TEST_F(SinkTest, MissingMisplacedOrWrongChunksChangeTheDigest) {
  const std::string img = sample_image();
  const std::string want = reference_digest(img);
  const std::string target = "sink:" + std::to_string(img.size()) + ":" + stats_;
  auto digest_after = [&](auto&& writes) {
    auto d = Disk::open(target);
    EXPECT_TRUE(d);
    writes(*d);
    EXPECT_TRUE(d->flush());
    return stats()["digest"].get<std::string>();
  };
  EXPECT_EQ(digest_after([&](const Disk& d) { EXPECT_TRUE(write_chunks(d, img, 256 << 10)); }),
            want);
  EXPECT_NE(digest_after([&](const Disk& d) { EXPECT_TRUE(write_chunks(d, img, 256 << 10, 2)); }),
            want);
  std::string swapped = img;
  std::swap_ranges(swapped.begin(), swapped.begin() + (256 << 10), swapped.begin() + (512 << 10));
  EXPECT_NE(digest_after([&](const Disk& d) { EXPECT_TRUE(write_chunks(d, swapped, 256 << 10)); }),
            want);
  std::string flipped = img;
  flipped[700001] ^= 1;
  EXPECT_NE(digest_after([&](const Disk& d) { EXPECT_TRUE(write_chunks(d, flipped, 256 << 10)); }),
            want);
  // A zeroed range that should hold data.
  EXPECT_NE(digest_after([&](const Disk& d) {
              EXPECT_TRUE(write_chunks(d, img, 256 << 10));
              EXPECT_TRUE(d.zero(kBlock, kBlock));
            }),
            want);
}

TEST_F(SinkTest, BadTargetsAndWritesAreErrors) {
  const std::vector<std::string> targets = {"sink:",
                                            "sink:1G",
                                            "sink:1G:",
                                            "sink:x:" + stats_,
                                            "sink:0:" + stats_,
                                            "sink:1000:" + stats_,
                                            "sink:2T:" + stats_,
                                            "sink:1G:/nonexistent-dir/stats"};
  for (const auto& t : targets) {
    SCOPED_TRACE(t);
    auto d = Disk::open(t);
    ASSERT_FALSE(d);
    EXPECT_FALSE(d.error().message.empty());
  }
  auto d = Disk::open("sink:1M:" + stats_);
  ASSERT_TRUE(d);
  std::string data(kBlock, 'x');
  EXPECT_FALSE(d->write((1 << 20) - 512, data.data(), 1024));  // past the end
  ASSERT_TRUE(d->write(0, data.data(), kBlock));
  // A partial write over a block known only by its CRC: refused, never guessed.
  auto st = d->write(512, data.data(), 512);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("did not keep"), std::string::npos) << st.error().message;
}

}  // namespace
}  // namespace kiln::agent
