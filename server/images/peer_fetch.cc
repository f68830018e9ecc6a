#include "images/peer_fetch.h"

#include <spdlog/spdlog.h>
#include <zstd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>

#include "core/crypto.h"
#include "core/hex.h"
#include "proto/api_types.h"

namespace kiln::images {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using proto::image::ChunkKind;

Result<FetchReply> http_get(const HttpUrl& base, const std::string& target,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            std::chrono::milliseconds timeout, std::uint64_t max_bytes) {
  const std::string url = base.url + target;
  if (base.tls) return make_error(Errc::kInvalid, url + ": only http:// sources are supported");
  net::io_context ioc;
  net::ip::tcp::resolver resolver(ioc);
  beast::tcp_stream stream(ioc);
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
  stream.expires_after(timeout);
  resolver.async_resolve(
      base.host, std::to_string(base.port), [&](beast::error_code ec, auto results) {
        if (ec) return void(failure = ec);
        step = "connect";
        stream.async_connect(results, [&](beast::error_code ec2, const auto&) {
          if (ec2) return void(failure = ec2);
          step = "send";
          bhttp::async_write(stream, req, [&](beast::error_code ec3, std::size_t) {
            if (ec3) return void(failure = ec3);
            step = "read";
            bhttp::async_read(stream, buf, parser, [&](beast::error_code ec4, std::size_t) {
              if (ec4) return void(failure = ec4);
              finished = true;
            });
          });
        });
      });
  // The stream's expiry bounds connect, write and read; the resolve is bounded here.
  ioc.run_for(timeout + std::chrono::milliseconds(100));
  if (!finished) {
    if (!failure) failure = beast::error::timeout;
    return make_error(Errc::kUnavailable, url + ": " + step + ": " + failure.message());
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

Result<std::unique_ptr<PeerFetcher>> PeerFetcher::create(ChunkStore& store,
                                                         PeerFetchOptions options,
                                                         std::vector<proto::image::Key> trusted,
                                                         ExpectedImage expected, Metrics& metrics,
                                                         std::shared_ptr<spdlog::logger> log) {
  std::vector<Source> sources;
  auto add = [&](const std::string& text, bool peer) -> Status {
    auto u = parse_http_url(text);
    if (!u) return make_error(Errc::kInvalid, "'" + text + "': " + u.error().message);
    if (u->tls) return make_error(Errc::kInvalid, "'" + text + "': only http:// is supported");
    sources.push_back({std::move(*u), peer});
    return ok_status();
  };
  for (const auto& p : options.peers) {
    if (auto st = add(p, true); !st) return st.error();
  }
  if (!options.upstream.empty()) {
    if (auto st = add(options.upstream, false); !st) return st.error();
  }
  return std::unique_ptr<PeerFetcher>(new PeerFetcher(store, std::move(options), std::move(sources),
                                                      std::move(trusted), std::move(expected),
                                                      metrics, std::move(log)));
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
                    "(chunk, manifest) and result (ok, failed, bad_hash, not_found, busy)");
}

PeerFetcher::~PeerFetcher() { pool_.join(); }

void PeerFetcher::count(std::string_view kind, std::string_view result) {
  metrics_.add("kiln_cluster_fetches_total",
               {{"kind", std::string(kind)}, {"result", std::string(result)}});
}

Result<FetchReply> PeerFetcher::get(const Source& s, const std::string& target) const {
  std::vector<std::pair<std::string, std::string>> headers;
  if (s.peer) {
    headers.emplace_back(std::string(kClusterFetchHeader), "1");
    if (!options_.token.empty()) headers.emplace_back("Authorization", "Bearer " + options_.token);
  }
  return http_get(s.url, target, headers, options_.timeout, options_.max_bytes);
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
  for (const auto& s : sources_) {
    auto r = get(s, "/v1/chunks/" + sha);
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
  for (const auto& s : sources_) {
    auto r = get(s, base + ".json");
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
    if (auto sr = get(s, base + ".sig"); sr && sr->status == 200) {
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
