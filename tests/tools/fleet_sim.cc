// fleet_sim — N simulated bare-metal machines against a real kilnd over real HTTP on loopback
// (issue 17's test equipment and benchmark). Each machine has a simulated Redfish BMC on its
// own port and a simulated boot path that speaks kilnd's protocols with the agent's own client
// code (agent/api_client, agent/http, proto's manifest and chunk codecs). Manual:
// tests/tools/README-fleet.md.
//
// Threads: one io_context (--io-threads) runs every BMC listener, the control endpoint, the
// timers and the signals; boot paths run as short steps on a bounded pool (--workers), and
// every wait between steps (boot delay, a paced chunk, a wait script) is a timer, never a
// sleeping worker. A machine's state is guarded by its mutex; a boot path carries the boot
// generation it started in and stops at its next step once the machine was reset or powered
// off (that is how a reset "kills" the agent).
#include "fleet_sim.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "agent/api_client.h"
#include "agent/deploy.h"
#include "agent/http.h"
#include "core/crypto.h"
#include "core/url.h"
#include "proto/image_format.h"

namespace kiln::fleet {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
namespace img = proto::image;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// ---------------------------------------------------------------------------------------------
// Pure parts.

Result<std::vector<bool>> parse_machine_set(std::string_view text, int machines) {
  std::vector<bool> out(static_cast<std::size_t>(std::max(machines, 0)), false);
  auto number = [](std::string_view s) -> std::optional<int> {
    if (s.empty() || s.size() > 6 || s.find_first_not_of("0123456789") != std::string_view::npos)
      return std::nullopt;
    return std::stoi(std::string(s));
  };
  std::size_t pos = 0;
  while (pos <= text.size()) {
    auto comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string_view part = text.substr(pos, comma - pos);
    const auto dash = part.find('-');
    auto lo = number(part.substr(0, dash));
    auto hi = dash == std::string_view::npos ? lo : number(part.substr(dash + 1));
    if (!lo || !hi || *lo > *hi) {
      return make_error(Errc::kInvalid, "machine set '" + std::string(text) + "': '" +
                                            std::string(part) +
                                            "' is not an index or a range a-b (a <= b)");
    }
    if (*hi >= machines) {
      return make_error(Errc::kInvalid, "machine set '" + std::string(text) +
                                            "': " + std::to_string(*hi) +
                                            " is not below --machines " + std::to_string(machines));
    }
    for (int i = *lo; i <= *hi; ++i) out[static_cast<std::size_t>(i)] = true;
    pos = comma + 1;
  }
  return out;
}

Result<SetWithCount> parse_set_with_count(std::string_view text, int machines, int default_n) {
  const auto colon = text.rfind(':');
  SetWithCount r;
  r.n = default_n;
  std::string_view set = text;
  if (colon != std::string_view::npos) {
    const std::string_view n = text.substr(colon + 1);
    if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string_view::npos ||
        std::stoi(std::string(n)) < 1) {
      return make_error(Errc::kInvalid,
                        "'" + std::string(text) + "': the count after ':' must be a number >= 1");
    }
    r.n = std::stoi(std::string(n));
    set = text.substr(0, colon);
  } else if (default_n < 0) {
    return make_error(Errc::kInvalid, "'" + std::string(text) + "': SET:N expected");
  }
  auto s = parse_machine_set(set, machines);
  if (!s) return s.error();
  r.set = std::move(*s);
  return r;
}

std::string machine_mac(int index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "02:4b:53:00:%02x:%02x", (index >> 8) & 0xff, index & 0xff);
  return buf;
}

std::string machine_name(int index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "sim-%04d", index);
  return buf;
}

std::string machine_rack(int index, int racks) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "r%02d", index % std::max(racks, 1));
  return buf;
}

namespace {

// The value of `key=` in a line of words ("" when absent).
std::string word_value(std::string_view text, std::string_view key) {
  std::size_t at = 0;
  while ((at = text.find(key, at)) != std::string_view::npos) {
    if (at == 0 || text[at - 1] == ' ' || text[at - 1] == '\t') {
      const auto from = at + key.size();
      auto end = text.find_first_of(" \t\r\n", from);
      if (end == std::string_view::npos) end = text.size();
      return std::string(text.substr(from, end - from));
    }
    at += key.size();
  }
  return {};
}

}  // namespace

BootScript parse_boot_script(std::string_view text) {
  BootScript s;
  // Only commands count, not the templates' comments.
  std::string commands;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (!line.empty() && line.front() != '#') {
      commands.append(line);
      commands.push_back('\n');
    }
    pos = eol + 1;
  }
  const std::string mode = word_value(commands, "kiln.mode=");
  s.server = word_value(commands, "kiln.server=");
  s.ticket = word_value(commands, "kiln.ticket=");
  s.after = word_value(commands, "kiln.after=");
  if (mode == "deploy") {
    s.kind = BootScript::kDeploy;
  } else if (mode == "discover") {
    s.kind = BootScript::kDiscover;
  } else if (commands.find("sanboot") != std::string::npos ||
             (commands.find("exit") != std::string::npos &&
              commands.find("chain") == std::string::npos)) {
    s.kind = BootScript::kLocalBoot;
  } else if (commands.find("chain") != std::string::npos &&
             commands.find("sleep ") != std::string::npos) {
    s.kind = BootScript::kWait;
    s.failed = commands.find("waiting for an operator") != std::string::npos;
    const auto sl = commands.find("sleep ");
    s.sleep_s = std::atoi(commands.c_str() + sl + 6);
  }
  return s;
}

