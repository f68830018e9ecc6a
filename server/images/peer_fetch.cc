#include "images/peer_fetch.h"

#include <spdlog/spdlog.h>
#include <zstd.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <type_traits>

#include "core/crypto.h"
#include "core/hex.h"
#include "core/tls_client.h"
#include "proto/api_types.h"

namespace kiln::images {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = boost::asio::ssl;
using proto::image::ChunkKind;

namespace {

// One GET over `stream` (plain TCP or TLS over `tcp`), bounded by `timeout` as a whole.
template <class Stream>
Result<FetchReply> get_over(net::io_context& ioc, Stream& stream, beast::tcp_stream& tcp,
                            const HttpUrl& base, const std::string& target,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            std::chrono::milliseconds timeout, std::uint64_t max_bytes,
                            bool* answered) {
  constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;
  const std::string url = base.url + target;
  net::ip::tcp::resolver resolver(ioc);
  beast::flat_buffer buf;
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, base.path + target, 11};
  req.set(bhttp::field::host, base.host_header());
  req.set(bhttp::field::user_agent, "kilnd");
  for (const auto& [k, v] : headers) req.set(k, v);
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(max_bytes);
  parser.header_limit(64 << 10);
  beast::error_code failure;
  const char* step = "resolve";
  bool finished = false;
  auto exchange = [&] {
    step = "send";
    bhttp::async_write(stream, req, [&](beast::error_code ec, std::size_t) {
      if (ec) return void(failure = ec);
      step = "read";
      bhttp::async_read_header(stream, buf, parser, [&](beast::error_code ec2, std::size_t) {
        if (ec2) return void(failure = ec2);
        // Beast 1.74's read ops do not apply body_limit: the declared length is checked here,
        // a chunked body's size after the read.
        if (auto len = parser.content_length(); len && *len > max_bytes) {
          return void(failure = bhttp::error::body_limit);
        }
        bhttp::async_read(stream, buf, parser, [&](beast::error_code ec3, std::size_t) {
          if (ec3) return void(failure = ec3);
          if (parser.get().body().size() > max_bytes)
            return void(failure = bhttp::error::body_limit);
          finished = true;
        });
      });
    });
  };
  tcp.expires_after(timeout);
  resolver.async_resolve(
      base.host, std::to_string(base.port), [&](beast::error_code ec, auto results) {
        if (ec) return void(failure = ec);
        step = "connect";
        tcp.async_connect(results, [&](beast::error_code ec2, const auto&) {
          if (ec2) return void(failure = ec2);
          if constexpr (kTls) {
            step = "TLS handshake";
            stream.async_handshake(ssl::stream_base::client, [&](beast::error_code ec3) {
              if (ec3) return void(failure = ec3);
              exchange();
            });
          } else {
            exchange();
          }
        });
      });
  // The stream's expiry bounds connect, handshake, write and read; the resolve is bounded here.
  ioc.run_for(timeout + std::chrono::milliseconds(100));
  if (answered) *answered = finished || parser.is_header_done();
  if (!finished) {
    if (!failure) failure = beast::error::timeout;
    std::string why = failure.message();
    if constexpr (kTls) {
      if (auto cert = tls_certificate_failure(stream.native_handle()); !cert.empty()) {
        why = "the server's " + cert;
      }
    }
    return make_error(Errc::kUnavailable, url + ": " + step + ": " + why);
  }
  auto res = parser.release();
  FetchReply out;
  out.status = res.result_int();
  out.content_type = std::string(res[bhttp::field::content_type]);
  for (const auto& f : res) {
    std::string name(f.name_string());
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    out.headers[name] = std::string(f.value());
  }
  out.body = std::move(res.body());
  return out;
}

}  // namespace

Result<FetchReply> http_get(const HttpUrl& base, const std::string& target,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            std::chrono::milliseconds timeout, std::uint64_t max_bytes,
                            ssl::context* tls, bool* answered) {
  if (answered) *answered = false;
  net::io_context ioc;
  if (!base.tls) {
    beast::tcp_stream stream(ioc);
    return get_over(ioc, stream, stream, base, target, headers, timeout, max_bytes, answered);
  }
  if (tls == nullptr) {
    return make_error(Errc::kInvalid, base.url + target + ": https needs a TLS client context");
  }
  beast::ssl_stream<beast::tcp_stream> stream(ioc, *tls);
  if (auto st = tls_expect_host(stream.native_handle(), base.host, /*verify=*/true); !st) {
    return st.error();
  }
  return get_over(ioc, stream, beast::get_lowest_layer(stream), base, target, headers, timeout,
                  max_bytes, answered);
}

