#include "api/context.h"

#include <spdlog/spdlog.h>

#include <boost/beast/core/string.hpp>
#include <charconv>

#include "core/hex.h"
#include "core/json_writer.h"
#include "core/mac.h"

namespace kiln::api {

namespace bhttp = boost::beast::http;

void fail(Errc code, std::string message) { throw ApiError{{code, std::move(message)}}; }

void check(const Status& s) {
  if (!s) throw ApiError{s.error()};
}

std::int64_t parse_int(std::string_view s, std::string_view what) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    fail(Errc::kBadRequest,
         std::string(what) + " must be an integer, got '" + std::string(s) + "'");
  }
  return v;
}

bool parse_bool(std::string_view s, std::string_view what) {
  if (s == "true" || s == "1" || s.empty()) return true;
  if (s == "false" || s == "0") return false;
  fail(Errc::kBadRequest, std::string(what) + " must be true or false");
}

bhttp::status status_for(Errc e) {
  switch (e) {
    case Errc::kBadRequest:
      return bhttp::status::bad_request;
    case Errc::kInvalid:
      return bhttp::status::unprocessable_entity;
    case Errc::kNotFound:
      return bhttp::status::not_found;
    case Errc::kConflict:
      return bhttp::status::conflict;
    case Errc::kUnauthorized:
      return bhttp::status::unauthorized;
    case Errc::kForbidden:
      return bhttp::status::forbidden;
    case Errc::kTooLarge:
      return bhttp::status::payload_too_large;
    case Errc::kUnavailable:
      return bhttp::status::service_unavailable;
    case Errc::kInternal:
      return bhttp::status::internal_server_error;
  }
  return bhttp::status::internal_server_error;
}

Response json_response(bhttp::status st, const json& body) {
  Response res{st, 11};
  res.set(bhttp::field::content_type, "application/json");
  res.set(bhttp::field::cache_control, "no-store");
  // User input echoed in messages may be invalid UTF-8: replace, never throw.
  res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  res.body().push_back('\n');
  return res;
}

Response raw_json_response(bhttp::status st, std::string body) {
  Response res{st, 11};
  res.set(bhttp::field::content_type, "application/json");
  res.set(bhttp::field::cache_control, "no-store");
  res.body() = std::move(body);
  res.body().push_back('\n');
  return res;
}

Error db_error(const store::DbError& e) {
  if (e.is_busy()) return {Errc::kUnavailable, "database busy, retry"};
  // Lost mid-request (PostgreSQL restarted, the network dropped): if it was lost at the
  // commit, the change may have been made, so this is not an invitation to repeat it blindly.
  if (e.is_transient()) {
    return {Errc::kInternal,
            "database connection lost: the change may or may not have been made; check before "
            "retrying"};
  }
  return {Errc::kInternal, "database error"};
}

Response error_response(const Error& e) {
  auto res = json_response(status_for(e.code),
                           {{"error", {{"code", errc_name(e.code)}, {"message", e.message}}}});
  if (e.code == Errc::kUnauthorized) {
    res.set(bhttp::field::www_authenticate, "Bearer realm=\"kiln\"");
  }
  return res;
}

Response no_content() { return Response{bhttp::status::no_content, 11}; }

Response machine_response(bhttp::status st, const proto::Machine& m) {
  std::string body;
  proto::append_json(body, m);
  return raw_json_response(st, std::move(body));
}

std::optional<std::string> Ctx::q(const std::string& k) const {
  auto it = query.find(k);
  return it == query.end() ? std::nullopt : std::optional(it->second);
}

std::string peer_of(const Request& req) {
  std::string peer(req[kPeerHeader]);
  if (peer.rfind("::ffff:", 0) == 0 && peer.find('.') != std::string::npos) peer.erase(0, 7);
  return peer;
}

