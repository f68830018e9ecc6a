#include "proto/resources.h"

#include "core/hex.h"
#include "core/json_writer.h"
#include "core/time.h"

namespace kiln::proto {

using json = nlohmann::json;

namespace {

json ts(std::int64_t ms) { return format_rfc3339_ms(ms); }
json ts(const std::optional<std::int64_t>& ms) { return ms ? ts(*ms) : json(nullptr); }
json ref(const std::optional<VersionRef>& v) { return v ? to_json(*v) : json(nullptr); }
template <typename T>
json opt(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

// --- decoding: one exception type, caught once per decode ---------------------------------

struct DecodeError {
  Errc code;
  std::string message;
};

// A property of the wrong type (400).
[[noreturn]] void bad(const char* key, const char* want) {
  throw DecodeError{Errc::kBadRequest, std::string("property '") + key + "' must be " + want};
}
// A property of the right type with a value out of range (422).
[[noreturn]] void invalid(const char* key, const char* want) {
  throw DecodeError{Errc::kInvalid, std::string("property '") + key + "' must be " + want};
}

const json* find(const json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) {
      throw DecodeError{Errc::kBadRequest, std::string("property '") + key + "' is required"};
    }
    return nullptr;
  }
  return &*it;
}

std::optional<std::string> opt_string(const json& j, const char* key, bool required = false) {
  const json* v = find(j, key, required);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad(key, "a string");
  return v->get<std::string>();
}
std::string string(const json& j, const char* key) { return *opt_string(j, key, true); }
std::string string_or_empty(const json& j, const char* key) {
  return opt_string(j, key).value_or("");
}

std::optional<std::int64_t> opt_int(const json& j, const char* key, bool required = false) {
  const json* v = find(j, key, required);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) bad(key, "an integer");
  return v->get<std::int64_t>();
}
std::int64_t integer(const json& j, const char* key) { return *opt_int(j, key, true); }

bool boolean_or(const json& j, const char* key, bool fallback) {
  const json* v = find(j, key, false);
  if (!v) return fallback;
  if (!v->is_boolean()) bad(key, "a boolean");
  return v->get<bool>();
}

std::optional<std::int64_t> opt_time(const json& j, const char* key, bool required = false) {
  auto s = opt_string(j, key, required);
  if (!s) return std::nullopt;
  auto ms = parse_rfc3339_ms(*s);
  if (!ms) bad(key, "an RFC 3339 UTC time");
  return ms;
}
std::int64_t time(const json& j, const char* key) { return *opt_time(j, key, true); }

const json& object(const json& j, const char* key, bool required = false) {
  static const json kEmpty = json::object();
  const json* v = find(j, key, required);
  if (!v) return kEmpty;
  if (!v->is_object()) bad(key, "an object");
  return *v;
}

std::map<std::string, std::string> string_map(const json& j, const char* key) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : object(j, key).items()) {
    if (!v.is_string()) bad(key, "an object of strings");
    out[k] = v.get<std::string>();
  }
  return out;
}

std::optional<VersionRef> opt_ref(const json& j, const char* key, bool required = false) {
  const json* v = find(j, key, required);
  if (!v) return std::nullopt;
  if (!v->is_object()) bad(key, "an object {image, version}");
  VersionRef r;
  r.name = string(*v, "image");
  r.version = string(*v, "version");
  return r;
}

template <typename E>
E enum_value(const json& j, const char* key, std::optional<E> (*parse)(std::string_view),
             const char* want) {
  auto e = parse(string(j, key));
  if (!e) bad(key, want);
  return *e;
}

template <typename T, typename F>
Result<T> decode(const json& j, const char* what, F&& f) {
  if (!j.is_object())
    return make_error(Errc::kBadRequest, std::string(what) + " must be an object");
  try {
    return f();
  } catch (const DecodeError& e) {
    return make_error(e.code, std::string(what) + ": " + e.message);
  }
}

}  // namespace

// --- encoders ------------------------------------------------------------------------------

json to_json(const VersionRef& v) { return {{"image", v.name}, {"version", v.version}}; }

json to_json(const Machine& m) {
  std::string text;
  append_json(text, m);
  return json::parse(text);
}

