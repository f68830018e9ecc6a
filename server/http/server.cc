#include "http/server.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/io.h"
#include "core/log_util.h"
#include "core/url.h"
#include "http/file_server.h"

namespace kiln::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

Response make_error_response(bhttp::status status, std::string_view code, std::string_view message,
                             unsigned version) {
  Response res{status, version};
  res.set(bhttp::field::content_type, "application/json");
  res.body() = nlohmann::json{{"error", {{"code", code}, {"message", message}}}}.dump();
  res.prepare_payload();
  return res;
}

// A live connection, as the server sees it for draining.
class Connection {
 public:
  virtual ~Connection() = default;
  virtual void drain() = 0;        // close when idle; finish the request in flight
  virtual void force_close() = 0;  // close now
};

struct Server::State {
  net::io_context& ioc;
  ServerOptions options;
  Handler handler;
  Metrics& metrics;
  std::shared_ptr<spdlog::logger> log;
  std::optional<ssl::context> tls;
  std::vector<FileRoot> roots;  // one per options.mounts entry, opened by start()
  tcp::acceptor acceptor;
  tcp::acceptor tls_acceptor;  // open only with options.tls_listen
  std::atomic<int> active{0};  // connections of both listeners
  std::atomic<bool> stopping{false};
  std::mutex mu;  // guards connections and per_address
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections;
  std::map<net::ip::address, int> per_address;  // open connections by source address
  LogBudget reject_log;                         // per-address refusals can come in floods

  State(net::io_context& io, ServerOptions o, Handler h, Metrics& m,
        std::shared_ptr<spdlog::logger> l)
      : ioc(io),
        options(std::move(o)),
        handler(std::move(h)),
        metrics(m),
        log(std::move(l)),
        acceptor(net::make_strand(io)),
        tls_acceptor(net::make_strand(io)) {}

  void count_request(std::string_view route, std::string_view method, unsigned status) {
    metrics.add("kiln_http_requests_total", {{"route", std::string(route)},
                                             {"method", std::string(method)},
                                             {"code", std::to_string(status)}});
  }
};

namespace {

constexpr std::size_t kTlsChunk = 256 * 1024;
constexpr std::uint64_t kSmallFile = 64 * 1024;
constexpr std::string_view kImmutable = "public, max-age=31536000, immutable";
constexpr std::string_view kImmutablePrivate = "private, max-age=31536000, immutable";

std::string http_date(std::int64_t epoch_s) {
  std::time_t t = static_cast<std::time_t>(epoch_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

template <typename Stream>
class Session : public Connection, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kPlain = std::is_same_v<Stream, beast::tcp_stream>;

 public:
  template <typename... Args>
  Session(std::shared_ptr<Server::State> state, tcp::socket&& socket, Args&&... args)
      : state_(std::move(state)),
        stream_(std::move(socket), std::forward<Args>(args)...),
        timer_(stream_.get_executor()) {
    state_->active.fetch_add(1);
    state_->metrics.set("kiln_http_connections", {}, state_->active.load());
  }

  ~Session() override {
    {
      std::lock_guard lock(state_->mu);
      state_->connections.erase(this);
    }
    state_->active.fetch_sub(1);
    state_->metrics.set("kiln_http_connections", {}, state_->active.load());
    if (!upload_path_.empty()) ::unlink(upload_path_.c_str());
  }

  // Keeps `slot` (see count_address) for the connection's lifetime.
  void hold_address_slot(std::shared_ptr<void> slot) { address_slot_ = std::move(slot); }

  void run() {
    {
      std::lock_guard lock(state_->mu);
      state_->connections.emplace(this, this->weak_from_this());
    }
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->start(); });
  }

