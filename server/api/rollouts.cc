// Rollouts (docs/rollouts.md): make one, list them, show one with its machines, and the
// operator's actions (pause, resume, abort, rollback). The engine that drives them is
// provision/rollout_service; every route here only records (and wakes it).
#include <charconv>

#include "api/routes.h"
#include "provision/power_service.h"
#include "provision/rollout_service.h"

namespace kiln::api {
namespace {

namespace bhttp = boost::beast::http;

// An integer field within [lo, hi]: 400 for a wrong type, 422 for a value out of range.
std::optional<int> bounded(const json& b, const char* key, std::int64_t lo, std::int64_t hi) {
  auto v = field<std::int64_t>(b, key);
  if (!v) return std::nullopt;
  if (*v < lo || *v > hi) {
    fail(Errc::kInvalid, std::string(key) + ": must be between " + std::to_string(lo) + " and " +
                             std::to_string(hi));
  }
  return static_cast<int>(*v);
}

std::string one_of(const json& b, const char* key, std::initializer_list<std::string_view> allowed,
                   std::string_view fallback) {
  auto v = field<std::string>(b, key);
  if (!v) return std::string(fallback);
  for (auto a : allowed) {
    if (*v == a) return *v;
  }
  std::string list;
  for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  fail(Errc::kInvalid, std::string(key) + ": '" + *v + "' is not one of " + list);
}

// "batch": a machine count (integer >= 1) or a percentage of the machines ("5%", 1-100).
void batch_from(const json& b, store::NewRollout& r) {
  auto it = b.find("batch");
  if (it == b.end() || it->is_null()) fail(Errc::kBadRequest, "field 'batch' is required");
  if (it->is_number_integer()) {
    r.batch_count = bounded(b, "batch", 1, 1'000'000);
    return;
  }
  if (!it->is_string()) {
    fail(Errc::kBadRequest, "field 'batch' must be an integer or a percentage string (\"5%\")");
  }
  const auto text = it->get<std::string>();
  int pct = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, pct);
  if (ec != std::errc() || p + 1 != end || *p != '%' || pct < 1 || pct > 100) {
    fail(Errc::kInvalid,
         "batch: '" + text + "' is neither a count nor a percentage from 1% to 100%");
  }
  r.batch_percent = pct;
}

void wake(Services& s) {
  if (s.rollouts) s.rollouts->wake();
}

std::int64_t rollout_id(const Ctx& c) { return parse_int(c.param("id"), "rollout id"); }

std::optional<Response> create(Services& s, Ctx& c) {
  auto b =
      c.body({"selector", "image", "version", "batch", "canary", "max_unavailable", "max_failures",
              "on_failure", "gate", "gate_timeout_s", "pause_between_s", "spread_by", "config"});
  store::NewRollout r;
  const auto selector_text = required<std::string>(b, "selector");
  if (!selector_text.empty()) r.selector = take(proto::parse_selector(selector_text));
  r.image = required<std::string>(b, "image");
  r.version = required<std::string>(b, "version");
  batch_from(b, r);
  r.canary = bounded(b, "canary", 0, 1'000'000).value_or(0);
  r.max_unavailable = bounded(b, "max_unavailable", 1, 1'000'000);
  r.max_failures = bounded(b, "max_failures", 0, 1'000'000).value_or(0);
  r.on_failure = one_of(b, "on_failure", {"pause", "rollback", "stop"}, "pause");
  r.gate = one_of(b, "gate", {"booted", "written"}, "booted");
  r.gate_timeout_s = bounded(b, "gate_timeout_s", 1, 7 * 24 * 3600).value_or(1800);
  r.pause_between_s = bounded(b, "pause_between_s", 0, 7 * 24 * 3600).value_or(0);
  if (auto k = field<std::string>(b, "spread_by")) {
    if (k->empty()) fail(Errc::kInvalid, "spread_by: a label key, not empty");
    r.spread_by = *k;
  }
  if (auto it = b.find("config"); it != b.end() && !it->is_null()) {
    r.config = seal_rollout_config(s, *it);
  }
  // Every machine of a rollout is rebooted through its BMC.
  if (!s.power) fail(Errc::kUnavailable, "this server has no BMC control: rollouts need it");
  r.requested_by = c.who;
  auto out = take(s.store.create_rollout(r));
  const auto n = proto::count(out);
  s.log.info(
      "event=rollout.created rollout={} image={}:{} machines={} skipped={} batch_size={} "
      "canary={} by={}",
      out.id, out.target.name, out.target.version, n.total, n.skipped, out.batch_size, out.canary,
      c.who);
  wake(s);
  return json_response(bhttp::status::created, proto::to_json(out, true));
}

std::optional<Response> list(Services& s, Ctx& c) {
  std::optional<proto::RolloutState> state;
  if (auto q = c.q("state"); q && !q->empty()) {
    state = proto::parse_rollout_state(*q);
    if (!state) fail(Errc::kInvalid, "unknown rollout state '" + *q + "'");
  }
  int limit = 100;
  if (auto q = c.q("limit"); q && !q->empty()) {
    const auto l = parse_int(*q, "limit");
    if (l < 1 || l > 1000) fail(Errc::kInvalid, "limit: must be between 1 and 1000");
    limit = static_cast<int>(l);
  }
  json items = json::array();
  for (const auto& r : s.store.list_rollouts(state, limit)) {
    items.push_back(proto::to_json(r, false));
  }
  return json_response(bhttp::status::ok, {{"items", std::move(items)}});
}

std::optional<Response> get(Services& s, Ctx& c) {
  return json_response(bhttp::status::ok,
                       proto::to_json(take(s.store.get_rollout(rollout_id(c))), true));
}

template <store::RolloutAction A>
std::optional<Response> act(Services& s, Ctx& c) {
  auto out = take(s.store.rollout_action(rollout_id(c), A, c.who));
  s.log.info("event=rollout.action rollout={} state={} by={}", out.id, proto::to_string(out.state),
             c.who);
  wake(s);
  return json_response(bhttp::status::ok, proto::to_json(out, true));
}

using V = bhttp::verb;
using A = store::RolloutAction;
constexpr RouteSpec kRoutes[] = {
    {V::post, "/api/v1/rollouts", Access::kAdmin, create},
    {V::get, "/api/v1/rollouts", Access::kRead, list},
    {V::get, "/api/v1/rollouts/{id}", Access::kRead, get},
    {V::post, "/api/v1/rollouts/{id}/pause", Access::kAdmin, act<A::kPause>},
    {V::post, "/api/v1/rollouts/{id}/resume", Access::kAdmin, act<A::kResume>},
    {V::post, "/api/v1/rollouts/{id}/abort", Access::kAdmin, act<A::kAbort>},
    {V::post, "/api/v1/rollouts/{id}/rollback", Access::kAdmin, act<A::kRollback>},
};

}  // namespace

std::span<const RouteSpec> rollout_routes() { return kRoutes; }

}  // namespace kiln::api