Result<std::unique_ptr<PeerFetcher>> PeerFetcher::create(ChunkStore& store,
                                                         PeerFetchOptions options,
                                                         std::vector<proto::image::Key> trusted,
                                                         ExpectedImage expected, Metrics& metrics,
                                                         std::shared_ptr<spdlog::logger> log) {
  std::vector<Source> sources;
  auto add = [&](const std::string& text, bool peer) -> Status {
    auto u = parse_http_url(text);
    if (!u) return make_error(Errc::kInvalid, "'" + text + "': " + u.error().message);
    sources.push_back({std::move(*u), peer});
    return ok_status();
  };
  for (const auto& p : options.peers) {
    if (auto st = add(p, true); !st) return st.error();
  }
  if (!options.upstream.empty()) {
    if (auto st = add(options.upstream, false); !st) return st.error();
  }
  std::unique_ptr<ssl::context> tls;
  if (std::any_of(sources.begin(), sources.end(), [](const Source& s) { return s.url.tls; })) {
    auto ctx = tls_client_context(options.ca_file, "cluster");
    if (!ctx) return ctx.error();
    tls = std::move(*ctx);
  }
  std::unique_ptr<PeerFetcher> f(new PeerFetcher(store, std::move(options), std::move(sources),
                                                 std::move(trusted), std::move(expected), metrics,
                                                 std::move(log)));
  f->tls_ = std::move(tls);
  return f;
}

PeerFetcher::PeerFetcher(ChunkStore& store, PeerFetchOptions options, std::vector<Source> sources,
                         std::vector<proto::image::Key> trusted, ExpectedImage expected,
                         Metrics& metrics, std::shared_ptr<spdlog::logger> log)
    : store_(store),
      options_(std::move(options)),
      sources_(std::move(sources)),
      trusted_(std::move(trusted)),
      expected_(std::move(expected)),
      metrics_(metrics),
      log_(std::move(log)) {
  metrics_.describe("kiln_cluster_fetches_total", Metrics::Type::kCounter,
                    "Chunks and manifests fetched from cluster peers or the upstream, by kind "
                    "(chunk, manifest) and result (ok, failed, bad_hash, not_found, busy, "
                    "skipped: the source was marked down)");
  metrics_.describe("kiln_cluster_source_up", Metrics::Type::kGauge,
                    "Whether a cluster peer or the upstream answered the last request sent to it "
                    "(0: unreachable, skipped until its backoff ends)");
  health_.resize(sources_.size());
  for (const auto& s : sources_) metrics_.set("kiln_cluster_source_up", {{"source", s.url.url}}, 1);
}

PeerFetcher::~PeerFetcher() { pool_.join(); }

void PeerFetcher::count(std::string_view kind, std::string_view result) {
  metrics_.add("kiln_cluster_fetches_total",
               {{"kind", std::string(kind)}, {"result", std::string(result)}});
}

std::chrono::steady_clock::time_point PeerFetcher::now() const {
  return options_.now ? options_.now() : std::chrono::steady_clock::now();
}

bool PeerFetcher::usable(std::size_t i, std::string_view kind) {
  {
    std::lock_guard lock(health_mu_);
    auto& h = health_[i];
    if (h.failures == 0) return true;
    if (now() >= h.down_until && !h.probing) {
      h.probing = true;  // one request tries it again; the others skip it until it answers
      return true;
    }
  }
  count(kind, "skipped");
  return false;
}

void PeerFetcher::note_reachable(std::size_t i, bool reachable,
                                 std::chrono::steady_clock::time_point started,
                                 const std::string& why) {
  const auto& url = sources_[i].url.url;
  std::lock_guard lock(health_mu_);
  auto& h = health_[i];
  if (reachable) {
    if (h.failures > 0) {
      log_->info("event=cluster.source_up source={} after_failures={}", url, h.failures);
      metrics_.set("kiln_cluster_source_up", {{"source", url}}, 1);
    }
    h.failures = 0;
    h.probing = false;
    return;
  }
  // Requests sent before it was marked down fail too: only a request sent since (the probe)
  // escalates the backoff.
  if (h.failures > 0 && started < h.marked_at) return;
  const auto t = now();
  h.probing = false;
  h.marked_at = t;
  auto backoff = options_.down_backoff;
  for (int n = 0; n < h.failures && backoff < options_.down_backoff_max; ++n) backoff *= 2;
  backoff = std::min(backoff, options_.down_backoff_max);
  ++h.failures;
  h.down_until = t + backoff;
  metrics_.set("kiln_cluster_source_up", {{"source", url}}, 0);
  log_->warn("event=cluster.source_down source={} failures={} retry_in_ms={} err=\"{}\"", url,
             h.failures, backoff.count(), why);
}