  void drain() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] {
      self->draining_ = true;
      // Idle means between requests: a request still arriving is in flight too.
      const bool receiving = self->parser_ && self->parser_->got_some();
      if (!self->busy_ && !receiving) self->close_socket();
    });
  }

  void force_close() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->close_socket(); });
  }

 private:
  const ServerOptions& opts() const { return state_->options; }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void start() {
    if constexpr (kPlain) {
      do_read();
    } else {
      lowest().expires_after(opts().read_timeout);
      stream_.async_handshake(
          ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
            if (ec) {
              // A client that does not trust our certificate (or is not speaking TLS) ends
              // here: counted, and logged where an operator looking for it will see it.
              self->state_->metrics.add("kiln_http_tls_handshake_failures_total", {});
              self->state_->log->info("event=http.tls_handshake_failed peer={} err=\"{}\"",
                                      self->peer(), ec.message());
              return self->close_socket();
            }
            self->do_read();
          });
    }
  }

  void do_read() {
    if (draining_) return close_socket();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(opts().header_limit));
    // The parser checks Content-Length against the limit as soon as the header is complete:
    // let an upload's header through; after_header() applies the right limit.
    const bool uploads = opts().upload.classify && !opts().upload.dir.empty();
    parser_->body_limit(uploads ? std::max<std::uint64_t>(opts().body_limit, opts().upload.limit)
                                : opts().body_limit);
    lowest().expires_after(opts().read_timeout);
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
          if (ec) return self->on_read(ec, n);
          self->after_header();
        });
  }

  void after_header() {
    const auto& up = opts().upload;
    if (up.classify && !up.dir.empty() && !parser_->is_done()) {
      auto verdict = up.classify(parser_->get().base());
      if (verdict.kind == UploadVerdict::kRefuse) {
        // The body was not read: the connection cannot carry another request.
        begin(parser_->get());
        keep_alive_ = false;
        state_->count_request("upload", method_, verdict.refusal.result_int());
        return write(std::move(verdict.refusal));
      }
      if (verdict.kind == UploadVerdict::kAccept) {
        upload_hold_ = std::move(verdict.hold);
        return start_upload();
      }
      // Not an upload: the ordinary limit, for a Content-Length now and chunked bodies later.
      if (auto len = parser_->content_length(); len && *len > opts().body_limit) {
        return on_read(bhttp::error::body_limit, 0);
      }
      parser_->body_limit(opts().body_limit);
    }
    continue_if_expected();
  }

  // Bookkeeping of a request whose header has arrived.
  template <typename Message>
  void begin(const Message& h) {
    busy_ = true;
    started_ = Clock::now();
    version_ = h.version();
    keep_alive_ = h.keep_alive();
    method_ = h.method() == bhttp::verb::unknown ? std::string("OTHER")
                                                 : std::string(bhttp::to_string(h.method()));
    target_ = std::string(h.target());
  }

  // --- uploads: the body streams into a file ---------------------------------------------------

  void start_upload() {
    begin(parser_->get());
    const auto& up = opts().upload;
    std::string path = (up.dir / "upload-XXXXXX").string();
    int fd = ::mkostemp(path.data(), O_CLOEXEC);
    if (fd < 0) {
      state_->log->error("event=http.upload_file_failed dir=\"{}\" err=\"{}\"", up.dir.string(),
                         std::strerror(errno));
      keep_alive_ = false;
      return write(make_error_response(bhttp::status::service_unavailable, "unavailable",
                                       "cannot store the upload now", version_));
    }
    upload_fd_ = UniqueFd(fd);
    upload_path_ = path;
    upload_parser_.emplace(std::move(*parser_));
    upload_parser_->body_limit(up.limit);
    upload_buf_.resize(1 << 20);
    const bool expect = beast::iequals(upload_parser_->get()[bhttp::field::expect], "100-continue");
    if (!expect) return upload_step();
    static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
    net::async_write(stream_, net::buffer(k100.data(), k100.size()),
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       if (ec) return self->close_socket();
                       self->upload_step();
                     });
  }

  void upload_step() {
    auto& body = upload_parser_->get().body();
    body.data = upload_buf_.data();
    body.size = upload_buf_.size();
    body.more = true;
    lowest().expires_after(opts().read_timeout);  // a stall, not the whole upload, times out
    bhttp::async_read(stream_, buffer_, *upload_parser_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        self->on_upload(ec);
                      });
  }

  void on_upload(beast::error_code ec) {
    if (ec == bhttp::error::need_buffer) ec = {};
    const std::size_t got = upload_buf_.size() - upload_parser_->get().body().size;
    std::size_t done = 0;
    while (done < got) {
      const ssize_t w = retry_eintr(
          [&] { return ::write(upload_fd_.get(), upload_buf_.data() + done, got - done); });
      if (w < 0) {
        const int err = errno;
        state_->log->error("event=http.upload_write_failed path=\"{}\" err=\"{}\"", upload_path_,
                           std::strerror(err));
        discard_upload();
        keep_alive_ = false;
        return write(err == ENOSPC
                         ? make_error_response(bhttp::status::insufficient_storage,
                                               "insufficient_storage",
                                               "no space left for the upload", version_)
                         : make_error_response(bhttp::status::internal_server_error, "internal",
                                               "cannot store the upload", version_));
      }
      done += static_cast<std::size_t>(w);
    }
    if (ec) {
      discard_upload();
      if (ec == bhttp::error::body_limit) {
        keep_alive_ = false;
        state_->count_request("upload", method_, 413);
        return write(make_error_response(
            bhttp::status::payload_too_large, "too_large",
            "upload larger than " + std::to_string(opts().upload.limit) + " bytes", version_));
      }
      // The client went away, stalled or sent garbage: nothing to answer on this connection.
      state_->log->info("event=http.upload_aborted peer={} target=\"{}\" err=\"{}\"", peer(),
                        target_, ec.message());
      return close_socket();
    }
    if (!upload_parser_->is_done()) return upload_step();
    upload_fd_.reset();
    Request req(std::move(upload_parser_->release().base()));
    upload_parser_.reset();
    req.erase(kUploadFileHeader);
    req.set(kUploadFileHeader, upload_path_);
    dispatch(std::move(req));
  }

  void discard_upload() {
    upload_hold_.reset();
    upload_parser_.reset();
    upload_fd_.reset();
    if (!upload_path_.empty()) ::unlink(upload_path_.c_str());
    upload_path_.clear();
  }

  // RFC 9110 §10.1.1: a client sending "Expect: 100-continue" waits for an interim response
  // before the body (curl does so for large uploads); answer it instead of making it time out.
  void continue_if_expected() {
    if (!parser_->is_done() &&
        beast::iequals(parser_->get()[bhttp::field::expect], "100-continue")) {
      static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(k100.data(), k100.size()),
                       [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                         if (ec) return self->close_socket();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    if (parser_->is_done()) return on_read({}, 0);
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&Session::on_read, this->shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec == bhttp::error::end_of_stream || ec == net::error::operation_aborted ||
        ec == beast::error::timeout || ec == net::error::connection_reset ||
        ec == net::error::eof || ec == ssl::error::stream_truncated) {
      return close_socket();
    }
    if (ec) {
      // Parse errors get an answer; the connection is not reusable after them.
      auto status = bhttp::status::bad_request;
      std::string code = "bad_request";
      if (ec == bhttp::error::body_limit) {
        status = bhttp::status::payload_too_large;
        code = "too_large";
      } else if (ec == bhttp::error::header_limit) {
        status = bhttp::status::request_header_fields_too_large;
        code = "too_large";
      }
      state_->log->info("event=http.bad_request peer={} err=\"{}\"", peer(), ec.message());
      state_->count_request("malformed", "-", static_cast<unsigned>(status));
      keep_alive_ = false;
      version_ = 11;
      busy_ = true;
      return write(make_error_response(status, code, "malformed request: " + ec.message()));
    }
    Request req = parser_->release();
    req.erase(kUploadFileHeader);
    begin(req);
    dispatch(std::move(req));
  }

  void dispatch(Request&& req) {
    req.set(kPeerHeader, peer_address());  // replaces any copy the client sent
    const std::string_view path = std::string_view(target_).substr(0, target_.find('?'));
    for (std::size_t i = 0; i < opts().mounts.size(); ++i) {
      const auto& m = opts().mounts[i];
      if (path.substr(0, m.prefix.size()) == m.prefix) {
        if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head) {
          state_->count_request(m.prefix, method_, 405);
          auto res = make_error_response(bhttp::status::method_not_allowed, "method_not_allowed",
                                         "files are read-only", version_);
          res.set(bhttp::field::allow, "GET, HEAD");
          if (m.embedded) {
            for (const auto& [k, v] : m.embedded->headers) res.set(k, v);
          }
          return write(std::move(res));
        }
        if (m.embedded) {
          auto a = serve_embedded(*m.embedded, req, path.substr(m.prefix.size()), version_);
          state_->count_request(m.prefix, method_, a.res.result_int());
          return write(std::move(a.res), a.head_length);
        }
        return serve_file(req, m, state_->roots[i], path.substr(m.prefix.size()));
      }
    }

    auto self = this->shared_from_this();
    Respond respond = [self](Response&& res) {
      net::post(self->stream_.get_executor(),
                [self, res = std::move(res)]() mutable { self->write(std::move(res)); });
    };
    try {
      state_->handler(std::move(req), std::move(respond));
    } catch (const std::exception& e) {
      state_->log->error("event=http.handler_exception target=\"{}\" err=\"{}\"",
                         loggable_target(target_), e.what());
      write(make_error_response(bhttp::status::internal_server_error, "internal", "internal error",
                                version_));
    }
  }

  void finish_headers(auto& res) {
    res.version(version_);
    res.keep_alive(keep_alive_ && !draining_ && !state_->stopping.load());
    res.set(bhttp::field::server, "kilnd");
    // No answer of kilnd is content a browser should guess at or run with the dashboard's
    // origin: an HTML file under /files/ (an operator's, or a generated one) would otherwise be
    // a page on the same origin as /ui/, able to read its session's token. The dashboard's own
    // files carry their own policy.
    res.set("X-Content-Type-Options", "nosniff");
    if (res.find("Content-Security-Policy") == res.end()) {
      res.set("Content-Security-Policy", "default-src 'none'; sandbox");
    }
  }

  // `head_length`: a HEAD response, announcing the length a GET would have (its body is empty).
  // A HEAD request never gets a body, whatever the status (an error's JSON would be read as the
  // start of the next response on a keep-alive connection); a 304 has no Content-Length.
  void write(Response&& res, std::optional<std::uint64_t> head_length = std::nullopt) {
    finish_headers(res);
    res.prepare_payload();
    if (head_length) res.content_length(*head_length);
    if (method_ == "HEAD") res.body().clear();
    if (res.result() == bhttp::status::not_modified) res.erase(bhttp::field::content_length);
    res_ = std::make_unique<Response>(std::move(res));
    lowest().expires_after(opts().write_timeout);
    bhttp::async_write(
        stream_, *res_, [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
          self->after_response(ec, self->res_->result_int(), n, !self->res_->keep_alive());
        });
  }

  void after_response(beast::error_code ec, unsigned status, std::size_t bytes, bool close) {
    const auto ms = std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
    state_->log->debug(
        "event=http.request peer={} tls={} method={} target=\"{}\" status={} bytes={} ms={:.2f}",
        peer(), !kPlain, method_, loggable_target(target_), status, bytes, ms);
    busy_ = false;
    res_.reset();
    file_.reset();
    discard_upload();
    if (ec || close) return close_socket();
    do_read();
  }

  // --- static files --------------------------------------------------------------------------

  // Generated per request (e.g. a machine's iPXE script): never cached, whole body.
  void serve_generated(const Request& req, const FileMount& mount, const boot::Artifact& a) {
    Response res{bhttp::status::ok, version_};
    res.set(bhttp::field::content_type, content_type_for(a.name));
    res.set(bhttp::field::cache_control, "no-store");
    state_->count_request(mount.prefix, method_, 200);
    if (req.method() == bhttp::verb::head) return write(std::move(res), a.size);
    res.body() = *a.content;
    write(std::move(res));
  }

  void serve_file(const Request& req, const FileMount& mount, const FileRoot& root,
                  std::string_view rel_encoded, bool after_miss = false) {
    auto fail = [&](bhttp::status st, std::string_view code, std::string_view msg) {
      state_->count_request(mount.prefix, method_, static_cast<unsigned>(st));
      write(make_error_response(st, code, msg, version_));
    };
    auto rel = percent_decode(rel_encoded);
    if (!rel) return fail(bhttp::status::bad_request, "bad_request", "malformed path");
    if (mount.authorize) {
      std::string token;
      if (auto auth = req[bhttp::field::authorization];
          auth.size() > 7 && beast::iequals(auth.substr(0, 7), "Bearer ")) {
        token = std::string(auth.substr(7));
      }
      if (!mount.authorize(token, peer_address())) {
        return fail(bhttp::status::unauthorized, "unauthorized",
                    "this server serves chunks to agent sessions only");
      }
    }
    const std::string_view cache_control = mount.authorize ? kImmutablePrivate : kImmutable;
    Result<OpenFile> opened = make_error(Errc::kNotFound, "no such file");
    if (mount.artifacts) {
      auto a = mount.artifacts->resolve(mount.artifact_prefix + *rel,
                                        {kPlain ? "http" : "https", peer_address()});
      if (a && a->generated()) return serve_generated(req, mount, *a);
      if (a) {
        opened = std::move(a->file);
      } else {
        opened = a.error();
      }
    } else if (mount.resolve) {
      for (const auto& candidate : mount.resolve(*rel)) {
        opened = root.open_file(candidate);
        if (opened || opened.error().code != Errc::kNotFound) break;
      }
    } else {
      opened = root.open_file(*rel);
    }
    if (!opened) {
      if (opened.error().code == Errc::kInvalid) {
        // The target is client-controlled: escaped, so it cannot forge fields in the line.
        state_->log->warn("event=http.path_refused peer={} target=\"{}\"", peer(),
                          log_escape(target_, 512));
        return fail(bhttp::status::bad_request, "bad_request", opened.error().message);
      }
      if (opened.error().code == Errc::kUnavailable) {
        state_->log->error("event=http.file_open_failed target=\"{}\" err=\"{}\"", target_,
                           opened.error().message);
        return fail(bhttp::status::service_unavailable, "unavailable", "cannot open file now");
      }
      if (mount.on_miss && !after_miss && !mount.artifacts) {
        // Fetched elsewhere (a cluster peer), then served from `root` like any file. The
        // request is copied: the hook outlives this call.
        auto held = std::make_shared<Request>(req);
        auto self = this->shared_from_this();
        mount.on_miss(*rel, *held, [self, held, &mount, &root, enc = std::string(rel_encoded)] {
          net::post(self->stream_.get_executor(), [self, held, &mount, &root, enc] {
            self->serve_file(*held, mount, root, enc, true);
          });
        });
        return;
      }
      return fail(bhttp::status::not_found, "not_found", "no such file");
    }
    file_ = std::make_unique<OpenFile>(std::move(*opened));
    const std::uint64_t size = file_->size;
    const std::string etag =
        mount.immutable ? "\"" + *rel + "\""
                        : "\"" + std::to_string(size) + "-" + std::to_string(file_->mtime_s) + "\"";
    if (auto inm = req[bhttp::field::if_none_match]; !inm.empty() && (inm == etag || inm == "*")) {
      Response res{bhttp::status::not_modified, version_};
      res.set(bhttp::field::etag, etag);
      if (mount.immutable) res.set(bhttp::field::cache_control, cache_control);
      state_->count_request(mount.prefix, method_, 304);
      file_.reset();
      return write(std::move(res));
    }

    header_ = std::make_unique<bhttp::response<bhttp::empty_body>>(bhttp::status::ok, version_);
    auto& h = *header_;
    h.set(bhttp::field::content_type, content_type_for(file_->path));
    h.set(bhttp::field::accept_ranges, "bytes");
    h.set(bhttp::field::etag, etag);
    h.set(bhttp::field::last_modified, http_date(file_->mtime_s));
    if (mount.immutable) h.set(bhttp::field::cache_control, cache_control);
    offset_ = 0;
    remaining_ = size;
    if (auto range = req[bhttp::field::range]; !range.empty()) {
      // If-Range: only honour the range when the validator still matches.
      auto if_range = req[bhttp::field::if_range];
      if (if_range.empty() || if_range == etag) {
        ByteRange r;
        switch (parse_range(range, size, r)) {
          case RangeParse::kUnsatisfiable: {
            auto res =
                make_error_response(bhttp::status::range_not_satisfiable, "range_not_satisfiable",
                                    "range outside the file", version_);
            res.set(bhttp::field::content_range, "bytes */" + std::to_string(size));
            state_->count_request(mount.prefix, method_, 416);
            file_.reset();
            header_.reset();
            return write(std::move(res));
          }
          case RangeParse::kOk:
            h.result(bhttp::status::partial_content);
            h.set(bhttp::field::content_range, "bytes " + std::to_string(r.first) + "-" +
                                                   std::to_string(r.last) + "/" +
                                                   std::to_string(size));
            offset_ = r.first;
            remaining_ = r.last - r.first + 1;
            break;
          case RangeParse::kNone:
            break;
        }
      }
    }
    finish_headers(h);
    h.content_length(remaining_);
    state_->count_request(mount.prefix, method_, h.result_int());
    if (req.method() == bhttp::verb::head) remaining_ = 0;
    if (remaining_ > 0 && remaining_ <= kSmallFile) return send_small_file(h);
    serializer_ = std::make_unique<bhttp::response_serializer<bhttp::empty_body>>(h);
    lowest().expires_after(opts().write_timeout);
    bhttp::async_write_header(stream_, *serializer_,
                              [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                                if (ec) return self->close_socket();
                                self->send_body();
                              });
  }

  // Small files (iPXE scripts, configs) go out with their header in one write: one syscall
  // and one segment instead of a header segment plus sendfile.
  void send_small_file(const bhttp::response<bhttp::empty_body>& h) {
    Response res{h.result(), h.version()};
    for (const auto& f : h) res.set(f.name_string(), f.value());
    res.body().resize(static_cast<std::size_t>(remaining_));
    const auto got = pread_full(file_->fd.get(), res.body().data(), res.body().size(), offset_);
    if (!got || *got != res.body().size()) {
      // Shrank or failed under us: the promised length cannot be sent.
      state_->log->warn("event=http.file_truncated path=\"{}\"", file_->path.string());
      header_.reset();
      file_.reset();
      return close_socket();
    }
    header_.reset();
    file_.reset();
    write(std::move(res));
  }

  void file_done(beast::error_code ec) {
    const unsigned status = header_ ? header_->result_int() : 500;
    const bool close = !header_ || !header_->keep_alive();
    const std::size_t sent = offset_;
    serializer_.reset();
    header_.reset();
    after_response(ec, status, sent, close);
  }

  void send_body() {
    if constexpr (kPlain) {
      send_body_sendfile();
    } else {
      send_body_copy();
    }
  }

  // Plain TCP: the kernel copies file pages straight to the socket.
  void send_body_sendfile() {
    auto& sock = lowest().socket();
    beast::error_code ec;
    sock.non_blocking(true, ec);
    if (ec) return file_done(ec);
    while (remaining_ > 0) {
      off_t off = static_cast<off_t>(offset_);
      const std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, 1u << 30));
      const ssize_t n = retry_eintr(
          [&] { return ::sendfile(sock.native_handle(), file_->fd.get(), &off, want); });
      if (n > 0) {
        offset_ += static_cast<std::uint64_t>(n);
        remaining_ -= static_cast<std::uint64_t>(n);
        continue;
      }
      if (n == 0) {  // the file shrank under us: the response cannot be completed
        state_->log->warn("event=http.file_truncated path=\"{}\"", file_->path.string());
        return file_done(net::error::eof);
      }
      if (errno == EAGAIN) {
        // Socket buffer full: wait for room, but not forever.
        timer_.expires_after(opts().write_timeout);
        timer_.async_wait([self = this->shared_from_this()](beast::error_code tec) {
          if (!tec) {
            self->state_->log->info("event=http.write_stalled peer={}", self->peer());
            self->close_socket();
          }
        });
        sock.async_wait(tcp::socket::wait_write,
                        [self = this->shared_from_this()](beast::error_code wec) {
                          self->timer_.cancel();
                          if (wec) return self->file_done(wec);
                          self->send_body_sendfile();
                        });
        return;
      }
      return file_done(beast::error_code(errno, beast::system_category()));
    }
    file_done({});
  }

  // TLS: read into a buffer and write through the TLS stream.
  void send_body_copy() {
    if (remaining_ == 0) return file_done({});
    if (copy_buf_.empty()) copy_buf_.resize(kTlsChunk);
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, kTlsChunk));
    ssize_t n = ::pread(file_->fd.get(), copy_buf_.data(), want, static_cast<off_t>(offset_));
    if (n <= 0) return file_done(net::error::eof);
    lowest().expires_after(opts().write_timeout);
    net::async_write(stream_, net::buffer(copy_buf_.data(), static_cast<std::size_t>(n)),
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t w) {
                       if (ec) return self->file_done(ec);
                       self->offset_ += w;
                       self->remaining_ -= w;
                       self->send_body_copy();
                     });
  }

  void close_socket() {
    beast::error_code ec;
    timer_.cancel();
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
  }

  std::string peer_address() {
    beast::error_code ec;
    auto ep = lowest().socket().remote_endpoint(ec);
    return ec ? std::string() : ep.address().to_string();
  }

  std::string peer() {
    beast::error_code ec;
    auto ep = lowest().socket().remote_endpoint(ec);
    return ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  std::shared_ptr<Server::State> state_;
  std::shared_ptr<void> address_slot_;  // this connection's place in State::per_address
  Stream stream_;
  net::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  // Upload in progress (or awaiting its response): the body's file.
  std::optional<bhttp::request_parser<bhttp::buffer_body>> upload_parser_;
  UniqueFd upload_fd_;
  std::string upload_path_;
  std::shared_ptr<void> upload_hold_;  // UploadVerdict::hold of the upload in progress
  std::vector<char> upload_buf_;
  std::unique_ptr<Response> res_;
  bool busy_ = false;
  bool draining_ = false;
  bool keep_alive_ = true;
  unsigned version_ = 11;
  std::string method_;
  std::string target_;
  Clock::time_point started_;
  // File transfer in progress.
  std::unique_ptr<OpenFile> file_;
  std::unique_ptr<bhttp::response<bhttp::empty_body>> header_;
  std::unique_ptr<bhttp::response_serializer<bhttp::empty_body>> serializer_;
  std::uint64_t offset_ = 0;
  std::uint64_t remaining_ = 0;
  std::vector<char> copy_buf_;
};

