#include "cli/commands.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli/client.h"
#include "cli/image_commands.h"
#include "cli/table.h"
#include "core/hex.h"
#include "core/mac.h"
#include "proto/api_types.h"
#include "proto/image_file.h"

namespace kiln::cli {

namespace {

using json = nlohmann::json;
using std::chrono::seconds;

constexpr const char* kVersion = "0.1.0";
// Long-poll wait of `events --follow` when --wait is not given.
constexpr std::int64_t kFollowWaitSeconds = 30;

// --- JSON field access (tolerant: the CLI prints what it gets) -------------------------------

// A scalar field as text: strings as is, numbers and booleans printed, null/missing as "".
std::string text(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

// {"image": "ubuntu", "version": "22.04"} -> "ubuntu:22.04"; null -> "".
std::string version_ref(const json& v) {
  if (!v.is_object()) return "";
  return text(v, "image") + ":" + text(v, "version");
}
std::string version_ref(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() ? "" : version_ref(*it);
}

std::string join(const json& array, std::string_view sep) {
  std::string out;
  if (!array.is_array()) return out;
  for (const auto& v : array) {
    if (!out.empty()) out += sep;
    out += v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out;
}

std::string join_labels(const json& labels, std::string_view sep) {
  std::string out;
  if (!labels.is_object()) return out;
  for (const auto& [k, v] : labels.items()) {
    if (!out.empty()) out += sep;
    out += k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out;
}

const json& items_of(const json& body, const char* key = "items") {
  static const json kEmpty = json::array();
  auto it = body.find(key);
  return it != body.end() && it->is_array() ? *it : kEmpty;
}

// --- URLs ------------------------------------------------------------------------------------

// "/api/v1/<seg>/<seg>..." with every segment percent-encoded.
std::string api_path(std::initializer_list<std::string_view> segments) {
  std::string out(proto::kApiPrefix);
  for (auto s : segments) out += "/" + encode_component(s);
  return out;
}

class Query {
 public:
  Query& add(std::string_view key, std::string_view value) {
    text_ += text_.empty() ? "?" : "&";
    text_ += encode_component(key) + "=" + encode_component(value);
    return *this;
  }
  const std::string& str() const { return text_; }

 private:
  std::string text_;
};

// --- local validation (the same grammar the server applies) ---------------------------------

// "key=value" -> {key, value}, both checked against the label grammar of proto/api_types.h.
Result<std::pair<std::string, std::string>> parse_label(std::string_view arg) {
  const std::size_t eq = arg.find('=');
  if (eq == std::string_view::npos) {
    return make_error(Errc::kInvalid, "label '" + std::string(arg) + "' must be key=value");
  }
  std::string key(arg.substr(0, eq)), value(arg.substr(eq + 1));
  if (auto s = proto::validate_label_key(key); !s) {
    return make_error(Errc::kInvalid, "label '" + std::string(arg) + "': " + s.error().message);
  }
  if (auto s = proto::validate_label_value(value); !s) {
    return make_error(Errc::kInvalid, "label '" + std::string(arg) + "': " + s.error().message);
  }
  return std::pair{std::move(key), std::move(value)};
}

Result<std::string> checked_selector(const std::string& text) {
  auto sel = proto::parse_selector(text);
  if (!sel)
    return make_error(Errc::kInvalid, "bad selector '" + text + "': " + sel.error().message);
  return proto::format_selector(*sel);
}

Status checked_image(const std::string& name, const std::string& version) {
  if (auto s = proto::validate_image_name(name); !s) {
    return make_error(Errc::kInvalid, "image name '" + name + "': " + s.error().message);
  }
  if (auto s = proto::validate_image_version(version); !s) {
    return make_error(Errc::kInvalid, "image version '" + version + "': " + s.error().message);
  }
  return ok_status();
}

std::string all_states() {
  std::string out;
  for (auto s : proto::kAllMachineStates)
    out += std::string(out.empty() ? "" : ", ") + to_string(s);
  return out;
}

// --- session ---------------------------------------------------------------------------------

// A successful (2xx) API reply.
struct Reply {
  unsigned status = 0;
  std::string raw;  // the body as received
  json body;        // parsed body; null for an empty body (204)
};

// What every command works with: the client, the output streams and mode, and the CLI's one
// way of reporting failures. Commands return `failure_code()` after a failed call (the
// message has been printed) and `usage(...)` for input they refuse before calling the API.
class Session {
 public:
  Session(Client client, bool json_mode, std::string token_hint, std::ostream& out,
          std::ostream& err)
      : client_(std::move(client)),
        json_mode_(json_mode),
        token_hint_(std::move(token_hint)),
        out_(out),
        err_(err) {}

  bool json_mode() const { return json_mode_; }
  std::ostream& out() { return out_; }
  std::ostream& err() { return err_; }
  int failure_code() const { return failure_code_; }

  int usage(const std::string& message) {
    err_ << "kiln: " << message << "\n";
    return kExitUsage;
  }

  // Calls the API. Returns the reply for a 2xx status; otherwise prints the error (the
  // server's {"error":{...}} message, or the transport failure) and returns nullopt with
  // failure_code() set to 1 (API error) or 2 (server unreachable or not speaking the API).
  std::optional<Reply> call(std::string_view method, const std::string& target,
                            const json* body = nullptr, seconds wait = seconds(0),
                            std::string_view content_type = "application/json") {
    const std::string payload = body ? body->dump() : std::string();
    return interpret(client_.request(method, target, payload, content_type, wait));
  }

  // POSTs a file as application/octet-stream, streamed; see call().
  std::optional<Reply> upload(const std::string& target, const std::string& path,
                              const UploadProgress& progress, seconds wait) {
    return interpret(client_.upload(target, path, "application/octet-stream", progress, wait));
  }

  std::optional<Reply> interpret(Result<HttpReply>&& r) {
    if (!r) {
      err_ << "kiln: " << r.error().message << "\n";
      failure_code_ = kExitUsage;
      return std::nullopt;
    }
    Reply reply{r->status, std::move(r->body), nullptr};
    json parsed = json::parse(reply.raw, nullptr, /*allow_exceptions=*/false);
    if (reply.status >= 200 && reply.status < 300) {
      if (reply.raw.empty()) return reply;
      if (parsed.is_discarded()) {
        err_ << "kiln: the response from " << client_.endpoint().url
             << " is not JSON; is the URL a kilnd server? (HTTP " << reply.status << ")\n";
        failure_code_ = kExitUsage;
        return std::nullopt;
      }
      reply.body = std::move(parsed);
      return reply;
    }
    failure_code_ = kExitApiError;
    const json* error = nullptr;
    if (!parsed.is_discarded() && parsed.is_object()) {
      auto it = parsed.find("error");
      if (it != parsed.end() && it->is_object()) error = &*it;
    }
    if (error) {
      err_ << "kiln: " << text(*error, "message") << " (HTTP " << reply.status << " "
           << text(*error, "code") << ")\n";
    } else {
      err_ << "kiln: unexpected response from " << client_.endpoint().url << " (HTTP "
           << reply.status << " " << r->reason << ")\n";
    }
    if (reply.status == 401 && !token_hint_.empty()) err_ << "kiln: hint: " << token_hint_ << "\n";
    return std::nullopt;
  }

  // --json output: the body exactly as the server sent it.
  int print_raw(const Reply& r) {
    out_ << r.raw;
    if (!r.raw.empty() && r.raw.back() != '\n') out_ << '\n';
    return kExitOk;
  }

 private:
  Client client_;
  const bool json_mode_;
  const std::string token_hint_;  // shown after a 401 when no token was configured
  std::ostream& out_;
  std::ostream& err_;
  int failure_code_ = kExitOk;
};

// --- rendering -------------------------------------------------------------------------------

void add_machine_row(Table& t, const json& m) {
  std::string assigned;
  if (auto a = m.find("assignment"); a != m.end() && a->is_object()) assigned = version_ref(*a);
  t.add_row({text(m, "id"), text(m, "name"), text(m, "state"), join(m.value("macs", json()), ","),
             join_labels(m.value("labels", json()), ","), version_ref(m, "current_version"),
             assigned});
}

Table machine_table() {
  return Table({"ID", "NAME", "STATE", "MACS", "LABELS", "CURRENT", "ASSIGNED"});
}

void print_machine(std::ostream& out, const json& m) {
  Details d;
  d.add("ID", text(m, "id"));
  d.add("Name", text(m, "name"));
  std::string state = text(m, "state");
  if (auto reason = text(m, "state_reason"); !reason.empty()) state += " (" + reason + ")";
  d.add("State", state);
  d.add("MACs", join(m.value("macs", json()), ", "));
  d.add("UUID", text(m, "uuid"));
  d.add("Labels", join_labels(m.value("labels", json()), ", "));
  d.add("Current", version_ref(m, "current_version"));
  std::string assigned;
  if (auto a = m.find("assignment"); a != m.end() && a->is_object()) {
    assigned = version_ref(*a) + " (deployment " + text(*a, "deployment_id") + ")";
  }
  d.add("Assigned", assigned);
  if (auto inv = m.find("inventory"); inv != m.end() && !inv->empty() && !inv->is_null()) {
    d.add("Inventory", inv->dump());
  }
  d.add("Created", text(m, "created_at"));
  d.add("Updated", text(m, "updated_at"));
  d.print(out);
}

std::string duration_text(const json& d) {
  auto it = d.find("duration_ms");
  if (it == d.end() || !it->is_number()) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", it->get<double>() / 1000.0);
  return buf;
}

std::string progress_text(const json& d) {
  const std::int64_t done = d.value("bytes_done", std::int64_t{0});
  const std::int64_t total = d.value("bytes_total", std::int64_t{0});
  if (total <= 0) return done > 0 ? format_bytes(done) : "";
  return format_bytes(done) + " / " + format_bytes(total) + " (" +
         std::to_string(done * 100 / total) + "%)";
}

void print_deployment(std::ostream& out, const json& dep) {
  Details d;
  d.add("ID", text(dep, "id"));
  d.add("Machine", text(dep, "machine_id"));
  d.add("Kind", text(dep, "kind"));
  d.add("From", version_ref(dep, "from"));
  d.add("To", version_ref(dep, "to"));
  std::string status = text(dep, "status");
  if (auto reason = text(dep, "status_reason"); !reason.empty()) status += " (" + reason + ")";
  d.add("Status", status);
  d.add("Stage", text(dep, "stage"));
  d.add("Progress", progress_text(dep));
  d.add("Requested by", text(dep, "requested_by"));
  d.add("Created", text(dep, "created_at"));
  d.add("Started", text(dep, "started_at"));
  d.add("Finished", text(dep, "finished_at"));
  d.add("Duration", duration_text(dep));
  d.print(out);
}

// The outcome of an assignment or rollback (201: a new deployment; 200: the same version was
// already being deployed, nothing changed).
void print_assignment(std::ostream& out, const Reply& r) {
  const json& d = r.body;
  if (r.status == 200) {
    out << "deployment " << text(d, "id") << ": machine " << text(d, "machine_id")
        << " is already deploying " << version_ref(d, "to") << " (" << text(d, "status")
        << "); nothing changed\n";
    return;
  }
  std::string from = version_ref(d, "from");
  out << "deployment " << text(d, "id") << ": machine " << text(d, "machine_id") << " "
      << (from.empty() ? "(none)" : from) << " -> " << version_ref(d, "to") << " ("
      << text(d, "kind") << ", " << text(d, "status") << ")\n";
  if (auto s = text(d, "superseded_deployment_id"); !s.empty()) {
    out << "superseded deployment " << s << "\n";
  }
}

Table image_table() {
  return Table({"NAME", "VERSION", "FORMAT", "SIZE", "SHA256", "CREATED", "DESCRIPTION"});
}

void add_image_row(Table& t, const json& v) {
  t.add_row({text(v, "name"), text(v, "version"), text(v, "format"),
             format_bytes(v.value("size_bytes", std::int64_t{0})), text(v, "sha256").substr(0, 12),
             text(v, "created_at"), text(v, "description")});
}

void print_image(std::ostream& out, const json& v) {
  Details d;
  d.add("Name", text(v, "name"));
  d.add("Version", text(v, "version"));
  d.add("Format", text(v, "format"));
  const auto size = v.value("size_bytes", std::int64_t{0});
  d.add("Size", std::to_string(size) + " bytes (" + format_bytes(size) + ")");
  d.add("SHA-256", text(v, "sha256"));
  d.add("Source URL", text(v, "source_url"));
  d.add("Description", text(v, "description"));
  d.add("Labels", join_labels(v.value("labels", json()), ", "));
  d.add("Created by", text(v, "created_by"));
  d.add("Created", text(v, "created_at"));
  d.print(out);
}

// One line per event: "<time> <id> <type> machine=<id> deployment=<id> <data>".
std::string event_line(const json& e) {
  std::string line = text(e, "time") + " " + text(e, "id") + " " + text(e, "type");
  if (auto m = text(e, "machine_id"); !m.empty()) line += " machine=" + m;
  if (auto d = text(e, "deployment_id"); !d.empty()) line += " deployment=" + d;
  if (auto data = e.find("data"); data != e.end() && !data->is_null() && !data->empty()) {
    line += " " + data->dump();
  }
  return line;
}

// --- commands --------------------------------------------------------------------------------

// Every value a command line can carry, bound to CLI11 options; each command reads its own.
struct Args {
  std::string id;  // machine id or MAC, deployment id, token id
  std::string selector;
  std::string state;
  std::optional<int> limit;
  std::vector<std::string> macs;
  std::string uuid;
  std::string name;
  std::vector<std::string> labels;
  std::string image;
  std::string version;
  bool force = false;
  std::string url;
  std::string sha256;
  std::int64_t size = 0;
  std::string format;
  std::string description;
  std::string scope = "read";
  std::int64_t since = 0;
  std::optional<std::int64_t> wait;
  bool follow = false;
  std::string machine;
  std::string path;
};

int machine_list(Session& s, const Args& a) {
  Query q;
  if (!a.selector.empty()) {
    auto sel = checked_selector(a.selector);
    if (!sel) return s.usage(sel.error().message);
    q.add("selector", *sel);
  }
  if (!a.state.empty()) {
    if (!proto::parse_machine_state(a.state)) {
      return s.usage("unknown state '" + a.state + "' (one of: " + all_states() + ")");
    }
    q.add("state", a.state);
  }
  const std::string path = api_path({"machines"});
  if (a.limit) {
    if (*a.limit < 1) return s.usage("--limit must be at least 1");
    Query one = q;
    one.add("limit", std::to_string(*a.limit));
    auto r = s.call("GET", path + one.str());
    if (!r) return s.failure_code();
    if (s.json_mode()) return s.print_raw(*r);
    auto t = machine_table();
    for (const auto& m : items_of(r->body)) add_machine_row(t, m);
    t.print(s.out());
    return kExitOk;
  }
  // Everything: follow the next_after cursor page by page.
  json items = json::array();
  std::optional<std::int64_t> after;
  while (true) {
    Query page = q;
    if (after) page.add("after", std::to_string(*after));
    auto r = s.call("GET", path + page.str());
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
  auto t = machine_table();
  for (const auto& m : items) add_machine_row(t, m);
  t.print(s.out());
  return kExitOk;
}

int machine_show(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"machines", a.id}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  print_machine(s.out(), r->body);
  return kExitOk;
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
  json labels = json::object();
  for (const auto& l : a.labels) {
    auto kv = parse_label(l);
    if (!kv) return s.usage(kv.error().message);
    labels[kv->first] = kv->second;
  }
  if (!labels.empty()) body["labels"] = std::move(labels);
  auto r = s.call("POST", api_path({"machines"}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  print_machine(s.out(), r->body);
  return kExitOk;
}

int machine_label(Session& s, const Args& a) {
  json labels = json::object();
  for (const auto& arg : a.labels) {
    std::string key;
    json value;
    if (arg.find('=') == std::string::npos && !arg.empty() && arg.back() == '-') {
      key = arg.substr(0, arg.size() - 1);  // "key-": remove the label
      if (auto st = proto::validate_label_key(key); !st) {
        return s.usage("label '" + arg + "': " + st.error().message);
      }
    } else if (arg.find('=') != std::string::npos) {
      auto kv = parse_label(arg);
      if (!kv) return s.usage(kv.error().message);
      key = kv->first;
      value = kv->second;
    } else {
      return s.usage("label '" + arg + "' must be key=value (set) or key- (remove)");
    }
    if (labels.contains(key)) return s.usage("label '" + key + "' is given more than once");
    labels[key] = std::move(value);
  }
  const json body = {{"labels", std::move(labels)}};
  auto r = s.call("PATCH", api_path({"machines", a.id}), &body, seconds(0),
                  "application/merge-patch+json");
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  print_machine(s.out(), r->body);
  return kExitOk;
}

int machine_assign(Session& s, const Args& a) {
  if (auto st = checked_image(a.image, a.version); !st) return s.usage(st.error().message);
  const json body = {{"image", a.image}, {"version", a.version}, {"force", a.force}};
  auto r = s.call("PUT", api_path({"machines", a.id, "assignment"}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  print_assignment(s.out(), *r);
  return kExitOk;
}

int machine_rollback(Session& s, const Args& a) {
  auto r = s.call("POST", api_path({"machines", a.id, "rollback"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  print_assignment(s.out(), *r);
  return kExitOk;
}

int machine_history(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"machines", a.id, "deployments"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  Table t({"ID", "KIND", "FROM", "TO", "STATUS", "REQUESTED_BY", "CREATED", "FINISHED", "REASON"});
  for (const auto& d : items_of(r->body)) {
    t.add_row({text(d, "id"), text(d, "kind"), version_ref(d, "from"), version_ref(d, "to"),
               text(d, "status"), text(d, "requested_by"), text(d, "created_at"),
               text(d, "finished_at"), text(d, "status_reason")});
  }
  t.print(s.out());
  return kExitOk;
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

int bulk_assign(Session& s, const Args& a) {
  auto sel = checked_selector(a.selector);
  if (!sel) return s.usage(sel.error().message);
  if (auto st = checked_image(a.image, a.version); !st) return s.usage(st.error().message);
  const json body = {
      {"selector", *sel}, {"image", a.image}, {"version", a.version}, {"force", a.force}};
  auto r = s.call("POST", api_path({"assignments"}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  const json& b = r->body;
  s.out() << "selector " << text(b, "selector") << " matched " << text(b, "matched")
          << " machine(s); " << text(b, "created") << " new deployment(s) of " << a.image << ":"
          << a.version << "\n";
  Table t({"MACHINE", "DEPLOYMENT", "FROM", "TO", "STATUS", "NEW", "SUPERSEDED"});
  for (const auto& d : items_of(b, "deployments")) {
    t.add_row({text(d, "machine_id"), text(d, "id"), version_ref(d, "from"), version_ref(d, "to"),
               text(d, "status"), d.value("created", false) ? "yes" : "no",
               text(d, "superseded_deployment_id")});
  }
  t.print(s.out());
  return kExitOk;
}

int image_list(Session& s, const Args&) {
  auto r = s.call("GET", api_path({"images"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  auto t = image_table();
  for (const auto& v : items_of(r->body)) add_image_row(t, v);
  t.print(s.out());
  return kExitOk;
}

int image_show(Session& s, const Args& a) {
  if (a.version.empty()) {
    auto r = s.call("GET", api_path({"images", a.image}));
    if (!r) return s.failure_code();
    if (s.json_mode()) return s.print_raw(*r);
    auto t = image_table();
    for (const auto& v : items_of(r->body)) add_image_row(t, v);
    t.print(s.out());
    return kExitOk;
  }
  auto r = s.call("GET", api_path({"images", a.image, "versions", a.version}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  print_image(s.out(), r->body);
  return kExitOk;
}

int image_register(Session& s, const Args& a) {
  if (auto st = checked_image(a.image, a.version); !st) return s.usage(st.error().message);
  if (a.url.rfind("http://", 0) != 0 && a.url.rfind("https://", 0) != 0) {
    return s.usage("--url must be an http:// or https:// URL");
  }
  if (!is_sha256_hex(ascii_lower(a.sha256))) {
    return s.usage("--sha256 must be 64 hex digits");
  }
  if (a.size <= 0) return s.usage("--size must be a positive number of bytes");
  json body = {{"source_url", a.url}, {"sha256", a.sha256}, {"size_bytes", a.size}};
  if (!a.format.empty()) body["format"] = a.format;
  if (!a.description.empty()) body["description"] = a.description;
  json labels = json::object();
  for (const auto& l : a.labels) {
    auto kv = parse_label(l);
    if (!kv) return s.usage(kv.error().message);
    labels[kv->first] = kv->second;
  }
  if (!labels.empty()) body["labels"] = std::move(labels);
  auto r = s.call("POST", api_path({"images", a.image, "versions", a.version}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  const std::string what = text(r->body, "name") + ":" + text(r->body, "version");
  if (r->status == 200) {
    s.out() << "image " << what << " was already registered with the same metadata\n";
  } else {
    s.out() << "registered image " << what << " (" << text(r->body, "format") << ", "
            << format_bytes(r->body.value("size_bytes", std::int64_t{0})) << ")\n";
  }
  return kExitOk;
}

int image_push(Session& s, const Args& a) {
  // Read the name and version from the image itself (and refuse a damaged file before
  // sending it); the server verifies everything again.
  auto img = proto::image::PackedImage::open(a.path);
  if (!img) return s.usage(img.error().message);
  const auto& m = img->manifest();
  const std::uint64_t total = img->file_size();
  const bool tty = ::isatty(STDERR_FILENO) == 1 && !s.json_mode();
  const auto start = std::chrono::steady_clock::now();
  auto last = start - std::chrono::hours(1);
  bool drawn = false;
  auto progress = [&](std::uint64_t sent, std::uint64_t all) {
    const auto now = std::chrono::steady_clock::now();
    if (sent < all && now - last < (tty ? std::chrono::milliseconds(200) : std::chrono::seconds(5)))
      return;
    last = now;
    const double secs = std::chrono::duration<double>(now - start).count();
    const double rate = secs > 0 ? static_cast<double>(sent) / secs : 0;
    char line[160];
    std::snprintf(
        line, sizeof line, "uploading %s:%s: %s of %s (%.0f%%), %s/s%s", m.name.c_str(),
        m.version.c_str(), format_bytes(static_cast<std::int64_t>(sent)).c_str(),
        format_bytes(static_cast<std::int64_t>(all)).c_str(),
        all ? 100.0 * static_cast<double>(sent) / static_cast<double>(all) : 100.0,
        format_bytes(static_cast<std::int64_t>(rate)).c_str(),
        rate > 0 && sent < all
            ? (", ETA " +
               std::to_string(static_cast<long long>(static_cast<double>(all - sent) / rate)) + "s")
                  .c_str()
            : "");
    if (tty) {
      s.err() << "\r" << line << "\033[K" << std::flush;
      drawn = true;
    } else if (!s.json_mode()) {
      s.err() << line << "\n";
    }
    if (sent == all && !s.json_mode()) {
      if (drawn) s.err() << "\n";
      s.err() << "verifying on the server...\n";
    }
  };
  // The server verifies every chunk before answering: allow about 100 MB/s for it.
  const auto verify_wait = std::chrono::seconds(60 + static_cast<long long>(total / 100'000'000));
  auto r =
      s.upload(api_path({"images", m.name, "versions", m.version}), a.path, progress, verify_wait);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  const auto& imp = r->body.value("import", json::object());
  const std::string what = text(r->body, "name") + ":" + text(r->body, "version");
  if (r->status == 200) {
    s.out() << "image " << what << " was already stored with the same content\n";
  } else {
    s.out() << "pushed image " << what << " ("
            << format_bytes(r->body.value("size_bytes", std::int64_t{0})) << ", "
            << imp.value("chunks", 0) << " chunks, " << imp.value("new_chunks", 0) << " new, "
            << format_bytes(imp.value("new_bytes", std::int64_t{0})) << " stored"
            << (imp.value("signed", false) ? ", signed" : ", unsigned") << ")\n";
  }
  return kExitOk;
}

int image_delete(Session& s, const Args& a) {
  auto r = s.call("DELETE", api_path({"images", a.image, "versions", a.version}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  s.out() << "deleted image " << a.image << ":" << a.version << "\n";
  return kExitOk;
}

int deployment_show(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"deployments", a.id}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  print_deployment(s.out(), r->body);
  return kExitOk;
}

int token_list(Session& s, const Args&) {
  auto r = s.call("GET", api_path({"tokens"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  Table t({"ID", "NAME", "SCOPE", "CREATED", "REVOKED"});
  for (const auto& tok : items_of(r->body)) {
    t.add_row({text(tok, "id"), text(tok, "name"), text(tok, "scope"), text(tok, "created_at"),
               text(tok, "revoked_at")});
  }
  t.print(s.out());
  return kExitOk;
}

int token_create(Session& s, const Args& a) {
  if (!proto::parse_scope(a.scope)) return s.usage("--scope must be 'read' or 'admin'");
  const json body = {{"name", a.name}, {"scope", a.scope}};
  auto r = s.call("POST", api_path({"tokens"}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  // The token alone on stdout (so `TOKEN=$(kiln token create ...)` works); the rest on stderr.
  s.out() << text(r->body, "token") << "\n";
  s.err() << "kiln: created token " << text(r->body, "id") << " '" << text(r->body, "name")
          << "' with scope " << text(r->body, "scope") << "; it is shown only this once\n";
  return kExitOk;
}

int token_revoke(Session& s, const Args& a) {
  auto r = s.call("DELETE", api_path({"tokens", a.id}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  s.out() << "token " << a.id << " revoked\n";
  return kExitOk;
}

int events(Session& s, const Args& a) {
  if (a.since < 0) return s.usage("--since must be 0 or more");
  if (a.wait && *a.wait < 0) return s.usage("--wait must be 0 or more seconds");
  auto target = [&](std::int64_t since, std::int64_t wait) {
    Query q;
    q.add("since", std::to_string(since));
    if (wait > 0) q.add("wait", std::to_string(wait));
    if (!a.machine.empty()) q.add("machine", a.machine);
    return api_path({"events"}) + q.str();
  };
  if (!a.follow) {
    const std::int64_t wait = a.wait.value_or(0);
    auto r = s.call("GET", target(a.since, wait), nullptr, seconds(wait));
    if (!r) return s.failure_code();
    if (s.json_mode()) return s.print_raw(*r);
    for (const auto& e : items_of(r->body, "events")) s.out() << event_line(e) << "\n";
    return kExitOk;
  }
  // Follow: long-poll from the last cursor until interrupted. Transport failures after the
  // first successful poll are retried with backoff (the server may be restarting); API
  // errors (e.g. a revoked token) end the command.
  const std::int64_t wait = a.wait.value_or(kFollowWaitSeconds);
  if (wait < 1) return s.usage("--follow needs a --wait of at least 1 second");
  std::int64_t cursor = a.since;
  bool connected = false;
  int backoff_s = 1;
  while (true) {
    auto r = s.call("GET", target(cursor, wait), nullptr, seconds(wait));
    if (!r) {
      if (s.failure_code() != kExitUsage || !connected) return s.failure_code();
      s.err() << "kiln: retrying in " << backoff_s << " s\n";
      std::this_thread::sleep_for(seconds(backoff_s));
      backoff_s = std::min(backoff_s * 2, 30);
      continue;
    }
    connected = true;
    backoff_s = 1;
    for (const auto& e : items_of(r->body, "events")) {
      s.out() << (s.json_mode() ? e.dump() : event_line(e)) << "\n";
    }
    s.out().flush();
    if (auto next = r->body.find("next"); next != r->body.end() && next->is_number_integer()) {
      cursor = std::max(cursor, next->get<std::int64_t>());
    }
  }
}

}  // namespace

int run(int argc, const char* const* argv, const Environment& env, std::ostream& out,
        std::ostream& err) {
  CLI::App app{"kiln: command-line client for the kilnd REST API"};
  app.name("kiln");
  app.set_version_flag("--version", std::string("kiln ") + kVersion);
  // Subcommands inherit fallthrough, so global options may also follow the subcommand.
  app.fallthrough();
  app.require_subcommand(1);
  app.footer(
      "Server and token come from --url/--token, else KILN_URL/KILN_TOKEN, else the config "
      "file\n(~/.config/kiln/config.json, or --config/KILN_CONFIG: "
      "{\"url\":...,\"token\":...}).\nExit codes: 0 ok, 1 API error, 2 usage error or server "
      "unreachable.");

  std::string url, token, config, cacert;
  bool insecure = false, json_mode = false;
  int timeout_s = 30;
  auto* url_opt =
      app.add_option("--url", url, "server URL (default " + std::string(kDefaultUrl) + ")");
  auto* token_opt = app.add_option("--token", token, "API token");
  auto* config_opt =
      app.add_option("--config", config, "config file (JSON: url, token, cacert, insecure)");
  auto* cacert_opt = app.add_option("--cacert", cacert, "PEM file of CAs to trust for https");
  app.add_flag("--insecure", insecure, "https: do not verify the server's certificate");
  app.add_option("--timeout", timeout_s, "connect/read timeout in seconds (default 30)")
      ->check(CLI::Range(1, 3600));
  app.add_flag("--json", json_mode, "print the raw JSON response");

  Args a;
  std::function<int(Session&)> action;
  std::function<int()> offline;  // commands that work on local files, without a server
  ImageBuildArgs build;
  std::vector<std::string> trusted_keys;
  std::string image_path;
  std::string key_prefix;
  // Binds a subcommand to the command function that runs once parsing succeeded.
  auto bind = [&action](CLI::App* sub, int (*fn)(Session&, const Args&), const Args& args) {
    sub->callback(
        [&action, fn, &args] { action = [fn, &args](Session& s) { return fn(s, args); }; });
  };

  auto* machine = app.add_subcommand("machine", "list, inspect, label and (re)image machines");
  machine->require_subcommand(1);
  {
    auto* c = machine->add_subcommand("list", "list machines (every page unless --limit)");
    c->add_option("--selector,-l", a.selector, "label selector, e.g. rack=r12,role!=db");
    c->add_option("--state", a.state, "only machines in this state");
    c->add_option("--limit", a.limit, "at most N machines (one request)");
    bind(c, machine_list, a);

    c = machine->add_subcommand("show", "show one machine");
    c->add_option("id", a.id, "machine id or MAC")->required();
    bind(c, machine_show, a);

    c = machine->add_subcommand("create", "register a machine by MAC");
    c->add_option("--mac", a.macs, "MAC address (repeatable)")->required()->allow_extra_args(false);
    c->add_option("--uuid", a.uuid, "SMBIOS UUID");
    c->add_option("--name", a.name, "display name");
    c->add_option("--label", a.labels, "label key=value (repeatable)")->allow_extra_args(false);
    bind(c, machine_create, a);

    c = machine->add_subcommand("label", "set (key=value) or remove (key-) labels");
    c->add_option("id", a.id, "machine id or MAC")->required();
    c->add_option("labels", a.labels, "key=value or key-")->required();
    bind(c, machine_label, a);

    c = machine->add_subcommand("assign", "assign an image version (re-images the machine)");
    c->add_option("id", a.id, "machine id or MAC")->required();
    c->add_option("image", a.image, "image name")->required();
    c->add_option("version", a.version, "image version")->required();
    c->add_flag("--force", a.force, "supersede a deployment in progress");
    bind(c, machine_assign, a);

    c = machine->add_subcommand("rollback", "reassign the previous successfully deployed version");
    c->add_option("id", a.id, "machine id or MAC")->required();
    bind(c, machine_rollback, a);

    c = machine->add_subcommand("history", "list the machine's deployments");
    c->add_option("id", a.id, "machine id or MAC")->required();
    bind(c, machine_history, a);

    c = machine->add_subcommand("delete", "delete a machine (its history stays)");
    c->add_option("id", a.id, "machine id or MAC")->required();
    c->add_flag("--force", a.force, "also supersede a deployment in progress");
    bind(c, machine_delete, a);
  }

  auto* assign =
      app.add_subcommand("assign", "assign an image version to every machine matching a selector");
  assign->add_option("--selector,-l", a.selector, "label selector, e.g. rack=r12")->required();
  assign->add_option("image", a.image, "image name")->required();
  assign->add_option("version", a.version, "image version")->required();
  assign->add_flag("--force", a.force, "supersede deployments in progress");
  bind(assign, bulk_assign, a);

  auto* image = app.add_subcommand("image", "list, inspect, register and delete image versions");
  image->require_subcommand(1);
  {
    auto* c = image->add_subcommand("list", "list every image version");
    bind(c, image_list, a);

    c = image->add_subcommand("show", "show an image's versions, or one version");
    c->add_option("name", a.image, "image name")->required();
    c->add_option("version", a.version, "image version");
    bind(c, image_show, a);

    c = image->add_subcommand("register", "register an external raw image by URL");
    c->add_option("name", a.image, "image name")->required();
    c->add_option("version", a.version, "image version")->required();
    c->add_option("--url", a.url, "http(s) URL of the image")->required();
    c->add_option("--sha256", a.sha256, "SHA-256 of the image file")->required();
    c->add_option("--size", a.size, "image size in bytes")->required();
    c->add_option("--format", a.format, "raw (default), raw.gz, raw.xz or raw.zst")
        ->check(CLI::IsMember({"raw", "raw.gz", "raw.xz", "raw.zst"}));
    c->add_option("--description", a.description, "free text");
    c->add_option("--label", a.labels, "label key=value (repeatable)")->allow_extra_args(false);
    bind(c, image_register, a);

    c = image->add_subcommand("build", "build a packed .kiln image from a raw disk image");
    c->add_option("input", build.input, "raw image, block device, or raw.gz/.xz/.zst/.bz2")
        ->required();
    c->add_option("-o,--output", build.output, "output .kiln file")->required();
    c->add_option("--name", build.name, "image name")->required();
    c->add_option("--version", build.version, "image version")->required();
    c->add_option("--chunk-size", build.chunk_size, "power of two, 256K..64M (default 4M)");
    c->add_option("--level", build.level, "zstd level (default 3)")->check(CLI::Range(-7, 22));
    c->add_option("--threads", build.threads, "compression threads (default: cores)");
    c->add_flag("--free-holes", build.free_holes,
                "holes of a sparse input are free space (UNMAPPED), not zeroes");
    c->add_option("--sector-size", build.sector_size, "512 or 4096 (default: detect)");
    c->add_option("--sign", build.sign_key, "Ed25519 private key (PEM) to sign the manifest");
    c->add_option("--label", build.labels, "label key=value (repeatable)")->allow_extra_args(false);
    c->add_option("--boot-partition", build.boot_partition, "kexec hint: partition number");
    c->add_option("--boot-kernel", build.boot_kernel, "kexec hint: kernel path in the partition");
    c->add_option("--boot-initrd", build.boot_initrd, "kexec hint: initrd path");
    c->add_option("--boot-cmdline", build.boot_cmdline, "kexec hint: kernel command line");
    c->callback([&] { offline = [&] { return image_build(build, json_mode, out, err); }; });

    c = image->add_subcommand("inspect", "summarize a .kiln image and verify every chunk");
    c->add_option("file", image_path, ".kiln file")->required();
    c->add_option("--key", trusted_keys, "trusted public key (PEM); repeatable")
        ->allow_extra_args(false);
    c->callback([&] {
      offline = [&] { return image_inspect(image_path, trusted_keys, json_mode, false, out, err); };
    });

    c = image->add_subcommand("verify", "verify a .kiln image; exit 1 naming the first bad chunk");
    c->add_option("file", image_path, ".kiln file")->required();
    c->add_option("--key", trusted_keys, "trusted public key (PEM); repeatable")
        ->allow_extra_args(false);
    c->callback([&] {
      offline = [&] { return image_inspect(image_path, trusted_keys, json_mode, true, out, err); };
    });

    c = image->add_subcommand("push", "upload a .kiln image to the server (verified there)");
    c->add_option("file", a.path, ".kiln file")->required();
    bind(c, image_push, a);

    c = image->add_subcommand("delete", "delete an image version no machine uses");
    c->add_option("name", a.image, "image name")->required();
    c->add_option("version", a.version, "image version")->required();
    bind(c, image_delete, a);
  }

  auto* deployment = app.add_subcommand("deployment", "inspect deployments");
  deployment->require_subcommand(1);
  {
    auto* c = deployment->add_subcommand("show", "show one deployment");
    c->add_option("id", a.id, "deployment id")->required();
    bind(c, deployment_show, a);
  }

  auto* tokens = app.add_subcommand("token", "manage API tokens (admin)");
  tokens->require_subcommand(1);
  {
    auto* c = tokens->add_subcommand("list", "list tokens (never their values)");
    bind(c, token_list, a);

    c = tokens->add_subcommand("create", "create a token and print it once");
    c->add_option("--name", a.name, "who or what uses the token")->required();
    c->add_option("--scope", a.scope, "read (default) or admin");
    bind(c, token_create, a);

    c = tokens->add_subcommand("revoke", "revoke a token");
    c->add_option("id", a.id, "token id")->required();
    bind(c, token_revoke, a);
  }

  auto* key = app.add_subcommand("key", "manage image signing keys (local files)");
  key->require_subcommand(1);
  {
    auto* c = key->add_subcommand("generate", "generate an Ed25519 key pair");
    c->add_option("--out", key_prefix, "writes PREFIX.pem (private) and PREFIX.pub.pem")
        ->required();
    c->callback([&] { offline = [&] { return key_generate(key_prefix, out, err); }; });
  }

  auto* ev = app.add_subcommand("events", "print events (deployments, machines, images)");
  ev->add_option("--since", a.since, "only events after this id (default 0: all)");
  ev->add_option("--wait", a.wait, "long-poll up to S seconds for the first event");
  ev->add_option("--machine", a.machine, "only events of this machine (id or MAC)");
  ev->add_flag(
      "--follow,-f", a.follow,
      "keep long-polling and printing new events until interrupted (with --json: one event "
      "object per line)");
  bind(ev, events, a);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every other parse failure is a usage error.
    return app.exit(e, out, err) == 0 ? kExitOk : kExitUsage;
  }
  if (offline) return offline();
  if (!action) {
    err << "kiln: no command given; see kiln --help\n";
    return kExitUsage;
  }

  // Settings: flag, else environment, else config file, else default.
  auto path = config_path(config_opt->count() ? std::optional(config) : std::nullopt, env);
  FileConfig file;
  if (path) {
    const bool explicit_path = config_opt->count() > 0 || env.config_path.has_value();
    auto loaded = load_config(*path, explicit_path);
    if (!loaded) {
      err << "kiln: " << loaded.error().message << "\n";
      return kExitUsage;
    }
    file = std::move(*loaded);
  }
  ClientOptions options;
  options.url = url_opt->count() ? url
                : env.url        ? *env.url
                : file.url       ? *file.url
                                 : std::string(kDefaultUrl);
  options.token = token_opt->count() ? token : env.token ? *env.token : file.token.value_or("");
  options.cacert = cacert_opt->count() ? cacert : file.cacert.value_or("");
  options.insecure = insecure || file.insecure.value_or(false);
  options.timeout = seconds(timeout_s);
  options.user_agent = std::string("kiln/") + kVersion;
  std::string token_hint;
  if (options.token.empty()) {
    token_hint = "no API token configured; pass --token, set KILN_TOKEN, or add \"token\" to " +
                 path.value_or(std::string("~/.config/kiln/config.json"));
  }

  auto client = Client::create(std::move(options));
  if (!client) {
    err << "kiln: " << client.error().message << "\n";
    return kExitUsage;
  }
  Session session(std::move(*client), json_mode, std::move(token_hint), out, err);
  return action(session);
}

}  // namespace kiln::cli