const char* to_string(BootScript::Kind k) {
  switch (k) {
    case BootScript::kDeploy:
      return "deploy";
    case BootScript::kDiscover:
      return "discover";
    case BootScript::kLocalBoot:
      return "localboot";
    case BootScript::kWait:
      return "wait";
    case BootScript::kUnknown:
      break;
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// The simulation.

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// What the machine's disk holds: the last image written to the end.
struct DiskImage {
  std::string image, version;
  std::int64_t deployment_id = 0;
  std::string instance_token, instance_url;
};

// One simulated machine. The identity, the port and the faults are set before the io threads
// start and only read afterwards; everything below `mu` is guarded by it.
struct Machine {
  int index = 0;
  std::string name, mac, mac_dash;
  std::uint16_t port = 0;
  bool bmc_timeout = false;
  int slow_kbps = 0;
  std::optional<tcp::acceptor> acceptor;

  mutable std::mutex mu;
  int die_mid_write_left = 0;
  bool on = false;
  std::string ov_enabled = "Disabled", ov_target = "None", ov_mode = "UEFI";
  std::uint64_t etag = 1;
  std::uint64_t gen = 0;  // boot generation: every power-on, reset and power-off bumps it
  std::string phase = "off";
  std::optional<DiskImage> disk;
  std::vector<std::int64_t> written;  // deployments whose result kilnd accepted
  std::vector<std::pair<std::string, std::string>> sessions;  // Redfish session id, token
  std::uint64_t session_seq = 0;
  std::map<std::string, int> counts;  // boots, network_boots, confirmations, scripts.deploy...
  std::map<std::string, int> faults_hit;
  std::string last_error;
};

// Counts everyone reads in the summary line.
struct Totals {
  std::atomic<int> boots{0}, scripts{0}, deploys_started{0}, deploys_done{0}, deploys_failed{0},
      agents_killed{0}, confirmations{0}, errors{0};
  std::atomic<std::uint64_t> chunk_bytes{0};
};

// A boot path in progress: one per boot of one machine, stepped on the worker pool.
struct Run {
  Machine* m = nullptr;
  std::uint64_t gen = 0;
  Clock::time_point started = Clock::now();
  // The agent's part (deploy scripts).
  std::optional<agent::ApiClient> api;
  std::string ticket, after;
  agent::Plan plan;
  std::string manifest_body;
  img::Manifest manifest;
  std::vector<std::size_t> payload;  // indexes of DATA/RAW chunks, in order
  std::size_t next = 0;
  std::vector<std::unique_ptr<agent::HttpConnection>> chunk_conns;
  std::string chunks_path, chunk_token;
  std::unique_ptr<img::ChunkDecoder> decoder;
  std::string buf;
  std::uint64_t written = 0, zeroed = 0, unmapped = 0, fetched = 0;
  Clock::time_point write_start, last_progress;
  bool die_mid_write = false;
  int wait_rounds = 0;
};

class Sim {
 public:
  explicit Sim(Options o) : o_(std::move(o)), pool_(static_cast<std::size_t>(o_.workers)) {}

  int run();

 private:
  // --- the HTTP server side (BMCs and the control endpoint) ---------------------------------
  using Handler = std::function<std::optional<Response>(const Request&)>;
  class Session;
  void accept(tcp::acceptor& a, Handler h);
  Status listen(tcp::acceptor& a, std::uint16_t port, std::uint16_t& bound);

  std::optional<Response> redfish(Machine& m, const Request& req);
  Response reset(Machine& m, const Request& req, const json& body);
  Response patch_system(Machine& m, const Request& req, const json& body);
  json system_json(const Machine& m) const;  // m.mu held
  Response control(const Request& req);
  json state_json() const;

  // --- boot paths ----------------------------------------------------------------------------
  // Starts a boot of `m` (m.mu held): bumps the generation, consumes a Once override.
  void start_boot(Machine& m, const std::string& cause);
  void power_off(Machine& m, const std::string& cause);  // m.mu held
  void after_ms(int ms, std::function<void()> fn);
  // Runs fn(r) on the pool after delay_ms (a timer, not a sleeping worker). Closes r's
  // connections to kilnd first; the caller must not touch r afterwards (fn may already run).
  void step(std::shared_ptr<Run> r, int delay_ms, void (Sim::*fn)(std::shared_ptr<Run>));
  bool current(const Run& r, const char* where);
  void boot_network(std::shared_ptr<Run> r);
  void boot_disk(std::shared_ptr<Run> r);
  void agent_start(std::shared_ptr<Run> r);
  void agent_chunks(std::shared_ptr<Run> r);
  void agent_finish(std::shared_ptr<Run> r);
  void agent_fail(Run& r, const std::string& stage, const std::string& reason);
  void progress(Run& r, const std::string& stage);

  // --- setup ---------------------------------------------------------------------------------
  Status register_machines();

  void note(const Machine& m, const std::string& text);  // a per-step log line (verbose set)
  void error(Machine& m, const std::string& text);       // last_error + a bounded log line
  void summary(bool force);
  void stop(const std::string& why);

  Options o_;
  net::io_context ioc_;
  net::thread_pool pool_;
  std::vector<std::unique_ptr<Machine>> machines_;
  std::optional<tcp::acceptor> control_;
  std::string basic_auth_;
  std::optional<HttpUrl> kilnd_;
  Totals totals_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> error_lines_{0};
  Clock::time_point t0_ = Clock::now();
  std::mutex log_mu_;
  std::string last_summary_;
};

// One HTTP/1.1 connection: read a request (bounded in size and time), answer it, repeat. A
// handler's nullopt means "never answer" (a BMC that hangs): the connection keeps reading
// until the client gives up.
class Sim::Session : public std::enable_shared_from_this<Sim::Session> {
 public:
  Session(tcp::socket s, Handler h) : stream_(std::move(s)), handler_(std::move(h)) {}
  void start() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->header_limit(16 << 10);
    parser_->body_limit(1 << 20);
    stream_.expires_after(std::chrono::seconds(300));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }
  void on_read(beast::error_code ec) {
    if (ec) return close();
    Request req = parser_->release();
    std::optional<Response> res;
    try {
      res = handler_(req);
    } catch (const std::exception& e) {
      res.emplace(http::status::internal_server_error, 11);
      res->body() = json{{"error", {{"message", e.what()}}}}.dump();
    }
    if (!res) return read();
    res_ = std::make_shared<Response>(std::move(*res));
    res_->version(11);
    res_->keep_alive(req.keep_alive());
    res_->prepare_payload();
    stream_.expires_after(std::chrono::seconds(30));
    http::async_write(stream_, *res_,
                      [self = shared_from_this()](beast::error_code wec, std::size_t) {
                        if (wec || !self->res_->keep_alive()) return self->close();
                        self->read();
                      });
  }
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Response> res_;
  Handler handler_;
};

void Sim::accept(tcp::acceptor& a, Handler h) {
  a.async_accept(net::make_strand(ioc_), [this, &a, h](beast::error_code ec, tcp::socket s) {
    if (!ec) std::make_shared<Session>(std::move(s), h)->start();
    if (!stopping_ && a.is_open()) accept(a, h);
  });
}

Status Sim::listen(tcp::acceptor& a, std::uint16_t port, std::uint16_t& bound) {
  beast::error_code ec;
  const auto addr = net::ip::make_address(o_.listen_host, ec);
  if (ec) return make_error(Errc::kInvalid, "--listen-host " + o_.listen_host + ": not an address");
  const tcp::endpoint ep(addr, port);
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(Errc::kUnavailable, "cannot listen on " + o_.listen_host + ":" +
                                              std::to_string(port) + ": " + ec.message());
  }
  bound = a.local_endpoint().port();
  return ok_status();
}

// --- Redfish ---------------------------------------------------------------------------------

Response json_reply(http::status status, const json& body,
                    std::vector<std::pair<std::string, std::string>> headers = {}) {
  Response r(status, 11);
  r.set(http::field::server, "kiln-fleet-sim");
  r.set("OData-Version", "4.0");
  if (!body.is_null()) {
    r.set(http::field::content_type, "application/json");
    r.body() = body.dump();
  }
  for (auto& [k, v] : headers) r.set(k, v);
  return r;
}

json error_body(const std::string& id, const std::string& message) {
  return {{"error",
           {{"code", "Base.1.8." + id},
            {"message", message},
            {"@Message.ExtendedInfo",
             json::array({{{"MessageId", "Base.1.8." + id}, {"Message", message}}})}}}};
}

const std::vector<std::string>& reset_types() {
  static const std::vector<std::string> kTypes = {
      "On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle"};
  return kTypes;
}

constexpr const char* kSystem = "/redfish/v1/Systems/1";

json Sim::system_json(const Machine& m) const {
  const std::string tag = "\"" + std::to_string(m.etag) + "\"";
  return {
      {"@odata.type", "#ComputerSystem.v1_13_0.ComputerSystem"},
      {"@odata.id", kSystem},
      {"@odata.etag", tag},
      {"Id", "1"},
      {"Name", m.name},
      {"SystemType", "Physical"},
      {"Manufacturer", "kiln"},
      {"Model", "fleet-sim"},
      {"PowerState", m.on ? "On" : "Off"},
      {"Status", {{"State", "Enabled"}, {"Health", "OK"}}},
      {"Boot",
       {{"BootSourceOverrideEnabled", m.ov_enabled},
        {"BootSourceOverrideTarget", m.ov_target},
        {"BootSourceOverrideTarget@Redfish.AllowableValues", {"None", "Pxe", "Hdd"}},
        {"BootSourceOverrideMode", m.ov_mode},
        {"BootSourceOverrideMode@Redfish.AllowableValues", {"UEFI", "Legacy"}}}},
      {"Actions",
       {{"#ComputerSystem.Reset",
         {{"target", std::string(kSystem) + "/Actions/ComputerSystem.Reset"},
          {"ResetType@Redfish.AllowableValues", reset_types()}}}}},
  };
}

