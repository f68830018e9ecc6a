// agent/http.h — the agent's HTTP/1.1 client (Boost.Beast): one keep-alive connection to one
// server, every operation bounded by a timeout. After any failure the next request opens a new
// connection; there is no silent second attempt (callers retry, and count it). http:// and
// https://: TLS 1.2 or later, the server's certificate verified against the CA pinned with
// pin_ca_file() (never the system's store) and checked for the URL's host name or IP address.
// Integrity of the image itself comes from signed manifests and per-chunk hashes, so chunk
// URLs may stay plain http:// (cacheable). Not thread-safe: one connection per worker thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "core/url.h"

namespace kiln::agent {

// A server, mirror or image URL the agent can speak to: "http[s]://host[:port][/prefix]" as
// core's parse_http_url reads it (port 1-65535). An https URL parses without a pinned CA; it is
// refused when a connection is opened.
Result<HttpUrl> parse_agent_url(std::string_view url);

// The CA that https:// servers must chain to. Process-wide: main pins it once, before any
// connection is opened (and before any thread starts); afterwards it is only read. Every
// certificate in the PEM file is a trust anchor (a site may pin an intermediate). Errors
// (kNotFound, kInvalid: unreadable, not PEM, no certificate) name the file and pin nothing.
Status pin_ca_file(const std::string& pem_path);
// The file pinned by pin_ca_file(), "" when none is.
const std::string& pinned_ca_file();

// Where chunks are fetched from, in order: `mirrors`, then the plan's `chunks_url` when it is
// an absolute URL (its origin; kilnd sends one when the boot path is on TLS and chunks stay on
// plain HTTP), then the server itself. `path` is appended to every base: the absolute URL's
// path, else `chunks_url` itself, else "/v1/chunks/". Errors: an absolute chunks_url that does
// not parse.
struct ChunkSources {
  std::vector<std::string> bases;
  std::string path = "/v1/chunks/";
};
Result<ChunkSources> chunk_sources(const std::vector<std::string>& mirrors, const HttpUrl& server,
                                   const std::optional<std::string>& chunks_url);

struct Reply {
  unsigned status = 0;
  std::string content_type;
  std::string body;
  std::string header(std::string_view name) const;  // "" when absent
  std::string headers;                              // raw "Name: value\n" lines
};

class HttpConnection {
 public:
  HttpConnection(HttpUrl base, std::chrono::milliseconds timeout);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Sends a request to base.path + target. A response larger than `body_limit` is an error.
  // Transport failures (refused, reset, timeout, truncated or malformed response, a body
  // shorter than its Content-Length) are errors (kUnavailable) naming the URL; any HTTP status
  // is a reply.
  Result<Reply> request(std::string_view method, std::string_view target,
                        std::string_view token = {}, std::string_view body = {},
                        std::size_t body_limit = 64 << 20);
  const HttpUrl& base() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A GET whose body is read piece by piece (a whole image streamed from a URL), never held in
// memory. Each read is bounded by the timeout (a stall, not the whole transfer).
class HttpStream {
 public:
  HttpStream(HttpUrl url, std::chrono::milliseconds timeout);
  ~HttpStream();
  HttpStream(const HttpStream&) = delete;
  HttpStream& operator=(const HttpStream&) = delete;
  // Connects, sends the GET for the URL itself and reads the response header; the status must
  // be 200.
  Status open();
  // Up to `cap` body bytes into `buf`; 0 at the end of the body. A body cut short is an error.
  Result<std::size_t> read(char* buf, std::size_t cap);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::agent
