// Deployments: get one; mint an agent token for one (manual or lab use).
#include <spdlog/spdlog.h>

#include "api/routes.h"
#include "core/time.h"

namespace kiln::api {
namespace {

namespace bhttp = boost::beast::http;

std::optional<Response> get(Services& s, Ctx& c) {
  return json_response(
      bhttp::status::ok,
      to_json(take(s.store.get_deployment(parse_int(c.param("id"), "deployment id")))));
}

std::optional<Response> agent_token(Services& s, Ctx& c) {
  auto id = parse_int(c.param("id"), "deployment id");
  const auto expires = s.clock.now_ms() + s.options.agent_token_ttl.count();
  auto token = take(s.store.mint_agent_token(id, expires));
  s.log.info("event=api.agent_token_minted deployment={} by={}", id, c.who);
  return json_response(
      bhttp::status::created,
      {{"deployment_id", id}, {"token", token}, {"expires_at", format_rfc3339_ms(expires)}});
}

using V = bhttp::verb;
constexpr RouteSpec kRoutes[] = {
    {V::get, "/api/v1/deployments/{id}", Access::kRead, get},
    {V::post, "/api/v1/deployments/{id}/agent-token", Access::kAdmin, agent_token},
};

}  // namespace

std::span<const RouteSpec> deployment_routes() { return kRoutes; }

}  // namespace kiln::api