std::optional<Response> Sim::redfish(Machine& m, const Request& req) {
  if (m.bmc_timeout) {
    std::lock_guard lock(m.mu);
    ++m.faults_hit["bmc_timeout"];
    return std::nullopt;
  }
  std::string path(req.target().substr(0, req.target().find('?')));
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const auto method = req.method();
  json body;
  if (!req.body().empty()) {
    body = json::parse(req.body(), nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      return json_reply(http::status::bad_request,
                        error_body("MalformedJSON", "The request body is not a JSON object."));
    }
  }
  auto not_allowed = [] {
    return json_reply(http::status::method_not_allowed,
                      error_body("OperationNotAllowed", "The method is not allowed here."));
  };
  auto get_only = [&](json b) {
    return method == http::verb::get ? json_reply(http::status::ok, b) : not_allowed();
  };
  // Public: the service root.
  if (path == "/redfish") return get_only({{"v1", "/redfish/v1/"}});
  if (path == "/redfish/v1") {
    return get_only(
        {{"@odata.type", "#ServiceRoot.v1_5_0.ServiceRoot"},
         {"@odata.id", "/redfish/v1/"},
         {"Id", "RootService"},
         {"Name", "kiln fleet-sim Redfish service"},
         {"RedfishVersion", "1.11.0"},
         {"Systems", {{"@odata.id", "/redfish/v1/Systems"}}},
         {"SessionService", {{"@odata.id", "/redfish/v1/SessionService"}}},
         {"Links", {{"Sessions", {{"@odata.id", "/redfish/v1/SessionService/Sessions"}}}}}});
  }
  constexpr const char* kSessions = "/redfish/v1/SessionService/Sessions";
  if (path == kSessions && method == http::verb::post) {
    const std::string user = body.is_object() ? body.value("UserName", "") : "";
    const std::string pass = body.is_object() ? body.value("Password", "") : "";
    if (user != o_.bmc_user || pass != o_.bmc_password) {
      return json_reply(http::status::unauthorized,
                        error_body("InsufficientPrivilege", "Invalid credentials."));
    }
    std::lock_guard lock(m.mu);
    const std::string id = std::to_string(++m.session_seq);
    const std::string token = random_hex(16);
    m.sessions.emplace_back(id, token);
    if (m.sessions.size() > 16) m.sessions.erase(m.sessions.begin());  // oldest expires
    return json_reply(
        http::status::created,
        {{"@odata.id", std::string(kSessions) + "/" + id}, {"Id", id}, {"UserName", user}},
        {{"X-Auth-Token", token}, {"Location", std::string(kSessions) + "/" + id}});
  }
  // Everything else needs Basic or a session token.
  bool authorized = false;
  {
    const auto auth = req[http::field::authorization];
    const auto token = req["X-Auth-Token"];
    std::lock_guard lock(m.mu);
    if (!token.empty()) {
      for (const auto& s : m.sessions) authorized = authorized || s.second == token;
    } else {
      authorized = auth == basic_auth_;
    }
  }
  if (!authorized) {
    return json_reply(http::status::unauthorized,
                      error_body("InsufficientPrivilege", "Authentication is required."),
                      {{"WWW-Authenticate", "Basic realm=\"fleet-sim\""}});
  }
  if (path == "/redfish/v1/Systems") {
    return get_only({{"@odata.id", path},
                     {"Name", "Computer System Collection"},
                     {"Members@odata.count", 1},
                     {"Members", json::array({{{"@odata.id", kSystem}}})}});
  }
  if (path == "/redfish/v1/SessionService") {
    return get_only(
        {{"@odata.id", path}, {"ServiceEnabled", true}, {"Sessions", {{"@odata.id", kSessions}}}});
  }
  if (path.rfind(std::string(kSessions) + "/", 0) == 0) {
    const std::string id = path.substr(std::string(kSessions).size() + 1);
    std::lock_guard lock(m.mu);
    auto it = std::find_if(m.sessions.begin(), m.sessions.end(),
                           [&](const auto& s) { return s.first == id; });
    if (it == m.sessions.end()) {
      return json_reply(http::status::not_found, error_body("ResourceMissingAtURI", path));
    }
    if (method == http::verb::delete_) {
      m.sessions.erase(it);
      return json_reply(http::status::no_content, nullptr);
    }
    return method == http::verb::get
               ? json_reply(http::status::ok, {{"@odata.id", path}, {"Id", id}})
               : not_allowed();
  }
  if (path == kSystem) {
    if (method == http::verb::get) {
      std::lock_guard lock(m.mu);
      json s = system_json(m);
      const std::string tag = s["@odata.etag"].get<std::string>();
      return json_reply(http::status::ok, s, {{"ETag", tag}});
    }
    if (method == http::verb::patch) return patch_system(m, req, body);
    return not_allowed();
  }
  if (path == std::string(kSystem) + "/Actions/ComputerSystem.Reset") {
    if (method != http::verb::post) return not_allowed();
    return reset(m, req, body);
  }
  return json_reply(
      http::status::not_found,
      error_body("ResourceMissingAtURI", "The resource at " + path + " was not found."));
}

Response Sim::patch_system(Machine& m, const Request& req, const json& body) {
  static const std::map<std::string, std::vector<std::string>> kAllowed = {
      {"BootSourceOverrideTarget", {"None", "Pxe", "Hdd"}},
      {"BootSourceOverrideEnabled", {"Disabled", "Once", "Continuous"}},
      {"BootSourceOverrideMode", {"UEFI", "Legacy"}}};
  std::lock_guard lock(m.mu);
  const std::string current = "\"" + std::to_string(m.etag) + "\"";
  if (const auto im = req[http::field::if_match]; !im.empty()) {
    bool match = false;
    std::string_view rest = im;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      std::string_view t = rest.substr(0, comma);
      while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
      while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
      if (t.rfind("W/", 0) == 0) t.remove_prefix(2);
      match = match || t == "*" || t == current;
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
    if (!match) {
      return json_reply(http::status::precondition_failed,
                        error_body("PreconditionFailed", "The ETag supplied did not match."));
    }
  }
  json problems = json::array();
  const json boot = body.is_object() ? body.value("Boot", json::object()) : json::object();
  for (const auto& [k, v] : body.items()) {
    if (k != "Boot")
      problems.push_back({{"MessageId", "Base.1.8.PropertyNotWritable"},
                          {"Message", "The property " + k + " is read-only."}});
  }
  for (const auto& [k, v] : boot.items()) {
    auto a = kAllowed.find(k);
    if (a == kAllowed.end()) {
      problems.push_back({{"MessageId", "Base.1.8.PropertyUnknown"},
                          {"Message", "The property Boot/" + k + " is not known."}});
    } else if (!v.is_string() || std::find(a->second.begin(), a->second.end(),
                                           v.get<std::string>()) == a->second.end()) {
      problems.push_back({{"MessageId", "Base.1.8.PropertyValueNotInList"},
                          {"Message", "The value " + v.dump() + " for " + k + " is not allowed."}});
    }
  }
  if (!problems.empty()) {
    json e = error_body("GeneralError", "The PATCH was not applied.");
    e["error"]["@Message.ExtendedInfo"] = problems;
    return json_reply(http::status::bad_request, e);
  }
  for (auto [key, field] : {std::pair{"BootSourceOverrideTarget", &m.ov_target},
                            std::pair{"BootSourceOverrideEnabled", &m.ov_enabled},
                            std::pair{"BootSourceOverrideMode", &m.ov_mode}}) {
    if (auto t = boot.find(key); t != boot.end()) *field = t->get<std::string>();
  }
  ++m.etag;
  ++m.counts["overrides"];
  note(m, "bmc: boot override " + m.ov_target + "/" + m.ov_enabled + "/" + m.ov_mode);
  return json_reply(http::status::no_content, nullptr,
                    {{"ETag", "\"" + std::to_string(m.etag) + "\""}});
}

