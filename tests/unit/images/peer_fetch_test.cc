#include "images/peer_fetch.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include "core/crypto.h"
#include "images/builder.h"
#include "images/image_service.h"
#include "proto/image_file.h"
#include "tests/unit/fake_http_server.h"
#include "tests/unit/test_dir.h"

namespace kiln::images {
namespace {

namespace img = proto::image;
constexpr std::uint32_t kChunk = 256 * 1024;
using namespace std::chrono_literals;

using FakePeer = kiln::testing::FakeHttpServer;

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class PeerFetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kiln::testing::make_test_dir("kiln-peerfetch");
    // The image lives in the "source" store (what a peer serves); "local" starts empty.
    auto src = ChunkStore::open(dir_ / "source");
    ASSERT_TRUE(src);
    source_ = std::move(*src);
    auto loc = ChunkStore::open(dir_ / "local");
    ASSERT_TRUE(loc);
    local_ = std::move(*loc);
    std::mt19937_64 rng(7);
    std::string raw;
    for (int i = 0; i < 4; ++i) {
      std::string chunk(kChunk, '\0');
      for (std::size_t b = 0; b < chunk.size(); b += 2) chunk[b] = static_cast<char>(rng() & 0x0f);
      raw += chunk;
    }
    // One incompressible chunk: stored RAW.
    std::string noise(kChunk, '\0');
    for (auto& ch : noise) ch = static_cast<char>(rng());
    raw += noise;
    const auto in = (dir_ / "in.raw").string();
    std::ofstream(in, std::ios::binary) << raw;
    BuildOptions o;
    o.input = in;
    o.output = (dir_ / "web.kiln").string();
    o.name = "web";
    o.version = "1";
    o.chunk_size = kChunk;
    o.threads = 1;
    o.created_at = "2026-11-22T00:00:00.000Z";
    auto built = build_image(o);
    ASSERT_TRUE(built) << built.error().message;
    auto packed = img::PackedImage::open(o.output);
    ASSERT_TRUE(packed) << packed.error().message;
    ASSERT_TRUE(source_->import(*packed, {}));
    manifest_ = *source_->manifest("web", "1");
    auto m = img::parse_manifest(manifest_);
    ASSERT_TRUE(m);
    image_sha_ = m->sha256;
    for (const auto& c : m->chunks) {
      if (img::has_payload(c.kind)) {
        shas_.push_back(c.sha256);
        if (c.kind == img::ChunkKind::kRaw) raw_sha_ = c.sha256;
      }
    }
    ASSERT_GE(shas_.size(), 2u);
    ASSERT_FALSE(raw_sha_.empty());
    log_ = std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::null_sink_mt>());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // What an honest peer serves: the source store's files.
  FakePeer::Answer honest(const std::string& path) {
    FakePeer::Answer a;
    const std::string cp = "/v1/chunks/";
    if (path.rfind(cp, 0) == 0) {
      if (auto f = source_->chunk_file(path.substr(cp.size()))) {
        a.status = 200;
        a.body = read_all(f->path);
        if (f->kind == img::ChunkKind::kData) a.content_type = "application/zstd";
      }
    } else if (path == "/v1/manifests/web/1.json") {
      a.status = 200;
      a.content_type = "application/json";
      a.body = manifest_;
    }
    return a;
  }

  std::unique_ptr<PeerFetcher> fetcher(
      std::vector<std::string> peers, std::string upstream = "",
      std::string token = "cluster-secret-123456",
      std::optional<std::string> expected = std::nullopt,
      std::chrono::milliseconds down_backoff = 2000ms,
      std::function<std::chrono::steady_clock::time_point()> now = {}) {
    PeerFetchOptions o;
    o.down_backoff = down_backoff;
    o.now = std::move(now);
    o.peers = std::move(peers);
    o.upstream = std::move(upstream);
    o.token = std::move(token);
    o.timeout = std::chrono::milliseconds(500);
    auto want = expected ? *expected : image_sha_;
    auto f = PeerFetcher::create(
        *local_, o, {},
        [want](const std::string&, const std::string&) -> std::optional<std::string> {
          return want;
        },
        metrics_, log_);
    EXPECT_TRUE(f) << f.error().message;
    return std::move(*f);
  }
  double counted(const std::string& kind, const std::string& result) {
    return metrics_.value("kiln_cluster_fetches_total", {{"kind", kind}, {"result", result}});
  }

