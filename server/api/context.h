// api/context.h — what every route handler shares: the request context (path parameters,
// query, caller, body parsing with an allow-list of fields), the services handlers call, the
// error vocabulary and the JSON responses.
//
// Handlers report an expected failure by throwing `ApiError` (through `fail`, `take`, `check`);
// the one catch per request in Api::handle turns it into `{"error":{"code","message"}}`.
// Nothing else is thrown on purpose. Thread-safety: a Ctx belongs to one request; Services is
// shared by every request and is thread-safe (its parts are).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "api/event_hub.h"
#include "api/mirrors.h"
#include "api/router.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "core/result.h"
#include "proto/resources.h"
#include "store/db.h"
#include "store/store.h"

namespace spdlog {
class logger;
}

namespace kiln::images {
class ImageService;
}
namespace kiln::provision {
class PowerService;
class RolloutService;
}  // namespace kiln::provision
namespace kiln {
class SecretBox;
}

namespace kiln::api {

using json = nlohmann::json;

struct ApiOptions {
  bool auth_required = true;   // false: every caller is an anonymous admin (development only)
  bool metrics_public = true;  // /metrics without a token
  std::chrono::milliseconds max_wait{60'000};  // longest long-poll on /api/v1/events
  int default_page = 1000;
  int max_page = 10'000;
  std::chrono::milliseconds agent_token_ttl{6 * 3600 * 1000};  // tickets and agent sessions
  // A deployment whose agent opened this many sessions (booted this often) without a result
  // fails at the next one (then the boot service's bounded retries take over).
  int max_agent_boots = 5;
  // cloud_init.max_user_data_bytes: user-data and vendor-data, each (docs/config.md).
  std::size_t max_user_data_bytes = 64 * 1024;
  // Chunks (/v1/chunks/) only for agent sessions: the plan tells the agent to send its token.
  bool chunks_require_token = false;
  // boot.bind_to_lease: an agent session is opened only from an address kilnd's DHCP leased
  // (bound) to one of the machine's MACs, when it holds any; boot.require_lease: also refused
  // when it holds none (authoritative DHCP only: proxy mode grants no leases).
  bool bind_to_lease = true;
  bool require_lease = false;
  // The discovery inventory's other NICs join the machine (boot.discovery open). Under
  // approve they are only recorded in the inventory: an unauthenticated report must not attach
  // a MAC an operator did not see (the attacker's own NIC, to act as that machine later).
  bool attach_reported_macs = true;
  std::string version = "0.1.0";
  // Where agents fetch chunks: an absolute "http://host:port/v1/chunks/" when the boot path
  // goes over a TLS listener but chunks stay on plain HTTP (cacheable); "" = "/v1/chunks/",
  // relative to the server the agent talks to.
  std::string chunks_url;
  // cluster.peers: the other kilnd instances, put in every plan as the agent's fallback
  // servers (its session is valid on each: they share the database).
  std::vector<std::string> servers;
  // images.mirrors: chunk mirrors by the agent's subnet, put in its plan (api/mirrors.h).
  std::vector<MirrorRule> mirrors;
  // The URL deployed OSes confirm their boot at (POST <url>/api/v1/instance/booted), given to
  // the agent with each plan; "" = the agent's own server URL.
  std::string instance_url;
};

// The header under which the HTTP server hands over a body it streamed to a file
// (http::kUploadFileHeader); only the server sets it.
inline constexpr std::string_view kUploadFileHeader = "Kiln-Upload-File";
// The header under which the HTTP server hands over the client's IP address
// (http::kPeerHeader); the server overwrites any a client sent.
inline constexpr std::string_view kPeerHeader = "Kiln-Peer";

// An agent's failure reason is stored in the machine, the deployment and an event: longer ones
// are cut to this many bytes (at a UTF-8 boundary, marked with "...").
inline constexpr std::size_t kMaxReasonBytes = 1024;

// Bodies are checked for depth (json_nesting_depth) before parsing: copying or dumping a
// deeply nested document recurses, and a body of a million '[' must cost a 400, not the stack.
inline constexpr int kMaxJsonDepth = 32;
// An agent's free-form progress detail (rates, ETA, stage timings) is small; bounding it bounds
// every event and so every page of /api/v1/events.
inline constexpr std::size_t kMaxDetailBytes = 4096;

// --- errors ----------------------------------------------------------------------------------

struct ApiError {
  Error error;
};
struct UnsupportedMediaType {};

[[noreturn]] void fail(Errc code, std::string message);
template <typename T>
T take(Result<T>&& r) {
  if (!r) throw ApiError{r.error()};
  return std::move(r).value();
}
void check(const Status& s);

// Query/path scalars; a malformed one is a 400 naming `what`.
std::int64_t parse_int(std::string_view s, std::string_view what);
bool parse_bool(std::string_view s, std::string_view what);

// --- responses -------------------------------------------------------------------------------

boost::beast::http::status status_for(Errc e);
Response json_response(boost::beast::http::status st, const json& body);
Response raw_json_response(boost::beast::http::status st, std::string body);  // body is JSON
Response error_response(const Error& e);
// What a client is told of a database failure: 503 "retry" when a lock wait timed out (nothing
// was changed); 500 otherwise, saying so when the connection to PostgreSQL was lost (it is
// re-established for the next request, but a change caught at its commit may have been made).
Error db_error(const store::DbError& e);
Response no_content();
Response machine_response(boost::beast::http::status st, const proto::Machine& m);

// --- the request context ---------------------------------------------------------------------

// The client's IP address the HTTP server stamped under kPeerHeader; an IPv4-mapped IPv6
// address ("::ffff:10.0.0.5") as plain IPv4. "" when absent (tests calling the API directly).
std::string peer_of(const Request& req);
// The token of an "Authorization: Bearer ..." header; "" when there is none.
std::string bearer_token(const Request& req);

struct Ctx {
  Request req;
  Params params;
  std::map<std::string, std::string> query;
  std::string who = "anonymous";
  bool admin = false;  // the caller holds an admin token (or authentication is off)
  std::optional<proto::Deployment> agent_deployment;  // set on Access::kAgent routes
  std::string peer;  // the client's IP address (IPv4-mapped IPv6 shown as IPv4); "" if unknown
  Respond respond;   // for handlers that answer later (return nullopt)