Response Sim::reset(Machine& m, const Request&, const json& body) {
  const std::string type = body.is_object() ? body.value("ResetType", "") : "";
  const auto& allowed = reset_types();
  if (std::find(allowed.begin(), allowed.end(), type) == allowed.end()) {
    return json_reply(http::status::bad_request,
                      error_body("ActionParameterValueNotInList",
                                 "The value '" + type + "' for ResetType is not allowed."));
  }
  std::lock_guard lock(m.mu);
  ++m.counts["resets"];
  if (type == "On") {
    if (!m.on) start_boot(m, "bmc On");
  } else if (type == "ForceOff" || type == "GracefulShutdown") {
    if (m.on) power_off(m, "bmc " + type);
  } else {
    // ForceRestart, GracefulRestart, PowerCycle: of an off machine, a power-on (most BMCs).
    start_boot(m, "bmc " + type);
  }
  return json_reply(http::status::no_content, nullptr);
}

// --- boot paths ------------------------------------------------------------------------------

void Sim::power_off(Machine& m, const std::string& cause) {
  m.on = false;
  ++m.gen;
  ++m.etag;
  m.phase = "off";
  note(m, "power off (" + cause + ")");
}

void Sim::start_boot(Machine& m, const std::string& cause) {
  m.on = true;
  const std::uint64_t gen = ++m.gen;
  ++m.etag;
  ++m.counts["boots"];
  ++totals_.boots;
  bool network = false;
  if (m.ov_target == "Pxe" && m.ov_enabled != "Disabled") {
    network = true;
    if (m.ov_enabled == "Once") {
      m.ov_enabled = "Disabled";
      m.ov_target = "None";
    }
  }
  ++m.counts[network ? "network_boots" : "disk_boots"];
  m.phase = network ? "firmware (network)" : "firmware (disk)";
  note(m, std::string("boot ") + (network ? "network" : "disk") + " (" + cause + ")");
  auto r = std::make_shared<Run>();
  r->m = &m;
  r->gen = gen;
  step(r, o_.boot_delay_ms, network ? &Sim::boot_network : &Sim::boot_disk);
}

void Sim::after_ms(int ms, std::function<void()> fn) {
  auto timer = std::make_shared<net::steady_timer>(ioc_, std::chrono::milliseconds(ms));
  timer->async_wait([this, timer, fn = std::move(fn)](beast::error_code ec) {
    if (!ec && !stopping_) net::post(pool_, fn);
  });
}

void Sim::step(std::shared_ptr<Run> r, int delay_ms, void (Sim::*fn)(std::shared_ptr<Run>)) {
  // Between steps a run holds no connection to kilnd (they reconnect lazily): kilnd sees every
  // simulated machine from one address and limits connections per address
  // (http.max_connections_per_address), so only the busy workers' connections may be open.
  if (r->api) {
    // Copies: emplace destroys the old client first. The cluster's servers and the one in
    // use are kept (the agent's fallback).
    std::vector<HttpUrl> servers = r->api->servers();
    const std::size_t current = r->api->current();
    std::string token = r->api->token();
    r->api.emplace(std::move(servers), std::move(token), current);
  }
  for (auto& c : r->chunk_conns) {
    c = std::make_unique<agent::HttpConnection>(c->base(), std::chrono::seconds(30));
  }
  auto call = [this, r, fn] {
    try {
      (this->*fn)(r);
    } catch (const std::exception& e) {
      error(*r->m, std::string("boot path: unexpected error: ") + e.what());
    }
  };
  if (delay_ms <= 0) {
    net::post(pool_, std::move(call));
  } else {
    after_ms(delay_ms, std::move(call));
  }
}

bool Sim::current(const Run& r, const char* where) {
  if (stopping_) return false;
  std::lock_guard lock(r.m->mu);
  if (r.m->gen == r.gen) return true;
  if (r.api) {
    ++r.m->counts["agent_killed"];
    ++totals_.agents_killed;
    note(*r.m, std::string("agent stopped by a reset or power-off (") + where + ")");
  }
  return false;
}

void Sim::boot_network(std::shared_ptr<Run> r) {
  if (!current(*r, "pxe")) return;
  Machine& m = *r->m;
  agent::HttpConnection conn(*kilnd_, std::chrono::seconds(30));
  auto reply = conn.request("GET", "/boot/" + m.mac_dash + ".ipxe");
  ++totals_.scripts;
  if (!reply || reply->status != 200) {
    error(m, "pxe: cannot fetch the script: " +
                 (reply ? "HTTP " + std::to_string(reply->status) + " " + reply->body.substr(0, 200)
                        : reply.error().message));
    std::lock_guard lock(m.mu);
    ++m.counts["scripts.error"];
    // The firmware falls through to the next boot entry: the disk.
    if (m.disk) {
      step(r, o_.boot_delay_ms, &Sim::boot_disk);
    } else {
      m.phase = "no bootable device (retrying the network in 5 s)";
      step(r, 5000, &Sim::boot_network);
    }
    return;
  }
  const BootScript s = parse_boot_script(reply->body);
  {
    std::lock_guard lock(m.mu);
    ++m.counts[std::string("scripts.") + (s.failed ? "failed" : to_string(s.kind))];
  }
  note(m, std::string("pxe: ") + (s.failed ? "failed" : to_string(s.kind)) + " script");
  switch (s.kind) {
    case BootScript::kDeploy: {
      if (s.server.empty() || s.ticket.empty()) {
        error(m, "pxe: a deploy script without kiln.server= or kiln.ticket=");
        return;
      }
      // kiln.server=URL1,URL2,...: the first, then the cluster's other instances (as the agent).
      std::vector<HttpUrl> servers;
      for (std::size_t at = 0; at <= s.server.size();) {
        const auto comma = std::min(s.server.find(',', at), s.server.size());
        const std::string one = s.server.substr(at, comma - at);
        at = comma + 1;
        if (one.empty()) continue;
        auto url = agent::parse_agent_url(one);
        if (!url) {
          error(m, "pxe: kiln.server=" + s.server + ": " + url.error().message);
          return;
        }
        servers.push_back(std::move(*url));
      }
      r->api.emplace(std::move(servers), "");
      r->after = s.after;
      r->ticket = s.ticket;
      step(r, o_.boot_delay_ms, &Sim::agent_start);
      return;
    }
    case BootScript::kLocalBoot:
      step(r, o_.boot_delay_ms, &Sim::boot_disk);
      return;
    case BootScript::kWait: {
      std::lock_guard lock(m.mu);
      m.phase = s.failed ? "failed script (polling)" : "wait script (polling)";
      ++r->wait_rounds;
      step(r, std::max(1, s.sleep_s) * 1000, &Sim::boot_network);
      return;
    }
    case BootScript::kDiscover: {
      std::lock_guard lock(m.mu);
      m.phase = "discovery (not modelled: nothing posted)";
      return;
    }
    case BootScript::kUnknown:
      error(m, "pxe: a script the simulator does not understand: " + reply->body.substr(0, 120));
      return;
  }
}

