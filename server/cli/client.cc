#include "cli/client.h"

#include <fcntl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "core/hex.h"
#include "core/io.h"
#include "core/unique_fd.h"

namespace kiln::cli {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

namespace {

// Largest response body accepted (a full machine list with inventories can be tens of MiB).
constexpr std::uint64_t kMaxResponseBytes = 256ull << 20;

Error unavailable(std::string message) {
  return make_error(Errc::kUnavailable, std::move(message));
}

std::string seconds(std::chrono::seconds s) { return std::to_string(s.count()) + " s"; }

// Starts one asynchronous operation with a completion handler and runs `ioc` until nothing is
// left to do (the operation and the stream's timeout timer); returns the operation's error.
// This is how the client gets per-operation timeouts from beast::tcp_stream, which only
// enforces them on asynchronous operations, while staying blocking for its caller.
template <typename Start>
beast::error_code run_one(net::io_context& ioc, Start&& start) {
  beast::error_code result;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

}  // namespace

Result<Endpoint> parse_base_url(std::string_view url) {
  // Schemes are case-insensitive (RFC 3986 3.1); core's parser takes them in lower case.
  const auto sep = url.find("://");
  std::string lowered(url);
  if (sep != std::string_view::npos) {
    lowered.replace(0, sep, ascii_lower(url.substr(0, sep)));
  }
  auto parsed = parse_http_url(lowered);
  if (!parsed) {
    std::string message = "server " + parsed.error().message;
    if (const auto at = message.find("'" + lowered + "'"); at != std::string::npos) {
      message.replace(at + 1, lowered.size(), url);  // the URL as the user wrote it
    }
    if (message.ends_with("must not contain user info")) message += "; use --token";
    return make_error(parsed.error().code, std::move(message));
  }
  parsed->url = std::string(url);
  while (!parsed->url.empty() && parsed->url.back() == '/') parsed->url.pop_back();
  return std::move(*parsed);
}

std::string encode_component(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

struct Client::Impl {
  ClientOptions options;
  Endpoint endpoint;
  std::optional<ssl::context> tls;  // set for https endpoints

  // Connects (and for https, handshakes and verifies), then runs `fn(ioc, stream)`.
  template <typename Fn>
  Result<HttpReply> connected(Fn&& fn) {
    const auto& ep = endpoint;
    net::io_context ioc;
    tcp::resolver resolver(ioc);
    beast::error_code ec;
    auto endpoints = resolver.resolve(ep.host, std::to_string(ep.port), ec);
    if (ec) {
      return unavailable("cannot connect to " + ep.url + ": cannot resolve host '" + ep.host +
                         "': " + ec.message());
    }

    beast::tcp_stream tcp_stream(ioc);
    tcp_stream.expires_after(options.timeout);
    ec = run_one(ioc, [&](auto handler) { tcp_stream.async_connect(endpoints, handler); });
    if (ec == beast::error::timeout) {
      return unavailable("cannot connect to " + ep.url + ": timed out after " +
                         seconds(options.timeout));
    }
    if (ec) return unavailable("cannot connect to " + ep.url + ": " + ec.message());
    if (!ep.tls) return fn(ioc, tcp_stream);

    beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp_stream), *tls);
    beast::error_code addr_ec;
    net::ip::make_address(ep.host, addr_ec);
    if (addr_ec && !SSL_set_tlsext_host_name(stream.native_handle(), ep.host.c_str())) {
      return unavailable("cannot set TLS server name '" + ep.host + "'");
    }
    if (!options.insecure) {
      // OpenSSL's own host/IP check (rather than a verify callback) so that a mismatch is
      // reported by SSL_get_verify_result like any other verification failure.
      X509_VERIFY_PARAM* param = SSL_get0_param(stream.native_handle());
      const int set = addr_ec ? X509_VERIFY_PARAM_set1_host(param, ep.host.c_str(), 0)
                              : X509_VERIFY_PARAM_set1_ip_asc(param, ep.host.c_str());
      if (set != 1) return unavailable("cannot verify TLS server name '" + ep.host + "'");
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    beast::get_lowest_layer(stream).expires_after(options.timeout);
    ec = run_one(ioc,
                 [&](auto handler) { stream.async_handshake(ssl::stream_base::client, handler); });
    if (ec == beast::error::timeout) {
      return unavailable("TLS handshake with " + ep.url + " timed out after " +
                         seconds(options.timeout));
    }
    if (ec) {
      const long verify = SSL_get_verify_result(stream.native_handle());
      if (!options.insecure &&
          (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)) {
        return unavailable("TLS handshake with " + ep.url +
                           " failed: its certificate is not for '" + ep.host + "' (" +
                           X509_verify_cert_error_string(verify) +
                           "); use the name the certificate was issued for, or --insecure");
      }
      if (!options.insecure && verify != X509_V_OK) {
        return unavailable("TLS handshake with " + ep.url + " failed: certificate not trusted (" +
                           X509_verify_cert_error_string(verify) +
                           "); use --cacert FILE to trust its CA, or --insecure");
      }
      return unavailable("TLS handshake with " + ep.url + " failed: " + ec.message());
    }
    return fn(ioc, stream);
  }

  // Sends `req` on a connected (and, for TLS, handshaken) stream and reads the reply.
  template <typename Stream>
  Result<HttpReply> exchange(net::io_context& ioc, Stream& stream,
                             http::request<http::string_body>& req, std::chrono::seconds wait) {
    auto& lowest = beast::get_lowest_layer(stream);
    lowest.expires_after(options.timeout);
    auto ec = run_one(ioc, [&](auto handler) { http::async_write(stream, req, handler); });
    if (ec == beast::error::timeout) {
      return unavailable("sending the request to " + endpoint.url + " timed out after " +
                         seconds(options.timeout));
    }
    if (ec) return unavailable("cannot send the request to " + endpoint.url + ": " + ec.message());

    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    return read_reply(ioc, stream, buffer, parser, wait);
  }

  // Reads (the rest of) a response into `parser`.
  template <typename Stream>
  Result<HttpReply> read_reply(net::io_context& ioc, Stream& stream, beast::flat_buffer& buffer,
                               http::response_parser<http::string_body>& parser,
                               std::chrono::seconds wait) {
    auto& lowest = beast::get_lowest_layer(stream);
    const auto read_timeout = options.timeout + wait;
    lowest.expires_after(read_timeout);
    parser.body_limit(kMaxResponseBytes);
    auto ec =
        run_one(ioc, [&](auto handler) { http::async_read(stream, buffer, parser, handler); });
    if (ec == beast::error::timeout) {
      return unavailable("no response from " + endpoint.url + " within " + seconds(read_timeout));
    }
    if (ec == http::error::body_limit) {
      return unavailable("the response from " + endpoint.url + " is larger than " +
                         std::to_string(kMaxResponseBytes >> 20) + " MiB");
    }
    if (ec == http::error::end_of_stream && !endpoint.tls) {
      return unavailable("no response from " + endpoint.url +
                         ": the server closed the connection (does it expect https://?)");
    }
    if (ec) return unavailable("no valid response from " + endpoint.url + ": " + ec.message());
    auto& res = parser.get();
    HttpReply reply;
    reply.status = res.result_int();
    reply.reason = std::string(res.reason());
    reply.content_type = std::string(res[http::field::content_type]);
    reply.body = std::move(res.body());
    beast::error_code ignored;
    lowest.socket().shutdown(tcp::socket::shutdown_both, ignored);
    return reply;
  }

  // Streams the file `req` carries: the header with "Expect: 100-continue" first, so a refusal
  // (bad token, wrong name) arrives before any of the body is sent; then the body in pieces,
  // reporting progress.
  template <typename Stream>
  Result<HttpReply> upload(net::io_context& ioc, Stream& stream,
                           http::request<http::empty_body>& req, int fd, std::uint64_t total,
                           const UploadProgress& progress, std::chrono::seconds wait) {
    auto& lowest = beast::get_lowest_layer(stream);
    req.set(http::field::expect, "100-continue");
    req.content_length(total);
    http::request_serializer<http::empty_body> sr(req);
    lowest.expires_after(options.timeout);
    auto ec = run_one(ioc, [&](auto handler) { http::async_write_header(stream, sr, handler); });
    if (ec) return unavailable("cannot send the request to " + endpoint.url + ": " + ec.message());
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> interim;
    lowest.expires_after(options.timeout);
    ec = run_one(ioc,
                 [&](auto handler) { http::async_read_header(stream, buffer, interim, handler); });
    if (ec) return unavailable("no response from " + endpoint.url + ": " + ec.message());
    if (interim.get().result() != http::status::continue_) {
      return read_reply(ioc, stream, buffer, interim, wait);  // refused before the body
    }
    // The body in large pieces (file_body would send 4 KiB at a time).
    std::vector<char> chunk(1 << 20);
    std::uint64_t sent = 0;
    while (sent < total) {
      const auto want =
          static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), total - sent));
      const auto n = pread_full(fd, chunk.data(), want, sent);
      if (!n || *n != want) {
        return make_error(Errc::kInvalid, "the file shrank or cannot be read during the upload");
      }
      lowest.expires_after(options.timeout);  // a stall, not the whole upload, times out
      ec = run_one(ioc, [&](auto handler) {
        net::async_write(stream, net::buffer(chunk.data(), *n), handler);
      });
      if (ec) {
        return unavailable("upload to " + endpoint.url + " failed after " + std::to_string(sent) +
                           " bytes: " + ec.message());
      }
      sent += *n;
      if (progress) progress(sent, total);
    }
    http::response_parser<http::string_body> parser;
    return read_reply(ioc, stream, buffer, parser, wait);
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

const Endpoint& Client::endpoint() const { return impl_->endpoint; }

Result<Client> Client::create(ClientOptions options) {
  auto endpoint = parse_base_url(options.url);
  if (!endpoint) return endpoint.error();
  auto impl = std::make_unique<Impl>();
  impl->endpoint = std::move(*endpoint);
  if (impl->endpoint.tls) {
    auto& ctx = impl->tls.emplace(ssl::context::tls_client);
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    beast::error_code ec;
    if (options.insecure) {
      ctx.set_verify_mode(ssl::verify_none);
    } else {
      ctx.set_verify_mode(ssl::verify_peer, ec);
      if (!options.cacert.empty()) {
        if (std::FILE* f = std::fopen(options.cacert.c_str(), "r")) {
          std::fclose(f);
        } else {
          return make_error(Errc::kInvalid, "cannot read --cacert file '" + options.cacert +
                                                "': " + std::strerror(errno));
        }
        ctx.load_verify_file(options.cacert, ec);
        if (ec) {
          return make_error(Errc::kInvalid,
                            "no PEM certificates in --cacert file '" + options.cacert + "'");
        }
      } else {
        ctx.set_default_verify_paths(ec);
        if (ec) {
          return make_error(Errc::kInvalid,
                            "cannot load the system's CA certificates: " + ec.message());
        }
      }
    }
  }
  impl->options = std::move(options);
  return Client(std::move(impl));
}

Result<HttpReply> Client::request(std::string_view method, std::string_view target,
                                  std::string_view json_body, std::string_view content_type,
                                  std::chrono::seconds extra_wait) {
  Impl& d = *impl_;
  const auto& ep = d.endpoint;
  const auto verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) {
    throw std::invalid_argument("unknown HTTP method " + std::string(method));
  }
  http::request<http::string_body> req{verb, ep.path + std::string(target), 11};
  req.set(http::field::host, d.endpoint.host_header());
  req.set(http::field::user_agent, d.options.user_agent);
  req.set(http::field::accept, "application/json");
  req.keep_alive(false);
  if (!d.options.token.empty()) req.set(http::field::authorization, "Bearer " + d.options.token);
  if (!json_body.empty()) {
    req.set(http::field::content_type, content_type);
    req.body() = std::string(json_body);
  }
  req.prepare_payload();

  return impl_->connected([&](net::io_context& ioc, auto& stream) {
    return impl_->exchange(ioc, stream, req, extra_wait);
  });
}

Result<HttpReply> Client::upload(std::string_view target, const std::string& path,
                                 std::string_view content_type, const UploadProgress& progress,
                                 std::chrono::seconds extra_wait) {
  Impl& d = *impl_;
  http::request<http::empty_body> req{http::verb::post, d.endpoint.path + std::string(target), 11};
  req.set(http::field::host, d.endpoint.host_header());
  req.set(http::field::user_agent, d.options.user_agent);
  req.set(http::field::accept, "application/json");
  req.set(http::field::content_type, content_type);
  req.keep_alive(false);
  if (!d.options.token.empty()) req.set(http::field::authorization, "Bearer " + d.options.token);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0) {
    return make_error(Errc::kInvalid, "cannot read " + path + ": " + std::strerror(errno));
  }
  return d.connected([&](net::io_context& ioc, auto& stream) {
    return d.upload(ioc, stream, req, fd.get(), static_cast<std::uint64_t>(st.st_size), progress,
                    extra_wait);
  });
}

}  // namespace kiln::cli
