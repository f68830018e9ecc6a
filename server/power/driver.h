// power/driver.h — talking to one machine's BMC: power state, power actions and a one-time
// network boot. Two drivers: Redfish (kilnd's own HTTP(S) client, power/redfish.h) and IPMI
// (Debian's `ipmitool -I lanplus`, power/ipmi.h). make_driver() picks one from a BmcConfig.
//
// A driver is the wire only: it knows nothing about machines, deployments or the store. Every
// call blocks for at most BmcConfig::timeout per BMC request (plus bounded retries) and returns
// a Result whose error message is fit for an operator (it names the BMC, the step and what the
// BMC answered) and never contains the password. Errors: kUnavailable (unreachable, timed out,
// 5xx after the retries), kUnauthorized (credentials refused), kInvalid (the BMC cannot do what
// was asked: no such reset type, no PXE boot source), kConflict (the BMC accepted a change and
// then did not apply it, e.g. a boot override that reads back different), kInternal (a reply
// that is not what the protocol says).
//
// Drivers are not thread-safe; make one per operation (they are cheap) or serialize calls.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace kiln::power {

enum class PowerState { kOn, kOff, kUnknown };
const char* power_state_name(PowerState s);  // "on", "off", "unknown"

enum class PowerAction {
  kOn,       // power on (no-op when on)
  kOff,      // hard power off (ForceOff / chassis power off)
  kCycle,    // off then on; when off, just on (ForceRestart / chassis power cycle)
  kSoftOff,  // graceful shutdown (GracefulShutdown / chassis power soft)
};
const char* power_action_name(PowerAction a);  // "on", "off", "cycle", "soft-off"
// The action named by power_action_name(); nullopt for anything else.
std::optional<PowerAction> parse_power_action(std::string_view name);

enum class BootMode { kUefi, kLegacy };

struct BmcConfig {
  std::string driver;   // "redfish" | "ipmi"
  std::string address;  // redfish: base URL "https://host[:port]" (or http:// in labs);
                        // ipmi: "host" or "host:port" (UDP 623 by default)
  std::string username;
  std::string password;  // never logged, never put in an error message
  // TLS (redfish over https): a CA file to verify the BMC's certificate against (and its
  // host name / IP), or `insecure` = true to skip verification (explicit; never the default).
  std::string ca_file;
  bool insecure = false;
  // redfish: which system under /redfish/v1/Systems (its Id or full @odata.id); empty: the
  // only one (an error when there are several).
  std::string system_id;
  std::chrono::milliseconds timeout{10'000};  // per BMC request
  int retries = 2;  // extra attempts after a timeout / connection error / 5xx / 412
};

// What one call did, for the event that records it.
struct Step {
  std::string name;    // e.g. "redfish.reset", "ipmi.chassis_bootdev"
  std::string detail;  // e.g. "ResetType=ForceRestart", "pxe efiboot"
  std::chrono::milliseconds took{0};
  int attempts = 1;
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual Result<PowerState> status() = 0;
  // Performs `action` (choosing among the reset types the BMC allows) and returns the steps
  // taken. kOn when already on and kOff when already off succeed without a reset.
  virtual Result<std::vector<Step>> power(PowerAction action) = 0;
  // Makes the next boot (only the next) a network (PXE) boot in `mode`, and checks that the BMC
  // really took it (reads it back). Returns the steps taken.
  virtual Result<std::vector<Step>> boot_once_network(BootMode mode) = 0;
};

// Whether `config` can make a driver, without contacting the BMC (for the API's PUT .../bmc):
// kInvalid naming the problem (unknown driver, malformed address, https with neither ca_file
// nor insecure, timeout <= 0, retries outside 0-10, IPMI user name > 16 bytes or password
// > 20 bytes or with a line break).
Status check_config(const BmcConfig& config);

// The driver for `config`: kInvalid as check_config() says, or a CA file that cannot be loaded.
Result<std::unique_ptr<Driver>> make_driver(const BmcConfig& config);

}  // namespace kiln::power