void Sim::boot_disk(std::shared_ptr<Run> r) {
  if (!current(*r, "disk")) return;
  Machine& m = *r->m;
  std::optional<DiskImage> disk;
  {
    std::lock_guard lock(m.mu);
    disk = m.disk;
    if (!disk) {
      // Nothing bootable on the disk: the firmware tries the network next.
      m.phase = "disk empty: network";
      ++m.counts["network_boots"];
      step(r, 0, &Sim::boot_network);
      return;
    }
    const bool hangs = o_.never_boots.contains(disk->version) ||
                       o_.never_boots.contains(disk->image + ":" + disk->version);
    if (hangs) {
      ++m.faults_hit["never_boots"];
      m.phase = "os " + disk->image + ":" + disk->version + " hung (never boots)";
      note(m, m.phase);
      return;
    }
    m.phase = "os " + disk->image + ":" + disk->version;
  }
  if (disk->instance_token.empty()) {
    note(m, "os booted; no instance credential to confirm with");
    return;
  }
  auto url = agent::parse_agent_url(disk->instance_url);
  if (!url) {
    error(m, "os: instance url " + disk->instance_url + ": " + url.error().message);
    return;
  }
  agent::ApiClient os(*url, disk->instance_token);
  auto reply = os.call("POST", "/api/v1/instance/booted", {}, 5);
  std::lock_guard lock(m.mu);
  if (reply && reply->status == 200) {
    ++m.counts["confirmations"];
    ++totals_.confirmations;
    note(m, "os confirmed its boot (deployment " + std::to_string(disk->deployment_id) + ")");
  } else {
    ++m.counts["confirmations_refused"];
    m.last_error =
        "os: boot confirmation refused: " +
        (reply ? "HTTP " + std::to_string(reply->status) + " " + reply->body.substr(0, 200)
               : reply.error().message);
    ++totals_.errors;
  }
}

void Sim::progress(Run& r, const std::string& stage) {
  proto::AgentReport p;
  p.stage = stage;
  p.bytes_done = static_cast<std::int64_t>(r.written + r.zeroed + r.unmapped);
  p.bytes_total = static_cast<std::int64_t>(r.manifest.size);
  p.detail = {{"fetched_bytes", r.fetched}, {"written_bytes", r.written}, {"simulated", true}};
  (void)r.api->report(p);
  r.last_progress = Clock::now();
}

void Sim::agent_fail(Run& r, const std::string& stage, const std::string& reason) {
  error(*r.m, "agent: " + stage + ": " + reason);
  ++totals_.deploys_failed;
  proto::AgentReport f;
  f.stage = stage;
  f.result = proto::DeploymentStatus::kFailed;
  f.reason = reason;
  if (auto st = r.api->report(f); !st)
    error(*r.m, "agent: cannot report the failure: " + st.error().message);
  std::lock_guard lock(r.m->mu);
  r.m->phase = "agent failed (" + stage + ")";
}

void Sim::agent_start(std::shared_ptr<Run> r) {
  if (!current(*r, "agent start")) return;
  Machine& m = *r->m;
  {
    std::lock_guard lock(m.mu);
    m.phase = "agent";
    ++m.counts["agent_runs"];
  }
  if (auto st = r->api->open_session(r->ticket); !st) {
    error(m, "agent: " + st.error().message);
    return;  // nothing to report against without a session (kilnd recorded the refusal)
  }
  auto plan = r->api->plan();
  if (!plan) {
    if (plan.error().code == Errc::kInvalid) return agent_fail(*r, "plan", plan.error().message);
    error(m, "agent: " + plan.error().message);
    return;
  }
  r->plan = std::move(*plan);
  r->api->add_servers(r->plan.servers);  // the cluster's instances, as the agent does
  const auto& image = r->plan.image;
  if (image.format != "kiln" || !r->plan.manifest_url) {
    return agent_fail(*r, "plan",
                      "fleet_sim models .kiln images only (this is " + image.format + ")");
  }
  auto sm = r->api->manifest(*r->plan.manifest_url);
  if (!sm) return agent_fail(*r, "manifest", sm.error().message);
  auto parsed = img::parse_manifest(sm->body);
  if (!parsed) return agent_fail(*r, "manifest", parsed.error().message);
  if (parsed->name != image.name || parsed->version != image.version ||
      parsed->sha256 != image.sha256) {
    return agent_fail(*r, "manifest", "the manifest is not the deployment's image version");
  }
  r->manifest_body = std::move(sm->body);
  r->manifest = std::move(*parsed);
  for (std::size_t i = 0; i < r->manifest.chunks.size(); ++i) {
    const auto& c = r->manifest.chunks[i];
    const std::uint64_t len = r->manifest.chunk_length(i);
    if (img::has_payload(c.kind)) {
      r->payload.push_back(i);
    } else if (c.kind == img::ChunkKind::kZero) {
      r->zeroed += len;
    } else {
      r->unmapped += len;
    }
  }
  auto sources = agent::chunk_sources({}, r->api->base(), r->plan.chunks_url);
  if (!sources) return agent_fail(*r, "writing", sources.error().message);
  std::vector<std::string> bases = sources->bases;
  r->chunks_path = sources->path;
  if (r->plan.chunks_require_token) {
    bases = {r->api->base().url};
    r->chunk_token = r->api->token();
  }
  for (const auto& srv : r->api->servers()) {
    if (std::find(bases.begin(), bases.end(), srv.url) == bases.end()) bases.push_back(srv.url);
  }
  for (const auto& b : bases) {
    auto u = agent::parse_agent_url(b);
    if (!u) return agent_fail(*r, "writing", u.error().message);
    r->chunk_conns.push_back(std::make_unique<agent::HttpConnection>(*u, std::chrono::seconds(30)));
  }
  r->decoder = std::make_unique<img::ChunkDecoder>();
  r->buf.assign(r->manifest.chunk_size, '\0');
  {
    std::lock_guard lock(m.mu);
    // Like the agent: the partition tables are invalidated first; the old image is gone.
    m.disk.reset();
    if (m.die_mid_write_left > 0) {
      --m.die_mid_write_left;
      r->die_mid_write = true;
    }
    m.phase = "agent writing " + image.name + ":" + image.version;
  }
  ++totals_.deploys_started;
  note(m, "agent: deployment " + std::to_string(r->plan.deployment.id) + " " + image.name + ":" +
              image.version + ", " + std::to_string(r->payload.size()) + " chunks to fetch");
  r->write_start = Clock::now();
  progress(*r, "writing");
  step(r, 0, &Sim::agent_chunks);
}