// One accepting socket: the plain listener's, or the TLS one's (its connections speak TLS).
struct Listener {
  tcp::acceptor* acceptor;
  bool tls;
};

// Counts a connection from `addr` against max_connections_per_address: false when the address
// already holds that many. Otherwise `slot` releases the count when the last copy goes.
bool count_address(const std::shared_ptr<Server::State>& st, const net::ip::address& addr,
                   std::shared_ptr<void>& slot) {
  const int cap = st->options.max_connections_per_address;
  if (cap <= 0) return true;
  {
    std::lock_guard lock(st->mu);
    int& n = st->per_address[addr];
    if (n >= cap) return false;
    ++n;
  }
  slot = std::shared_ptr<void>(st.get(), [st, addr](void*) {
    std::lock_guard lock(st->mu);
    if (auto it = st->per_address.find(addr); it != st->per_address.end() && --it->second <= 0) {
      st->per_address.erase(it);
    }
  });
  return true;
}

// Answers a refused connection with `response` and closes it.
void send_and_close(tcp::socket&& socket, std::shared_ptr<const std::string> response) {
  auto sock = std::make_shared<tcp::socket>(std::move(socket));
  net::async_write(*sock, net::buffer(*response), [sock, response](beast::error_code, std::size_t) {
    beast::error_code ignored;
    sock->shutdown(tcp::socket::shutdown_both, ignored);
    sock->close(ignored);
  });
}