std::string bearer_token(const Request& req) {
  auto auth = req[bhttp::field::authorization];
  std::string token;
  if (auth.size() > 7 && boost::beast::iequals(auth.substr(0, 7), "Bearer ")) {
    token = std::string(auth.substr(7));
    while (!token.empty() && token.front() == ' ') token.erase(0, 1);
  }
  return token;
}

json Ctx::body(std::initializer_list<std::string_view> allowed) const {
  const auto type = req[bhttp::field::content_type];
  std::string mime = ascii_lower(type.substr(0, type.find(';')));
  while (!mime.empty() && (mime.back() == ' ' || mime.back() == '\t')) mime.pop_back();
  const bool patch = req.method() == bhttp::verb::patch;
  if (mime != "application/json" && !(patch && mime == "application/merge-patch+json")) {
    throw UnsupportedMediaType{};
  }
  if (json_nesting_depth(req.body()) > kMaxJsonDepth) {
    fail(Errc::kBadRequest, "request body nests deeper than " + std::to_string(kMaxJsonDepth));
  }
  json j = json::parse(req.body(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(Errc::kBadRequest, "request body is not valid JSON");
  if (!j.is_object()) fail(Errc::kBadRequest, "request body must be a JSON object");
  for (const auto& [k, _] : j.items()) {
    bool ok = false;
    for (auto a : allowed) ok = ok || k == a;
    if (!ok) fail(Errc::kBadRequest, "unknown field '" + k + "'");
  }
  return j;
}

std::string normalize_mac_or_fail(const std::string& s) {
  auto m = normalize_mac(s);
  if (!m) fail(Errc::kInvalid, "'" + s + "' is not a MAC address");
  return *m;
}

std::map<std::string, std::string> labels_from(const json& j) {
  std::map<std::string, std::string> out;
  if (j.is_null()) return out;
  if (!j.is_object()) fail(Errc::kBadRequest, "labels must be an object of strings");
  for (const auto& [k, v] : j.items()) {
    if (!v.is_string()) fail(Errc::kBadRequest, "label '" + k + "' must be a string");
    check(proto::validate_label_key(k));
    check(proto::validate_label_value(v.get<std::string>()));
    out[k] = v.get<std::string>();
  }
  return out;
}

proto::Machine Services::machine(const std::string& id_or_mac) const {
  if (auto mac = normalize_mac(id_or_mac)) return take(store.find_machine_by_mac(*mac));
  const bool digits = !id_or_mac.empty() && id_or_mac.size() <= 18 &&
                      id_or_mac.find_first_not_of("0123456789") == std::string::npos;
  if (!digits) {
    fail(Errc::kNotFound, "machine '" + id_or_mac + "' not found (expected an id or a MAC)");
  }
  return take(store.get_machine(parse_int(id_or_mac, "machine id")));
}

void Services::authenticate(Ctx& c, Access access) const {
  if (access == Access::kMetrics) access = options.metrics_public ? Access::kPublic : Access::kRead;
  if (access == Access::kPublic) return;
  const std::string token = bearer_token(c.req);
  if (access == Access::kAgent) {
    if (token.empty()) fail(Errc::kUnauthorized, "missing agent session token");
    c.agent_deployment = take(store.authenticate_agent(token, c.peer));
    c.who = "agent:deployment/" + std::to_string(c.agent_deployment->id);
    return;
  }
  if (!options.auth_required) {
    c.admin = true;
    return;
  }
  if (token.empty()) fail(Errc::kUnauthorized, "missing bearer token (Authorization: Bearer ...)");
  auto t = store.authenticate(token);
  if (!t) fail(Errc::kUnauthorized, "unknown or revoked token");
  c.who = t->name;
  c.admin = t->scope == proto::Scope::kAdmin;
  if (access == Access::kAdmin && t->scope != proto::Scope::kAdmin) {
    fail(Errc::kForbidden, "token '" + t->name + "' has scope 'read'; this call needs 'admin'");
  }
}

}  // namespace kiln::api