Result<FetchReply> PeerFetcher::get(std::size_t i, const std::string& target) {
  const Source& s = sources_[i];
  std::vector<std::pair<std::string, std::string>> headers;
  if (s.peer) {
    headers.emplace_back(std::string(kClusterFetchHeader), "1");
    if (!options_.token.empty()) headers.emplace_back("Authorization", "Bearer " + options_.token);
  }
  const auto started = now();
  bool answered = false;
  Result<FetchReply> r = make_error(Errc::kInternal, "not sent");
  try {
    r = http_get(s.url, target, headers, options_.timeout, options_.max_bytes, tls_.get(),
                 &answered);
  } catch (const std::exception& e) {  // e.g. no descriptor left: the source is not to blame
    {
      std::lock_guard lock(health_mu_);
      health_[i].probing = false;
    }
    return make_error(Errc::kUnavailable, s.url.url + target + ": " + e.what());
  }
  // Down only when it did not answer at all: a response cut short or too large is a failed
  // fetch from a peer that is up.
  note_reachable(i, answered, started, r ? std::string() : r.error().message);
  return r;
}

Status PeerFetcher::once(const std::string& key, const std::function<Status()>& work) {
  std::shared_ptr<Flight> flight;
  bool mine = false;
  {
    std::unique_lock lock(mu_);
    auto it = flights_.find(key);
    if (it == flights_.end()) {
      flight = std::make_shared<Flight>();
      flights_.emplace(key, flight);
      mine = true;
    } else {
      flight = it->second;
      cv_.wait(lock, [&] { return flight->done; });
      return flight->result;
    }
  }
  Status result = ok_status();
  try {
    result = work();
  } catch (const std::exception& e) {
    result = make_error(Errc::kInternal, e.what());
  }
  {
    std::lock_guard lock(mu_);
    flight->result = result;
    flight->done = true;
    flights_.erase(key);
  }
  (void)mine;
  cv_.notify_all();
  return result;
}

Status PeerFetcher::fetch_chunk(const std::string& sha) {
  if (!is_sha256_hex(sha)) return make_error(Errc::kInvalid, "not a chunk hash");
  if (store_.chunk_file(sha)) return ok_status();
  return once("chunk:" + sha, [&] { return fetch_chunk_now(sha); });
}

void PeerFetcher::fetch_chunk_async(std::string sha, std::function<void(bool)> done) {
  // Bounded: a flood of misses for made-up hashes must not queue without end.
  if (queued_.fetch_add(1) >= kMaxQueued) {
    queued_.fetch_sub(1);
    count("chunk", "busy");
    return done(false);
  }
  net::post(pool_, [this, sha = std::move(sha), done = std::move(done)] {
    bool found = false;
    try {
      found = fetch_chunk(sha).ok();
    } catch (const std::exception& e) {
      log_->error("event=cluster.fetch_failed kind=chunk sha256={} err=\"{}\"", sha, e.what());
    }
    queued_.fetch_sub(1);
    done(found);
  });
}