  const std::string& param(std::string_view name) const { return params.find(name)->second; }
  std::optional<std::string> q(const std::string& k) const;
  // The request body as a JSON object with allowed keys only (typos are errors, not ignored).
  // Throws UnsupportedMediaType unless Content-Type is application/json (or merge-patch+json
  // on PATCH).
  json body(std::initializer_list<std::string_view> allowed) const;
};

// A body field of type T: nullopt when absent or null; a 400 naming `key` for a wrong type.
template <typename T>
std::optional<T> field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (!it->is_number_integer()) {
      fail(Errc::kBadRequest, std::string("field '") + key + "' must be an integer");
    }
  }
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) {
      fail(Errc::kBadRequest, std::string("field '") + key + "' must be a boolean");
    }
  }
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail(Errc::kBadRequest, std::string("field '") + key + "' has the wrong type");
  }
}

template <typename T>
T required(const json& j, const char* key) {
  auto v = field<T>(j, key);
  if (!v) fail(Errc::kBadRequest, std::string("field '") + key + "' is required");
  return std::move(*v);
}

std::string normalize_mac_or_fail(const std::string& s);
// A body's "labels" object, each key and value validated.
std::map<std::string, std::string> labels_from(const json& j);

// --- services --------------------------------------------------------------------------------

// What handlers call. Owned by Api; outlives every request.
struct Services {
  store::Store& store;
  Metrics& metrics;
  const Clock& clock;
  const ApiOptions& options;
  EventHub& hub;
  spdlog::logger& log;
  images::ImageService* images = nullptr;         // null: this server stores no images
  provision::PowerService* power = nullptr;       // null: no BMC control (tests)
  const SecretBox* secrets = nullptr;             // seals BMC credentials; null: BMCs cannot be set
  provision::RolloutService* rollouts = nullptr;  // null: rollouts are recorded, not driven

  // A path's machine reference: anything that reads as a MAC (including 12 bare hex digits)
  // is a MAC; otherwise it must be a numeric id. 404 otherwise.
  proto::Machine machine(const std::string& id_or_mac) const;
  // Checks the caller's credentials for `access` and records who it is in `c`.
  void authenticate(Ctx& c, Access access) const;
};

// A route: a row of the static route table. `fn` answers (or returns nullopt after arranging
// to call c.respond later).
using Handler = std::optional<Response> (*)(Services& s, Ctx& c);

struct RouteSpec {
  boost::beast::http::verb method;
  std::string_view pattern;
  Access access;
  Handler fn;
};

}  // namespace kiln::api
