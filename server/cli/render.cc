#include "cli/render.h"

#include <cstdint>
#include <cstdio>
#include <string_view>

#include "core/time.h"

namespace kiln::cli {

namespace {

std::string time_text(std::int64_t ms) { return format_rfc3339_ms(ms); }
std::string time_text(const std::optional<std::int64_t>& ms) {
  return ms ? format_rfc3339_ms(*ms) : std::string();
}
std::string id_text(const std::optional<std::int64_t>& id) {
  return id ? std::to_string(*id) : std::string();
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

std::string join_labels(const std::map<std::string, std::string>& labels, std::string_view sep) {
  std::string out;
  for (const auto& [k, v] : labels) {
    if (!out.empty()) out += sep;
    out += k + "=" + v;
  }
  return out;
}

// ImageVersion keeps its labels as a JSON object (of strings, as its decoder checks).
std::string join_labels(const nlohmann::json& labels, std::string_view sep) {
  std::string out;
  if (!labels.is_object()) return out;
  for (const auto& [k, v] : labels.items()) {
    if (!out.empty()) out += sep;
    out += k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out;
}

// "(reason)" appended to a state or status when there is one.
std::string with_reason(std::string what, const std::string& reason) {
  if (!reason.empty()) what += " (" + reason + ")";
  return what;
}

std::string duration_text(const proto::Deployment& d) {
  if (!d.finished_at) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s",
                static_cast<double>(*d.finished_at - d.created_at) / 1000.0);
  return buf;
}

std::string progress_text(const proto::Deployment& d) {
  const std::int64_t done = d.bytes_done, total = d.bytes_total;
  if (total <= 0) return done > 0 ? format_bytes(done) : "";
  return format_bytes(done) + " / " + format_bytes(total) + " (" +
         std::to_string(done * 100 / total) + "%)";
}

}  // namespace

std::string version_text(const std::optional<proto::VersionRef>& v) {
  return v ? v->name + ":" + v->version : std::string();
}

// --- machines --------------------------------------------------------------------------------

Table machine_table() {
  return Table({"ID", "NAME", "STATE", "MACS", "LABELS", "CURRENT", "ASSIGNED"});
}

void add_machine_row(Table& t, const proto::Machine& m) {
  t.add_row({std::to_string(m.id), m.name, to_string(m.state), join(m.macs, ","),
             join_labels(m.labels, ","), version_text(m.current_version),
             m.active_deployment_id ? version_text(m.assigned_version) : ""});
}

void print_machine(std::ostream& out, const proto::Machine& m) {
  Details d;
  d.add("ID", std::to_string(m.id));
  d.add("Name", m.name);
  d.add("State", with_reason(to_string(m.state), m.state_reason));
  d.add("MACs", join(m.macs, ", "));
  d.add("UUID", m.uuid.value_or(""));
  d.add("Labels", join_labels(m.labels, ", "));
  d.add("Current", version_text(m.current_version));
  std::string assigned;
  if (m.active_deployment_id) {
    assigned = version_text(m.assigned_version) + " (deployment " +
               std::to_string(*m.active_deployment_id) + ")";
  }
  d.add("Assigned", assigned);
  if (!m.inventory_json.empty() && m.inventory_json != "{}") d.add("Inventory", m.inventory_json);
  d.add("Created", time_text(m.created_at));
  d.add("Updated", time_text(m.updated_at));
  d.print(out);
}

// --- deployments -----------------------------------------------------------------------------

void print_deployment(std::ostream& out, const proto::Deployment& dep) {
  Details d;
  d.add("ID", std::to_string(dep.id));
  d.add("Machine", std::to_string(dep.machine_id));
  d.add("Kind", dep.kind);
  d.add("From", version_text(dep.from_version));
  d.add("To", version_text(dep.to_version));
  d.add("Status", with_reason(to_string(dep.status), dep.status_reason));
  d.add("Stage", dep.stage);
  d.add("Progress", progress_text(dep));
  d.add("Requested by", dep.requested_by);
  d.add("Created", time_text(dep.created_at));
  d.add("Started", time_text(dep.started_at));
  d.add("Finished", time_text(dep.finished_at));
  d.add("Duration", duration_text(dep));
  d.print(out);
}

// Seconds from kilnd's power-on (or the image written) to the confirmed boot; "" before.
std::string boot_seconds(const proto::Deployment& d) {
  const auto ms = proto::boot_ms(d);
  if (!ms) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(*ms) / 1000.0);
  return buf;
}

Table deployment_table() {
  return Table({"ID", "KIND", "FROM", "TO", "STATUS", "REQUESTED_BY", "CREATED", "FINISHED",
                "BOOT_S", "CONFIG", "REASON"});
}

void add_deployment_row(Table& t, const proto::Deployment& d) {
  t.add_row({std::to_string(d.id), d.kind, version_text(d.from_version), version_text(d.to_version),
             to_string(d.status), d.requested_by, time_text(d.created_at), time_text(d.finished_at),
             boot_seconds(d), d.config_sha256 ? d.config_sha256->substr(0, 12) : "-",
             d.status_reason});
}

void print_assignment(std::ostream& out, const proto::Deployment& d, bool created,
                      const std::string& superseded_id) {
  const std::string head =
      "deployment " + std::to_string(d.id) + ": machine " + std::to_string(d.machine_id);
  if (!created) {
    out << head << " is already deploying " << version_text(d.to_version) << " ("
        << to_string(d.status) << "); nothing changed\n";
    return;
  }
  const std::string from = version_text(d.from_version);
  out << head << " " << (from.empty() ? "(none)" : from) << " -> " << version_text(d.to_version)
      << " (" << d.kind << ", " << to_string(d.status) << ")\n";
  if (!superseded_id.empty()) out << "superseded deployment " << superseded_id << "\n";
}

Table bulk_assignment_table() {
  return Table({"MACHINE", "DEPLOYMENT", "FROM", "TO", "STATUS", "NEW", "SUPERSEDED"});
}

void add_bulk_assignment_row(Table& t, const proto::Deployment& d, bool created,
                             const std::string& superseded_id) {
  t.add_row({std::to_string(d.machine_id), std::to_string(d.id), version_text(d.from_version),
             version_text(d.to_version), to_string(d.status), created ? "yes" : "no",
             superseded_id});
}

// --- image versions --------------------------------------------------------------------------

Table image_table() {
  return Table({"NAME", "VERSION", "FORMAT", "SIZE", "SHA256", "CREATED", "DESCRIPTION"});
}

void add_image_row(Table& t, const proto::ImageVersion& v) {
  t.add_row({v.name, v.version, v.format, format_bytes(v.size_bytes), v.sha256.substr(0, 12),
             time_text(v.created_at), v.description});
}

void print_image(std::ostream& out, const proto::ImageVersion& v) {
  Details d;
  d.add("Name", v.name);
  d.add("Version", v.version);
  d.add("Format", v.format);
  d.add("Size", std::to_string(v.size_bytes) + " bytes (" + format_bytes(v.size_bytes) + ")");
  d.add("SHA-256", v.sha256);
  d.add("Source URL", v.source_url.value_or(""));
  d.add("Description", v.description);
  d.add("Labels", join_labels(v.labels, ", "));
  d.add("Created by", v.created_by);
  d.add("Created", time_text(v.created_at));
  d.print(out);
}

// --- tokens ----------------------------------------------------------------------------------

Table token_table() { return Table({"ID", "NAME", "SCOPE", "CREATED", "REVOKED"}); }

void add_token_row(Table& t, const proto::Token& tok) {
  t.add_row({std::to_string(tok.id), tok.name, to_string(tok.scope), time_text(tok.created_at),
             time_text(tok.revoked_at)});
}

// --- events ----------------------------------------------------------------------------------

std::string event_line(const proto::Event& e) {
  std::string line = time_text(e.created_at) + " " + std::to_string(e.id) + " " + e.type;
  if (e.machine_id) line += " machine=" + id_text(e.machine_id);
  if (e.deployment_id) line += " deployment=" + id_text(e.deployment_id);
  if (!e.data.is_null() && !e.data.empty()) line += " " + e.data.dump();
  return line;
}

}  // namespace kiln::cli
