// proto/rollout.h — a rollout (docs/rollouts.md): one image version rolled across the machines
// a selector matched, in batches, the canary batch first, each batch gated by its machines'
// confirmed boots (or written images). Value types, their states and the JSON the API renders
// (proto/openapi.yaml's Rollout schema); kilnd's store persists them, provision's
// RolloutService moves them forward, the CLI reads them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/resources.h"

namespace kiln::proto {

enum class RolloutState {
  kPending,      // made; the engine starts it at its next pass
  kRunning,      // batches are being deployed
  kPaused,       // no machine starts (in-flight ones finish); resume goes on
  kSucceeded,    // every machine was deployed (or reported skipped/failed within max_failures)
  kFailed,       // stopped by its failure policy "stop", or a rollback left machines unrestored
  kAborted,      // stopped by an operator; machines not started stay as they are
  kRollingBack,  // every machine it touched goes back to its previous version
  kRolledBack,   // ... and every one of them confirmed it
};
inline constexpr RolloutState kAllRolloutStates[] = {
    RolloutState::kPending,     RolloutState::kRunning,   RolloutState::kPaused,
    RolloutState::kSucceeded,   RolloutState::kFailed,    RolloutState::kAborted,
    RolloutState::kRollingBack, RolloutState::kRolledBack};
const char* to_string(RolloutState s);
std::optional<RolloutState> parse_rollout_state(std::string_view s);
// Finished rollouts take no action but rollback (and rolled_back none at all).
bool is_terminal(RolloutState s);

enum class RolloutMachineState {
  kPending,         // waits for its batch
  kSkipped,         // not deployable (no BMC, failed before, ...) or not started (abort): reason
  kDeploying,       // its deployment is in progress, the gate not passed yet
  kDone,            // passed the gate (or already ran the version)
  kFailed,          // its deployment failed, was superseded, or missed the gate: reason
  kRollingBack,     // its rollback deployment is in progress
  kRolledBack,      // back on its previous version (gate passed)
  kRollbackFailed,  // could not be brought back: reason
};
const char* to_string(RolloutMachineState s);
std::optional<RolloutMachineState> parse_rollout_machine_state(std::string_view s);

struct RolloutMachine {
  std::int64_t machine_id = 0;
  std::string name;
  int position = 0;  // deployment order
  int batch = 0;     // 0 is the canary batch when the rollout has one; -1: in none (skipped, or
                     // running the version already)
  RolloutMachineState state = RolloutMachineState::kPending;
  std::string reason;
  std::optional<VersionRef> previous;  // what it ran before the rollout
  std::optional<std::int64_t> deployment_id;
  std::optional<std::int64_t> rollback_deployment_id;
  std::optional<std::int64_t> started_at;
  std::optional<std::int64_t> finished_at;
};

struct Rollout {
  std::int64_t id = 0;
  std::string selector;
  VersionRef target;
  std::optional<int> batch_count;    // asked for as a count ...
  std::optional<int> batch_percent;  // ... or as a percentage of the machines matched
  int batch_size = 1;                // resolved at creation
  int canary = 0;
  int max_unavailable = 1;           // machines deploying (or failed) at once, at most
  int max_failures = 0;              // failures tolerated; one more triggers on_failure
  std::string on_failure = "pause";  // pause | rollback | stop
  std::string gate = "booted";       // booted | written
  int gate_timeout_s = 1800;         // from a machine's start to its gate
  int pause_between_s = 0;           // between one batch's end and the next one's start
  std::optional<std::string> spread_by;
  std::optional<std::string> config_sha256;  // the rollout's configuration layer, when set
  RolloutState state = RolloutState::kPending;
  std::string reason;
  int failure_base = 0;  // failures an operator acknowledged by resuming
  std::string requested_by;
  std::int64_t created_at = 0;
  std::optional<std::int64_t> started_at;
  std::optional<std::int64_t> finished_at;
  std::int64_t updated_at = 0;
  std::vector<RolloutMachine> machines;  // by position
  // Set instead of `machines` when only the summary was loaded (lists): its batches.
  std::optional<std::vector<struct RolloutBatch>> summary;
};

// Per-state machine counts, and per batch (from the machines, or the summary when set).
struct RolloutCounts {
  int total = 0, pending = 0, skipped = 0, deploying = 0, done = 0, failed = 0, rolling_back = 0,
      rolled_back = 0, rollback_failed = 0;
  void add(RolloutMachineState s);
};
struct RolloutBatch {
  int index = 0;
  bool canary = false;
  RolloutCounts counts;
  std::optional<std::int64_t> started_at;   // its first machine's start
  std::optional<std::int64_t> finished_at;  // its last machine's end, once none is left
};
RolloutCounts count(const Rollout& r);
std::vector<RolloutBatch> batches(const Rollout& r);
// Failures counted against max_failures: failed machines not acknowledged by a resume.
int counted_failures(const Rollout& r);

// The API's rendering: the rollout, its counts and batches; `with_machines` adds every machine.
nlohmann::json to_json(const Rollout& r, bool with_machines);
nlohmann::json to_json(const RolloutMachine& m);

}  // namespace kiln::proto
