#include "api/routes.h"

namespace kiln::api {

const Router<Handler>& route_table() {
  static const Router<Handler> table = [] {
    Router<Handler> r;
    for (auto part :
         {system_routes(), machine_routes(), image_routes(), deployment_routes(), event_routes(),
          token_routes(), agent_routes(), power_routes(), config_routes(), rollout_routes()}) {
      for (const auto& spec : part)
        r.add(spec.method, std::string(spec.pattern), spec.access, spec.fn);
    }
    return r;
  }();
  return table;
}

std::vector<RouteInfo> route_infos() { return route_table().infos(); }

}  // namespace kiln::api
