// cli/client.h — the kiln CLI's HTTP transport to kilnd's REST API.
//
// A Client sends one request per call over a fresh connection (plain HTTP or HTTPS) and blocks
// until the whole response has been read or a timeout fires. It knows nothing about the API's
// routes or JSON: it returns whatever status and body the server sent. Transport failures
// (bad URL, name resolution, connection refused, TLS verification, timeouts, truncated
// responses) are returned as errors whose message names the server URL. A Client is not
// thread-safe; use one per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/result.h"
#include "core/url.h"

namespace kiln::cli {

// The parts of a base URL such as "https://kiln.example:8443/prefix"; its `path` is prepended
// to every request target, its `url` (as given, minus trailing slashes) names it in messages.
using Endpoint = HttpUrl;

// Accepts http:// and https:// URLs (scheme in any case) with an optional port and path
// prefix; refuses user info, queries and fragments (core's parse_http_url; errors say
// "server URL ...").
Result<Endpoint> parse_base_url(std::string_view url);

// Percent-encodes everything except RFC 3986 unreserved characters, so the result is safe as
// one path segment or one query value.
std::string encode_component(std::string_view s);

struct ClientOptions {
  std::string url = "http://127.0.0.1:8080";
  std::string token;      // sent as "Authorization: Bearer <token>" unless empty
  bool insecure = false;  // https: verify neither the certificate chain nor the host name
  std::string cacert;     // https: PEM file of CAs to trust instead of the system's defaults
  // Bound on each of: connecting, the TLS handshake, sending the request, and receiving the
  // response (to which a call's `extra_wait` is added).
  std::chrono::seconds timeout{30};
  std::string user_agent = "kiln";
};

struct HttpReply {
  unsigned status = 0;
  std::string reason;        // the status line's reason phrase
  std::string content_type;  // the Content-Type header, "" when absent
  std::string body;
};

using UploadProgress = std::function<void(std::uint64_t sent, std::uint64_t total)>;

class Client {
 public:
  // Validates the URL and, for https, loads the trust store (errors: kInvalid).
  static Result<Client> create(ClientOptions options);
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends `method` (GET, POST, PUT, PATCH, DELETE) to the endpoint's path + `target` (which starts
  // with
  // '/' and is already percent-encoded). A non-empty `json_body` is sent with `content_type`.
  // `extra_wait` extends the response timeout for long-poll requests. Errors (kUnavailable)
  // are transport failures only; any HTTP status is a successful reply.
  Result<HttpReply> request(std::string_view method, std::string_view target,
                            std::string_view json_body = {},
                            std::string_view content_type = "application/json",
                            std::chrono::seconds extra_wait = std::chrono::seconds(0));

  // Streams the file at `path` as a POST body (never whole in memory), with
  // "Expect: 100-continue" so a refused request costs no upload. `progress` (optional) gets
  // (bytes sent, total) as the body goes out. `extra_wait` covers the server's work after the
  // last byte (verifying an image).
  Result<HttpReply> upload(std::string_view target, const std::string& path,
                           std::string_view content_type, const UploadProgress& progress = {},
                           std::chrono::seconds extra_wait = std::chrono::seconds(0));

  const Endpoint& endpoint() const;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::cli
