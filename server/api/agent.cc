// The agent protocol (proto/openapi.yaml): discovery inventory (public, accepted once); the
// agent session, opened with the deployment's boot ticket and bound at first use to the
// agent's address; and, with the session token, the plan, its manifests, progress and the
// result, whose success must carry proof (docs/security.md).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "api/image_responses.h"
#include "api/routes.h"
#include "core/crypto.h"
#include "core/log_util.h"
#include "core/mac.h"
#include "core/time.h"
#include "images/image_service.h"
#include "proto/image_format.h"
#include "provision/power_service.h"

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
  auto others = s.options.attach_reported_macs ? other_macs(inv, mac) : std::vector<std::string>{};
  auto m = take(s.store.record_inventory(mac, inv, others));
  s.log.info("event=machine.inventory machine={} mac={} state={}", m.id, mac,
             proto::to_string(m.state));
  return machine_response(bhttp::status::ok, m);
}

// POST /api/v1/agent/session with "Authorization: Bearer <boot ticket>": the agent's session.
// The first binds the deployment to the caller's address; a later one (the machine booted
// again) must come from there, replaces the session token and counts as an agent boot.
std::optional<Response> session(Services& s, Ctx& c) {
  const std::string ticket = bearer_token(c.req);
  if (ticket.empty()) fail(Errc::kUnauthorized, "missing boot ticket (Authorization: Bearer ...)");
  if (c.peer.empty()) fail(Errc::kInternal, "the client's address is unknown");
  // With lease binding, someone else on the segment who read the public ticket cannot open the
  // session first from their own address while the machine holds a lease from kilnd.
  const auto leases = s.options.require_lease   ? store::LeaseRule::kRequired
                      : s.options.bind_to_lease ? store::LeaseRule::kIfLeased
                                                : store::LeaseRule::kIgnore;
  const auto expires = s.clock.now_ms() + s.options.agent_token_ttl.count();
  auto opened =
      s.store.open_agent_session(ticket, c.peer, s.options.max_agent_boots, expires, leases);
  if (!opened) {
    s.log.warn("event=agent.session_refused peer={} err=\"{}\"", c.peer, opened.error().message);
    fail(opened.error().code, opened.error().message);
  }
  const auto& d = opened->deployment;
  s.log.info("event=agent.session deployment={} machine={} peer={} boot={}", d.id, d.machine_id,
             c.peer, opened->boot);
  return json_response(bhttp::status::created, {{"deployment_id", d.id},
                                                {"token", opened->token},
                                                {"boot", opened->boot},
                                                {"expires_at", format_rfc3339_ms(expires)}});
}

std::optional<Response> deployment(Services& s, Ctx& c) {
  const auto& d = *c.agent_deployment;
  auto image = s.store.get_image_version(d.to_version.name, d.to_version.version);
  json j = to_json(d);
  j["image"] = image ? to_json(*image) : json(nullptr);
  // The deployed OS's credential for confirming its boot (docs/power.md): fresh with every
  // plan, so only the agent that writes the image holds a working one.
  const std::string token = take(s.store.mint_instance_token(d.id));
  j["instance"] = {{"deployment_id", d.id}, {"token", token}, {"url", s.options.instance_url}};
  // The configuration snapshot as a NoCloud config drive (docs/config.md); its vendor-data
  // confirms the boot through cloud-init's phone_home, at instance_url or where the agent
  // reached kilnd.
  std::string base = s.options.instance_url;
  if (base.empty() && !c.req[bhttp::field::host].empty()) {
    base = "http://" + std::string(c.req[bhttp::field::host]);
  }
  j["servers"] = s.options.servers;
  j["config_drive"] = nullptr;
  if (auto drive = config_drive_plan(s, d, base, token)) j["config_drive"] = std::move(*drive);
  if (image && image->format == "kiln") {
    j["manifest_url"] = "/api/v1/agent/manifest";
    j["chunks_url"] = s.options.chunks_url.empty() ? "/v1/chunks/" : s.options.chunks_url;
    j["chunks_require_token"] = s.options.chunks_require_token;
    // Rack-local caches for the agent's network; none for private chunks (a cache cannot
    // serve them, and the agent sends its token to kilnd only).
    j["mirrors"] = json::array();
    if (!s.options.chunks_require_token && !s.options.mirrors.empty()) {
      j["mirrors"] = mirrors_for(s.options.mirrors, c.peer);
      s.log.info("event=agent.mirrors deployment={} peer={} mirrors={}", d.id, c.peer,
                 j["mirrors"].dump());
    }
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
    j["mirrors"] = json::array();
  }
  return json_response(bhttp::status::ok, j);
}

std::optional<Response> manifest(Services& s, Ctx& c) {
  const auto& d = *c.agent_deployment;
  auto res = manifest_response(s, d.to_version.name, d.to_version.version);
  take(s.store.mark_manifest_served(d.id));
  return res;
}

std::optional<Response> previous_manifest(Services& s, Ctx& c) {
  const auto& d = *c.agent_deployment;
  if (!d.from_version) fail(Errc::kNotFound, "the machine held no known version before");
  return manifest_response(s, d.from_version->name, d.from_version->version);
}

// `reason` cut to kMaxReasonBytes at a UTF-8 boundary: it is copied into the machine, the
// deployment and an event.
std::string capped_reason(std::string reason) {
  if (reason.size() <= kMaxReasonBytes) return reason;
  std::size_t n = kMaxReasonBytes - 3;
  while (n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80) --n;
  reason.resize(n);
  return reason + "...";
}

