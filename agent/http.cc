#include "agent/http.h"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>

namespace kiln::agent {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;

Result<HttpUrl> parse_agent_url(std::string_view url) { return parse_http_url(url); }

namespace {

// The pinned CA (see pin_ca_file): written once by main before any thread, then only read.
struct PinnedCa {
  std::string path;
  std::unique_ptr<ssl::context> context;  // null: nothing pinned, https is refused
};

PinnedCa& pinned() {
  static PinnedCa p;
  return p;
}

}  // namespace

Status pin_ca_file(const std::string& pem_path) {
  std::error_code fec;
  if (!std::filesystem::is_regular_file(pem_path, fec)) {
    return make_error(Errc::kNotFound, "CA file " + pem_path + " does not exist");
  }
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  if (SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION) != 1) {
    return make_error(Errc::kInternal, "cannot require TLS 1.2");
  }
  boost::system::error_code ec;
  // Only this file: the system's store (set_default_verify_paths) is never loaded.
  ctx->load_verify_file(pem_path, ec);
  if (ec) {
    return make_error(
        Errc::kInvalid,
        "CA file " + pem_path + " holds no PEM certificate that can be loaded: " + ec.message());
  }
  // A pinned certificate is an anchor even when it is not self-signed (an intermediate).
  X509_STORE_set_flags(SSL_CTX_get_cert_store(ctx->native_handle()), X509_V_FLAG_PARTIAL_CHAIN);
  ctx->set_verify_mode(ssl::verify_peer);
  pinned() = PinnedCa{pem_path, std::move(ctx)};
  return ok_status();
}

const std::string& pinned_ca_file() { return pinned().path; }

Result<ChunkSources> chunk_sources(const std::vector<std::string>& mirrors, const HttpUrl& server,
                                   const std::optional<std::string>& chunks_url) {
  ChunkSources out;
  out.bases = mirrors;
  if (chunks_url &&
      (chunks_url->rfind("http://", 0) == 0 || chunks_url->rfind("https://", 0) == 0)) {
    auto u = parse_agent_url(*chunks_url);
    if (!u) return make_error(Errc::kInvalid, "the plan's chunks_url: " + u.error().message);
    out.path = u->path + "/";
    out.bases.push_back(u->url.substr(0, u->url.size() - u->path.size()));
  } else if (chunks_url) {
    out.path = *chunks_url;
  }
  out.bases.push_back(server.url);
  return out;
}

std::string Reply::header(std::string_view name) const {
  std::size_t pos = 0;
  while (pos < headers.size()) {
    auto eol = headers.find('\n', pos);
    if (eol == std::string::npos) eol = headers.size();
    std::string_view line(headers.data() + pos, eol - pos);
    auto colon = line.find(':');
    if (colon != std::string_view::npos && beast::iequals(line.substr(0, colon), name)) {
      auto v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      return std::string(v);
    }
    pos = eol + 1;
  }
  return {};
}

namespace {

// One connection's state and the things both clients do with it: run one asynchronous
// operation to completion (so every step is bounded by the stream's timeout), on whichever
// stream the URL needs (plain or TLS), and connect (resolving once; verifying the server's
// certificate for https).
struct Conn {
  HttpUrl base;
  std::chrono::milliseconds timeout;
  net::io_context ioc;
  std::optional<beast::tcp_stream> plain;                   // http://
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;  // https://
  beast::flat_buffer buffer;
  std::optional<tcp::resolver::results_type> endpoints;

  template <typename Start>
  beast::error_code run(Start&& start) {
    beast::error_code result = net::error::would_block;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  bool connected() const { return plain || tls; }
  void close() {
    tls.reset();
    plain.reset();
  }
  // Arms the timeout for the next step.
  void arm() { (tls ? beast::get_lowest_layer(*tls) : *plain).expires_after(timeout); }
  // Runs op(stream, handler) on the connection's stream.
  template <typename Op>
  beast::error_code io(Op&& op) {
    arm();
    return run([&](auto h) {
      if (tls) {
        op(*tls, std::move(h));
      } else {
        op(*plain, std::move(h));
      }
    });
  }

  // The TLS handshake on the connected `plain` stream, which becomes `tls`.
  Status handshake() {
    const PinnedCa& ca = pinned();
    tls.emplace(std::move(*plain), *ca.context);
    plain.reset();
    SSL* ssl = tls->native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    boost::system::error_code not_ip;
    net::ip::make_address(base.host, not_ip);
    const bool ok = !not_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, base.host.c_str()) == 1
                            : X509_VERIFY_PARAM_set1_host(param, base.host.c_str(), 0) == 1 &&
                                  SSL_set_tlsext_host_name(ssl, base.host.c_str()) == 1;
    if (!ok) {
      close();
      return make_error(Errc::kInvalid, "cannot check a certificate for host '" + base.host + "'");
    }
    arm();
    auto ec = run([&](auto h) { tls->async_handshake(ssl::stream_base::client, h); });
    if (ec) {
      std::string why = ec.message();
      if (const long v = SSL_get_verify_result(ssl); v != X509_V_OK) {
        why = std::string("the server's certificate is not trusted: ") +
              X509_verify_cert_error_string(v);
      }
      close();
      return make_error(Errc::kUnavailable, "TLS with " + base.url + " refused: " + why +
                                                " (pinned CA " + ca.path + ", expected host " +
                                                base.host + ")");
    }
    return ok_status();
  }

