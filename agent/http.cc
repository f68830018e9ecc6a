#include "agent/http.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <optional>

namespace kiln::agent {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

Result<HttpUrl> parse_agent_url(std::string_view url) {
  auto u = parse_http_url(url);
  if (!u) return u.error();
  if (u->tls) {
    return make_error(Errc::kInvalid,
                      "URL '" + u->url + "' is https; the agent speaks plain http:// only");
  }
  return u;
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

// One connection's state and the two things both clients do with it: run one asynchronous
// operation to completion (so every step is bounded by the stream's timeout), and connect
// (resolving once).
struct Conn {
  HttpUrl base;
  std::chrono::milliseconds timeout;
  net::io_context ioc;
  std::optional<beast::tcp_stream> stream;
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

  Status connect() {
    stream.reset();
    buffer.clear();
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
    stream.emplace(ioc);
    stream->expires_after(timeout);
    ec = run([&](auto h) { stream->async_connect(*endpoints, h); });
    if (ec) {
      stream.reset();
      return make_error(Errc::kUnavailable, "cannot connect to " + base.url + ": " + ec.message());
    }
    stream->socket().set_option(tcp::no_delay(true), ec);
    return ok_status();
  }
};

}  // namespace

struct HttpConnection::Impl : Conn {
  // One request/response on the current connection.
  Result<Reply> once(http::request<http::string_body>& req, std::size_t body_limit) {
    stream->expires_after(timeout);
    auto ec = run([&](auto h) { http::async_write(*stream, req, h); });
    if (ec) return make_error(Errc::kUnavailable, "sending to " + base.url + ": " + ec.message());
    http::response_parser<http::string_body> parser;
    parser.body_limit(body_limit);
    stream->expires_after(timeout);
    ec = run([&](auto h) { http::async_read_header(*stream, buffer, parser, h); });
    if (!ec && !parser.is_done()) {
      if (auto len = parser.content_length()) parser.get().body().reserve(*len);
      stream->expires_after(timeout);  // a stall, not the whole body, times out
      ec = run([&](auto h) { http::async_read(*stream, buffer, parser, h); });
    }
    if (ec) {
      return make_error(Errc::kUnavailable, "response from " + base.url +
                                                std::string(req.target()) + ": " + ec.message());
    }
    auto& res = parser.get();
    Reply r;
    r.status = res.result_int();
    r.content_type = std::string(res[http::field::content_type]);
    for (const auto& f : res) {
      r.headers += std::string(f.name_string()) + ": " + std::string(f.value()) + "\n";
    }
    r.body = std::move(res.body());
    if (!res.keep_alive()) stream.reset();
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
  if (!d.stream) {
    if (auto st = d.connect(); !st) return st.error();
  }
  auto r = d.once(req, body_limit);
  if (!r) d.stream.reset();
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
  d.stream->expires_after(d.timeout);
  ec = d.run([&](auto h) { http::async_write(*d.stream, req, h); });
  if (ec) return make_error(Errc::kUnavailable, "sending to " + d.base.url + ": " + ec.message());
  d.parser.emplace();
  d.parser->body_limit(std::numeric_limits<std::uint64_t>::max());
  d.stream->expires_after(d.timeout);
  ec = d.run([&](auto h) { http::async_read_header(*d.stream, d.buffer, *d.parser, h); });
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
  d.stream->expires_after(d.timeout);
  auto ec = d.run([&](auto h) { http::async_read_some(*d.stream, d.buffer, *d.parser, h); });
  if (ec == http::error::need_buffer) ec = {};
  const std::size_t got = cap - body.size;
  if (ec) return make_error(Errc::kUnavailable, "reading " + d.base.url + ": " + ec.message());
  if (got == 0 && !d.parser->is_done()) return read(buf, cap);  // only framing consumed
  return got;
}

}  // namespace kiln::agent