// The report in a progress or result body; `detail` bounded (it lands in every event).
proto::AgentReport report_from(const json& b) {
  json fields = b;
  fields.erase("status");  // the result route checks it itself (only succeeded/failed)
  auto r = take(proto::agent_report_from_json(fields));
  if (r.detail.dump().size() > kMaxDetailBytes) {
    fail(Errc::kTooLarge, "detail larger than " + std::to_string(kMaxDetailBytes) + " bytes");
  }
  r.reason = capped_reason(std::move(r.reason));
  return r;
}

std::optional<Response> progress(Services& s, Ctx& c) {
  auto b = c.body({"stage", "bytes_done", "bytes_total", "detail"});
  auto rep = report_from(b);
  return json_response(bhttp::status::ok,
                       to_json(take(s.store.report_progress(c.agent_deployment->id, rep))));
}

// Why a success report's proof does not match what kilnd served, or "" when it does.
std::string proof_mismatch(Services& s, const proto::Deployment& d,
                           const std::optional<proto::SuccessProof>& proof) {
  if (!proof) return "a succeeded result needs a proof";
  const auto& p = *proof;
  auto image = take(s.store.get_image_version(d.to_version.name, d.to_version.version));
  if (image.format != "kiln") {
    if (p.image_sha256 != image.sha256) return "image_sha256 is not the image's SHA-256";
    if (image.size_bytes > 0 && p.image_bytes != image.size_bytes) {
      return "image_bytes is not the image's size";
    }
    return "";
  }
  if (!s.images) return "this server stores no manifests";
  if (!s.store.manifest_served(d.id)) return "the manifest was never served to this session";
  auto bytes = take(s.images->manifest(d.to_version.name, d.to_version.version));
  if (p.manifest_sha256 != sha256_hex(bytes)) return "manifest_sha256 is not the served manifest's";
  auto m = take(proto::image::parse_manifest(bytes));
  std::int64_t zero = 0, unmapped = 0;
  for (std::size_t i = 0; i < m.chunks.size(); ++i) {
    const auto len = static_cast<std::int64_t>(m.chunk_length(i));
    if (m.chunks[i].kind == proto::image::ChunkKind::kZero) zero += len;
    if (m.chunks[i].kind == proto::image::ChunkKind::kUnmapped) unmapped += len;
  }
  if (p.image_bytes != static_cast<std::int64_t>(m.size))
    return "image_bytes is not the image's size";
  // Each count is >= 0 (the decoder checks); bounded by image_bytes, their sum cannot overflow.
  for (auto v : {p.written_bytes, p.skipped_bytes, p.zeroed_bytes, p.unmapped_bytes}) {
    if (v > p.image_bytes) return "a byte count exceeds image_bytes";
  }
  if (p.written_bytes + p.skipped_bytes + p.zeroed_bytes + p.unmapped_bytes != p.image_bytes) {
    return "written, skipped, zeroed and unmapped bytes do not add up to image_bytes";
  }
  if (p.zeroed_bytes != zero || p.unmapped_bytes != unmapped) {
    return "zeroed/unmapped bytes differ from the manifest's zero/unmapped chunks";
  }
  return "";
}

std::optional<Response> result(Services& s, Ctx& c) {
  auto b = c.body({"status", "reason", "stage", "bytes_done", "bytes_total", "detail", "proof"});
  auto rep = report_from(b);
  auto st = proto::parse_deployment_status(required<std::string>(b, "status"));
  if (st != proto::DeploymentStatus::kSucceeded && st != proto::DeploymentStatus::kFailed) {
    fail(Errc::kInvalid, "status must be 'succeeded' or 'failed'");
  }
  rep.result = st;
  if (st == proto::DeploymentStatus::kFailed && rep.reason.empty()) {
    fail(Errc::kInvalid, "a failed result needs a reason");
  }
  const auto& dep = *c.agent_deployment;
  if (st == proto::DeploymentStatus::kSucceeded) {
    if (auto why = proof_mismatch(s, dep, rep.proof); !why.empty()) {
      take(s.store.record_refused_result(dep.id, c.peer, why));
      s.log.warn("event=deployment.result_refused deployment={} machine={} peer={} reason=\"{}\"",
                 dep.id, dep.machine_id, c.peer, why);
      fail(Errc::kInvalid, "success report refused: " + why);
    }
  }
  // The boot deadline is watched only when the agent left the OS its credential (an agent
  // without the instance block, or a disk with no room for it, cannot be confirmed).
  std::optional<std::int64_t> boot_deadline;
  const auto ib = rep.detail.find("instance_block");
  const bool confirmable = ib != rep.detail.end() && ib->is_boolean() && ib->get<bool>();
  if (st == proto::DeploymentStatus::kSucceeded && s.power && confirmable) {
    boot_deadline = s.power->booted_deadline(s.clock.now_ms());
  }
  auto d = take(s.store.report_progress(dep.id, rep, boot_deadline));
  s.log.info("event=deployment.{} deployment={} machine={} reason=\"{}\"",
             proto::to_string(d.status), d.id, d.machine_id, log_escape(d.status_reason, 300));
  return json_response(bhttp::status::ok, to_json(d));
}

using V = bhttp::verb;
constexpr RouteSpec kRoutes[] = {
    {V::post, "/api/v1/agent/inventory", Access::kPublic, inventory},
    {V::post, "/api/v1/agent/session", Access::kPublic, session},
    {V::get, "/api/v1/agent/deployment", Access::kAgent, deployment},
    {V::get, "/api/v1/agent/manifest", Access::kAgent, manifest},
    {V::get, "/api/v1/agent/previous-manifest", Access::kAgent, previous_manifest},
    {V::post, "/api/v1/agent/progress", Access::kAgent, progress},
    {V::post, "/api/v1/agent/result", Access::kAgent, result},
};

}  // namespace

std::span<const RouteSpec> agent_routes() { return kRoutes; }

}  // namespace kiln::api
