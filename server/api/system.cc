// /healthz and /metrics.
#include "api/routes.h"

namespace kiln::api {
namespace {

namespace bhttp = boost::beast::http;

std::optional<Response> healthz(Services& s, Ctx&) {
  return json_response(bhttp::status::ok, {{"status", "ok"},
                                           {"version", s.options.version},
                                           {"schema_version", s.store.schema_version()}});
}

std::optional<Response> metrics(Services& s, Ctx&) {
  Response res{bhttp::status::ok, 11};
  res.set(bhttp::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.body() = s.metrics.render();
  return res;
}

constexpr RouteSpec kRoutes[] = {
    {bhttp::verb::get, "/healthz", Access::kPublic, healthz},
    {bhttp::verb::get, "/metrics", Access::kMetrics, metrics},
};

}  // namespace

std::span<const RouteSpec> system_routes() { return kRoutes; }

}  // namespace kiln::api
