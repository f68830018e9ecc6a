// Rollouts: `kiln rollout start|list|show|pause|resume|abort|rollback` (docs/rollouts.md);
// start and show take --watch: live batch progress until the rollout finishes.
#include <chrono>
#include <iostream>
#include <thread>

#include "cli/api_commands.h"
#include "cli/render.h"
#include "cli/table.h"

namespace kiln::cli {

namespace {

using json = nlohmann::json;

int num(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int>() : 0;
}

std::string opt_text(const json& j, const char* key, const std::string& none = "-") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return none;
  return it->is_string() ? it->get<std::string>() : it->dump();
}

bool finished(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "aborted" || state == "rolled_back";
}

// "12/50" style progress bar for one batch: done and failed out of its size.
std::string bar(int done, int failed, int size, int width = 20) {
  std::string b;
  const int d = size ? done * width / size : 0;
  const int f = size ? failed * width / size : 0;
  b.append(static_cast<std::size_t>(d), '#');
  b.append(static_cast<std::size_t>(std::min(f, width - d)), 'x');
  b.append(static_cast<std::size_t>(std::max(0, width - d - f)), '.');
  return "[" + b + "]";
}

void print_summary(std::ostream& out, const json& r) {
  const json& c = r["counts"];
  out << "rollout " << num(r, "id") << ": " << text(r, "image") << ":" << text(r, "version")
      << " to '" << (text(r, "selector").empty() ? "(all)" : text(r, "selector")) << "'  "
      << text(r, "state");
  if (!text(r, "reason").empty()) out << " (" << text(r, "reason") << ")";
  out << "\n  machines " << num(c, "total") << ": " << num(c, "done") << " done, "
      << num(c, "deploying") << " deploying, " << num(c, "pending") << " pending, "
      << num(c, "failed") << " failed, " << num(c, "skipped") << " skipped";
  if (num(c, "rolling_back") || num(c, "rolled_back") || num(c, "rollback_failed")) {
    out << ", " << num(c, "rolling_back") << " rolling back, " << num(c, "rolled_back")
        << " rolled back, " << num(c, "rollback_failed") << " not restored";
  }
  out << "\n  batch size " << num(r, "batch_size") << ", canary " << num(r, "canary") << ", gate "
      << text(r, "gate") << " within " << num(r, "gate_timeout_s") << " s, max_unavailable "
      << num(r, "max_unavailable") << ", max_failures " << num(r, "max_failures") << " then "
      << text(r, "on_failure") << "\n";
}

void print_batches(std::ostream& out, const json& r) {
  Table t({"BATCH", "SIZE", "PROGRESS", "DONE", "DEPLOYING", "FAILED", "SKIPPED", "TOOK"});
  for (const auto& b : r["batches"]) {
    const std::string name =
        std::to_string(num(b, "index")) + (b.value("canary", false) ? " (canary)" : "");
    std::string took = "-";
    if (b.contains("duration_ms") && b["duration_ms"].is_number()) {
      took = std::to_string(b["duration_ms"].get<std::int64_t>() / 1000) + " s";
    } else if (!b["started_at"].is_null()) {
      took = "running";
    }
    t.add_row({name, std::to_string(num(b, "size")),
               bar(num(b, "done"), num(b, "failed"), num(b, "size")),
               std::to_string(num(b, "done")), std::to_string(num(b, "deploying")),
               std::to_string(num(b, "failed")), std::to_string(num(b, "skipped")), took});
  }
  t.print(out);
}

void print_machines(std::ostream& out, const json& r) {
  Table t({"MACHINE", "NAME", "BATCH", "STATE", "PREVIOUS", "DEPLOYMENT", "REASON"});
  for (const auto& m : r["machines"]) {
    std::string prev = "-";
    if (m["previous"].is_object())
      prev = text(m["previous"], "image") + ":" + text(m["previous"], "version");
    t.add_row({std::to_string(num(m, "machine_id")), text(m, "name"), opt_text(m, "batch"),
               text(m, "state"), prev, opt_text(m, "deployment_id"), text(m, "reason")});
  }
  t.print(out);
}

// Polls the rollout every second, printing its batches whenever they change, until it
// finishes (or, for a paused rollout, says so and stops watching).
int watch(Session& s, const std::string& id) {
  std::string last;
  for (;;) {
    auto r = s.call("GET", api_path({"rollouts", id}));
    if (!r) return s.failure_code();
    json view = r->body;
    view.erase("machines");
    view.erase("updated_at");
    if (const auto now = view.dump(); now != last) {
      last = now;
      print_summary(s.out(), r->body);
      print_batches(s.out(), r->body);
      s.out() << std::flush;
    }
    const auto state = text(r->body, "state");
    if (finished(state))
      return state == "succeeded" || state == "rolled_back" ? kExitOk : kExitApiError;
    if (state == "paused") {
      s.out() << "paused: resume with `kiln rollout resume " << id << "`, or roll back\n";
      return kExitApiError;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

int act(Session& s, const Args& a, const char* action) {
  auto r = s.call("POST", api_path({"rollouts", a.id, action}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  print_summary(s.out(), r->body);
  if (a.follow) return watch(s, a.id);
  return kExitOk;
}

}  // namespace

int rollout_start(Session& s, const Args& a) {
  const auto& o = a.rollout;
  json body = {{"selector", a.selector}, {"image", a.image}, {"version", a.version}};
  if (!o.batch.empty()) {
    if (o.batch.back() == '%') {
      body["batch"] = o.batch;
    } else {
      try {
        std::size_t used = 0;
        const long long n = std::stoll(o.batch, &used);
        if (used != o.batch.size()) throw std::invalid_argument("trailing");
        body["batch"] = n;
      } catch (const std::exception&) {
        return s.usage("--batch: a count (5) or a percentage (5%), not '" + o.batch + "'");
      }
    }
  }
  if (o.canary) body["canary"] = *o.canary;
  if (o.max_unavailable) body["max_unavailable"] = *o.max_unavailable;
  if (o.max_failures) body["max_failures"] = *o.max_failures;
  if (!o.on_failure.empty()) body["on_failure"] = o.on_failure;
  if (!o.gate.empty()) body["gate"] = o.gate;
  if (o.gate_timeout_s) body["gate_timeout_s"] = *o.gate_timeout_s;
  if (o.pause_between_s) body["pause_between_s"] = *o.pause_between_s;
  if (!o.spread_by.empty()) body["spread_by"] = o.spread_by;
  auto r = s.call("POST", api_path({"rollouts"}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode() && !a.follow) return s.print_raw(*r);
  print_summary(s.out(), r->body);
  for (const auto& m : r->body["machines"]) {
    if (text(m, "state") == "skipped") {
      s.out() << "  skipped machine " << num(m, "machine_id") << " (" << text(m, "name")
              << "): " << text(m, "reason") << "\n";
    }
  }
  if (a.follow) return watch(s, std::to_string(num(r->body, "id")));
  return kExitOk;
}

int rollout_list(Session& s, const Args& a) {
  std::string target = api_path({"rollouts"});
  if (!a.state.empty()) target += "?state=" + a.state;
  auto r = s.call("GET", target);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  Table t({"ID", "IMAGE", "SELECTOR", "STATE", "DONE", "FAILED", "TOTAL", "BATCH", "CREATED"});
  for (const auto& ro : items_of(r->body)) {
    const json& c = ro["counts"];
    t.add_row({std::to_string(num(ro, "id")), text(ro, "image") + ":" + text(ro, "version"),
               text(ro, "selector").empty() ? "(all)" : text(ro, "selector"), text(ro, "state"),
               std::to_string(num(c, "done")), std::to_string(num(c, "failed")),
               std::to_string(num(c, "total")), opt_text(ro, "current_batch"),
               text(ro, "created_at")});
  }
  t.print(s.out());
  return kExitOk;
}

int rollout_show(Session& s, const Args& a) {
  if (a.follow) return watch(s, a.id);
  auto r = s.call("GET", api_path({"rollouts", a.id}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  print_summary(s.out(), r->body);
  print_batches(s.out(), r->body);
  print_machines(s.out(), r->body);
  return kExitOk;
}

int rollout_pause(Session& s, const Args& a) { return act(s, a, "pause"); }
int rollout_resume(Session& s, const Args& a) { return act(s, a, "resume"); }
int rollout_abort(Session& s, const Args& a) { return act(s, a, "abort"); }
int rollout_rollback(Session& s, const Args& a) { return act(s, a, "rollback"); }

}  // namespace kiln::cli