  std::filesystem::path dir_;
  std::unique_ptr<ChunkStore> source_, local_;
  std::string manifest_, image_sha_, raw_sha_;
  std::vector<std::string> shas_;
  Metrics metrics_;
  std::shared_ptr<spdlog::logger> log_;
};

TEST_F(PeerFetchTest, FetchesVerifiesAndStoresDataAndRawChunksFromAPeer) {
  FakePeer peer([this](const std::string& p) { return honest(p); });
  auto f = fetcher({peer.url()});
  for (const auto& sha : shas_) {
    ASSERT_FALSE(local_->chunk_file(sha));
    auto st = f->fetch_chunk(sha);
    ASSERT_TRUE(st) << st.error().message;
    auto got = local_->chunk_file(sha);
    ASSERT_TRUE(got);
    EXPECT_EQ(read_all(got->path), read_all(source_->chunk_file(sha)->path));
    EXPECT_EQ(got->kind, source_->chunk_file(sha)->kind);
  }
  EXPECT_EQ(counted("chunk", "ok"), static_cast<double>(shas_.size()));
  // The peer was told who asks (the loop guard) and with which secret.
  auto seen = peer.seen();
  ASSERT_FALSE(seen.empty());
  EXPECT_NE(seen[0].headers.find("Kiln-Cluster-Fetch: 1"), std::string::npos);
  EXPECT_NE(seen[0].headers.find("Authorization: Bearer cluster-secret-123456"), std::string::npos);
  // Already here: no second request.
  const auto before = peer.seen().size();
  ASSERT_TRUE(f->fetch_chunk(shas_[0]));
  EXPECT_EQ(peer.seen().size(), before);
}

TEST_F(PeerFetchTest, ABadHashIsRejectedNothingStoredAndTheNextPeerServes) {
  // The first peer answers every chunk with another chunk's bytes (valid frame, wrong hash).
  FakePeer liar([this](const std::string& p) {
    auto a = honest(p);
    if (a.status == 200 && p.rfind("/v1/chunks/", 0) == 0) {
      const std::string other = p.substr(11) == shas_[0] ? shas_[1] : shas_[0];
      auto f = source_->chunk_file(other);
      a.body = read_all(f->path);
      a.content_type = f->kind == img::ChunkKind::kData ? "application/zstd" : "x/raw";
    }
    return a;
  });
  FakePeer corrupt([this](const std::string& p) {
    auto a = honest(p);
    if (a.status == 200 && !a.body.empty()) a.body[a.body.size() / 2] ^= 0x40;  // a bit flip
    return a;
  });
  {
    auto f = fetcher({liar.url(), corrupt.url()});
    auto st = f->fetch_chunk(shas_[0]);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, Errc::kNotFound);
    EXPECT_FALSE(local_->chunk_file(shas_[0]));
    EXPECT_EQ(counted("chunk", "bad_hash"), 2);
    // Nothing half-written is left either.
    EXPECT_TRUE(std::filesystem::is_empty(dir_ / "local" / "tmp"));
  }
  FakePeer good([this](const std::string& p) { return honest(p); });
  auto f = fetcher({liar.url(), corrupt.url(), good.url()});
  ASSERT_TRUE(f->fetch_chunk(shas_[0]));
  ASSERT_TRUE(f->fetch_chunk(raw_sha_));
  EXPECT_EQ(read_all(local_->chunk_file(raw_sha_)->path),
            read_all(source_->chunk_file(raw_sha_)->path));
  EXPECT_EQ(counted("chunk", "ok"), 2);
}

