#include "power/redfish.h"

#include <openssl/ssl.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/crypto.h"
#include "core/hex.h"
#include "core/tls_client.h"
#include "core/url.h"

namespace kiln::power {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string HttpResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

namespace {

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

// `text` cut to about `max` characters, control characters as spaces, on one line.
std::string one_line(std::string_view text, std::size_t max = 200) {
  std::string out;
  for (char c : text) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    out.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// What a Redfish error body says: error.message and every @Message.ExtendedInfo Message.
std::string bmc_says(const std::string& body) {
  if (body.empty()) return {};
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return one_line(body);
  std::vector<std::string> parts;
  auto collect = [&](const json& obj) {
    if (auto m = obj.find("message"); m != obj.end() && m->is_string()) {
      parts.push_back(m->get<std::string>());
    }
    if (auto ext = obj.find("@Message.ExtendedInfo"); ext != obj.end() && ext->is_array()) {
      for (const auto& e : *ext) {
        if (!e.is_object()) continue;
        if (auto m = e.find("Message"); m != e.end() && m->is_string()) {
          parts.push_back(m->get<std::string>());
        } else if (auto id = e.find("MessageId"); id != e.end() && id->is_string()) {
          parts.push_back(id->get<std::string>());
        }
      }
    }
  };
  if (auto e = j.find("error"); e != j.end() && e->is_object()) collect(*e);
  collect(j);
  std::string joined;
  for (const auto& p : parts) {
    if (joined.find(p) != std::string::npos) continue;
    joined += (joined.empty() ? "" : "; ") + p;
  }
  return one_line(joined);
}

PowerState parse_power_state(const json& sys) {
  auto it = sys.find("PowerState");
  if (it == sys.end() || !it->is_string()) return PowerState::kUnknown;
  const std::string s = it->get<std::string>();
  if (s == "On" || s == "PoweringOn") return PowerState::kOn;
  if (s == "Off" || s == "PoweringOff") return PowerState::kOff;
  return PowerState::kUnknown;
}

std::string string_at(const json& obj, const char* key) {
  if (!obj.is_object()) return {};
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// "/redfish/v1/x" from a Location that may be an absolute URL.
std::string path_of(const std::string& location) {
  auto scheme = location.find("://");
  if (scheme == std::string::npos) return location;
  auto slash = location.find('/', scheme + 3);
  return slash == std::string::npos ? "/" : location.substr(slash);
}

std::string trim_slash(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

// ---------------------------------------------------------------------------------------------
// The real transport (Beast, synchronous steps each bounded by the timeout).

class BeastTransport final : public Transport {
 public:
  BeastTransport(HttpUrl base, std::chrono::milliseconds timeout,
                 std::unique_ptr<ssl::context> tls_context)
      : base_(std::move(base)), timeout_(timeout), ctx_(std::move(tls_context)) {}

  Result<HttpResponse> send(const HttpRequest& request) override {
    if (!plain_ && !tls_) {
      if (auto st = connect(); !st) return st.error();
    }
    auto r = exchange(request);
    if (!r) close();
    return r;
  }

 private:
  template <typename Start>
  beast::error_code run(Start&& start) {
    beast::error_code result = net::error::would_block;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }
  void arm() { (tls_ ? beast::get_lowest_layer(*tls_) : *plain_).expires_after(timeout_); }
  template <typename Op>
  beast::error_code io(Op&& op) {
    arm();
    return run([&](auto h) {
      if (tls_) {
        op(*tls_, std::move(h));
      } else {
        op(*plain_, std::move(h));
      }
    });
  }
  void close() {
    tls_.reset();
    plain_.reset();
    buffer_.clear();
  }
  std::string why(const beast::error_code& ec) const {
    if (ec == beast::error::timeout) {
      return "timed out after " + std::to_string(timeout_.count()) + " ms";
    }
    return ec.message();
  }

  Status connect() {
    close();
    beast::error_code ec;
    if (!endpoints_) {
      tcp::resolver resolver(ioc_);
      auto r = resolver.resolve(base_.host, std::to_string(base_.port), ec);
      if (ec) {
        return make_error(Errc::kUnavailable, "cannot resolve " + base_.host + ": " + ec.message());
      }
      endpoints_ = r;
    }
    plain_.emplace(ioc_);
    plain_->expires_after(timeout_);
    ec = run([&](auto h) { plain_->async_connect(*endpoints_, h); });
    if (ec) {
      plain_.reset();
      return make_error(Errc::kUnavailable, "cannot connect: " + why(ec));
    }
    plain_->socket().set_option(tcp::no_delay(true), ec);
    if (!base_.tls) return ok_status();
    tls_.emplace(std::move(*plain_), *ctx_);
    plain_.reset();
    SSL* ssl = tls_->native_handle();
    const bool verify =
        ctx_->native_handle() && SSL_CTX_get_verify_mode(ctx_->native_handle()) != SSL_VERIFY_NONE;
    if (auto st = tls_expect_host(ssl, base_.host, verify); !st) {
      close();
      return st;
    }
    arm();
    ec = run([&](auto h) { tls_->async_handshake(ssl::stream_base::client, h); });
    if (ec) {
      const std::string cert = tls_certificate_failure(ssl);
      const std::string reason = cert.empty() ? why(ec) : "the BMC's " + cert;
      close();
      return make_error(Errc::kUnavailable, "TLS handshake failed: " + reason);
    }
    return ok_status();
  }

  Result<HttpResponse> exchange(const HttpRequest& request) {
    http::request<http::string_body> req{http::string_to_verb(request.method), request.target, 11};
    req.set(http::field::host, base_.host_header());
    req.set(http::field::user_agent, "kilnd");
    for (const auto& [name, value] : request.headers) req.set(name, value);
    if (!request.body.empty()) req.body() = request.body;
    req.keep_alive(true);
    req.prepare_payload();
    auto ec = io([&](auto& s, auto h) { http::async_write(s, req, h); });
    if (ec) return make_error(Errc::kUnavailable, "sending the request: " + why(ec));
    http::response_parser<http::string_body> parser;
    parser.header_limit(64 << 10);
    parser.body_limit(kMaxRedfishBody);
    if (request.method == "HEAD") parser.skip(true);
    ec = io([&](auto& s, auto h) { http::async_read_header(s, buffer_, parser, h); });
    if (!ec && !parser.is_done()) {
      ec = io([&](auto& s, auto h) { http::async_read(s, buffer_, parser, h); });
    }
    if (ec == http::error::body_limit) {
      return make_error(Errc::kTooLarge, "the reply is larger than " +
                                             std::to_string(kMaxRedfishBody >> 10) + " KiB");
    }
    if (ec) return make_error(Errc::kUnavailable, "reading the reply: " + why(ec));
    auto& res = parser.get();
    HttpResponse out;
    out.status = res.result_int();
    for (const auto& f : res) {
      out.headers[ascii_lower(std::string(f.name_string()))] = std::string(f.value());
    }
    out.body = std::move(res.body());
    if (!res.keep_alive()) close();
    return out;
  }

  HttpUrl base_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<ssl::context> ctx_;
  net::io_context ioc_;
  std::optional<tcp::resolver::results_type> endpoints_;
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
};

const std::vector<std::string>& common_reset_types() {
  static const std::vector<std::string> kTypes = {"On", "ForceOff", "GracefulShutdown",
                                                  "GracefulRestart", "ForceRestart"};
  return kTypes;
}

}  // namespace

Result<std::unique_ptr<Transport>> beast_transport(const BmcConfig& config) {
  auto url = parse_http_url(config.address);
  if (!url) {
    return make_error(Errc::kInvalid,
                      "BMC address '" + config.address + "': " + url.error().message);
  }
  if (!url->path.empty() && url->path != "/redfish/v1") {
    return make_error(Errc::kInvalid, "BMC address '" + config.address +
                                          "' must be a base URL (https://host[:port]), no path");
  }
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  if (url->tls) {
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    if (config.insecure) {
      ctx->set_verify_mode(ssl::verify_none);
    } else if (!config.ca_file.empty()) {
      auto verifying = tls_client_context(config.ca_file, "BMC " + url->url);
      if (!verifying) return verifying.error();
      ctx = std::move(*verifying);
    } else {
      return make_error(Errc::kInvalid,
                        "BMC " + url->url +
                            " is https: set a CA file to verify its certificate, or insecure "
                            "(explicitly) to skip verification");
    }
  }
  return std::unique_ptr<Transport>(new BeastTransport(*url, config.timeout, std::move(ctx)));
}

// ---------------------------------------------------------------------------------------------
// The driver.

struct RedfishDriver::Reply {
  HttpResponse response;
  json body;  // parsed when the status is 2xx and the body is not empty
  int attempts = 1;
  std::chrono::milliseconds took{0};
};

RedfishDriver::RedfishDriver(BmcConfig config, std::unique_ptr<Transport> transport,
                             RedfishOptions options)
    : config_(std::move(config)), transport_(std::move(transport)), options_(options) {}

RedfishDriver::~RedfishDriver() {
  if (session_path_.empty() || token_.empty()) return;
  HttpRequest req{
      "DELETE", session_path_, {{"X-Auth-Token", token_}, {"OData-Version", "4.0"}}, {}};
  (void)transport_->send(req);  // best effort: sessions also expire on the BMC
}

std::string RedfishDriver::scrub(std::string text) const {
  for (const std::string* secret : {&config_.password, &token_}) {
    if (secret->empty()) continue;
    for (auto pos = text.find(*secret); pos != std::string::npos; pos = text.find(*secret, pos)) {
      text.replace(pos, secret->size(), "***");
      pos += 3;
    }
  }
  return text;
}

Error RedfishDriver::fail(const std::string& step, const std::string& method,
                          const std::string& target, const Reply& reply) const {
  const unsigned status = reply.response.status;
  Errc code = Errc::kInternal;
  std::string what;
  if (status == 401) {
    code = Errc::kUnauthorized;
    what = "the BMC refused the credentials of user '" + config_.username + "'";
  } else if (status == 403) {
    code = Errc::kUnauthorized;
    what = "user '" + config_.username + "' is not allowed to do this";
  } else if (status == 412 || status == 428) {
    code = Errc::kConflict;
    what = "the BMC kept refusing the resource's ETag";
  } else if (status >= 500) {
    code = Errc::kUnavailable;
  } else if (status == 400 || status == 404 || status == 405 || status == 409 || status == 422 ||
             status == 501) {
    code = Errc::kInvalid;
  }
  std::string msg = "BMC " + config_.address + ": " + step + " (" + method + " " + target +
                    ") answered HTTP " + std::to_string(status);
  if (reply.attempts > 1) msg += " after " + std::to_string(reply.attempts) + " attempts";
  if (!what.empty()) msg += ": " + what;
  if (auto says = bmc_says(reply.response.body); !says.empty()) msg += ": " + says;
  return make_error(code, scrub(msg));
}

Result<RedfishDriver::Reply> RedfishDriver::call(const std::string& step, const std::string& method,
                                                 const std::string& target, const std::string& body,
                                                 const std::string& if_match) {
  const auto start = Clock::now();
  auto delay = options_.backoff;
  bool relogged = false;
  for (int attempt = 1;; ++attempt) {
    HttpRequest req{
        method, target, {{"Accept", "application/json"}, {"OData-Version", "4.0"}}, body};
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    if (!token_.empty()) {
      req.headers.emplace_back("X-Auth-Token", token_);
    } else if (auth_mode_ == "basic") {
      req.headers.emplace_back("Authorization",
                               "Basic " + base64_encode(config_.username + ":" + config_.password));
    }
    if (!if_match.empty()) req.headers.emplace_back("If-Match", if_match);

    auto res = transport_->send(req);
    Reply reply;
    reply.attempts = attempt;
    Error last;
    bool retry = false;
    if (!res) {
      Errc code = res.error().code == Errc::kTooLarge ? Errc::kInternal : res.error().code;
      last = make_error(code, scrub("BMC " + config_.address + ": " + step + " (" + method + " " +
                                    target + "): " + res.error().message +
                                    (attempt > 1 ? " (" + std::to_string(attempt) + " attempts)"
                                                 : std::string())));
      // A POST (a reset, a session login) is not sent again after a transport failure: it may
      // have reached the BMC (a reset that answered late would be done twice, a login would
      // leak a session). The caller's error and the deadlines take it from there.
      retry = res.error().code == Errc::kUnavailable && method != "POST";
    } else {
      reply.response = std::move(*res);
      const unsigned status = reply.response.status;
      if (status == 401 && !token_.empty() && !relogged && target != session_path_) {
        // The session expired (or the BMC was reset): make a new one, once.
        relogged = true;
        token_.clear();
        session_path_.clear();
        auto root = call("redfish.login", "GET", "/redfish/v1");
        std::string sessions =
            root && root->body.is_object()
                ? string_at(
                      root->body.value("Links", json::object()).value("Sessions", json::object()),
                      "@odata.id")
                : std::string();
        if (sessions.empty()) sessions = "/redfish/v1/SessionService/Sessions";
        if (auto st = login(sessions); !st) return st.error();
        --attempt;
        continue;
      }
      if (status >= 500) {
        retry = true;
        last = fail(step, method, target, reply);
      } else {
        if (status >= 200 && status < 300 && !reply.response.body.empty()) {
          reply.body = json::parse(reply.response.body, nullptr, false);
          // A resource read must be JSON; an action's reply body is informational (some BMCs
          // answer a Reset with text), so it may be anything.
          if (reply.body.is_discarded() && method != "GET") reply.body = json();
          if (reply.body.is_discarded()) {
            return make_error(
                Errc::kInternal,
                scrub("BMC " + config_.address + ": " + step + " (" + method + " " + target +
                      "): the reply is not JSON: " + one_line(reply.response.body, 80)));
          }
        }
        reply.took = since(start);
        return reply;
      }
    }
    if (!retry || attempt > config_.retries) return last;
    std::this_thread::sleep_for(delay);
    delay *= 2;
  }
}

Status RedfishDriver::login(const std::string& sessions_path) {
  json creds = {{"UserName", config_.username}, {"Password", config_.password}};
  auto r = call("redfish.login", "POST", sessions_path, creds.dump());
  if (!r) {
    if (r.error().code == Errc::kUnavailable &&
        r.error().message.find("answered HTTP") == std::string::npos) {
      return r.error();  // the BMC is unreachable: basic auth would not help
    }
  } else {
    const unsigned status = r->response.status;
    if (status == 401) return fail("redfish.login", "POST", sessions_path, *r);
    const std::string token = r->response.header("x-auth-token");
    if ((status == 200 || status == 201) && !token.empty()) {
      token_ = token;
      auth_mode_ = "session";
      session_path_ = path_of(r->response.header("location"));
      if (session_path_.empty()) session_path_ = string_at(r->body, "@odata.id");
      return ok_status();
    }
  }
  // No sessions here (404/405/403/5xx, no token): HTTP Basic on every request.
  auth_mode_ = "basic";
  return ok_status();
}

Status RedfishDriver::connect() {
  if (!system_path_.empty()) return ok_status();
  auto root = call("redfish.discover", "GET", "/redfish/v1");
  if (!root) return root.error();
  if (root->response.status == 401 || root->response.status == 403) {
    auth_mode_ = "basic";  // a service root behind authentication (not Redfish, but seen)
    root = call("redfish.discover", "GET", "/redfish/v1");
    if (!root) return root.error();
  }
  if (root->response.status != 200) return fail("redfish.discover", "GET", "/redfish/v1", *root);
  if (!root->body.is_object()) {
    return make_error(Errc::kInternal, "BMC " + config_.address +
                                           ": the service root /redfish/v1 is not a JSON object");
  }
  const json& rb = root->body;
  if (auth_mode_.empty()) {
    std::string sessions;
    if (auto links = rb.find("Links"); links != rb.end() && links->is_object()) {
      if (auto s = links->find("Sessions"); s != links->end())
        sessions = string_at(*s, "@odata.id");
    }
    if (sessions.empty()) {
      if (auto ss = rb.find("SessionService"); ss != rb.end()) {
        const std::string base = string_at(*ss, "@odata.id");
        if (!base.empty()) sessions = trim_slash(base) + "/Sessions";
      }
    }
    if (sessions.empty()) {
      auth_mode_ = "basic";
    } else if (auto st = login(sessions); !st) {
      return st;
    }
  }
  std::string systems;
  if (auto s = rb.find("Systems"); s != rb.end()) systems = string_at(*s, "@odata.id");
  if (systems.empty()) {
    return make_error(Errc::kInvalid,
                      "BMC " + config_.address + ": the service root lists no Systems");
  }
  auto coll = call("redfish.discover", "GET", systems);
  if (!coll) return coll.error();
  if (coll->response.status != 200) return fail("redfish.discover", "GET", systems, *coll);
  std::vector<std::string> members;
  if (coll->body.is_object()) {
    if (auto m = coll->body.find("Members"); m != coll->body.end() && m->is_array()) {
      for (const auto& e : *m) {
        if (auto id = string_at(e, "@odata.id"); !id.empty()) members.push_back(trim_slash(id));
      }
    }
  }
  std::string names;
  for (const auto& m : members) names += (names.empty() ? "" : ", ") + m;
  if (config_.system_id.empty()) {
    if (members.size() != 1) {
      return make_error(Errc::kInvalid, "BMC " + config_.address + ": " + systems + " lists " +
                                            std::to_string(members.size()) + " systems (" + names +
                                            "): set the BMC's system_id to choose one");
    }
    system_path_ = members.front();
  } else {
    const std::string want = trim_slash(config_.system_id);
    for (const auto& m : members) {
      if (m == want || m.ends_with("/" + want)) system_path_ = m;
    }
    if (system_path_.empty()) {
      return make_error(Errc::kInvalid, "BMC " + config_.address + ": no system '" +
                                            config_.system_id + "' in " + systems + " (" + names +
                                            ")");
    }
  }
  return ok_status();
}

Result<RedfishDriver::Reply> RedfishDriver::get_system(const std::string& step) {
  auto r = call(step, "GET", system_path_);
  if (!r) return r.error();
  if (r->response.status != 200) return fail(step, "GET", system_path_, *r);
  if (!r->body.is_object()) {
    return make_error(Errc::kInternal,
                      "BMC " + config_.address + ": " + system_path_ + " is not a JSON object");
  }
  return r;
}

Result<PowerState> RedfishDriver::status() {
  if (auto st = connect(); !st) return st.error();
  auto sys = get_system("redfish.power_state");
  if (!sys) return sys.error();
  return parse_power_state(sys->body);
}

Result<Step> RedfishDriver::reset(const std::string& target, const std::string& reset_type) {
  json body = {{"ResetType", reset_type}};
  auto r = call("redfish.reset", "POST", target, body.dump());
  if (!r) return r.error();
  const unsigned s = r->response.status;
  if (s != 200 && s != 202 && s != 204)
    return fail("redfish.reset ResetType=" + reset_type, "POST", target, *r);
  return Step{"redfish.reset", "ResetType=" + reset_type, r->took, r->attempts};
}

Result<Step> RedfishDriver::wait_for(PowerState want, const std::string& after) {
  const auto start = Clock::now();
  PowerState last = PowerState::kUnknown;
  const int reads = std::max(1, options_.poll_attempts);
  for (int i = 1; i <= reads; ++i) {
    auto sys = get_system("redfish.wait_power");
    if (!sys) return sys.error();
    last = parse_power_state(sys->body);
    if (last == want) {
      return Step{"redfish.wait_power",
                  std::string("PowerState ") + power_state_name(want) + " after " + after,
                  since(start), i};
    }
    if (i < reads) std::this_thread::sleep_for(options_.poll_interval);
  }
  return make_error(Errc::kConflict, "BMC " + config_.address + ": accepted " + after +
                                         " and PowerState still reads " + power_state_name(last) +
                                         " after " + std::to_string(reads) + " reads (" +
                                         std::to_string(since(start).count() / 1000) + " s)");
}

Result<std::vector<Step>> RedfishDriver::power(PowerAction action) {
  if (auto st = connect(); !st) return st.error();
  auto sys = get_system("redfish.power_state");
  if (!sys) return sys.error();
  const PowerState state = parse_power_state(sys->body);
  std::vector<Step> steps;
  steps.push_back(Step{"redfish.power_state", std::string("PowerState ") + power_state_name(state),
                       sys->took, sys->attempts});

  json reset_action;
  if (auto a = sys->body.find("Actions"); a != sys->body.end() && a->is_object()) {
    if (auto r = a->find("#ComputerSystem.Reset"); r != a->end() && r->is_object())
      reset_action = *r;
  }
  const std::string target = string_at(reset_action, "target");
  if (target.empty()) {
    return make_error(Errc::kInvalid, "BMC " + config_.address + ": " + system_path_ +
                                          " advertises no #ComputerSystem.Reset action");
  }
  std::vector<std::string> allowed;
  if (auto av = reset_action.find("ResetType@Redfish.AllowableValues");
      av != reset_action.end() && av->is_array()) {
    for (const auto& v : *av) {
      if (v.is_string()) allowed.push_back(v.get<std::string>());
    }
  } else if (auto info = string_at(reset_action, "@Redfish.ActionInfo"); !info.empty()) {
    // The allowed values live in an ActionInfo resource (Parameters[Name=ResetType]).
    auto ai = call("redfish.action_info", "GET", info);
    if (ai && ai->response.status == 200 && ai->body.is_object()) {
      for (const auto& p : ai->body.value("Parameters", json::array())) {
        if (string_at(p, "Name") != "ResetType") continue;
        for (const auto& v : p.value("AllowableValues", json::array())) {
          if (v.is_string()) allowed.push_back(v.get<std::string>());
        }
      }
    }
  }
  if (allowed.empty()) allowed = common_reset_types();  // not advertised: the common set
  auto has = [&](const char* t) {
    return std::find(allowed.begin(), allowed.end(), t) != allowed.end();
  };
  std::string allowed_list;
  for (const auto& a : allowed) allowed_list += (allowed_list.empty() ? "" : ", ") + a;
  auto not_allowed = [&](const std::string& what) {
    return make_error(Errc::kInvalid, "BMC " + config_.address + ": cannot " + what + ": " +
                                          system_path_ + " allows ResetType " + allowed_list);
  };

  auto do_reset = [&](const std::string& type, std::optional<PowerState> then) -> Status {
    auto s = reset(target, type);
    if (!s) return s.error();
    steps.push_back(*s);
    if (then) {
      auto w = wait_for(*then, "ResetType=" + type);
      if (!w) return w.error();
      steps.push_back(*w);
    }
    return ok_status();
  };
  auto power_on = [&]() -> Status {
    if (has("On")) return do_reset("On", PowerState::kOn);
    if (has("ForceOn")) return do_reset("ForceOn", PowerState::kOn);
    return not_allowed("power on");
  };
  auto power_off = [&]() -> Status {
    if (!has("ForceOff")) return not_allowed("power off");
    return do_reset("ForceOff", PowerState::kOff);
  };

  Status st = ok_status();
  switch (action) {
    case PowerAction::kOn:
      if (state == PowerState::kOn) {
        steps.push_back(Step{"redfish.power", "already on", {}, 1});
      } else {
        st = power_on();
      }
      break;
    case PowerAction::kOff:
      if (state == PowerState::kOff) {
        steps.push_back(Step{"redfish.power", "already off", {}, 1});
      } else {
        st = power_off();
      }
      break;
    case PowerAction::kSoftOff:
      if (state == PowerState::kOff) {
        steps.push_back(Step{"redfish.power", "already off", {}, 1});
      } else if (!has("GracefulShutdown")) {
        st = not_allowed("shut down gracefully");
      } else {
        st = do_reset("GracefulShutdown", std::nullopt);  // the OS takes its time: no wait
      }
      break;
    case PowerAction::kCycle:
      if (state == PowerState::kOff) {
        st = power_on();
      } else if (state == PowerState::kOn && has("ForceRestart")) {
        st = do_reset("ForceRestart", PowerState::kOn);
      } else if (state == PowerState::kOn && has("PowerCycle")) {
        st = do_reset("PowerCycle", PowerState::kOn);
      } else if (has("ForceOff") && (has("On") || has("ForceOn"))) {
        // State unknown, or no restart type: off, then on.
        st = power_off();
        if (st) st = power_on();
      } else {
        st = not_allowed("power cycle");
      }
      break;
  }
  if (!st) return st.error();
  return steps;
}

Result<std::vector<Step>> RedfishDriver::boot_once_network(BootMode mode) {
  if (auto st = connect(); !st) return st.error();
  const std::string step = "redfish.boot_override";
  auto sys = get_system(step);
  if (!sys) return sys.error();
  std::vector<Step> steps;
  auto boot = sys->body.find("Boot");
  if (boot == sys->body.end() || !boot->is_object()) {
    return make_error(Errc::kInvalid, "BMC " + config_.address + ": " + system_path_ +
                                          " has no Boot property: it cannot override the boot");
  }
  if (auto av = boot->find("BootSourceOverrideTarget@Redfish.AllowableValues");
      av != boot->end() && av->is_array()) {
    if (std::find(av->begin(), av->end(), json("Pxe")) == av->end()) {
      return make_error(Errc::kInvalid,
                        "BMC " + config_.address + ": " + system_path_ +
                            " cannot boot from the network once: Pxe is not in "
                            "its BootSourceOverrideTarget@Redfish.AllowableValues " +
                            one_line(av->dump()));
    }
  }
  auto etag_of = [](const Reply& r) {
    std::string e = r.response.header("etag");
    return e.empty() ? string_at(r.body, "@odata.etag") : e;
  };
  std::string etag = etag_of(*sys);
  const std::string mode_name = mode == BootMode::kUefi ? "UEFI" : "Legacy";
  bool with_mode = true;
  std::string note;
  int attempts = 0;
  int stale_etags = 0;
  const auto start = Clock::now();
  for (;;) {
    json b = {{"BootSourceOverrideTarget", "Pxe"}, {"BootSourceOverrideEnabled", "Once"}};
    if (with_mode) b["BootSourceOverrideMode"] = mode_name;
    json body = {{"Boot", b}};
    auto r = call(step, "PATCH", system_path_, body.dump(), etag);
    if (!r) return r.error();
    attempts += r->attempts;
    const unsigned s = r->response.status;
    if (s == 200 || s == 202 || s == 204) break;
    if ((s == 412 || s == 428) && stale_etags < config_.retries + 1) {
      // A stale ETag (another client changed the system) or one the BMC insists on: re-read.
      ++stale_etags;
      auto fresh = get_system(step);
      if (!fresh) return fresh.error();
      etag = etag_of(*fresh);
      continue;
    }
    if (s == 400 && with_mode) {
      // Some BMCs (older firmware) reject BootSourceOverrideMode: once more without it.
      with_mode = false;
      note = "; BootSourceOverrideMode refused (HTTP 400: " + bmc_says(r->response.body) +
             "), sent without it";
      continue;
    }
    Reply failed = std::move(*r);
    failed.attempts = attempts;
    return fail(step, "PATCH", system_path_, failed);
  }
  steps.push_back(Step{step,
                       "BootSourceOverrideTarget=Pxe Enabled=Once" +
                           (with_mode ? " Mode=" + mode_name : std::string()) + scrub(note),
                       since(start), attempts});

  // Read it back: some BMCs accept the PATCH and ignore it.
  auto check = get_system("redfish.verify_boot_override");
  if (!check) return check.error();
  const json cb = check->body.value("Boot", json::object());
  const std::string target = string_at(cb, "BootSourceOverrideTarget");
  const std::string enabled = string_at(cb, "BootSourceOverrideEnabled");
  const std::string got_mode = string_at(cb, "BootSourceOverrideMode");
  if (target != "Pxe" || enabled != "Once" ||
      (with_mode && !got_mode.empty() && got_mode != mode_name)) {
    return make_error(
        Errc::kConflict,
        "BMC " + config_.address + ": the BMC accepted the boot override and did not apply it (" +
            system_path_ +
            " reads BootSourceOverrideTarget=" + (target.empty() ? "(none)" : target) +
            ", BootSourceOverrideEnabled=" + (enabled.empty() ? "(none)" : enabled) +
            (got_mode.empty() ? "" : ", BootSourceOverrideMode=" + got_mode) + ")");
  }
  steps.push_back(Step{"redfish.verify_boot_override",
                       "Pxe Once" + (got_mode.empty() ? "" : " " + got_mode), check->took,
                       check->attempts});
  return steps;
}

}  // namespace kiln::power
