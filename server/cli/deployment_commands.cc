// Deployments: assignment (one machine or by selector), rollback, a machine's history, one
// deployment.
#include "cli/api_commands.h"
#include "cli/render.h"

namespace kiln::cli {

namespace {

using json = nlohmann::json;

// A reply holding one deployment (201: created; 200: the same version was already being
// deployed) with the deployment it superseded beside it.
int print_assignment_reply(Session& s, const Reply& r) {
  if (s.json_mode()) return s.print_raw(r);
  auto d = s.decoded(proto::deployment_from_json(r.body));
  if (!d) return s.failure_code();
  print_assignment(s.out(), *d, r.status != 200, text(r.body, "superseded_deployment_id"));
  if (d->reboot) {
    const std::string p = text(r.body, "power");
    s.out() << (p == "queued" || p.empty()
                    ? "rebooting it through its BMC (one-time network boot, power cycle)\n"
                    : "NOT rebooted: " + p + "\n");
  }
  return kExitOk;
}

}  // namespace

int machine_assign(Session& s, const Args& a) {
  if (auto st = checked_image(a.image, a.version); !st) return s.usage(st.error().message);
  json body = {{"image", a.image}, {"version", a.version}, {"force", a.force}};
  if (a.reboot || a.no_reboot) body["reboot"] = a.reboot;
  auto r = s.call("PUT", api_path({"machines", a.id, "assignment"}), &body);
  if (!r) return s.failure_code();
  return print_assignment_reply(s, *r);
}

int machine_rollback(Session& s, const Args& a) {
  json body = json::object();
  if (a.reboot || a.no_reboot) body["reboot"] = a.reboot;
  auto r = s.call("POST", api_path({"machines", a.id, "rollback"}), &body);
  if (!r) return s.failure_code();
  return print_assignment_reply(s, *r);
}

int machine_history(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"machines", a.id, "deployments"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  auto deployments = s.decoded_all(items_of(r->body), proto::deployment_from_json);
  if (!deployments) return s.failure_code();
  auto t = deployment_table();
  for (const auto& d : *deployments) add_deployment_row(t, d);
  t.print(s.out());
  return kExitOk;
}

int bulk_assign(Session& s, const Args& a) {
  auto sel = checked_selector(a.selector);
  if (!sel) return s.usage(sel.error().message);
  if (auto st = checked_image(a.image, a.version); !st) return s.usage(st.error().message);
  json body = {
      {"selector", *sel}, {"image", a.image}, {"version", a.version}, {"force", a.force}};
  if (a.reboot || a.no_reboot) body["reboot"] = a.reboot;
  auto r = s.call("POST", api_path({"assignments"}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  // Each item is a deployment with "created" and "superseded_deployment_id" beside it.
  const json& items = items_of(r->body, "deployments");
  auto deployments = s.decoded_all(items, proto::deployment_from_json);
  if (!deployments) return s.failure_code();
  const json& b = r->body;
  s.out() << "selector " << text(b, "selector") << " matched " << text(b, "matched")
          << " machine(s); " << text(b, "created") << " new deployment(s) of " << a.image << ":"
          << a.version << "\n";
  auto t = bulk_assignment_table();
  for (std::size_t i = 0; i < deployments->size(); ++i) {
    const json& item = items[i];
    add_bulk_assignment_row(t, (*deployments)[i], item.value("created", false),
                            text(item, "superseded_deployment_id"));
  }
  t.print(s.out());
  return kExitOk;
}

int deployment_show(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"deployments", a.id}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  auto d = s.decoded(proto::deployment_from_json(r->body));
  if (!d) return s.failure_code();
  print_deployment(s.out(), *d);
  return kExitOk;
}

}  // namespace kiln::cli