TEST_F(PeerFetchTest, DeadAndHangingPeersAreSkippedAndTheUpstreamIsLast) {
  // A port nothing listens on.
  std::string dead;
  {
    FakePeer gone([](const std::string&) { return FakePeer::Answer{}; });
    dead = gone.url();
  }
  FakePeer hang([](const std::string&) {
    FakePeer::Answer a;
    a.hang = true;
    return a;
  });
  FakePeer empty([](const std::string&) { return FakePeer::Answer{}; });  // 404s
  FakePeer upstream([this](const std::string& p) { return honest(p); });
  auto f = fetcher({dead, hang.url(), empty.url()}, upstream.url());
  // Returns at all: the hanging peer never answers, only the fetcher's timeout ends its request
  // (without it this test hangs until ctest's own timeout fails it).
  auto st = f->fetch_chunk(shas_[0]);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(counted("chunk", "failed"), 2);
  EXPECT_EQ(counted("chunk", "not_found"), 1);
  // The upstream is not a peer: it never gets the cluster token nor the loop header.
  auto seen = upstream.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].headers.find("Authorization"), std::string::npos);
  EXPECT_EQ(seen[0].headers.find("Kiln-Cluster-Fetch"), std::string::npos);
}

TEST_F(PeerFetchTest, AnUnreachablePeerIsSkippedUntilItsBackoffEndsThenAskedAgain) {
  std::atomic<bool> down{true};
  FakePeer flaky([&](const std::string& p) {
    if (!down) return honest(p);
    FakePeer::Answer a;
    a.hang = true;  // a host that went away: connections time out
    return a;
  });
  FakePeer upstream([this](const std::string& p) { return honest(p); });
  ASSERT_GE(shas_.size(), 5u);
  std::mutex clock_mu;
  auto clock = std::chrono::steady_clock::time_point{} + 1h;
  auto f =
      fetcher({flaky.url()}, upstream.url(), "cluster-secret-123456", std::nullopt, 2000ms, [&] {
        std::lock_guard lock(clock_mu);
        return clock;
      });
  const auto advance = [&](std::chrono::milliseconds d) {
    std::lock_guard lock(clock_mu);
    clock += d;
  };
  const auto up = [&] {
    return metrics_.value("kiln_cluster_source_up", {{"source", flaky.url()}});
  };
  EXPECT_EQ(up(), 1);
  ASSERT_TRUE(f->fetch_chunk(shas_[0]));  // the peer times out, the upstream serves
  EXPECT_EQ(flaky.seen().size(), 1u);
  EXPECT_EQ(up(), 0);
  // Within the backoff the peer is not asked: no second timeout per miss.
  advance(1999ms);
  ASSERT_TRUE(f->fetch_chunk(shas_[1]));
  ASSERT_TRUE(f->fetch_manifest("web", "1"));
  EXPECT_EQ(flaky.seen().size(), 1u);
  EXPECT_EQ(counted("chunk", "skipped"), 1);
  EXPECT_EQ(counted("manifest", "skipped"), 1);
  EXPECT_EQ(upstream.seen().size(), 4u);  // 2 chunks, the manifest and its signature
  // The backoff over, the next miss asks again; it fails again: the backoff doubles.
  advance(1ms);
  ASSERT_TRUE(f->fetch_chunk(shas_[2]));
  EXPECT_EQ(flaky.seen().size(), 2u);
  advance(3999ms);
  ASSERT_TRUE(f->fetch_chunk(shas_[3]));
  EXPECT_EQ(flaky.seen().size(), 2u);
  EXPECT_EQ(counted("chunk", "skipped"), 2);
  // Back: asked after the backoff, it answers and is up; the upstream is not asked.
  down = false;
  advance(1ms);
  const auto before = upstream.seen().size();
  ASSERT_TRUE(f->fetch_chunk(shas_[4]));
  EXPECT_EQ(flaky.seen().size(), 3u);
  EXPECT_EQ(up(), 1);
  EXPECT_EQ(upstream.seen().size(), before);
}