void do_accept(std::shared_ptr<Server::State> st, Listener l) {
  l.acceptor->async_accept(
      net::make_strand(st->ioc), [st, l](beast::error_code ec, tcp::socket socket) {
        if (ec) {
          if (ec == net::error::operation_aborted || st->stopping) return;
          st->log->warn("event=http.accept_failed err=\"{}\"", ec.message());
          // Out of descriptors and similar: back off briefly instead of spinning.
          auto t = std::make_shared<net::steady_timer>(st->ioc, std::chrono::milliseconds(50));
          t->async_wait([st, t, l](beast::error_code) { do_accept(st, l); });
          return;
        }
        socket.set_option(tcp::no_delay(true), ec);
        if (st->active.load() >= st->options.max_connections) {
          st->metrics.add("kiln_http_connections_rejected_total", {});
          st->log->warn("event=http.conn_rejected reason=max_connections limit={}",
                        st->options.max_connections);
          static constexpr std::string_view kBusy =
              "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
              "Connection: close\r\nRetry-After: 1\r\nContent-Length: 78\r\n\r\n"
              "{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections, retry "
              "later\"}}";
          auto sock = std::make_shared<tcp::socket>(std::move(socket));
          net::async_write(*sock, net::buffer(kBusy), [sock](beast::error_code, std::size_t) {
            beast::error_code ignored;
            sock->shutdown(tcp::socket::shutdown_both, ignored);
            sock->close(ignored);
          });
          return do_accept(st, l);
        }
        std::shared_ptr<void> slot;
        const auto remote = socket.remote_endpoint(ec);
        if (!ec && !count_address(st, remote.address(), slot)) {
          st->metrics.add("kiln_http_connections_per_address_rejected_total", {});
          if (st->reject_log.allow()) {
            st->log->warn(
                "event=http.conn_rejected reason=max_connections_per_address peer={} "
                "limit={}",
                remote.address().to_string(), st->options.max_connections_per_address);
          }
          static const auto kTooMany = [] {
            const std::string body =
                "{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections "
                "from this address, retry later\"}}";
            return std::make_shared<const std::string>(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                "Connection: close\r\nRetry-After: 1\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body);
          }();
          send_and_close(std::move(socket), kTooMany);
        } else if (l.tls) {
          auto session = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
              st, std::move(socket), *st->tls);
          session->hold_address_slot(std::move(slot));
          session->run();
        } else {
          auto session = std::make_shared<Session<beast::tcp_stream>>(st, std::move(socket));
          session->hold_address_slot(std::move(slot));
          session->run();
        }
        do_accept(st, l);
      });
}

}  // namespace

