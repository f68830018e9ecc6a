// Machines: list, create, get, label, delete; assignment, rollback, history; bulk assignment.
#include <arpa/inet.h>

#include <algorithm>

#include "api/routes.h"
#include "core/hex.h"
#include "core/json_writer.h"
#include "provision/power_service.h"

namespace kiln::api {
namespace {

namespace bhttp = boost::beast::http;

// "reboot": asked for explicitly (a machine without a BMC is then refused), or the site's
// default power.reboot_on_assign (machines without a BMC just wait for their next PXE boot).
void reboot_from(const json& b, const Services& s, store::AssignRequest& r) {
  auto asked = field<bool>(b, "reboot");
  r.reboot = asked.value_or(s.power && s.power->options().reboot_on_assign);
  r.reboot_required = asked.value_or(false);
  // In case the power-on never happens (the BMC fails, kilnd stops first), the write stage's
  // deadline runs from now; kilnd's power-on restarts it.
  if (r.reboot && s.power) r.deadline_at = s.power->written_deadline(s.clock.now_ms());
  if (r.reboot_required && !s.power) fail(Errc::kUnavailable, "this server has no BMC control");
}

store::AssignRequest assign_request(const json& b, const Ctx& c, Services& s) {
  store::AssignRequest r;
  r.config = config_snapshotter(s);  // the machine's effective configuration, fixed now
  r.image = required<std::string>(b, "image");
  r.version = required<std::string>(b, "version");
  r.force = field<bool>(b, "force").value_or(false);
  r.requested_by = c.who;
  reboot_from(b, s, r);
  return r;
}

// Queues the reimage (one-time network boot + power cycle) of a deployment recorded with
// reboot; the outcome is an event. Returns "queued", or why it could not be queued.
std::string start_reboot(Services& s, const proto::Deployment& d, const std::string& who,
                         bool asked = false) {
  // `asked`: an explicit reboot for a deployment already in progress (recorded with or without
  // one), e.g. after a BMC error; the store refused it already when there is no BMC.
  if (!(d.reboot || asked) || !s.power) return "";
  auto q = s.power->reimage(d.machine_id, d.id, d.kind + " requested by " + who);
  if (!q) {
    s.log.warn("event=power.not_queued machine={} deployment={} err=\"{}\"", d.machine_id, d.id,
               q.error().message);
    return q.error().message;
  }
  return "queued";
}

Response assigned(Services& s, const store::AssignOutcome& o, const std::string& who,
                  bool reboot_again) {
  json j = to_json(o.deployment);
  if (o.superseded_id) j["superseded_deployment_id"] = *o.superseded_id;
  if (o.created || reboot_again) {
    if (auto p = start_reboot(s, o.deployment, who, reboot_again); !p.empty()) j["power"] = p;
  }
  return json_response(o.created ? bhttp::status::created : bhttp::status::ok, j);
}

std::optional<Response> list(Services& s, Ctx& c) {
  store::MachineFilter f;
  if (auto q = c.q("selector"); q && !q->empty()) f.selector = take(proto::parse_selector(*q));
  if (auto q = c.q("state"); q && !q->empty()) {
    f.state = proto::parse_machine_state(*q);
    if (!f.state) fail(Errc::kInvalid, "unknown state '" + *q + "'");
  }
  if (auto q = c.q("after")) f.after_id = parse_int(*q, "after");
  f.limit = s.options.default_page;
  if (auto q = c.q("limit")) {
    auto n = parse_int(*q, "limit");
    if (n < 1 || n > s.options.max_page) {
      fail(Errc::kInvalid, "limit must be 1-" + std::to_string(s.options.max_page));
    }
    f.limit = static_cast<int>(n);
  }
  auto page = s.store.list_machines(f);
  std::string body = "{\"items\":[";
  body.reserve(page.items.size() * 400 + 64);
  for (std::size_t i = 0; i < page.items.size(); ++i) {
    if (i) body.push_back(',');
    proto::append_json(body, page.items[i]);
  }
  body += "],\"next_after\":";
  if (page.next_after) {
    json_append_int(body, *page.next_after);
  } else {
    body += "null";
  }
  body += "}";
  return raw_json_response(bhttp::status::ok, std::move(body));
}

std::optional<std::string> uuid_from(const json& b) {
  auto u = field<std::string>(b, "uuid");
  if (!u) return std::nullopt;
  std::string lower = ascii_lower(*u);
  bool shape = lower.size() == 36;
  for (std::size_t i = 0; shape && i < lower.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    shape = dash ? lower[i] == '-' : hex_digit_value(lower[i]) >= 0;
  }
  if (!shape) fail(Errc::kInvalid, "uuid must be 8-4-4-4-12 hex digits");
  return lower;
}

std::optional<std::string> ipv4_from(const json& b) {
  auto a = field<std::string>(b, "ipv4");
  if (!a) return std::nullopt;
  in_addr parsed{};
  if (::inet_pton(AF_INET, a->c_str(), &parsed) != 1) {
    fail(Errc::kInvalid, "ipv4 must be a dotted-quad IPv4 address");
  }
  char canon[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &parsed, canon, sizeof canon);
  return std::string(canon);
}

std::optional<Response> create(Services& s, Ctx& c) {
  auto b = c.body({"mac", "macs", "uuid", "ipv4", "name", "labels", "state"});
  store::NewMachine nm;
  if (auto mac = field<std::string>(b, "mac")) nm.macs.push_back(normalize_mac_or_fail(*mac));
  for (const auto& mac :
       field<std::vector<std::string>>(b, "macs").value_or(std::vector<std::string>{})) {
    auto n = normalize_mac_or_fail(mac);
    if (std::find(nm.macs.begin(), nm.macs.end(), n) == nm.macs.end()) nm.macs.push_back(n);
  }
  if (nm.macs.empty()) fail(Errc::kBadRequest, "field 'mac' (or 'macs') is required");
  nm.uuid = uuid_from(b);
  nm.ipv4 = ipv4_from(b);
  nm.name = field<std::string>(b, "name").value_or("");
  if (nm.name.size() > 255) fail(Errc::kInvalid, "name longer than 255 characters");
  nm.labels = labels_from(b.value("labels", json(nullptr)));
  if (auto st_name = field<std::string>(b, "state")) {
    auto st = proto::parse_machine_state(*st_name);
    if (st != proto::MachineState::kDiscovered && st != proto::MachineState::kReady) {
      fail(Errc::kInvalid, "a new machine's state is 'ready' or 'discovered'");
    }
    nm.state = *st;
  }
  auto m = take(s.store.create_machine(nm, c.who));
  auto res = machine_response(bhttp::status::created, m);
  res.set(bhttp::field::location, "/api/v1/machines/" + std::to_string(m.id));
  return res;
}

std::optional<Response> get(Services& s, Ctx& c) {
  return machine_response(bhttp::status::ok, s.machine(c.param("id")));
}

std::optional<Response> patch(Services& s, Ctx& c) {
  auto b = c.body({"labels"});
  auto id = s.machine(c.param("id")).id;
  const json& labels = b.value("labels", json::object());
  if (!labels.is_object()) fail(Errc::kBadRequest, "labels must be an object");
  store::LabelPatch lp;
  for (const auto& [k, v] : labels.items()) {
    check(proto::validate_label_key(k));
    if (v.is_null()) {
      lp[k] = std::nullopt;
    } else if (v.is_string()) {
      check(proto::validate_label_value(v.get<std::string>()));
      lp[k] = v.get<std::string>();
    } else {
      fail(Errc::kBadRequest, "label '" + k + "' must be a string or null");
    }
  }
  return machine_response(bhttp::status::ok, take(s.store.patch_machine_labels(id, lp, c.who)));
}

std::optional<Response> remove(Services& s, Ctx& c) {
  auto id = s.machine(c.param("id")).id;
  bool force = c.q("force") ? parse_bool(*c.q("force"), "force") : false;
  check(s.store.delete_machine(id, force, c.who));
  return no_content();
}

std::optional<Response> assign(Services& s, Ctx& c) {
  auto b = c.body({"image", "version", "force", "reboot"});
  auto id = s.machine(c.param("id")).id;
  auto req = assign_request(b, c, s);
  // Asking again with reboot (the last power-cycle failed) power-cycles again.
  return assigned(s, take(s.store.assign(id, req)), c.who, req.reboot_required);
}

// The body is optional: {"reboot": bool}.
std::optional<Response> rollback(Services& s, Ctx& c) {
  json b = c.req.body().empty() ? json::object() : c.body({"reboot"});
  auto id = s.machine(c.param("id")).id;
  store::AssignRequest req;
  req.requested_by = c.who;
  reboot_from(b, s, req);
  return assigned(s, take(s.store.rollback(id, req)), c.who, false);
}

// boot.discovery = approve: a machine registered by its first PXE boot boots nothing until an
// operator approves it (idempotent).
std::optional<Response> approve(Services& s, Ctx& c) {
  auto id = s.machine(c.param("id")).id;
  auto m = take(s.store.approve_machine(id, c.who));
  s.log.info("event=machine.approved machine={} by={}", id, c.who);
  return machine_response(bhttp::status::ok, m);
}

std::optional<Response> history(Services& s, Ctx& c) {
  auto id = s.machine(c.param("id")).id;
  json items = json::array();
  for (const auto& d : take(s.store.list_deployments(id))) items.push_back(to_json(d));
  return json_response(bhttp::status::ok, {{"items", std::move(items)}});
}

std::optional<Response> assign_bulk(Services& s, Ctx& c) {
  auto b = c.body({"selector", "image", "version", "force", "reboot"});
  auto selector = take(proto::parse_selector(required<std::string>(b, "selector")));
  auto out = take(s.store.assign_bulk(selector, assign_request(b, c, s)));
  json items = json::array();
  int created = 0;
  for (const auto& [mid, o] : out.results) {
    json j = to_json(o.deployment);
    j["created"] = o.created;
    if (o.superseded_id) j["superseded_deployment_id"] = *o.superseded_id;
    // Reimages queue behind power.max_concurrent BMC slots.
    if (o.created) {
      if (auto p = start_reboot(s, o.deployment, c.who); !p.empty()) j["power"] = p;
    }
    created += o.created ? 1 : 0;
    items.push_back(std::move(j));
  }
  return json_response(created ? bhttp::status::created : bhttp::status::ok,
                       {{"selector", proto::format_selector(selector)},
                        {"matched", out.results.size()},
                        {"created", created},
                        {"deployments", std::move(items)}});
}

using V = bhttp::verb;
constexpr RouteSpec kRoutes[] = {
    {V::get, "/api/v1/machines", Access::kRead, list},
    {V::post, "/api/v1/machines", Access::kAdmin, create},
    {V::get, "/api/v1/machines/{id}", Access::kRead, get},
    {V::patch, "/api/v1/machines/{id}", Access::kAdmin, patch},
    {V::delete_, "/api/v1/machines/{id}", Access::kAdmin, remove},
    {V::put, "/api/v1/machines/{id}/assignment", Access::kAdmin, assign},
    {V::post, "/api/v1/machines/{id}/rollback", Access::kAdmin, rollback},
    {V::post, "/api/v1/machines/{id}/approve", Access::kAdmin, approve},
    {V::get, "/api/v1/machines/{id}/deployments", Access::kRead, history},
    {V::post, "/api/v1/assignments", Access::kAdmin, assign_bulk},
};

}  // namespace

std::span<const RouteSpec> machine_routes() { return kRoutes; }

}  // namespace kiln::api