TEST_F(PeerFetchTest, APeerThatAnswersTooMuchFailsTheFetchButStaysUp) {
  FakePeer big([this](const std::string& p) { return honest(p); });
  FakePeer upstream([this](const std::string& p) { return honest(p); });
  PeerFetchOptions o;
  o.peers = {big.url()};
  o.upstream = upstream.url();
  o.max_bytes = 1000;  // every chunk is larger
  auto f = PeerFetcher::create(*local_, o, {}, {}, metrics_, log_);
  ASSERT_TRUE(f);
  EXPECT_FALSE((*f)->fetch_chunk(shas_[0]));
  EXPECT_FALSE((*f)->fetch_chunk(shas_[1]));
  EXPECT_EQ(big.seen().size(), 2u) << "asked again: it answered, it is not down";
  EXPECT_EQ(metrics_.value("kiln_cluster_source_up", {{"source", big.url()}}), 1);
  EXPECT_EQ(counted("chunk", "skipped"), 0);
  EXPECT_EQ(counted("chunk", "failed"), 4);
}

TEST_F(PeerFetchTest, ConcurrentMissesForOneChunkFetchItOnce) {
  FakePeer slow([this](const std::string& p) {
    auto a = honest(p);
    a.delay_ms = 300;
    return a;
  });
  auto f = fetcher({slow.url()});
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (f->fetch_chunk(shas_[0])) ++ok;
    });
  }
  std::atomic<int> async_ok{0}, async_done{0};
  for (int i = 0; i < 4; ++i) {
    f->fetch_chunk_async(shas_[0], [&](bool found) {
      if (found) ++async_ok;
      ++async_done;
    });
  }
  for (auto& t : threads) t.join();
  while (async_done < 4) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(ok, 8);
  EXPECT_EQ(async_ok, 4);
  EXPECT_EQ(slow.seen().size(), 1u);
}

TEST_F(PeerFetchTest, ManifestsAreCheckedAgainstTheCatalogueBeforeTheyAreKept) {
  FakePeer peer([this](const std::string& p) { return honest(p); });
  {
    // The catalogue says another image: the peer's manifest is refused.
    auto f = fetcher({peer.url()}, "", "cluster-secret-123456", std::string(64, 'a'));
    auto st = f->fetch_manifest("web", "1");
    ASSERT_FALSE(st);
    EXPECT_FALSE(local_->manifest("web", "1"));
    EXPECT_EQ(counted("manifest", "bad_hash"), 1);
  }
  auto f = fetcher({peer.url()});
  ASSERT_TRUE(f->fetch_manifest("web", "1"));
  auto got = local_->manifest("web", "1");
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, manifest_);
  // A path-like name never leaves the fetcher.
  EXPECT_FALSE(f->fetch_manifest("../etc", "1"));
}

TEST_F(PeerFetchTest, ImageServiceFetchesAManifestItLacks) {
  FakePeer peer([this](const std::string& p) { return honest(p); });
  auto f = fetcher({peer.url()});
  ImageService svc(*local_, {}, log_);
  EXPECT_FALSE(svc.manifest("web", "1"));
  svc.set_fallback(f.get());
  auto m = svc.manifest("web", "1");
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(*m, manifest_);
  auto sig = svc.signature("web", "1");
  ASSERT_TRUE(sig);
  EXPECT_TRUE(sig->empty());
}

TEST_F(PeerFetchTest, RefusesMalformedSourcesAndACaFileThatDoesNotLoad) {
  PeerFetchOptions o;
  o.peers = {"not a url"};
  EXPECT_FALSE(PeerFetcher::create(*local_, o, {}, {}, metrics_, log_));
  o.peers = {"ftp://10.0.0.1/"};
  EXPECT_FALSE(PeerFetcher::create(*local_, o, {}, {}, metrics_, log_));
  o.peers = {"https://10.0.0.1:8443"};
  o.ca_file = (dir_ / "no-such-ca.pem").string();
  auto f = PeerFetcher::create(*local_, o, {}, {}, metrics_, log_);
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message.find("no-such-ca.pem"), std::string::npos) << f.error().message;
  o.ca_file.clear();  // the system's trust store
  EXPECT_TRUE(PeerFetcher::create(*local_, o, {}, {}, metrics_, log_));
}

}  // namespace
}  // namespace kiln::images