  Status connect() {
    close();
    buffer.clear();
    if (base.tls && !pinned().context) {
      return make_error(Errc::kInvalid,
                        base.url + " is https but no CA is pinned (--ca FILE, or " +
                            "/etc/kiln/ca.pem in the initramfs): refusing an unverified server");
    }
    beast::error_code ec;
    if (!endpoints) {
      tcp::resolver resolver(ioc);
      auto r = resolver.resolve(base.host, std::to_string(base.port), ec);
      if (ec) {
        return make_error(Errc::kUnavailable,
                          "cannot resolve " + base.host + " (" + base.url + "): " + ec.message());
      }
      endpoints = r;
    }
    plain.emplace(ioc);
    plain->expires_after(timeout);
    ec = run([&](auto h) { plain->async_connect(*endpoints, h); });
    if (ec) {
      plain.reset();
      return make_error(Errc::kUnavailable, "cannot connect to " + base.url + ": " + ec.message());
    }
    plain->socket().set_option(tcp::no_delay(true), ec);
    if (base.tls) return handshake();
    return ok_status();
  }
};

}  // namespace

struct HttpConnection::Impl : Conn {
  // Reads exactly `n` body bytes into `out` on a plain connection: what the header read left
  // in the buffer, then straight from the socket into `out`, each wait bounded by the timeout.
  // (Beast's read would take the body in 64 KiB pieces through the buffer, re-arming a timer
  // for each: a chunk body is megabytes, and the agent reads every byte of an image.) An error
  // message says what went wrong, as Beast's would: the end of stream, or a timeout.
  std::optional<std::string> read_body(char* out, std::size_t n) {
    std::size_t have = std::min(n, buffer.size());
    net::buffer_copy(net::buffer(out, have), buffer.data());
    buffer.consume(have);
    const int fd = plain->socket().native_handle();
    const int wait_ms = static_cast<int>(std::min<std::int64_t>(timeout.count(), 1 << 30));
    while (have < n) {
      const ssize_t r = ::recv(fd, out + have, n - have, MSG_DONTWAIT);
      if (r > 0) {
        have += static_cast<std::size_t>(r);
      } else if (r == 0) {
        return "end of stream after " + std::to_string(have) + " of " + std::to_string(n) +
               " body bytes";
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pollfd p{fd, POLLIN, 0};
        const int ready = ::poll(&p, 1, wait_ms);
        if (ready == 0) return std::string("timed out reading the body");
        if (ready < 0 && errno != EINTR) return std::string("poll: ") + std::strerror(errno);
      } else if (errno != EINTR) {
        return std::string(std::strerror(errno));
      }
    }
    return std::nullopt;
  }

  // One request/response on the current connection.
  Result<Reply> once(http::request<http::string_body>& req, std::size_t body_limit) {
    auto ec = io([&](auto& s, auto h) { http::async_write(s, req, h); });
    if (ec) return make_error(Errc::kUnavailable, "sending to " + base.url + ": " + ec.message());
    http::response_parser<http::string_body> parser;
    parser.body_limit(body_limit);
    ec = io([&](auto& s, auto h) { http::async_read_header(s, buffer, parser, h); });
    boost::optional<std::uint64_t> len;
    if (!ec) len = parser.content_length();
    if (!ec && !parser.is_done() && plain && len && !parser.chunked() &&
        req.method() != http::verb::head) {
      auto failed = [&](const std::string& why) {
        return make_error(Errc::kUnavailable,
                          "response from " + base.url + std::string(req.target()) + ": " + why);
      };
      if (*len > body_limit) return failed("body limit exceeded");
      std::string body(static_cast<std::size_t>(*len), '\0');
      if (auto why = read_body(body.data(), body.size())) return failed(*why);
      return reply(parser.get(), std::move(body), parser.keep_alive());
    }
    if (!ec && !parser.is_done()) {
      if (auto len = parser.content_length()) parser.get().body().reserve(*len);
      // io() re-arms the timeout: a stall, not the whole body, times out.
      ec = io([&](auto& s, auto h) { http::async_read(s, buffer, parser, h); });
    }
    if (ec) {
      return make_error(Errc::kUnavailable, "response from " + base.url +
                                                std::string(req.target()) + ": " + ec.message());
    }
    return reply(parser.get(), std::move(parser.get().body()), parser.keep_alive());
  }