Server::Server(net::io_context& ioc, ServerOptions options, Handler handler, Metrics& metrics,
               std::shared_ptr<spdlog::logger> log)
    : state_(std::make_shared<State>(ioc, std::move(options), std::move(handler), metrics,
                                     std::move(log))) {
  metrics.describe("kiln_http_requests_total", Metrics::Type::kCounter,
                   "HTTP requests served, by route, method and status code.");
  metrics.describe("kiln_http_connections", Metrics::Type::kGauge, "Open HTTP connections.");
  metrics.describe("kiln_http_connections_rejected_total", Metrics::Type::kCounter,
                   "Connections refused with 503 because max_connections was reached.");
  metrics.describe("kiln_http_tls_handshake_failures_total", Metrics::Type::kCounter,
                   "TLS handshakes that failed (an untrusted certificate, not TLS, a timeout).");
  metrics.describe("kiln_http_connections_per_address_rejected_total", Metrics::Type::kCounter,
                   "Connections refused with 503 because their source address held "
                   "max_connections_per_address.");
  metrics.set("kiln_http_connections", {}, 0);
  metrics.add("kiln_http_connections_rejected_total", {}, 0);
  metrics.add("kiln_http_connections_per_address_rejected_total", {}, 0);
}

Server::~Server() {
  beast::error_code ec;
  state_->acceptor.close(ec);
  state_->tls_acceptor.close(ec);
}

