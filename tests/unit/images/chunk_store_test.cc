#include "images/chunk_store.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "images/builder.h"
#include "images/image_service.h"
#include "tests/unit/test_dir.h"

namespace kiln::images {
namespace {

namespace img = proto::image;
constexpr std::uint32_t kChunk = 256 * 1024;
constexpr int kChunks = 20;

class ChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kiln::testing::make_test_dir("kiln-chunkstore");
    auto s = ChunkStore::open(dir_ / "store");
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Builds version `version` of a 20-chunk image of half-compressible data; `changed` chunks
  // (by index) get different content.
  std::string build(const std::string& version, std::vector<int> changed = {},
                    const std::string& sign_key = "") {
    std::mt19937_64 rng(1);
    std::string raw;
    for (int i = 0; i < kChunks; ++i) {
      std::string chunk(kChunk, '\0');
      for (std::size_t b = 0; b < chunk.size(); b += 2) chunk[b] = static_cast<char>(rng() & 0x0f);
      if (std::find(changed.begin(), changed.end(), i) != changed.end()) chunk[100] ^= 0x55;
      raw += chunk;
    }
    const auto in = (dir_ / ("in-" + version + ".raw")).string();
    std::ofstream(in, std::ios::binary) << raw;
    BuildOptions o;
    o.input = in;
    o.output = (dir_ / ("v" + version + ".kiln")).string();
    o.name = "web";
    o.version = version;
    o.chunk_size = kChunk;
    o.threads = 2;
    o.sign_key = sign_key;
    o.created_at = "2026-11-22T00:00:00.000Z";
    auto r = build_image(o);
    EXPECT_TRUE(r) << r.error().message;
    return o.output;
  }

  Result<ImportReport> import(const std::string& path, const std::vector<img::Key>& trusted = {}) {
    auto image = img::PackedImage::open(path);
    if (!image) return image.error();
    return store_->import(*image, trusted, 2);
  }

  std::filesystem::path dir_;
  std::unique_ptr<ChunkStore> store_;
};

TEST_F(ChunkStoreTest, VersionsSharingChunksAreStoredOnce) {
  auto r1 = import(build("1"));
  ASSERT_TRUE(r1) << r1.error().message;
  EXPECT_EQ(r1->chunks, static_cast<std::uint64_t>(kChunks));
  EXPECT_EQ(r1->new_chunks, static_cast<std::uint64_t>(kChunks));
  const auto one = store_->chunk_bytes();
  EXPECT_EQ(one, r1->new_bytes);

  // Version 2 differs in one chunk of twenty (95% shared): only that chunk is stored.
  auto r2 = import(build("2", {7}));
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_EQ(r2->new_chunks, 1u);
  const double ratio = static_cast<double>(store_->chunk_bytes()) / static_cast<double>(one);
  EXPECT_GT(ratio, 1.04);
  EXPECT_LT(ratio, 1.06) << "two versions sharing 95% of chunks use ~105% of one";

  auto again = import(build("1"));
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->already_present);
  EXPECT_EQ(again->new_chunks, 0u);
  EXPECT_TRUE(store_->manifest("web", "2"));
}

TEST_F(ChunkStoreTest, AStoppedImportStoresNoManifest) {
  auto image = img::PackedImage::open(build("1"));
  ASSERT_TRUE(image);
  std::atomic<bool> stop{true};
  auto r = store_->import(*image, {}, 2, &stop);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kUnavailable);
  EXPECT_FALSE(store_->manifest("web", "1"));
  stop = false;
  EXPECT_TRUE(store_->import(*image, {}, 2, &stop));
  EXPECT_TRUE(store_->manifest("web", "1"));
}

TEST_F(ChunkStoreTest, ReportsTheFilesystemsAvailableBytes) {
  auto free = store_->available_bytes();
  ASSERT_TRUE(free) << free.error().message;
  EXPECT_GT(*free, 0u);
}

TEST_F(ChunkStoreTest, UploadSlotsAreCountedAndTheReserveIsChecked) {
  auto log = std::make_shared<spdlog::logger>("test");  // no sinks: quiet
  ImportLimits limits;
  limits.max_concurrent_uploads = 1;
  limits.min_free_bytes = 0;
  {
    ImageService svc(*store_, {}, log, limits);
    auto first = svc.reserve_upload(1000);
    ASSERT_EQ(first.refused, UploadSlot::kNone);
    EXPECT_EQ(svc.reserve_upload(1000).refused, UploadSlot::kBusy);
    first.hold.reset();
    EXPECT_EQ(svc.reserve_upload(1000).refused, UploadSlot::kNone);
  }
  limits.min_free_bytes = std::uint64_t{1} << 62;  // more than any test filesystem has
  ImageService svc(*store_, {}, log, limits);
  auto refused = svc.reserve_upload(1000);
  EXPECT_EQ(refused.refused, UploadSlot::kNoSpace);
  EXPECT_FALSE(refused.hold);
  // A length so large that twice it overflows is refused, not wrapped around.
  limits.min_free_bytes = 1;
  ImageService svc2(*store_, {}, log, limits);
  EXPECT_EQ(svc2.reserve_upload(~std::uint64_t{0} / 2 + 1).refused, UploadSlot::kNoSpace);
}