namespace {
void append_ref(std::string& out, const std::optional<VersionRef>& v) {
  if (!v) {
    out += "null";
    return;
  }
  out += "{\"image\":";
  json_append_string(out, v->name);
  out += ",\"version\":";
  json_append_string(out, v->version);
  out += "}";
}
void append_opt_string(std::string& out, const std::optional<std::string>& s) {
  if (s) {
    json_append_string(out, *s);
  } else {
    out += "null";
  }
}
}  // namespace

void append_json(std::string& out, const Machine& m) {
  // Keys in the sorted order nlohmann::json uses for the other resources.
  out += "{\"approved\":";
  out += m.approved ? "true" : "false";
  out += ",\"assignment\":";
  if (m.active_deployment_id) {
    out += "{\"deployment_id\":";
    json_append_int(out, *m.active_deployment_id);
    out += ",\"image\":";
    json_append_string(out, m.assigned_version ? m.assigned_version->name : "");
    out += ",\"version\":";
    json_append_string(out, m.assigned_version ? m.assigned_version->version : "");
    out += "}";
  } else {
    out += "null";
  }
  out += ",\"bmc\":";
  if (m.bmc_driver) {
    out += "{\"driver\":";
    json_append_string(out, *m.bmc_driver);
    out += "}";
  } else {
    out += "null";
  }
  out += ",\"created_at\":";
  json_append_string(out, format_rfc3339_ms(m.created_at));
  out += ",\"current_version\":";
  append_ref(out, m.current_version);
  out += ",\"id\":";
  json_append_int(out, m.id);
  out += ",\"inventory\":";
  out += m.inventory_json.empty() ? "{}" : m.inventory_json;
  out += ",\"ipv4\":";
  append_opt_string(out, m.ipv4);
  out += ",\"labels\":{";
  bool first = true;
  for (const auto& [k, v] : m.labels) {
    if (!first) out.push_back(',');
    first = false;
    json_append_string(out, k);
    out.push_back(':');
    json_append_string(out, v);
  }
  out += "},\"macs\":[";
  first = true;
  for (const auto& mac : m.macs) {
    if (!first) out.push_back(',');
    first = false;
    json_append_string(out, mac);
  }
  out += "],\"name\":";
  json_append_string(out, m.name);
  out += ",\"state\":";
  json_append_string(out, to_string(m.state));
  out += ",\"state_reason\":";
  json_append_string(out, m.state_reason);
  out += ",\"updated_at\":";
  json_append_string(out, format_rfc3339_ms(m.updated_at));
  out += ",\"uuid\":";
  append_opt_string(out, m.uuid);
  out += "}";
}

std::optional<std::int64_t> boot_ms(const Deployment& d) {
  if (!d.booted_at || !(d.powered_at || d.written_at)) return std::nullopt;
  return *d.booted_at - (d.powered_at ? *d.powered_at : *d.written_at);
}

json to_json(const Deployment& d) {
  json duration = nullptr;
  if (d.finished_at) duration = *d.finished_at - d.created_at;
  return {{"id", d.id},
          {"machine_id", d.machine_id},
          {"kind", d.kind},
          {"from", ref(d.from_version)},
          {"to", to_json(d.to_version)},
          {"requested_by", d.requested_by},
          {"created_at", ts(d.created_at)},
          {"status", to_string(d.status)},
          {"status_reason", d.status_reason},
          {"stage", d.stage},
          {"bytes_done", d.bytes_done},
          {"bytes_total", d.bytes_total},
          {"started_at", ts(d.started_at)},
          {"finished_at", ts(d.finished_at)},
          {"duration_ms", duration},
          {"reboot", d.reboot},
          {"written_at", ts(d.written_at)},
          {"powered_at", ts(d.powered_at)},
          {"booted_at", ts(d.booted_at)},
          {"boot_ms", opt(boot_ms(d))},
          {"deadline_at", ts(d.deadline_at)},
          {"deadline_misses", d.deadline_misses},
          {"config_sha256", d.config_sha256 ? json(*d.config_sha256) : json(nullptr)}};
}

json to_json(const ImageVersion& v) {
  return {{"name", v.name},
          {"version", v.version},
          {"size_bytes", v.size_bytes},
          {"sha256", v.sha256},
          {"format", v.format},
          {"source_url", opt(v.source_url)},
          {"signature", opt(v.signature)},
          {"description", v.description},
          {"labels", v.labels},
          {"created_by", v.created_by},
          {"created_at", ts(v.created_at)}};
}