  Reply reply(const http::response_header<>& res, std::string body, bool keep_alive) {
    Reply r;
    r.status = res.result_int();
    r.content_type = std::string(res[http::field::content_type]);
    for (const auto& f : res) {
      r.headers += std::string(f.name_string()) + ": " + std::string(f.value()) + "\n";
    }
    r.body = std::move(body);
    if (!keep_alive) close();
    return r;
  }
};

HttpConnection::HttpConnection(HttpUrl base, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->base = std::move(base);
  impl_->timeout = timeout;
}
HttpConnection::~HttpConnection() = default;

const HttpUrl& HttpConnection::base() const { return impl_->base; }

Result<Reply> HttpConnection::request(std::string_view method, std::string_view target,
                                      std::string_view token, std::string_view body,
                                      std::size_t body_limit) {
  auto& d = *impl_;
  http::request<http::string_body> req{http::string_to_verb(method),
                                       d.base.path + std::string(target), 11};
  req.set(http::field::host, d.base.host_header());
  req.set(http::field::user_agent, "kiln-agent");
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + std::string(token));
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::string(body);
  }
  req.keep_alive(true);
  req.prepare_payload();
  // No silent second attempt here: a failure is reported, and callers retry (counted).
  if (!d.connected()) {
    if (auto st = d.connect(); !st) return st.error();
  }
  auto r = d.once(req, body_limit);
  if (!r) d.close();
  return r;
}

struct HttpStream::Impl : Conn {
  std::optional<http::response_parser<http::buffer_body>> parser;
};

HttpStream::HttpStream(HttpUrl url, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->base = std::move(url);
  impl_->timeout = timeout;
}
HttpStream::~HttpStream() = default;

Status HttpStream::open() {
  auto& d = *impl_;
  if (auto st = d.connect(); !st) return st;
  beast::error_code ec;
  http::request<http::empty_body> req{http::verb::get, d.base.path.empty() ? "/" : d.base.path, 11};
  req.set(http::field::host, d.base.host_header());
  req.set(http::field::user_agent, "kiln-agent");
  ec = d.io([&](auto& s, auto h) { http::async_write(s, req, h); });
  if (ec) return make_error(Errc::kUnavailable, "sending to " + d.base.url + ": " + ec.message());
  d.parser.emplace();
  d.parser->body_limit(std::numeric_limits<std::uint64_t>::max());
  ec = d.io([&](auto& s, auto h) { http::async_read_header(s, d.buffer, *d.parser, h); });
  if (ec)
    return make_error(Errc::kUnavailable, "response from " + d.base.url + ": " + ec.message());
  const unsigned status = d.parser->get().result_int();
  if (status != 200) {
    return make_error(Errc::kUnavailable, d.base.url + " answered HTTP " + std::to_string(status));
  }
  return ok_status();
}

Result<std::size_t> HttpStream::read(char* buf, std::size_t cap) {
  auto& d = *impl_;
  if (!d.parser || d.parser->is_done()) return std::size_t{0};
  auto& body = d.parser->get().body();
  body.data = buf;
  body.size = cap;
  auto ec = d.io([&](auto& s, auto h) { http::async_read_some(s, d.buffer, *d.parser, h); });
  if (ec == http::error::need_buffer) ec = {};
  if (ec == ssl::error::stream_truncated && d.parser->need_eof()) {
    // A body delimited by the connection's end, from a server that closes TLS without
    // close_notify (many do): the end of the body, as over plain TCP. The bytes are checked
    // against the plan's SHA-256 either way.
    ec = {};
    d.parser->put_eof(ec);
  }
  const std::size_t got = cap - body.size;
  if (ec) return make_error(Errc::kUnavailable, "reading " + d.base.url + ": " + ec.message());
  if (got == 0 && !d.parser->is_done()) return read(buf, cap);  // only framing consumed
  return got;
}

}  // namespace kiln::agent
