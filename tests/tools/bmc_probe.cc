// bmc_probe — runs one kilnd BMC driver call (power/driver.h) from flags, for checking a real
// BMC or the emulators in tests/tools by hand or from a test script.
//
//   bmc_probe --driver redfish|ipmi --address A --user U [--password-file F] [--ca-file F]
//             [--insecure] [--system-id ID] [--timeout-ms N] [--retries N]
//             status | power on|off|cycle|soft-off | boot-pxe [--legacy]
//
// The password comes from --password-file or the environment variable KILN_BMC_PASSWORD (never
// a flag: flags are visible in ps). Prints one JSON line: {"ok":true,"state":..} or
// {"ok":true,"steps":[..]} or {"ok":false,"code":..,"message":..}; exit 0 on success, 1 on a
// driver error, 2 on bad usage.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "power/driver.h"

int main(int argc, char** argv) {
  using kiln::power::BmcConfig;
  CLI::App app{"bmc_probe: one BMC driver call"};
  BmcConfig c;
  std::string password_file;
  long timeout_ms = 10'000;
  bool legacy = false;
  std::vector<std::string> action;
  app.add_option("--driver", c.driver, "redfish or ipmi")->required();
  app.add_option("--address", c.address, "https://host[:port] or host[:port]")->required();
  app.add_option("--user", c.username, "BMC user name");
  app.add_option("--password-file", password_file,
                 "file holding the password (else $KILN_BMC_PASSWORD)");
  app.add_option("--ca-file", c.ca_file, "CA to verify the BMC's certificate");
  app.add_flag("--insecure", c.insecure, "do not verify the BMC's certificate");
  app.add_option("--system-id", c.system_id, "Redfish system Id or @odata.id");
  app.add_option("--timeout-ms", timeout_ms, "per request");
  app.add_option("--retries", c.retries, "extra attempts");
  app.add_flag("--legacy", legacy, "boot-pxe in legacy BIOS mode (default UEFI)");
  app.add_option("action", action, "status | power on|off|cycle|soft-off | boot-pxe")->required();
  CLI11_PARSE(app, argc, argv);
  c.timeout = std::chrono::milliseconds(timeout_ms);
  if (!password_file.empty()) {
    std::ifstream in(password_file);
    if (!in) {
      std::cerr << "bmc_probe: cannot read " << password_file << "\n";
      return 2;
    }
    std::getline(in, c.password);
  } else if (const char* env = std::getenv("KILN_BMC_PASSWORD")) {
    c.password = env;
  }

  nlohmann::json out;
  auto error = [&](const kiln::Error& e) {
    out = {{"ok", false}, {"code", kiln::errc_name(e.code)}, {"message", e.message}};
    std::cout << out.dump() << "\n";
    return 1;
  };
  auto steps_json = [](const std::vector<kiln::power::Step>& steps) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& s : steps) {
      a.push_back({{"name", s.name},
                   {"detail", s.detail},
                   {"took_ms", s.took.count()},
                   {"attempts", s.attempts}});
    }
    return a;
  };
  auto d = kiln::power::make_driver(c);
  if (!d) return error(d.error());
  if (action[0] == "status" && action.size() == 1) {
    auto s = (*d)->status();
    if (!s) return error(s.error());
    out = {{"ok", true}, {"state", kiln::power::power_state_name(*s)}};
  } else if (action[0] == "power" && action.size() == 2) {
    auto a = kiln::power::parse_power_action(action[1]);
    if (!a) {
      std::cerr << "bmc_probe: power on|off|cycle|soft-off\n";
      return 2;
    }
    auto s = (*d)->power(*a);
    if (!s) return error(s.error());
    out = {{"ok", true}, {"steps", steps_json(*s)}};
  } else if (action[0] == "boot-pxe" && action.size() == 1) {
    auto s = (*d)->boot_once_network(legacy ? kiln::power::BootMode::kLegacy
                                            : kiln::power::BootMode::kUefi);
    if (!s) return error(s.error());
    out = {{"ok", true}, {"steps", steps_json(*s)}};
  } else {
    std::cerr << "bmc_probe: status | power on|off|cycle|soft-off | boot-pxe\n";
    return 2;
  }
  std::cout << out.dump() << "\n";
  return 0;
}