// Note the expected literal length of the 503 body above: keep Content-Length in sync.
static_assert(sizeof("{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections, "
                     "retry later\"}}") -
                  1 ==
              78);

namespace {

// Opens, binds and listens on address:port.
Status listen_on(tcp::acceptor& acceptor, const std::string& address, std::uint16_t port) {
  beast::error_code ec;
  auto addr = net::ip::make_address(address, ec);
  if (ec) return make_error(Errc::kInvalid, "bad listen address '" + address + "'");
  tcp::endpoint ep{addr, port};
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(Errc::kUnavailable, "cannot listen on " + address + ":" +
                                              std::to_string(port) + ": " + ec.message());
  }
  return ok_status();
}

}  // namespace

Status Server::start() {
  auto& st = *state_;
  if (st.options.tls_listen &&
      (st.options.tls_cert_file.empty() || st.options.tls_key_file.empty())) {
    return make_error(Errc::kInvalid, "a TLS listener needs both a certificate and a key file");
  }
  if (!st.options.tls_cert_file.empty() || !st.options.tls_key_file.empty()) {
    try {
      st.tls.emplace(ssl::context::tls_server);
      st.tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                          ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                          ssl::context::no_tlsv1_1);
      st.tls->use_certificate_chain_file(st.options.tls_cert_file);
      st.tls->use_private_key_file(st.options.tls_key_file, ssl::context::pem);
    } catch (const std::exception& e) {
      return make_error(Errc::kInvalid, std::string("TLS certificate/key: ") + e.what());
    }
  }
  st.roots.clear();
  for (const auto& m : st.options.mounts) {
    auto root = FileRoot::open(m.root);
    if (!root) return root.error();
    st.roots.push_back(std::move(*root));
  }
  if (auto s = listen_on(st.acceptor, st.options.address, st.options.port); !s) return s;
  if (st.options.tls_listen) {
    if (auto s =
            listen_on(st.tls_acceptor, st.options.tls_listen->address, st.options.tls_listen->port);
        !s) {
      beast::error_code ec;
      st.acceptor.close(ec);
      return s;
    }
    do_accept(state_, {&st.tls_acceptor, true});
    do_accept(state_, {&st.acceptor, false});
  } else {
    do_accept(state_, {&st.acceptor, st.tls.has_value()});
  }
  return ok_status();
}

