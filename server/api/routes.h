// api/routes.h — the static route table of the REST API v1: one function per resource file
// returns its rows; `route_table` joins them into the router that Api::handle dispatches on.
// The table needs no running server (`kilnd routes` and the spec test read it directly).
// Adding a route: add a row (and its handler) to the resource's file, then to
// proto/openapi.yaml; tests/integration/openapi_routes_test.sh fails until both agree.
#pragma once

#include <span>
#include <vector>

#include "api/context.h"
#include "api/router.h"

namespace kiln::api {

std::span<const RouteSpec> system_routes();      // system.cc: /healthz, /metrics
std::span<const RouteSpec> machine_routes();     // machines.cc: machines, assignments
std::span<const RouteSpec> image_routes();       // images.cc: images, versions, uploads
std::span<const RouteSpec> deployment_routes();  // deployments.cc
std::span<const RouteSpec> event_routes();       // events.cc: the long-polled event stream
std::span<const RouteSpec> token_routes();       // tokens.cc: API tokens
std::span<const RouteSpec> agent_routes();       // agent.cc: discovery and the agent protocol
std::span<const RouteSpec> power_routes();       // power.cc: BMCs, power, boot confirmations
std::span<const RouteSpec> config_routes();      // configs.cc: configuration, metadata service
std::span<const RouteSpec> rollout_routes();     // rollouts.cc: rollouts and their actions

// power.cc: the deployed OS's boot confirmation with its instance credential (`via` names the
// route in the log), answered with the deployment; 401/409 otherwise.
Response confirm_boot_response(Services& s, Ctx& c, const std::string& token, std::string_view via);

// configs.cc: the configuration snapshot an assignment takes (AssignRequest::config), and the
// config drive of a deployment's plan (nullopt: none), whose vendor-data confirms the boot at
// <phone_home_base>/api/v1/instance/phone-home/<instance_token> ("" base: no phone_home).
store::ConfigSnapshotter config_snapshotter(Services& s);
// A rollout's configuration layer (a configuration document, validated like a machine's),
// sealed; 400/422 for a bad one.
store::ConfigRecord seal_rollout_config(Services& s, const json& doc);
std::optional<json> config_drive_plan(Services& s, const proto::Deployment& d,
                                      const std::string& phone_home_base,
                                      const std::string& instance_token);

// Every route, built once; immutable and thread-safe afterwards.
const Router<Handler>& route_table();
// Every route served (method, pattern, access), in table order.
std::vector<RouteInfo> route_infos();

}  // namespace kiln::api