void Sim::agent_chunks(std::shared_ptr<Run> r) {
  Machine& m = *r->m;
  const std::size_t total = r->payload.size();
  while (r->next < total) {
    if (!current(*r, "writing")) return;
    if (r->die_mid_write && r->next >= total / 2) {
      std::lock_guard lock(m.mu);
      ++m.faults_hit["die_mid_write"];
      m.phase = "agent died mid-write (hangs until reset)";
      note(m, "agent: died after " + std::to_string(r->next) + " of " + std::to_string(total) +
                  " chunks (--die-mid-write)");
      return;
    }
    const std::size_t i = r->payload[r->next];
    const auto& c = r->manifest.chunks[i];
    const std::uint64_t len = r->manifest.chunk_length(i);
    const auto fetch_start = Clock::now();
    std::string last;
    bool ok = false;
    std::size_t got = 0;
    // The agent's retry policy (agent/deploy.h DeployOptions: 8 retries, backoff from 200 ms
    // doubling, capped at 16x: about 16 s), so a kilnd restart mid-write is survived as the
    // real agent survives it.
    const kiln::agent::DeployOptions policy;
    for (int attempt = 0; attempt <= policy.retries && !ok; ++attempt) {
      if (attempt > 0) {
        std::this_thread::sleep_for(policy.backoff * (1 << std::min(attempt - 1, 4)));
        if (!current(*r, "chunk retry")) return;
      }
      auto& conn = *r->chunk_conns[static_cast<std::size_t>(attempt) % r->chunk_conns.size()];
      auto reply = conn.request("GET", r->chunks_path + c.sha256, r->chunk_token, {},
                                len + len / 64 + (64 << 10));
      if (!reply) {
        last = reply.error().message;
        continue;
      }
      if (reply->status != 200) {
        last = conn.base().url + " answered HTTP " + std::to_string(reply->status);
        continue;
      }
      auto kind = img::ChunkKind::kData;
      if (reply->content_type.rfind("application/zstd", 0) != 0 && reply->body.size() == len) {
        kind = img::ChunkKind::kRaw;
      }
      if (auto st = r->decoder->decode(kind, reply->body, c.sha256, len, r->buf.data()); !st) {
        last = st.error().message;
        continue;
      }
      got = reply->body.size();
      ok = true;
    }
    if (!ok) {
      return agent_fail(*r, "writing",
                        "chunk " + std::to_string(i) + " failed after " +
                            std::to_string(policy.retries + 1) + " attempts: " + last);
    }
    r->fetched += got;
    r->written += len;
    totals_.chunk_bytes += got;
    ++r->next;
    if (seconds_since(r->last_progress) >= 1.0) progress(*r, "writing");
    // Pacing: the deploy's fixed simulated time, and the slow link's rate.
    auto due = Clock::now();
    if (o_.deploy_time_ms > 0) {
      due = std::max(due, r->write_start + std::chrono::milliseconds(
                                               static_cast<std::int64_t>(o_.deploy_time_ms) *
                                               static_cast<std::int64_t>(r->next) /
                                               static_cast<std::int64_t>(total)));
    }
    if (m.slow_kbps > 0) {
      {
        std::lock_guard lock(m.mu);
        ++m.faults_hit["slow"];
      }
      due = std::max(due, fetch_start + std::chrono::milliseconds(
                                            static_cast<std::int64_t>(got) * 1000 /
                                            (static_cast<std::int64_t>(m.slow_kbps) * 1024)));
    }
    const auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(due - Clock::now()).count();
    if (wait > 2) return step(r, static_cast<int>(wait), &Sim::agent_chunks);
  }
  if (!current(*r, "writing")) return;
  if (o_.deploy_time_ms > 0 && total == 0) {
    // Nothing to fetch: the simulated time still passes once.
    const auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(
            r->write_start + std::chrono::milliseconds(o_.deploy_time_ms) - Clock::now())
            .count();
    if (wait > 2) return step(r, static_cast<int>(wait), &Sim::agent_finish);
  }
  agent_finish(r);
}

void Sim::agent_finish(std::shared_ptr<Run> r) {
  if (!current(*r, "result")) return;
  Machine& m = *r->m;
  const auto& plan = r->plan;
  DiskImage disk{plan.image.name, plan.image.version, plan.deployment.id, plan.instance_token,
                 plan.instance_url.empty() ? r->api->base().url : plan.instance_url};
  {
    std::lock_guard lock(m.mu);
    m.disk = disk;  // written to the end (the instance block too)
  }
  proto::AgentReport f;
  f.stage = "done";
  f.bytes_done = static_cast<std::int64_t>(r->manifest.size);
  f.bytes_total = static_cast<std::int64_t>(r->manifest.size);
  f.result = proto::DeploymentStatus::kSucceeded;
  f.detail = {{"fetched_bytes", r->fetched},
              {"written_bytes", r->written},
              {"instance_block", !plan.instance_token.empty()},
              {"simulated", true},
              {"timings_s", {{"total", seconds_since(r->started)}}}};
  proto::SuccessProof proof;
  proof.manifest_sha256 = sha256_hex(r->manifest_body);
  proof.image_bytes = static_cast<std::int64_t>(r->manifest.size);
  proof.written_bytes = static_cast<std::int64_t>(r->written);
  proof.zeroed_bytes = static_cast<std::int64_t>(r->zeroed);
  proof.unmapped_bytes = static_cast<std::int64_t>(r->unmapped);
  f.proof = proof;
  auto st = r->api->report(f);
  std::lock_guard lock(m.mu);
  if (!st) {
    m.last_error = "agent: the result was refused: " + st.error().message;
    ++totals_.errors;
    ++totals_.deploys_failed;
    m.phase = "agent: result refused";
    return;
  }
  m.written.push_back(plan.deployment.id);
  ++totals_.deploys_done;
  note(m, "agent: deployment " + std::to_string(plan.deployment.id) + " written in " +
              std::to_string(static_cast<int>(seconds_since(r->started) * 1000)) +
              " ms, after=" + r->after);
  if (r->after == "poweroff") {
    power_off(m, "agent after=poweroff");
  } else if (r->after == "kexec") {
    // Straight into the OS, without the firmware.
    ++m.gen;
    auto os = std::make_shared<Run>();
    os->m = &m;
    os->gen = m.gen;
    step(os, 0, &Sim::boot_disk);
  } else if (r->after == "reboot") {
    start_boot(m, "agent after=reboot");
  } else {
    m.phase = "agent done (after=" + r->after + ")";
  }
}

// --- control endpoint ------------------------------------------------------------------------

json Sim::state_json() const {
  json machines = json::array();
  std::map<std::string, long> sums;
  int on = 0;
  std::map<std::string, int> disks;
  for (const auto& mp : machines_) {
    const Machine& m = *mp;
    std::lock_guard lock(m.mu);
    json j = {
        {"index", m.index},
        {"name", m.name},
        {"mac", m.mac},
        {"bmc", "http://" + o_.listen_host + ":" + std::to_string(m.port)},
        {"power", m.on ? "On" : "Off"},
        {"override", {{"enabled", m.ov_enabled}, {"target", m.ov_target}, {"mode", m.ov_mode}}},
        {"phase", m.phase},
        {"disk", m.disk ? json(m.disk->image + ":" + m.disk->version) : json(nullptr)},
        {"disk_deployment", m.disk ? json(m.disk->deployment_id) : json(nullptr)},
        {"deployments_written", m.written},
        {"boots", m.counts.contains("boots") ? m.counts.at("boots") : 0},
        {"confirmations", m.counts.contains("confirmations") ? m.counts.at("confirmations") : 0},
        {"counts", m.counts},
        {"faults_hit", m.faults_hit},
        {"last_error", m.last_error.empty() ? json(nullptr) : json(m.last_error)}};
    machines.push_back(std::move(j));
    for (const auto& [k, v] : m.counts) sums[k] += v;
    for (const auto& [k, v] : m.faults_hit) sums["faults_hit." + k] += v;
    sums["deployments_written"] += static_cast<long>(m.written.size());
    on += m.on ? 1 : 0;
    ++disks[m.disk ? m.disk->image + ":" + m.disk->version : "(none)"];
  }
  return {{"machines", machines},
          {"totals",
           {{"machines", machines_.size()},
            {"on", on},
            {"disks", disks},
            {"counts", sums},
            {"chunk_bytes", totals_.chunk_bytes.load()},
            {"errors", totals_.errors.load()},
            {"uptime_s", seconds_since(t0_)}}}};
}

