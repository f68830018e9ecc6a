// The agent protocol (proto/agent-protocol.md): discovery inventory (public, accepted once),
// and, with a deployment's agent token, the plan, its manifests, progress and the result.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "api/image_responses.h"
#include "api/routes.h"
#include "core/mac.h"
#include "images/image_service.h"

namespace kiln::api {
namespace {

namespace bhttp = boost::beast::http;

// The machine's other NICs identify it too, whichever it boots from next time.
std::vector<std::string> other_macs(const json& inv, const std::string& mac) {
  std::vector<std::string> others;
  auto nics = inv.find("nics");
  if (nics == inv.end() || !nics->is_array()) return others;
  for (const auto& nic : *nics) {
    if (!nic.is_object() || !nic.contains("mac") || !nic["mac"].is_string()) continue;
    auto n = normalize_mac(nic["mac"].get<std::string>());
    if (n && *n != mac && *n != "00:00:00:00:00:00" &&
        std::find(others.begin(), others.end(), *n) == others.end() && others.size() < 32) {
      others.push_back(*n);
    }
  }
  return others;
}

// Discovery: the agent booted on an unknown machine reports what it found. Not authenticated
// (the machine has no deployment yet): the store takes it once, only while the machine is
// `discovered` (registered by its first PXE boot).
std::optional<Response> inventory(Services& s, Ctx& c) {
  auto b = c.body({"mac", "inventory"});
  const auto mac = normalize_mac_or_fail(required<std::string>(b, "mac"));
  const json& inv = b.value("inventory", json(nullptr));
  if (!inv.is_object()) fail(Errc::kBadRequest, "field 'inventory' must be an object");
  if (inv.dump().size() > 64 * 1024) fail(Errc::kInvalid, "inventory larger than 64 KiB");
  auto m = take(s.store.record_inventory(mac, inv, other_macs(inv, mac)));
  s.log.info("event=machine.inventory machine={} mac={} state={}", m.id, mac,
             proto::to_string(m.state));
  return machine_response(bhttp::status::ok, m);
}

std::optional<Response> deployment(Services& s, Ctx& c) {
  const auto& d = *c.agent_deployment;
  auto image = s.store.get_image_version(d.to_version.name, d.to_version.version);
  json j = to_json(d);
  j["image"] = image ? to_json(*image) : json(nullptr);
  if (image && image->format == "kiln") {
    j["manifest_url"] = "/api/v1/agent/manifest";
    j["chunks_url"] = s.options.chunks_url.empty() ? "/v1/chunks/" : s.options.chunks_url;
    // What the disk held before, as a hint for local copies (the agent verifies them).
    j["previous_manifest_url"] = nullptr;
    if (d.from_version && s.images) {
      auto prev = s.store.get_image_version(d.from_version->name, d.from_version->version);
      if (prev && prev->format == "kiln" &&
          s.images->manifest(d.from_version->name, d.from_version->version)) {
        j["previous_manifest_url"] = "/api/v1/agent/previous-manifest";
      }
    }
  } else if (image) {
    j["manifest_url"] = nullptr;
    j["chunks_url"] = nullptr;
  }
  return json_response(bhttp::status::ok, j);
}

std::optional<Response> manifest(Services& s, Ctx& c) {
  const auto& d = *c.agent_deployment;
  return manifest_response(s, d.to_version.name, d.to_version.version);
}

std::optional<Response> previous_manifest(Services& s, Ctx& c) {
  const auto& d = *c.agent_deployment;
  if (!d.from_version) fail(Errc::kNotFound, "the machine held no known version before");
  return manifest_response(s, d.from_version->name, d.from_version->version);
}

// The report in a progress or result body; `detail` bounded (it lands in every event).
proto::AgentReport report_from(const json& b) {
  json fields = b;
  fields.erase("status");  // the result route checks it itself (only succeeded/failed)
  auto r = take(proto::agent_report_from_json(fields));
  if (r.detail.dump().size() > kMaxDetailBytes) {
    fail(Errc::kTooLarge, "detail larger than " + std::to_string(kMaxDetailBytes) + " bytes");
  }
  return r;
}

std::optional<Response> progress(Services& s, Ctx& c) {
  auto b = c.body({"stage", "bytes_done", "bytes_total", "detail"});
  auto rep = report_from(b);
  return json_response(bhttp::status::ok,
                       to_json(take(s.store.report_progress(c.agent_deployment->id, rep))));
}

std::optional<Response> result(Services& s, Ctx& c) {
  auto b = c.body({"status", "reason", "stage", "bytes_done", "bytes_total", "detail"});
  auto rep = report_from(b);
  auto st = proto::parse_deployment_status(required<std::string>(b, "status"));
  if (st != proto::DeploymentStatus::kSucceeded && st != proto::DeploymentStatus::kFailed) {
    fail(Errc::kInvalid, "status must be 'succeeded' or 'failed'");
  }
  rep.result = st;
  if (st == proto::DeploymentStatus::kFailed && rep.reason.empty()) {
    fail(Errc::kInvalid, "a failed result needs a reason");
  }
  auto d = take(s.store.report_progress(c.agent_deployment->id, rep));
  s.log.info("event=deployment.{} deployment={} machine={} reason=\"{}\"",
             proto::to_string(d.status), d.id, d.machine_id, d.status_reason);
  return json_response(bhttp::status::ok, to_json(d));
}

using V = bhttp::verb;
constexpr RouteSpec kRoutes[] = {
    {V::post, "/api/v1/agent/inventory", Access::kPublic, inventory},
    {V::get, "/api/v1/agent/deployment", Access::kAgent, deployment},
    {V::get, "/api/v1/agent/manifest", Access::kAgent, manifest},
    {V::get, "/api/v1/agent/previous-manifest", Access::kAgent, previous_manifest},
    {V::post, "/api/v1/agent/progress", Access::kAgent, progress},
    {V::post, "/api/v1/agent/result", Access::kAgent, result},
};

}  // namespace

std::span<const RouteSpec> agent_routes() { return kRoutes; }

}  // namespace kiln::api
