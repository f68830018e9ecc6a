// images/peer_fetch.h — filling the chunk store's misses from the other kilnd instances of a
// cluster (cluster.peers) and then from an upstream cache (cluster.upstream).
//
// Several kilnd instances share one database (the image catalogue) but each has its own chunk
// store on disk: an image uploaded to one instance is on that instance's disk only. When an
// instance is asked for a chunk or a manifest it does not hold, it asks its peers in order,
// then the upstream, for the same path (GET <base>/v1/chunks/<sha256>, GET
// <base>/v1/manifests/<name>/<version>.json and .sig), VERIFIES what it got, stores it
// atomically and serves it:
//   - a chunk's content must hash to the name it was asked by (a DATA frame is decompressed
//     first); anything else is rejected, logged, counted as bad_hash, nothing is stored, and
//     the next source is tried;
//   - a manifest must parse, name the asked name:version, carry the whole-image SHA-256 the
//     shared catalogue registered for that version, and (with trusted keys) be signed by one.
// Every request is bounded by `timeout` (connect, send, whole response) and `max_bytes`.
// Requests to peers carry the cluster token (Authorization: Bearer) and the header
// Kiln-Cluster-Fetch: 1, which tells a peer not to go to its own peers for a miss (no loops);
// the token is never sent to the upstream and never logged. Concurrent misses for the same
// chunk or manifest fetch once: the others wait for that fetch's outcome.
// A source that cannot be reached (refused, reset, TLS refused, timed out before a response
// header) is marked down and skipped for `down_backoff`, doubled at each failed retry up to
// `down_backoff_max`; after that one request (the first) tries it again while the others still
// skip it, and any HTTP answer marks it up. So a dead instance costs one timeout per backoff,
// not one per miss (events cluster.source_down/_up, gauge kiln_cluster_source_up, skipped
// requests counted as result="skipped"). A response cut short or over `max_bytes` fails that
// fetch but leaves the source up.
// Sources may be https://: the server's certificate is checked against `ca_file` ("" = the
// system's trust store) and the URL's host, and the token then never crosses the network in
// the clear.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "core/result.h"
#include "core/url.h"
#include "images/chunk_store.h"
#include "proto/image_format.h"

namespace spdlog {
class logger;
}

namespace kiln::images {

// The header a peer fetch carries: the answering instance serves what it has and never asks
// its own peers for a miss.
inline constexpr std::string_view kClusterFetchHeader = "Kiln-Cluster-Fetch";

struct PeerFetchOptions {
  std::vector<std::string> peers;  // base URLs of the other instances, tried in order
  std::string upstream;            // base URL tried after the peers ("": none)
  std::string token;               // sent to peers only ("": none)
  std::string ca_file;             // verifies https:// sources ("": the system's trust store)
  std::chrono::milliseconds timeout{5'000};
  std::uint64_t max_bytes = std::uint64_t{64} << 20;   // one response at most
  std::chrono::milliseconds down_backoff{2'000};       // an unreachable source is skipped this
  std::chrono::milliseconds down_backoff_max{60'000};  // long, doubled per failed retry to this
  // The backoffs' clock (tests set one; empty: std::chrono::steady_clock).
  std::function<std::chrono::steady_clock::time_point()> now;
};

// One HTTP/1.1 GET of `base` + `target`, bounded by `timeout` as a whole; an https `base` needs
// `tls`, a verifying client context (core/tls_client.h). Extra headers are sent as given.
// Transport failures (TLS ones included) are kUnavailable naming the URL (never a header).
// `answered` (optional): set when a response header arrived, whatever happened after it.
struct FetchReply {
  unsigned status = 0;
  std::string content_type;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
};
Result<FetchReply> http_get(const HttpUrl& base, const std::string& target,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            std::chrono::milliseconds timeout, std::uint64_t max_bytes,
                            boost::asio::ssl::context* tls = nullptr, bool* answered = nullptr);

class PeerFetcher {
 public:
  // The whole-image SHA-256 the catalogue holds for name:version; nullopt when it holds none
  // (then no manifest is fetched for it).
  using ExpectedImage = std::function<std::optional<std::string>(const std::string& name,
                                                                 const std::string& version)>;

  // Errors: a peer or upstream URL that is not http(s)://host[:port]; a CA file that does not
  // load (with an https source).
  static Result<std::unique_ptr<PeerFetcher>> create(ChunkStore& store, PeerFetchOptions options,
                                                     std::vector<proto::image::Key> trusted,
                                                     ExpectedImage expected, Metrics& metrics,
                                                     std::shared_ptr<spdlog::logger> log);
  ~PeerFetcher();
  PeerFetcher(const PeerFetcher&) = delete;
  PeerFetcher& operator=(const PeerFetcher&) = delete;

  // Blocking: fetches chunk `sha256` into the store unless it is there. kNotFound when no
  // source had a valid copy.
  Status fetch_chunk(const std::string& sha256);
  // Blocking: fetches name:version's manifest (and signature) into the store unless it is there.
  Status fetch_manifest(const std::string& name, const std::string& version);
  // fetch_chunk on the fetcher's own threads (never an I/O thread); `done(found)` runs there.
  // Past kMaxQueued fetches waiting or running, `done(false)` runs at once (counted busy).
  void fetch_chunk_async(std::string sha256, std::function<void(bool)> done);

 private:
  struct Source {
    HttpUrl url;
    bool peer = true;  // carries the token and the loop header
  };
  struct Flight {
    bool done = false;
    Status result = ok_status();
  };
  PeerFetcher(ChunkStore& store, PeerFetchOptions options, std::vector<Source> sources,
              std::vector<proto::image::Key> trusted, ExpectedImage expected, Metrics& metrics,
              std::shared_ptr<spdlog::logger> log);
  // Runs `work` once for `key` among concurrent callers; the others get its result.
  Status once(const std::string& key, const std::function<Status()>& work);
  Status fetch_chunk_now(const std::string& sha256);
  Status fetch_manifest_now(const std::string& name, const std::string& version);
  // GET from sources_[i]; kUnavailable without a request while that source is marked down.
  // Notes whether it answered.
  Result<FetchReply> get(std::size_t i, const std::string& target);
  // Whether sources_[i] may be asked now; `kind` counts a skip.
  bool usable(std::size_t i, std::string_view kind);
  std::chrono::steady_clock::time_point now() const;
  // `started`: when the request was sent (a failure of one sent before the source was marked
  // down does not escalate its backoff).
  void note_reachable(std::size_t i, bool reachable, std::chrono::steady_clock::time_point started,
                      const std::string& why);
  void count(std::string_view kind, std::string_view result);

  ChunkStore& store_;
  const PeerFetchOptions options_;
  const std::vector<Source> sources_;
  const std::vector<proto::image::Key> trusted_;
  const ExpectedImage expected_;
  Metrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Flight>> flights_;
  struct Health {
    int failures = 0;                                  // consecutive unreachable tries
    std::chrono::steady_clock::time_point down_until;  // skipped before this
    std::chrono::steady_clock::time_point marked_at;   // when it was last marked down
    bool probing = false;                              // one request is trying it again
  };
  std::mutex health_mu_;
  std::vector<Health> health_;  // by source
  static constexpr int kMaxQueued = 256;
  std::atomic<int> queued_{0};
  std::unique_ptr<boost::asio::ssl::context> tls_;  // set with an https source
  boost::asio::thread_pool pool_{4};                // last: joined before the rest goes
};

}  // namespace kiln::images
