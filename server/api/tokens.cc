// API tokens: list, create (the clear token is shown once), revoke; whoami (the caller's own
// token name and scope, so a client such as the web dashboard can render a read-only view).
#include "api/routes.h"

namespace kiln::api {
namespace {

namespace bhttp = boost::beast::http;

std::optional<Response> list(Services& s, Ctx&) {
  json items = json::array();
  for (const auto& t : s.store.list_tokens()) items.push_back(to_json(t));
  return json_response(bhttp::status::ok, {{"items", std::move(items)}});
}

std::optional<Response> create(Services& s, Ctx& c) {
  auto b = c.body({"name", "scope"});
  auto scope = proto::parse_scope(field<std::string>(b, "scope").value_or("read"));
  if (!scope) fail(Errc::kInvalid, "scope must be 'read' or 'admin'");
  auto [t, clear] = take(s.store.create_token(required<std::string>(b, "name"), *scope));
  json j = to_json(t);
  j["token"] = clear;
  return json_response(bhttp::status::created, j);
}

std::optional<Response> revoke(Services& s, Ctx& c) {
  check(s.store.revoke_token(parse_int(c.param("id"), "token id"), c.who));
  return no_content();
}

std::optional<Response> whoami(Services& s, Ctx& c) {
  return json_response(
      bhttp::status::ok,
      {{"name", c.who},
       {"scope", proto::to_string(c.admin ? proto::Scope::kAdmin : proto::Scope::kRead)},
       {"auth", s.options.auth_required}});
}

using V = bhttp::verb;
constexpr RouteSpec kRoutes[] = {
    {V::get, "/api/v1/tokens", Access::kAdmin, list},
    {V::post, "/api/v1/tokens", Access::kAdmin, create},
    {V::delete_, "/api/v1/tokens/{id}", Access::kAdmin, revoke},
    {V::get, "/api/v1/whoami", Access::kRead, whoami},
};

}  // namespace

std::span<const RouteSpec> token_routes() { return kRoutes; }

}  // namespace kiln::api
