// proto/api_types.h — the shared vocabulary of the REST API v1 (see proto/openapi.yaml).
//
// Names of machine states, deployment statuses and token scopes as they appear on the wire,
// and the label and label-selector grammar, shared by kilnd, the kiln CLI and the agent so
// that all three accept and reject exactly the same inputs.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace kiln::proto {

inline constexpr std::string_view kApiPrefix = "/api/v1";

// Machine lifecycle (DESIGN.md): discovered -> ready -> deploying -> deployed; any -> failed.
enum class MachineState { kDiscovered, kReady, kDeploying, kDeployed, kFailed };
inline constexpr MachineState kAllMachineStates[] = {
    MachineState::kDiscovered, MachineState::kReady, MachineState::kDeploying,
    MachineState::kDeployed, MachineState::kFailed};
const char* to_string(MachineState s);
std::optional<MachineState> parse_machine_state(std::string_view s);

// A deployment is pending until its agent reports, running while it writes, succeeded once the
// image is written and verified, and booted once the deployed OS confirmed its boot with its
// instance credential. It ends as booted, failed (the agent failed, or a deadline passed), or
// superseded (a newer assignment replaced it before it finished); succeeded may still become
// booted or failed.
enum class DeploymentStatus { kPending, kRunning, kSucceeded, kBooted, kFailed, kSuperseded };
inline constexpr DeploymentStatus kAllDeploymentStatuses[] = {
    DeploymentStatus::kPending, DeploymentStatus::kRunning, DeploymentStatus::kSucceeded,
    DeploymentStatus::kBooted,  DeploymentStatus::kFailed,  DeploymentStatus::kSuperseded};
const char* to_string(DeploymentStatus s);
std::optional<DeploymentStatus> parse_deployment_status(std::string_view s);
inline bool is_active(DeploymentStatus s) {
  return s == DeploymentStatus::kPending || s == DeploymentStatus::kRunning;
}

// API token scopes: read may call GET routes; admin may call everything.
enum class Scope { kRead, kAdmin };
const char* to_string(Scope s);
std::optional<Scope> parse_scope(std::string_view s);

// Label keys: 1-63 chars of [a-z0-9._/-], starting with a letter or digit.
// Label values: 0-255 printable ASCII characters without ',' or '='.
Status validate_label_key(std::string_view key);
Status validate_label_value(std::string_view value);

// One term of a label selector: "k=v" (equals), "k!=v" (differs or absent), "k" (present),
// "!k" (absent). A selector is a comma-separated conjunction of terms, e.g. "rack=r12,role!=db".
struct LabelTerm {
  enum class Op { kEquals, kNotEquals, kExists, kNotExists };
  std::string key;
  Op op = Op::kEquals;
  std::string value;
  bool operator==(const LabelTerm&) const = default;
};
using Selector = std::vector<LabelTerm>;
Result<Selector> parse_selector(std::string_view text);
std::string format_selector(const Selector& selector);

// Image names: 1-128 chars of [A-Za-z0-9._-], not starting with '.' or '-'.
// Versions: the same alphabet plus '+', 1-128 chars.
Status validate_image_name(std::string_view name);
Status validate_image_version(std::string_view version);

}  // namespace kiln::proto
