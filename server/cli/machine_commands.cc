// Machines: list, show, create, label, delete.
#include "cli/api_commands.h"
#include "cli/render.h"
#include "core/mac.h"
#include "proto/api_types.h"

namespace kiln::cli {

namespace {

using json = nlohmann::json;

int print_machines(Session& s, const json& items) {
  auto machines = s.decoded_all(items, proto::machine_from_json);
  if (!machines) return s.failure_code();
  auto t = machine_table();
  for (const auto& m : *machines) add_machine_row(t, m);
  t.print(s.out());
  return kExitOk;
}

int print_machine_reply(Session& s, const Reply& r) {
  if (s.json_mode()) return s.print_raw(r);
  auto m = s.decoded(proto::machine_from_json(r.body));
  if (!m) return s.failure_code();
  print_machine(s.out(), *m);
  return kExitOk;
}

// The query of `machine list` (selector, state), or a usage error.
Result<Query> list_query(const Args& a) {
  Query q;
  if (!a.selector.empty()) {
    auto sel = checked_selector(a.selector);
    if (!sel) return sel.error();
    q.add("selector", *sel);
  }
  if (!a.state.empty()) {
    if (!proto::parse_machine_state(a.state)) {
      return make_error(Errc::kInvalid,
                        "unknown state '" + a.state + "' (one of: " + all_states() + ")");
    }
    q.add("state", a.state);
  }
  return q;
}

// One request of at most `limit` machines; --json prints the page as received.
int list_one_page(Session& s, Query q, int limit) {
  q.add("limit", std::to_string(limit));
  auto r = s.call("GET", api_path({"machines"}) + q.str());
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  return print_machines(s, items_of(r->body));
}

// Every machine: follows the next_after cursor page by page; --json prints one page holding
// them all.
int list_all_pages(Session& s, const Query& q) {
  json items = json::array();
  std::optional<std::int64_t> after;
  while (true) {
    Query page = q;
    if (after) page.add("after", std::to_string(*after));
    auto r = s.call("GET", api_path({"machines"}) + page.str());
    if (!r) return s.failure_code();
    for (const auto& m : items_of(r->body)) items.push_back(m);
    auto next = r->body.find("next_after");
    if (next == r->body.end() || !next->is_number_integer()) break;
    if (after && next->get<std::int64_t>() <= *after) {
      s.err() << "kiln: the server's next_after cursor did not advance; stopping\n";
      return kExitApiError;
    }
    after = next->get<std::int64_t>();
  }
  if (s.json_mode()) {
    s.out() << json{{"items", std::move(items)}, {"next_after", nullptr}}.dump() << "\n";
    return kExitOk;
  }
  return print_machines(s, items);
}

// The labels of `machine label`: "key=value" sets, "key-" removes (null in the merge patch).
Result<json> label_patch(const std::vector<std::string>& args) {
  json labels = json::object();
  for (const auto& arg : args) {
    std::string key;
    json value;
    if (arg.find('=') == std::string::npos && !arg.empty() && arg.back() == '-') {
      key = arg.substr(0, arg.size() - 1);
      if (auto st = proto::validate_label_key(key); !st) {
        return make_error(Errc::kInvalid, "label '" + arg + "': " + st.error().message);
      }
    } else if (arg.find('=') != std::string::npos) {
      auto kv = parse_label(arg);
      if (!kv) return kv.error();
      key = kv->first;
      value = kv->second;
    } else {
      return make_error(Errc::kInvalid,
                        "label '" + arg + "' must be key=value (set) or key- (remove)");
    }
    if (labels.contains(key)) {
      return make_error(Errc::kInvalid, "label '" + key + "' is given more than once");
    }
    labels[key] = std::move(value);
  }
  return labels;
}

}  // namespace

int machine_list(Session& s, const Args& a) {
  auto q = list_query(a);
  if (!q) return s.usage(q.error().message);
  if (!a.limit) return list_all_pages(s, *q);
  if (*a.limit < 1) return s.usage("--limit must be at least 1");
  return list_one_page(s, *q, *a.limit);
}

int machine_show(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"machines", a.id}));
  if (!r) return s.failure_code();
  return print_machine_reply(s, *r);
}

int machine_create(Session& s, const Args& a) {
  json body = json::object();
  json macs = json::array();
  for (const auto& mac : a.macs) {
    auto normalized = normalize_mac(mac);
    if (!normalized) return s.usage("'" + mac + "' is not a MAC address (e.g. 52:54:00:12:34:56)");
    macs.push_back(*normalized);
  }
  body["macs"] = std::move(macs);
  if (!a.uuid.empty()) body["uuid"] = a.uuid;
  if (!a.name.empty()) body["name"] = a.name;
  auto labels = parse_labels(a.labels);
  if (!labels) return s.usage(labels.error().message);
  if (!labels->empty()) body["labels"] = std::move(*labels);
  auto r = s.call("POST", api_path({"machines"}), &body);
  if (!r) return s.failure_code();
  return print_machine_reply(s, *r);
}

int machine_label(Session& s, const Args& a) {
  auto labels = label_patch(a.labels);
  if (!labels) return s.usage(labels.error().message);
  const json body = {{"labels", std::move(*labels)}};
  auto r = s.call("PATCH", api_path({"machines", a.id}), &body, std::chrono::seconds(0),
                  "application/merge-patch+json");
  if (!r) return s.failure_code();
  return print_machine_reply(s, *r);
}

int machine_delete(Session& s, const Args& a) {
  std::string target = api_path({"machines", a.id});
  if (a.force) target += Query().add("force", "true").str();
  auto r = s.call("DELETE", target);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  s.out() << "machine " << a.id << " deleted\n";
  return kExitOk;
}

}  // namespace kiln::cli
