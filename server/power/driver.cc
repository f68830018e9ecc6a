// Placeholder until the drivers land (replaced by the power module's driver.cc).
#include "power/driver.h"

namespace kiln::power {

const char* power_state_name(PowerState s) {
  return s == PowerState::kOn ? "on" : s == PowerState::kOff ? "off" : "unknown";
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
  return "on";
}
std::optional<PowerAction> parse_power_action(std::string_view n) {
  for (auto a : {PowerAction::kOn, PowerAction::kOff, PowerAction::kCycle, PowerAction::kSoftOff}) {
    if (n == power_action_name(a)) return a;
  }
  return std::nullopt;
}
Status check_config(const BmcConfig&) { return Unit{}; }
Result<std::unique_ptr<Driver>> make_driver(const BmcConfig&) {
  return make_error(Errc::kInvalid, "no drivers yet");
}

}  // namespace kiln::power