Status PeerFetcher::fetch_chunk_now(const std::string& sha) {
  if (store_.chunk_file(sha)) return ok_status();  // a concurrent flight just stored it
  proto::image::ChunkDecoder decoder;
  std::string out;
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    const Source& s = sources_[i];
    if (!usable(i, "chunk")) continue;
    auto r = get(i, "/v1/chunks/" + sha);
    if (!r) {
      count("chunk", "failed");
      log_->warn("event=cluster.fetch_failed kind=chunk sha256={} err=\"{}\"", sha,
                 r.error().message);
      continue;
    }
    if (r->status == 404) {
      count("chunk", "not_found");
      continue;
    }
    if (r->status != 200) {
      count("chunk", "failed");
      log_->warn("event=cluster.fetch_failed kind=chunk sha256={} source={} status={}", sha,
                 s.url.url, r->status);
      continue;
    }
    // The payload's kind: a DATA frame is served as application/zstd, RAW bytes otherwise.
    const ChunkKind kind =
        r->content_type.rfind("application/zstd", 0) == 0 ? ChunkKind::kData : ChunkKind::kRaw;
    std::uint64_t length = r->body.size();
    Status verified = ok_status();
    if (kind == ChunkKind::kData) {
      const auto n = ZSTD_getFrameContentSize(r->body.data(), r->body.size());
      if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN ||
          n > proto::image::kMaxChunkSize) {
        verified = make_error(Errc::kInvalid, "not a chunk frame");
      }
      length = n;
    } else if (length > proto::image::kMaxChunkSize) {
      verified = make_error(Errc::kInvalid, "larger than any chunk");
    }
    if (verified) {
      out.resize(static_cast<std::size_t>(length));
      verified = decoder.decode(kind, r->body, sha, length, out.data());
    }
    if (!verified) {
      count("chunk", "bad_hash");
      log_->error(
          "event=cluster.fetch_rejected kind=chunk sha256={} source={} err=\"{}\" msg=\"content "
          "does not match its hash: nothing stored\"",
          sha, s.url.url, verified.error().message);
      continue;
    }
    if (auto st = store_.put_chunk(sha, kind, r->body); !st) {
      count("chunk", "failed");
      log_->error("event=cluster.store_failed kind=chunk sha256={} err=\"{}\"", sha,
                  st.error().message);
      return st;
    }
    count("chunk", "ok");
    log_->info("event=cluster.fetched kind=chunk sha256={} source={} bytes={}", sha, s.url.url,
               r->body.size());
    return ok_status();
  }
  return make_error(Errc::kNotFound, "no peer or upstream has chunk " + sha);
}

Status PeerFetcher::fetch_manifest(const std::string& name, const std::string& version) {
  if (!proto::validate_image_name(name) || !proto::validate_image_version(version)) {
    return make_error(Errc::kInvalid, "not an image name:version");
  }
  if (store_.manifest(name, version)) return ok_status();
  return once("manifest:" + name + ":" + version,
              [&] { return fetch_manifest_now(name, version); });
}

Status PeerFetcher::fetch_manifest_now(const std::string& name, const std::string& version) {
  if (store_.manifest(name, version)) return ok_status();
  const auto expected = expected_ ? expected_(name, version) : std::nullopt;
  if (!expected)
    return make_error(Errc::kNotFound, "no catalogue entry for " + name + ":" + version);
  const std::string base = "/v1/manifests/" + name + "/" + version;
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    const Source& s = sources_[i];
    if (!usable(i, "manifest")) continue;
    auto r = get(i, base + ".json");
    if (!r || (r->status != 200 && r->status != 404)) {
      count("manifest", "failed");
      log_->warn("event=cluster.fetch_failed kind=manifest image={}:{} source={} err=\"{}\"", name,
                 version, s.url.url, r ? "status " + std::to_string(r->status) : r.error().message);
      continue;
    }
    if (r->status == 404) {
      count("manifest", "not_found");
      continue;
    }
    std::string sig;
    if (auto sr = get(i, base + ".sig"); sr && sr->status == 200) {
      sig = std::move(sr->body);
    } else if (!sr || sr->status != 404) {
      count("manifest", "failed");
      continue;
    }
    std::string why;
    auto m = proto::image::parse_manifest(r->body);
    if (!m) {
      why = m.error().message;
    } else if (m->name != name || m->version != version) {
      why = "it is " + m->name + ":" + m->version;
    } else if (m->sha256 != *expected) {
      why = "its image sha256 is not the catalogue's";
    } else if (auto st = proto::image::verify_signature(r->body, sig, trusted_); !st) {
      why = st.error().message;
    }
    if (!why.empty()) {
      count("manifest", "bad_hash");
      log_->error(
          "event=cluster.fetch_rejected kind=manifest image={}:{} source={} err=\"{}\" "
          "msg=\"nothing stored\"",
          name, version, s.url.url, why);
      continue;
    }
    if (auto st = store_.put_manifest(name, version, r->body, sig); !st) {
      count("manifest", "failed");
      log_->error("event=cluster.store_failed kind=manifest image={}:{} err=\"{}\"", name, version,
                  st.error().message);
      return st;
    }
    count("manifest", "ok");
    log_->info("event=cluster.fetched kind=manifest image={}:{} source={}", name, version,
               s.url.url);
    return ok_status();
  }
  return make_error(Errc::kNotFound,
                    "no peer or upstream has the manifest of " + name + ":" + version);
}

}  // namespace kiln::images
