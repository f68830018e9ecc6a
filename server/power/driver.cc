#include "power/driver.h"

#include "core/url.h"
#include "power/ipmi.h"
#include "power/redfish.h"

namespace kiln::power {

const char* power_state_name(PowerState s) {
  switch (s) {
    case PowerState::kOn:
      return "on";
    case PowerState::kOff:
      return "off";
    case PowerState::kUnknown:
      break;
  }
  return "unknown";
}

const char* power_action_name(PowerAction a) {
  switch (a) {
    case PowerAction::kOn:
      return "on";
    case PowerAction::kOff:
      return "off";
    case PowerAction::kCycle:
      return "cycle";
    case PowerAction::kSoftOff:
      return "soft-off";
  }
  return "unknown";
}

std::optional<PowerAction> parse_power_action(std::string_view name) {
  if (name == "on") return PowerAction::kOn;
  if (name == "off") return PowerAction::kOff;
  if (name == "cycle") return PowerAction::kCycle;
  if (name == "soft-off") return PowerAction::kSoftOff;
  return std::nullopt;
}

Status check_config(const BmcConfig& config) {
  if (config.driver != "redfish" && config.driver != "ipmi") {
    return make_error(Errc::kInvalid,
                      "BMC driver '" + config.driver + "' is not one of redfish, ipmi");
  }
  if (config.address.empty()) return make_error(Errc::kInvalid, "a BMC needs an address");
  if (config.timeout.count() <= 0)
    return make_error(Errc::kInvalid, "a BMC timeout must be positive");
  if (config.retries < 0 || config.retries > 10) {
    return make_error(Errc::kInvalid, "BMC retries must be 0-10");
  }
  if (config.driver == "ipmi") {
    if (auto a = parse_ipmi_address(config.address); !a) return a.error();
    // IPMI v2 limits (ipmitool refuses longer ones, and reads the password up to a newline).
    if (config.username.size() > 16) {
      return make_error(Errc::kInvalid, "an IPMI user name is at most 16 bytes");
    }
    if (config.password.size() > 20) {
      return make_error(Errc::kInvalid, "an IPMI password is at most 20 bytes");
    }
    if (config.password.find_first_of(std::string("\n\r\0", 3)) != std::string::npos) {
      return make_error(Errc::kInvalid, "an IPMI password cannot contain a line break or NUL");
    }
    if (!config.username.empty() && config.username.front() == '-') {
      return make_error(Errc::kInvalid, "an IPMI user name cannot start with '-'");
    }
  } else {
    auto url = parse_http_url(config.address);
    if (!url) {
      return make_error(Errc::kInvalid,
                        "BMC address '" + config.address + "': " + url.error().message);
    }
    if (url->tls && config.ca_file.empty() && !config.insecure) {
      return make_error(Errc::kInvalid,
                        "BMC " + url->url +
                            " is https: set a CA file to verify its certificate, or insecure "
                            "(explicitly) to skip verification");
    }
    // Basic auth or a session login would carry the password in clear: only when asked.
    if (!url->tls && !config.insecure) {
      return make_error(Errc::kInvalid,
                        "BMC " + url->url +
                            " is plain http: the password would cross the network in clear; use "
                            "https, or set insecure (explicitly)");
    }
  }
  return ok_status();
}

Result<std::unique_ptr<Driver>> make_driver(const BmcConfig& config) {
  if (auto st = check_config(config); !st) return st.error();
  if (config.driver == "ipmi") {
    auto a = parse_ipmi_address(config.address);
    return std::unique_ptr<Driver>(new IpmiDriver(config, a->first, a->second, process_runner()));
  }
  auto transport = beast_transport(config);
  if (!transport) return transport.error();
  return std::unique_ptr<Driver>(new RedfishDriver(config, std::move(*transport)));
}

}  // namespace kiln::power
