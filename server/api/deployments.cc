// Deployments: get one; reissue the boot ticket of one (manual or lab use: an agent run by
// hand, or a deployment whose agent must move to another address).
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

std::optional<Response> agent_ticket(Services& s, Ctx& c) {
  auto id = parse_int(c.param("id"), "deployment id");
  const auto expires = s.clock.now_ms() + s.options.agent_token_ttl.count();
  auto ticket = take(s.store.reissue_agent_ticket(id, expires, c.who));
  s.log.info("event=api.agent_ticket_reissued deployment={} by={}", id, c.who);
  return json_response(
      bhttp::status::created,
      {{"deployment_id", id}, {"ticket", ticket}, {"expires_at", format_rfc3339_ms(expires)}});
}

using V = bhttp::verb;
constexpr RouteSpec kRoutes[] = {
    {V::get, "/api/v1/deployments/{id}", Access::kRead, get},
    {V::post, "/api/v1/deployments/{id}/agent-ticket", Access::kAdmin, agent_ticket},
};

}  // namespace

std::span<const RouteSpec> deployment_routes() { return kRoutes; }

}  // namespace kiln::api