Response Sim::control(const Request& req) {
  const std::string target(req.target());
  if (target == "/state" && req.method() == http::verb::get) {
    return json_reply(http::status::ok, state_json());
  }
  if (target == "/quit" && req.method() == http::verb::post) {
    net::post(ioc_, [this] { stop("POST /quit"); });
    return json_reply(http::status::ok, {{"stopping", true}});
  }
  return json_reply(http::status::not_found, {{"error", "GET /state or POST /quit"}});
}

// --- setup -----------------------------------------------------------------------------------

Status Sim::register_machines() {
  const auto t = Clock::now();
  // Machines already there (a second run against the same kilnd): by MAC, from sim=1.
  std::map<std::string, std::int64_t> existing;
  {
    agent::HttpConnection conn(*kilnd_, std::chrono::seconds(30));
    std::string after;
    for (int page = 0; page < 10000; ++page) {
      auto r = conn.request(
          "GET",
          "/api/v1/machines?selector=sim%3D1&limit=500" + (after.empty() ? "" : "&after=" + after),
          o_.token);
      if (!r) return make_error(Errc::kUnavailable, "listing machines: " + r.error().message);
      if (r->status != 200) {
        return make_error(Errc::kInvalid, "listing machines: HTTP " + std::to_string(r->status) +
                                              " " + r->body.substr(0, 300));
      }
      const json j = json::parse(r->body, nullptr, false);
      if (j.is_discarded()) return make_error(Errc::kInvalid, "listing machines: not JSON");
      for (const auto& it : j.value("items", json::array())) {
        for (const auto& mac : it.value("macs", json::array())) {
          existing[mac.get<std::string>()] = it.value("id", std::int64_t{0});
        }
      }
      if (!j.contains("next_after") || j["next_after"].is_null()) break;
      after = std::to_string(j["next_after"].get<std::int64_t>());
    }
  }
  // A few connections in parallel: each takes every k-th machine.
  const int lanes = std::min<int>(4, static_cast<int>(machines_.size()));
  std::vector<std::thread> threads;
  std::mutex mu;
  std::string failure;
  std::atomic<int> created{0};
  for (int lane = 0; lane < lanes; ++lane) {
    threads.emplace_back([&, lane] {
      agent::HttpConnection conn(*kilnd_, std::chrono::seconds(30));
      auto call = [&](const std::string& method, const std::string& target,
                      const json& body) -> Result<agent::Reply> {
        Result<agent::Reply> r = make_error(Errc::kInternal, "not sent");
        for (int a = 0; a < 3; ++a) {  // one retry on a dropped keep-alive connection
          r = conn.request(method, target, o_.token, body.dump());
          if (r) break;
        }
        return r;
      };
      for (std::size_t i = static_cast<std::size_t>(lane); i < machines_.size();
           i += static_cast<std::size_t>(lanes)) {
        {
          std::lock_guard lock(mu);
          if (!failure.empty()) return;
        }
        Machine& m = *machines_[i];
        std::int64_t id = 0;
        if (auto it = existing.find(m.mac); it != existing.end()) {
          id = it->second;
        } else {
          auto r = call("POST", "/api/v1/machines",
                        {{"mac", m.mac},
                         {"name", m.name},
                         {"labels", {{"rack", machine_rack(m.index, o_.racks)}, {"sim", "1"}}}});
          if (!r || r->status != 201) {
            std::lock_guard lock(mu);
            failure = "creating " + m.name + ": " +
                      (r ? "HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 300)
                         : r.error().message);
            return;
          }
          const json j = json::parse(r->body, nullptr, false);
          id = j.is_object() ? j.value("id", std::int64_t{0}) : 0;
          ++created;
        }
        auto r = call("PUT", "/api/v1/machines/" + std::to_string(id) + "/bmc",
                      {{"driver", "redfish"},
                       {"address", "http://" + o_.listen_host + ":" + std::to_string(m.port)},
                       {"insecure", true},
                       {"username", o_.bmc_user},
                       {"password", o_.bmc_password}});
        if (!r || r->status != 200) {
          std::lock_guard lock(mu);
          failure = "setting " + m.name + "'s BMC: " +
                    (r ? "HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 300)
                       : r.error().message);
          return;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  if (!failure.empty()) return make_error(Errc::kInvalid, "--register: " + failure);
  std::fprintf(
      stderr, "fleet_sim: event=sim.registered machines=%zu created=%d existing=%zu took_s=%.2f\n",
      machines_.size(), created.load(), machines_.size() - created.load(), seconds_since(t));
  return ok_status();
}

void Sim::note(const Machine& m, const std::string& text) {
  if (m.index >= o_.verbose_machines) return;
  std::lock_guard lock(log_mu_);
  std::fprintf(stderr, "fleet_sim: %.3f %s %s\n", seconds_since(t0_), m.name.c_str(), text.c_str());
}

void Sim::error(Machine& m, const std::string& text) {
  {
    std::lock_guard lock(m.mu);  // never called with m.mu held
    m.last_error = text;
  }
  ++totals_.errors;
  // Bounded: every error of a verbose machine, the first 100 of the others, then only counts.
  if (m.index < o_.verbose_machines || error_lines_.fetch_add(1) < 100) {
    std::lock_guard lock(log_mu_);
    std::fprintf(stderr, "fleet_sim: %.3f %s ERROR %s\n", seconds_since(t0_), m.name.c_str(),
                 text.c_str());
  }
}

void Sim::summary(bool force) {
  char line[512];
  std::snprintf(line, sizeof line,
                "boots=%d scripts=%d deploys_started=%d written=%d failed=%d agents_killed=%d "
                "confirmations=%d errors=%d chunk_MiB=%.1f",
                totals_.boots.load(), totals_.scripts.load(), totals_.deploys_started.load(),
                totals_.deploys_done.load(), totals_.deploys_failed.load(),
                totals_.agents_killed.load(), totals_.confirmations.load(), totals_.errors.load(),
                static_cast<double>(totals_.chunk_bytes.load()) / 1048576.0);
  if (!force && line == last_summary_) return;
  last_summary_ = line;
  std::lock_guard lock(log_mu_);
  std::fprintf(stderr, "fleet_sim: %.3f event=sim.summary %s\n", seconds_since(t0_), line);
}

void Sim::stop(const std::string& why) {
  if (stopping_.exchange(true)) return;
  std::fprintf(stderr, "fleet_sim: event=sim.stopping why=\"%s\"\n", why.c_str());
  summary(true);
  beast::error_code ec;
  for (auto& m : machines_) {
    if (m->acceptor) m->acceptor->close(ec);
  }
  if (control_) control_->close(ec);
  ioc_.stop();
}

int Sim::run() {
  // 1,000 listeners and their connections need more descriptors than the usual soft limit.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  auto url = agent::parse_agent_url(o_.kilnd);
  if (!url) {
    std::fprintf(stderr, "fleet_sim: --kilnd %s: %s\n", o_.kilnd.c_str(),
                 url.error().message.c_str());
    return 2;
  }
  kilnd_ = *url;
  basic_auth_ = "Basic " + base64_encode(o_.bmc_user + ":" + o_.bmc_password);
  for (int i = 0; i < o_.machines; ++i) {
    auto m = std::make_unique<Machine>();
    m->index = i;
    m->name = machine_name(i);
    m->mac = machine_mac(i);
    m->mac_dash = m->mac;
    std::replace(m->mac_dash.begin(), m->mac_dash.end(), ':', '-');
    const auto u = static_cast<std::size_t>(i);
    m->bmc_timeout = !o_.bmc_timeout.empty() && o_.bmc_timeout[u];
    m->die_mid_write_left =
        !o_.die_mid_write.empty() && o_.die_mid_write[u] ? o_.die_mid_write_times : 0;
    m->slow_kbps = !o_.slow.empty() && o_.slow[u] ? o_.slow_kbps : 0;
    m->acceptor.emplace(ioc_);
    const int want = o_.bmc_base_port > 0 ? o_.bmc_base_port + i : 0;
    if (want > 65535) {
      std::fprintf(stderr, "fleet_sim: --bmc-base %d + %d machines passes port 65535\n",
                   o_.bmc_base_port, o_.machines);
      return 2;
    }
    if (auto st = listen(*m->acceptor, static_cast<std::uint16_t>(want), m->port); !st) {
      std::fprintf(stderr, "fleet_sim: %s's BMC: %s\n", m->name.c_str(),
                   st.error().message.c_str());
      return 2;
    }
    Machine* raw = m.get();
    accept(*m->acceptor, [this, raw](const Request& req) { return redfish(*raw, req); });
    machines_.push_back(std::move(m));
  }
  control_.emplace(ioc_);
  std::uint16_t control_port = 0;
  if (auto st = listen(*control_, static_cast<std::uint16_t>(o_.control_port), control_port); !st) {
    std::fprintf(stderr, "fleet_sim: --control: %s\n", st.error().message.c_str());
    return 2;
  }
  accept(*control_, [this](const Request& req) { return control(req); });

  net::signal_set signals(ioc_, SIGTERM, SIGINT);
  signals.async_wait([this](beast::error_code ec, int sig) {
    if (!ec) stop(sig == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  net::steady_timer deadline(ioc_, std::chrono::seconds(o_.max_seconds));
  deadline.async_wait([this](beast::error_code ec) {
    if (!ec) stop("--max-seconds " + std::to_string(o_.max_seconds));
  });
  std::function<void()> tick;
  net::steady_timer ticker(ioc_);
  tick = [&] {
    ticker.expires_after(std::chrono::seconds(5));
    ticker.async_wait([&](beast::error_code ec) {
      if (ec || stopping_) return;
      summary(false);
      tick();
    });
  };
  tick();

  std::vector<std::thread> io;
  for (int t = 0; t < std::max(1, o_.io_threads); ++t) io.emplace_back([this] { ioc_.run(); });
  std::fprintf(stderr,
               "fleet_sim: event=sim.listening machines=%d bmcs=%s:%u.. control=http://%s:%u "
               "kilnd=%s workers=%d io_threads=%d\n",
               o_.machines, o_.listen_host.c_str(),
               machines_.empty() ? 0u : unsigned(machines_.front()->port), o_.listen_host.c_str(),
               unsigned(control_port), o_.kilnd.c_str(), o_.workers, o_.io_threads);
  int rc = 0;
  if (o_.register_machines) {
    if (auto st = register_machines(); !st) {
      std::fprintf(stderr, "fleet_sim: %s\n", st.error().message.c_str());
      rc = 1;
      net::post(ioc_, [this] { stop("registration failed"); });
    }
  }
  if (rc == 0 && !o_.ready_file.empty()) {
    const std::string tmp = o_.ready_file + ".tmp";
    {
      std::ofstream f(tmp);
      f << "http://" << o_.listen_host << ":" << control_port << "\n";
    }
    std::rename(tmp.c_str(), o_.ready_file.c_str());
  }
  std::printf("http://%s:%u\n", o_.listen_host.c_str(), unsigned(control_port));
  std::fflush(stdout);
  for (auto& t : io) t.join();
  std::fflush(stderr);
  // Boot paths may sit in a blocking HTTP call (up to its 30 s timeout): not waited for.
  std::_Exit(rc);
}

}  // namespace

}  // namespace kiln::fleet

int main(int argc, char** argv) {
  using namespace kiln::fleet;
  Options o;
  CLI::App app{"fleet_sim: N simulated machines (Redfish BMC + boot path) against a real kilnd"};
  std::vector<std::string> never;
  std::string bmc_timeout, die, slow;
  app.add_option("--machines,-n", o.machines, "how many machines")->check(CLI::Range(1, 65535));
  app.add_option("--kilnd", o.kilnd, "kilnd's base URL (scripts, registration)")->required();
  app.add_flag("--register", o.register_machines,
               "create the machines in kilnd (sim-NNNN, rack=rNN, sim=1) and set their BMCs");
  app.add_option("--token", o.token, "admin API token for --register (or $KILN_TOKEN)");
  app.add_option("--racks", o.racks, "rack labels r00.. (machine i in rack i % racks)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--listen-host", o.listen_host, "address of every listener");
  app.add_option("--bmc-base", o.bmc_base_port, "machine i's BMC on BASE+i (0: ephemeral ports)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--bmc-user", o.bmc_user, "the BMCs' user");
  app.add_option("--bmc-password", o.bmc_password, "the BMCs' password");
  app.add_option("--control", o.control_port, "control endpoint port (0: ephemeral)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--ready-file", o.ready_file, "written with the control URL once ready");
  app.add_option("--workers", o.workers, "boot-path worker threads")->check(CLI::Range(1, 1024));
  app.add_option("--io-threads", o.io_threads, "threads of the HTTP listeners")
      ->check(CLI::Range(1, 64));
  app.add_option("--boot-delay", o.boot_delay_ms, "ms from a power-on to the firmware's action")
      ->check(CLI::Range(0, 600000));
  app.add_option("--deploy-time", o.deploy_time_ms, "ms a deploy takes at least (paced chunks)")
      ->check(CLI::Range(0, 3600000));
  app.add_option("--max-seconds", o.max_seconds, "stop after this long")
      ->check(CLI::Range(1, 86400));
  app.add_option("--verbose-machines", o.verbose_machines,
                 "per-step log lines for machines below this index");
  app.add_option("--never-boots", never, "VERSION or IMAGE:VERSION that never confirms its boot");
  app.add_option("--bmc-timeout", bmc_timeout, "SET: BMCs that accept and never answer");
  app.add_option("--die-mid-write", die, "SET[:N]: the agent dies after half the chunks, N times");
  app.add_option("--slow", slow, "SET:KBPS: chunk fetches throttled to KBPS KiB/s");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto bad = [](const std::string& flag, const kiln::Error& e) {
    std::fprintf(stderr, "fleet_sim: %s: %s\n", flag.c_str(), e.message.c_str());
    return 2;
  };
  o.never_boots.insert(never.begin(), never.end());
  if (!bmc_timeout.empty()) {
    auto s = parse_machine_set(bmc_timeout, o.machines);
    if (!s) return bad("--bmc-timeout", s.error());
    o.bmc_timeout = std::move(*s);
  }
  if (!die.empty()) {
    auto s = parse_set_with_count(die, o.machines, 1);
    if (!s) return bad("--die-mid-write", s.error());
    o.die_mid_write = std::move(s->set);
    o.die_mid_write_times = s->n;
  }
  if (!slow.empty()) {
    auto s = parse_set_with_count(slow, o.machines, -1);
    if (!s) return bad("--slow", s.error());
    o.slow = std::move(s->set);
    o.slow_kbps = s->n;
  }
  if (o.token.empty()) {
    if (const char* t = std::getenv("KILN_TOKEN")) o.token = t;
  }
  if (o.register_machines && o.token.empty()) {
    std::fprintf(stderr, "fleet_sim: --register needs --token (or $KILN_TOKEN)\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  return Sim(std::move(o)).run();
}
