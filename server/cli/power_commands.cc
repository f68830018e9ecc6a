// BMCs and power: `kiln machine bmc set|show|remove`, `kiln machine power`.
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/api_commands.h"
#include "cli/render.h"

namespace kiln::cli {

namespace {

using json = nlohmann::json;

// The BMC password: from a file (first line), or "-" for the first line of stdin. Never from
// the command line, where `ps` and shell history would show it.
std::optional<std::string> read_password(const std::string& from, std::string& error) {
  std::string line;
  if (from == "-") {
    if (!std::getline(std::cin, line)) {
      error = "no password on stdin";
      return std::nullopt;
    }
  } else {
    std::ifstream f(from);
    if (!f || !std::getline(f, line)) {
      error = "cannot read the password from " + from;
      return std::nullopt;
    }
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

}  // namespace

int machine_bmc_set(Session& s, const Args& a) {
  json body = {{"driver", a.bmc.driver}, {"address", a.bmc.address}};
  if (!a.bmc.username.empty()) body["username"] = a.bmc.username;
  if (!a.bmc.password_file.empty()) {
    std::string err;
    auto pw = read_password(a.bmc.password_file, err);
    if (!pw) return s.usage(err);
    body["password"] = *pw;
  }
  if (!a.bmc.ca_file.empty()) body["ca_file"] = a.bmc.ca_file;
  if (a.bmc.insecure) body["insecure"] = true;
  if (!a.bmc.system_id.empty()) body["system_id"] = a.bmc.system_id;
  if (!a.bmc.boot_mode.empty()) body["boot_mode"] = a.bmc.boot_mode;
  auto r = s.call("PUT", api_path({"machines", a.id, "bmc"}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  s.out() << "machine " << a.id << ": BMC " << text(r->body, "driver") << " "
          << text(r->body, "address") << " (credentials set)\n";
  return kExitOk;
}

int machine_bmc_show(Session& s, const Args& a) {
  auto r = s.call("GET", api_path({"machines", a.id, "bmc"}));
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  const json& b = r->body;
  s.out() << "driver:      " << text(b, "driver") << "\n"
          << "address:     " << text(b, "address") << "\n"
          << "tls:         "
          << (text(b, "address").rfind("http://", 0) == 0 ? "none (plain http)"
              : b.value("insecure", false)                ? "not verified (insecure)"
              : text(b, "ca_file").empty()                ? "-"
                                           : "verified against " + text(b, "ca_file"))
          << "\n"
          << "system:      "
          << (text(b, "system_id").empty() ? "(the only one)" : text(b, "system_id")) << "\n"
          << "boot mode:   " << text(b, "boot_mode") << "\n"
          << "credentials: " << text(b, "credentials") << " (write-only)\n"
          << "updated:     " << text(b, "updated_at") << "\n";
  return kExitOk;
}

int machine_bmc_remove(Session& s, const Args& a) {
  auto r = s.call("DELETE", api_path({"machines", a.id, "bmc"}));
  if (!r) return s.failure_code();
  if (!s.json_mode()) s.out() << "machine " << a.id << ": BMC removed\n";
  return kExitOk;
}

int machine_power(Session& s, const Args& a) {
  const json body = {{"action", a.power_action}};
  auto r = s.call("POST", api_path({"machines", a.id, "power"}), &body);
  if (!r) return s.failure_code();
  if (s.json_mode()) return s.print_raw(*r);
  const json& b = r->body;
  if (b.contains("steps") && b["steps"].is_array()) {
    for (const auto& st : b["steps"]) {
      s.out() << "  " << st.value("name", "") << " " << st.value("detail", "") << " ("
              << st.value("took_ms", 0) << " ms"
              << (st.value("attempts", 1) > 1
                      ? ", " + std::to_string(st.value("attempts", 1)) + " attempts"
                      : std::string())
              << ")\n";
    }
  }
  s.out() << "machine " << a.id << ": power " << text(b, "power_state") << " ("
          << b.value("took_ms", 0) << " ms)\n";
  return kExitOk;
}

}  // namespace kiln::cli