TEST_F(ChunkStoreTest, VersionsAreImmutable) {
  ASSERT_TRUE(import(build("1")));
  const auto before = store_->chunk_bytes();
  const auto original = *store_->manifest("web", "1");
  // Different content under the same name and version.
  auto other = build("1", {3});
  auto r = import(other);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  EXPECT_EQ(store_->chunk_bytes(), before) << "a refused import stores nothing";
  EXPECT_EQ(*store_->manifest("web", "1"), original);
}

TEST_F(ChunkStoreTest, CorruptOrUntrustedImagesStoreNothing) {
  const auto path = build("1");
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  bytes[img::kHeaderSize + 1000] ^= 0x10;  // inside the first chunk's payload
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  auto r = import(path);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("chunk 0"), std::string::npos) << r.error().message;
  EXPECT_EQ(store_->chunk_bytes(), 0u);
  EXPECT_FALSE(store_->manifest("web", "1"));

  const auto priv = (dir_ / "k.pem").string(), pub = (dir_ / "k.pub.pem").string();
  ASSERT_TRUE(img::Key::generate(priv, pub));
  std::vector<img::Key> trusted;
  trusted.push_back(*img::Key::load_public(pub));
  auto unsigned_import = import(build("2"), trusted);
  ASSERT_FALSE(unsigned_import) << "unsigned image accepted with a trust key configured";
  EXPECT_EQ(store_->chunk_bytes(), 0u);
  auto signed_import = import(build("3", {}, priv), trusted);
  ASSERT_TRUE(signed_import) << signed_import.error().message;
}

TEST_F(ChunkStoreTest, GarbageCollectionKeepsWhatIsReferenced) {
  ASSERT_TRUE(import(build("1")));
  ASSERT_TRUE(import(build("2", {7})));
  const auto both = store_->chunk_bytes();
  ASSERT_TRUE(store_->remove("web", "1"));
  auto gc = store_->collect_garbage();
  ASSERT_TRUE(gc) << gc.error().message;
  EXPECT_EQ(gc->removed_chunks, 1u) << "only the chunk unique to version 1 goes";
  EXPECT_EQ(store_->chunk_bytes(), both - gc->removed_bytes);
  // Every chunk of version 2 is still there.
  auto m = img::parse_manifest(*store_->manifest("web", "2"));
  ASSERT_TRUE(m);
  for (const auto& c : m->chunks) {
    if (img::has_payload(c.kind)) {
      EXPECT_TRUE(store_->chunk_file(c.sha256)) << c.sha256;
    }
  }
  ASSERT_TRUE(store_->remove("web", "2"));
  auto all = store_->collect_garbage();
  ASSERT_TRUE(all);
  EXPECT_EQ(store_->chunk_bytes(), 0u);
  EXPECT_FALSE(store_->chunk_file("not-a-hash"));
}

// A collection that cannot list every manifest must not run: with manifests/ unlistable it
// would see no live chunk and delete them all.
TEST_F(ChunkStoreTest, GarbageCollectionRefusesWhenManifestsCannotBeListed) {
  ASSERT_TRUE(import(build("1")));
  const auto before = store_->chunk_bytes();
  ASSERT_GT(before, 0u);
  namespace fs = std::filesystem;
  const auto manifests = dir_ / "store" / "manifests";

  // manifests/ is not a directory (ENOTDIR on open); root ignores permission bits, so a
  // file stands in for EACCES.
  fs::rename(manifests, dir_ / "manifests.away");
  std::ofstream(manifests) << "not a directory";
  auto gc = store_->collect_garbage();
  EXPECT_FALSE(gc) << "removed " << (gc ? gc->removed_chunks : 0) << " chunks";
  EXPECT_EQ(store_->chunk_bytes(), before);
  fs::remove(manifests);

  // manifests/ missing altogether.
  gc = store_->collect_garbage();
  EXPECT_FALSE(gc);
  EXPECT_EQ(store_->chunk_bytes(), before);

  // No descriptors left (EMFILE) while listing: the directory cannot be opened.
  fs::rename(dir_ / "manifests.away", manifests);
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  int lowest_free = ::dup(0);
  ASSERT_GE(lowest_free, 0);
  ::close(lowest_free);
  rlimit tight = old;
  tight.rlim_cur = static_cast<rlim_t>(lowest_free);  // every descriptor is taken
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);
  gc = store_->collect_garbage();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);
  EXPECT_FALSE(gc);
  EXPECT_EQ(store_->chunk_bytes(), before);

  // And with everything back in place, nothing referenced goes.
  gc = store_->collect_garbage();
  ASSERT_TRUE(gc) << gc.error().message;
  EXPECT_EQ(gc->removed_chunks, 0u);
  EXPECT_EQ(store_->chunk_bytes(), before);
}

}  // namespace
}  // namespace kiln::images