std::uint16_t Server::port() const {
  beast::error_code ec;
  return state_->acceptor.local_endpoint(ec).port();
}

bool Server::tls() const { return state_->tls.has_value() && !state_->options.tls_listen; }

std::uint16_t Server::tls_port() const {
  if (!state_->options.tls_listen) return 0;
  beast::error_code ec;
  return state_->tls_acceptor.local_endpoint(ec).port();
}

std::size_t Server::active_connections() const {
  return static_cast<std::size_t>(state_->active.load());
}

void Server::shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
  auto st = state_;
  st->stopping = true;
  net::post(st->acceptor.get_executor(), [st] {
    beast::error_code ec;
    st->acceptor.close(ec);
  });
  net::post(st->tls_acceptor.get_executor(), [st] {
    beast::error_code ec;
    st->tls_acceptor.close(ec);
  });
  std::vector<std::shared_ptr<Connection>> live;
  {
    std::lock_guard lock(st->mu);
    for (auto& [_, w] : st->connections) {
      if (auto c = w.lock()) live.push_back(std::move(c));
    }
  }
  for (auto& c : live) c->drain();
  live.clear();
  // Poll until every connection has gone, or the grace period is over.
  struct Waiter : std::enable_shared_from_this<Waiter> {
    std::shared_ptr<State> st;
    Clock::time_point deadline;
    net::steady_timer timer;
    std::function<void()> done;
    Waiter(std::shared_ptr<State> s, Clock::time_point d, std::function<void()> f)
        : st(s), deadline(d), timer(s->ioc), done(std::move(f)) {}
    void tick() {
      if (st->active.load() == 0) return done();
      if (Clock::now() >= deadline) {
        // Take references under the lock, use and drop them outside it: the last reference
        // may be ours, and ~Session takes the same lock.
        std::vector<std::shared_ptr<Connection>> live;
        {
          std::lock_guard lock(st->mu);
          for (auto& [_, w] : st->connections) {
            if (auto c = w.lock()) live.push_back(std::move(c));
          }
        }
        for (auto& c : live) c->force_close();
      }
      timer.expires_after(std::chrono::milliseconds(20));
      timer.async_wait([self = shared_from_this()](beast::error_code) { self->tick(); });
    }
  };
  auto waiter = std::make_shared<Waiter>(st, Clock::now() + grace, std::move(done));
  net::post(st->ioc, [waiter] { waiter->tick(); });
}

}  // namespace kiln::http