json to_json(const Token& t) {
  return {{"id", t.id},
          {"name", t.name},
          {"scope", to_string(t.scope)},
          {"created_at", ts(t.created_at)},
          {"revoked_at", ts(t.revoked_at)}};
}

json to_json(const Event& e) {
  return {{"id", e.id},
          {"time", ts(e.created_at)},
          {"type", e.type},
          {"machine_id", opt(e.machine_id)},
          {"deployment_id", opt(e.deployment_id)},
          {"data", e.data}};
}

json to_json(const AgentReport& r) {
  json j = json::object();
  if (r.stage) j["stage"] = *r.stage;
  if (r.bytes_done) j["bytes_done"] = *r.bytes_done;
  if (r.bytes_total) j["bytes_total"] = *r.bytes_total;
  if (!r.detail.empty()) j["detail"] = r.detail;
  if (r.result) {
    j["status"] = to_string(*r.result);
    if (!r.reason.empty()) j["reason"] = r.reason;
  }
  if (r.proof) {
    const SuccessProof& p = *r.proof;
    json pj = {{"image_bytes", p.image_bytes},
               {"written_bytes", p.written_bytes},
               {"skipped_bytes", p.skipped_bytes},
               {"zeroed_bytes", p.zeroed_bytes},
               {"unmapped_bytes", p.unmapped_bytes}};
    if (!p.manifest_sha256.empty()) pj["manifest_sha256"] = p.manifest_sha256;
    if (!p.image_sha256.empty()) pj["image_sha256"] = p.image_sha256;
    j["proof"] = std::move(pj);
  }
  return j;
}

// --- decoders ------------------------------------------------------------------------------

Result<VersionRef> version_ref_from_json(const json& j) {
  return decode<VersionRef>(j, "version reference", [&] {
    VersionRef r;
    r.name = string(j, "image");
    r.version = string(j, "version");
    return r;
  });
}

Result<Machine> machine_from_json(const json& j) {
  return decode<Machine>(j, "machine", [&] {
    Machine m;
    m.id = integer(j, "id");
    m.name = string_or_empty(j, "name");
    if (const json* macs = find(j, "macs", true); macs) {
      if (!macs->is_array()) bad("macs", "an array of strings");
      for (const auto& mac : *macs) {
        if (!mac.is_string()) bad("macs", "an array of strings");
        m.macs.push_back(mac.get<std::string>());
      }
    }
    m.uuid = opt_string(j, "uuid");
    m.ipv4 = opt_string(j, "ipv4");
    m.state = enum_value<MachineState>(j, "state", parse_machine_state, "a machine state");
    m.state_reason = string_or_empty(j, "state_reason");
    m.approved = boolean_or(j, "approved", true);
    m.labels = string_map(j, "labels");
    m.inventory_json = object(j, "inventory").dump();
    m.current_version = opt_ref(j, "current_version");
    if (const json* a = find(j, "assignment", false); a) {
      if (!a->is_object()) bad("assignment", "an object");
      m.active_deployment_id = integer(*a, "deployment_id");
      m.assigned_version = VersionRef{0, string(*a, "image"), string(*a, "version")};
    }
    if (const json* b = find(j, "bmc", false); b) {
      if (!b->is_object()) bad("bmc", "an object");
      m.bmc_driver = string(*b, "driver");
    }
    m.created_at = time(j, "created_at");
    m.updated_at = time(j, "updated_at");
    return m;
  });
}

Result<Deployment> deployment_from_json(const json& j) {
  return decode<Deployment>(j, "deployment", [&] {
    Deployment d;
    d.id = integer(j, "id");
    d.machine_id = integer(j, "machine_id");
    d.kind = string(j, "kind");
    d.from_version = opt_ref(j, "from");
    d.to_version = *opt_ref(j, "to", true);
    d.requested_by = string_or_empty(j, "requested_by");
    d.created_at = time(j, "created_at");
    d.status =
        enum_value<DeploymentStatus>(j, "status", parse_deployment_status, "a deployment status");
    d.status_reason = string_or_empty(j, "status_reason");
    d.stage = string_or_empty(j, "stage");
    d.bytes_done = opt_int(j, "bytes_done").value_or(0);
    d.bytes_total = opt_int(j, "bytes_total").value_or(0);
    d.started_at = opt_time(j, "started_at");
    d.finished_at = opt_time(j, "finished_at");
    d.reboot = boolean_or(j, "reboot", false);
    d.written_at = opt_time(j, "written_at");
    d.powered_at = opt_time(j, "powered_at");
    d.booted_at = opt_time(j, "booted_at");
    d.deadline_at = opt_time(j, "deadline_at");
    d.deadline_misses = static_cast<int>(opt_int(j, "deadline_misses").value_or(0));
    d.config_sha256 = opt_string(j, "config_sha256");
    return d;
  });
}

