// http/server.h — kilnd's HTTP/1.1 listener (Boost.Beast): keep-alive, limits, optional TLS,
// and static files sent with sendfile(2).
//
// The server owns sockets and nothing else: requests that are not for a file mount go to one
// `Handler` (request in, response out, possibly asynchronously), which never sees a socket.
// Every connection runs on its own strand; every read is bounded by size (header and body
// limits) and time (read timeout, which is also the keep-alive idle timeout); every file
// transfer by a stall timeout. Past `max_connections` (or `max_connections_per_address` from
// one source address) new connections get a 503 and are closed. Thread-safety: start() and
// shutdown() from one thread; the rest is internal.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "boot/artifacts.h"
#include "core/metrics.h"
#include "core/result.h"
#include "http/embedded.h"

namespace spdlog {
class logger;
}

namespace kiln::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using RequestHeader = boost::beast::http::request_header<>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
// Completes a request. Call exactly once, from any thread.
using Respond = std::function<void(Response&&)>;
using Handler = std::function<void(Request&&, Respond)>;

// GET/HEAD requests whose path starts with `prefix` are served from files under `root`.
struct FileMount {
  std::string prefix;  // e.g. "/files/"
  std::filesystem::path root;
  // Optional: maps the decoded path below the prefix to the files under `root` that may hold
  // it, tried in order (e.g. a chunk hash to its .zst or .raw file). Empty: not found.
  std::function<std::vector<std::string>(std::string_view rel)> resolve;
  // Optional: resolve through the shared boot resolver (the same names as TFTP) instead of
  // `root`; generated artifacts are served from memory. Must outlive the server.
  const boot::Artifacts* artifacts = nullptr;
  // With `artifacts`: prepended to the path below the prefix to form the artifact name (e.g.
  // "/boot/x.ipxe" -> "boot/x.ipxe").
  std::string artifact_prefix;
  // Content never changes under its name (content-addressed): the ETag is the name itself and
  // responses carry "Cache-Control: public, max-age=31536000, immutable" ("private" with
  // `authorize`).
  bool immutable = false;
  // Optional: given the request's bearer token ("" when none) and the client's address, whether
  // it may read this mount; false answers 401.
  std::function<bool(const std::string& token, const std::string& peer)> authorize;
  // Optional: called when no file under `root` holds the path (a chunk this instance lacks),
  // with the decoded path below the prefix and the request. It may fetch the file from
  // elsewhere, off the calling thread, and calls `done` (from any thread, exactly once) when
  // it has finished: the request is then served from `root` again, and answered 404 if the
  // file is still missing. The hook decides which requests it may forward (e.g. not those of
  // another instance's fetch).
  std::function<void(const std::string& rel, const RequestHeader& req, std::function<void()> done)>
      on_miss;
  // Optional: serve these in-memory files instead (http/embedded.h; the web dashboard); `root`
  // is unused. Must outlive the server.
  const EmbeddedSite* embedded = nullptr;
};

// Set on a request whose body was streamed to a file instead of memory; the value is the
// file's path. The file exists until the response has been written. A copy of this header
// sent by a client is removed before any handler sees the request.
inline constexpr std::string_view kUploadFileHeader = "Kiln-Upload-File";
// Set on every request handed to the handler: the client's IP address. A copy sent by a client
// is replaced.
inline constexpr std::string_view kPeerHeader = "Kiln-Peer";

struct UploadVerdict {
  enum Kind { kNotUpload, kAccept, kRefuse } kind = kNotUpload;
  Response refusal;  // sent (and the connection closed) for kRefuse, before any body byte is read
  // kAccept: held by the connection until the upload's response is written or the upload is
  // abandoned (e.g. a slot of a concurrent-upload limit).
  std::shared_ptr<void> hold;
};

// Large request bodies (image uploads) go to a file in `dir`, never whole into memory.
// `classify` sees every request header that announces a body, before the body is read, so
// an unauthenticated or unwanted upload is refused without receiving it.
struct UploadOptions {
  std::filesystem::path dir;  // empty: no uploads
  std::uint64_t limit = std::uint64_t{1} << 40;
  std::function<UploadVerdict(const RequestHeader&)> classify;
};

struct ServerOptions {
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;  // 0: an ephemeral port (see Server::port())
  std::size_t body_limit = 1 << 20;
  std::size_t header_limit = 16 << 10;
  std::chrono::milliseconds read_timeout{30'000};  // whole request, and keep-alive idle time
  std::chrono::milliseconds write_timeout{
      60'000};  // a response or file transfer making no progress
  int max_connections = 1024;
  // Concurrent connections from one source address; past it new ones get a 503 and are
  // closed, so one host cannot hold every slot. 0: no per-address limit.
  int max_connections_per_address = 64;
  std::string tls_cert_file;  // PEM; TLS is on when both files are set
  std::string tls_key_file;
  // A second listener, speaking TLS with tls_cert_file/tls_key_file, beside the plain one at
  // address:port: the same handler, mounts, uploads, limits, and one connection budget
  // (max_connections counts both). Unset: when TLS is configured, the one listener speaks it.
  struct Listen {
    std::string address;
    std::uint16_t port = 0;  // 0: an ephemeral port (see Server::tls_port())
  };
  std::optional<Listen> tls_listen;
  std::vector<FileMount> mounts;
  UploadOptions upload;
};

// A JSON error body in the API's format: {"error":{"code":...,"message":...}}.
Response make_error_response(boost::beast::http::status status, std::string_view code,
                             std::string_view message, unsigned version = 11);

class Server {
 public:
  Server(boost::asio::io_context& ioc, ServerOptions options, Handler handler, Metrics& metrics,
         std::shared_ptr<spdlog::logger> log);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts accepting. Fails if an address cannot be bound, TLS files are bad, or
  // tls_listen is set without both TLS files.
  Status start();
  // The bound port (after start()).
  std::uint16_t port() const;
  // Whether the listener at port() speaks TLS (TLS files set, no tls_listen).
  bool tls() const;
  // The separate TLS listener's bound port (after start()); 0 when there is none.
  std::uint16_t tls_port() const;
  // Stops accepting; idle keep-alive connections are closed, requests in flight finish. After
  // `grace`, what is left is closed. `done` runs (on the io_context) when no connection is left.
  void shutdown(std::chrono::milliseconds grace, std::function<void()> done);
  std::size_t active_connections() const;

  struct State;  // shared with connections (internal)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace kiln::http
