// cloud-init configuration: `kiln machine config set|show|remove`, `kiln profile
// set|list|show|remove`, `kiln deployment config` (docs/config.md).
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/api_commands.h"
#include "cli/render.h"

namespace kiln::cli {

namespace {

using json = nlohmann::json;

// A file's contents ("-": stdin).
std::optional<std::string> slurp(const std::string& path, std::string& error) {
  std::ostringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
      error = "cannot read " + path;
      return std::nullopt;
    }
    ss << f.rdbuf();
  }
  return ss.str();
}

// The document from --file (a whole JSON document) and the field flags on top of it.
std::optional<json> document(Session& s, const Args& a, int& rc) {
  const auto& c = a.config;
  std::string err;
  json doc = json::object();
  auto fail = [&](const std::string& why) {
    rc = s.usage(why);
    return std::nullopt;
  };
  if (!c.file.empty()) {
    auto text = slurp(c.file, err);
    if (!text) return fail(err);
    doc = json::parse(*text, nullptr, false);
    if (!doc.is_object()) return fail(c.file + " is not a JSON object");
  }
  if (!c.hostname.empty()) doc["hostname"] = c.hostname;
  if (!c.fqdn.empty()) doc["fqdn"] = c.fqdn;
  for (const auto& f : c.ssh_key_files) {
    auto text = slurp(f, err);
    if (!text) return fail(err);
    std::istringstream lines(*text);
    std::string line;
    while (std::getline(lines, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      doc["ssh_authorized_keys"].push_back(line);
    }
  }
  auto text_field = [&](const std::string& path, const char* key) {
    if (path.empty()) return true;
    auto text = slurp(path, err);
    if (!text) return false;
    doc[key] = *text;
    return true;
  };
  if (!text_field(c.user_data_file, "user_data") ||
      !text_field(c.vendor_data_file, "vendor_data")) {
    return fail(err);
  }
  if (!c.network_config_file.empty()) {
    auto text = slurp(c.network_config_file, err);
    if (!text) return fail(err);
    auto nc = json::parse(*text, nullptr, false);
    if (!nc.is_object()) {
      return fail(c.network_config_file +
                  " is not a JSON object (network config version 2 as JSON)");
    }
    doc["network_config"] = nc;
  }
  for (const auto& kv : c.metadata) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) return fail("--meta wants key=value, got '" + kv + "'");
    doc["metadata"][kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (c.no_config_drive) doc["config_drive"] = false;
  return doc;
}

void print_document(std::ostream& out, const json& doc, const std::string& indent) {
  if (!doc.is_object() || doc.empty()) {
    out << indent << "(empty)\n";
    return;
  }
  for (const auto& [k, v] : doc.items()) {
    out << indent << k << ": ";
    if (v.is_string()) {
      const auto& str = v.get_ref<const std::string&>();
      if (str.find('\n') != std::string::npos) {
        out << "|\n";
        std::istringstream lines(str);
        std::string line;
        while (std::getline(lines, line)) out << indent << "  " << line << "\n";
        continue;
      }
      out << str << "\n";
    } else if (v.is_object() && v.size() == 1 && v.contains("bytes")) {
      out << "(" << v["bytes"] << " bytes; admin only)\n";
    } else {
      out << v.dump() << "\n";
    }
  }
}

}  // namespace

int machine_config_set(Session& s, const Args& a) {
  int rc = kExitOk;
  auto doc = document(s, a, rc);
  if (!doc) return rc;
  auto r = s.call("PUT", api_path({"machines", a.id, "config"}), &*doc);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  s.out() << "machine " << a.id << ": configuration set (sha256 "
          << text(r->body, "config_sha256").substr(0, 12) << "); effective from "
          << r->body["effective"]["sources"].dump() << "\n"
          << "applies from the next assignment\n";
  return kExitOk;
}

int machine_config_show(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"machines", a.id, "config"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  const json& b = r->body;
  s.out() << "own configuration:\n";
  if (b["config"].is_null()) {
    s.out() << "  (none)\n";
  } else {
    print_document(s.out(), b["config"], "  ");
  }
  const json& e = b["effective"];
  s.out() << "effective (" << (e["sources"].empty() ? "nothing applies" : e["sources"].dump())
          << (e["config_sha256"].is_string() ? ", sha256 " + text(e, "config_sha256").substr(0, 12)
                                             : std::string())
          << "):\n";
  print_document(s.out(), e["config"], "  ");
  return kExitOk;
}

int machine_config_remove(Session& s, const Args& a) {
  auto r = s.call("DELETE", api_path({"machines", a.id, "config"}));
  if (!r) return s.failure_code();
  if (!s.json_mode()) s.out() << "machine " << a.id << ": own configuration removed\n";
  return kExitOk;
}

int profile_set(Session& s, const Args& a) {
  int rc = kExitOk;
  auto doc = document(s, a, rc);
  if (!doc) return rc;
  json body = {{"selector", a.selector}, {"priority", a.config.priority}, {"config", *doc}};
  auto r = s.call("PUT", api_path({"profiles", a.name}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  s.out() << "profile " << a.name << ": set for '" << text(r->body, "selector") << "' (priority "
          << r->body.value("priority", 0) << ", sha256 "
          << text(r->body, "config_sha256").substr(0, 12) << ")\n";
  return kExitOk;
}

int profile_list(Session& s, const Args&) {
  auto r = s.call("GET", api_path({"profiles"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  Table t({"NAME", "SELECTOR", "PRIORITY", "SHA256", "UPDATED"});
  for (const auto& p : items_of(r->body)) {
    t.add_row({text(p, "name"), text(p, "selector").empty() ? "(all)" : text(p, "selector"),
               std::to_string(p.value("priority", 0)), text(p, "config_sha256").substr(0, 12),
               text(p, "updated_at")});
  }
  t.print(s.out());
  return kExitOk;
}

int profile_show(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"profiles", a.name}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  const json& b = r->body;
  s.out() << "profile:  " << text(b, "name") << "\n"
          << "selector: " << (text(b, "selector").empty() ? "(all)" : text(b, "selector")) << "\n"
          << "priority: " << b.value("priority", 0) << "\n"
          << "sha256:   " << text(b, "config_sha256") << "\n"
          << "config:\n";
  print_document(s.out(), b["config"], "  ");
  return kExitOk;
}

int profile_remove(Session& s, const Args& a) {
  auto r = s.call("DELETE", api_path({"profiles", a.name}));
  if (!r) return s.failure_code();
  if (!s.json_mode()) s.out() << "profile " << a.name << " removed\n";
  return kExitOk;
}

int deployment_config(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"deployments", a.id, "config"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  const json& b = r->body;
  if (b["config"].is_null()) {
    s.out() << "deployment " << a.id << " applies no configuration\n";
    return kExitOk;
  }
  s.out() << "deployment " << a.id << ": configuration sha256 " << text(b, "config_sha256") << "\n";
  print_document(s.out(), b["config"], "  ");
  return kExitOk;
}

}  // namespace kiln::cli