Result<ImageVersion> image_version_from_json(const json& j) {
  return decode<ImageVersion>(j, "image version", [&] {
    ImageVersion v;
    v.name = string(j, "name");
    v.version = string(j, "version");
    v.size_bytes = integer(j, "size_bytes");
    v.sha256 = string(j, "sha256");
    v.format = string(j, "format");
    v.source_url = opt_string(j, "source_url");
    v.signature = opt_string(j, "signature");
    v.description = string_or_empty(j, "description");
    v.labels = json(string_map(j, "labels"));
    v.created_by = string_or_empty(j, "created_by");
    v.created_at = time(j, "created_at");
    return v;
  });
}

Result<Token> token_from_json(const json& j) {
  return decode<Token>(j, "token", [&] {
    Token t;
    t.id = integer(j, "id");
    t.name = string(j, "name");
    t.scope = enum_value<Scope>(j, "scope", parse_scope, "'read' or 'admin'");
    t.created_at = time(j, "created_at");
    t.revoked_at = opt_time(j, "revoked_at");
    return t;
  });
}

Result<Event> event_from_json(const json& j) {
  return decode<Event>(j, "event", [&] {
    Event e;
    e.id = integer(j, "id");
    e.created_at = time(j, "time");
    e.type = string(j, "type");
    e.machine_id = opt_int(j, "machine_id");
    e.deployment_id = opt_int(j, "deployment_id");
    e.data = object(j, "data");
    return e;
  });
}

Result<AgentReport> agent_report_from_json(const json& j) {
  return decode<AgentReport>(j, "agent report", [&] {
    AgentReport r;
    r.stage = opt_string(j, "stage");
    if (r.stage && r.stage->size() > 64) invalid("stage", "at most 64 characters");
    r.bytes_done = opt_int(j, "bytes_done");
    r.bytes_total = opt_int(j, "bytes_total");
    if (r.bytes_done.value_or(0) < 0 || r.bytes_total.value_or(0) < 0 ||
        (r.bytes_done && r.bytes_total && *r.bytes_total > 0 && *r.bytes_done > *r.bytes_total)) {
      invalid("bytes_done", "between 0 and bytes_total");
    }
    r.detail = object(j, "detail");
    if (auto st = opt_string(j, "status")) {
      r.result = parse_deployment_status(*st);
      if (!r.result) invalid("status", "a deployment status");
    }
    r.reason = string_or_empty(j, "reason");
    if (const json* p = find(j, "proof", false); p) {
      if (!p->is_object()) bad("proof", "an object");
      SuccessProof proof;
      proof.manifest_sha256 = string_or_empty(*p, "manifest_sha256");
      proof.image_sha256 = string_or_empty(*p, "image_sha256");
      for (const auto& h : {proof.manifest_sha256, proof.image_sha256}) {
        if (!h.empty() && !is_sha256_hex(h)) invalid("proof", "SHA-256 values in lower-case hex");
      }
      proof.image_bytes = integer(*p, "image_bytes");
      proof.written_bytes = integer(*p, "written_bytes");
      proof.skipped_bytes = integer(*p, "skipped_bytes");
      proof.zeroed_bytes = integer(*p, "zeroed_bytes");
      proof.unmapped_bytes = integer(*p, "unmapped_bytes");
      for (auto v : {proof.image_bytes, proof.written_bytes, proof.skipped_bytes,
                     proof.zeroed_bytes, proof.unmapped_bytes}) {
        if (v < 0) invalid("proof", "byte counts >= 0");
      }
      r.proof = std::move(proof);
    }
    return r;
  });
}

}  // namespace kiln::proto
