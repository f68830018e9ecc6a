#include "proto/rollout.h"

#include <algorithm>
#include <array>
#include <map>

#include "core/time.h"

namespace kiln::proto {

using json = nlohmann::json;

namespace {

constexpr std::array<const char*, 8> kRolloutStates = {"pending",      "running",    "paused",
                                                       "succeeded",    "failed",     "aborted",
                                                       "rolling_back", "rolled_back"};
constexpr std::array<const char*, 8> kMachineStates = {
    "pending", "skipped",      "deploying",   "done",
    "failed",  "rolling_back", "rolled_back", "rollback_failed"};

json ts(const std::optional<std::int64_t>& ms) {
  return ms ? json(format_rfc3339_ms(*ms)) : json(nullptr);
}

json counts_json(const RolloutCounts& c) {
  return {{"total", c.total},
          {"pending", c.pending},
          {"skipped", c.skipped},
          {"deploying", c.deploying},
          {"done", c.done},
          {"failed", c.failed},
          {"rolling_back", c.rolling_back},
          {"rolled_back", c.rolled_back},
          {"rollback_failed", c.rollback_failed}};
}

}  // namespace

const char* to_string(RolloutState s) { return kRolloutStates[static_cast<std::size_t>(s)]; }
std::optional<RolloutState> parse_rollout_state(std::string_view s) {
  for (std::size_t i = 0; i < kRolloutStates.size(); ++i) {
    if (s == kRolloutStates[i]) return static_cast<RolloutState>(i);
  }
  return std::nullopt;
}
bool is_terminal(RolloutState s) {
  return s == RolloutState::kSucceeded || s == RolloutState::kFailed ||
         s == RolloutState::kAborted || s == RolloutState::kRolledBack;
}

const char* to_string(RolloutMachineState s) { return kMachineStates[static_cast<std::size_t>(s)]; }
std::optional<RolloutMachineState> parse_rollout_machine_state(std::string_view s) {
  for (std::size_t i = 0; i < kMachineStates.size(); ++i) {
    if (s == kMachineStates[i]) return static_cast<RolloutMachineState>(i);
  }
  return std::nullopt;
}

void RolloutCounts::add(RolloutMachineState s) {
  ++total;
  switch (s) {
    case RolloutMachineState::kPending:
      ++pending;
      break;
    case RolloutMachineState::kSkipped:
      ++skipped;
      break;
    case RolloutMachineState::kDeploying:
      ++deploying;
      break;
    case RolloutMachineState::kDone:
      ++done;
      break;
    case RolloutMachineState::kFailed:
      ++failed;
      break;
    case RolloutMachineState::kRollingBack:
      ++rolling_back;
      break;
    case RolloutMachineState::kRolledBack:
      ++rolled_back;
      break;
    case RolloutMachineState::kRollbackFailed:
      ++rollback_failed;
      break;
  }
}

RolloutCounts count(const Rollout& r) {
  RolloutCounts c;
  for (const auto& m : r.machines) c.add(m.state);
  return c;
}

std::vector<RolloutBatch> batches(const Rollout& r) {
  std::map<int, RolloutBatch> by_index;
  for (const auto& m : r.machines) {
    auto& b = by_index[m.batch];
    b.index = m.batch;
    b.canary = r.canary > 0 && m.batch == 0;
    b.counts.add(m.state);
    if (m.started_at && (!b.started_at || *m.started_at < *b.started_at))
      b.started_at = m.started_at;
    if (m.finished_at && (!b.finished_at || *m.finished_at > *b.finished_at)) {
      b.finished_at = m.finished_at;
    }
  }
  std::vector<RolloutBatch> out;
  for (auto& [_, b] : by_index) {
    // A batch is finished when nothing in it waits or deploys.
    if (b.counts.pending > 0 || b.counts.deploying > 0) b.finished_at.reset();
    out.push_back(std::move(b));
  }
  return out;
}

int counted_failures(const Rollout& r) {
  int failed = 0;
  for (const auto& m : r.machines) {
    // A machine that failed and was then rolled back still failed the rollout.
    if (m.state == RolloutMachineState::kFailed) ++failed;
  }
  return std::max(0, failed - r.failure_base);
}

json to_json(const RolloutMachine& m) {
  return {{"machine_id", m.machine_id},
          {"name", m.name},
          {"position", m.position},
          {"batch", m.batch < 0 ? json(nullptr) : json(m.batch)},
          {"state", to_string(m.state)},
          {"reason", m.reason},
          {"previous", m.previous ? to_json(*m.previous) : json(nullptr)},
          {"deployment_id", m.deployment_id ? json(*m.deployment_id) : json(nullptr)},
          {"rollback_deployment_id",
           m.rollback_deployment_id ? json(*m.rollback_deployment_id) : json(nullptr)},
          {"started_at", ts(m.started_at)},
          {"finished_at", ts(m.finished_at)}};
}

json to_json(const Rollout& r, bool with_machines) {
  json batch = r.batch_percent ? json{{"percent", *r.batch_percent}}
                               : json{{"count", r.batch_count.value_or(r.batch_size)}};
  json bs = json::array();
  std::optional<int> current;
  for (const auto& b : batches(r)) {
    if (b.index < 0) continue;  // machines in no batch (skipped, or there already)
    json duration = nullptr;
    if (b.started_at && b.finished_at) duration = *b.finished_at - *b.started_at;
    if (!current && (b.counts.pending > 0 || b.counts.deploying > 0)) current = b.index;
    bs.push_back({{"index", b.index},
                  {"canary", b.canary},
                  {"size", b.counts.total},
                  {"pending", b.counts.pending},
                  {"deploying", b.counts.deploying},
                  {"done", b.counts.done},
                  {"failed", b.counts.failed},
                  {"skipped", b.counts.skipped},
                  {"started_at", ts(b.started_at)},
                  {"finished_at", ts(b.finished_at)},
                  {"duration_ms", duration}});
  }
  json j = {{"id", r.id},
            {"state", to_string(r.state)},
            {"reason", r.reason},
            {"selector", r.selector},
            {"image", r.target.name},
            {"version", r.target.version},
            {"batch", std::move(batch)},
            {"batch_size", r.batch_size},
            {"canary", r.canary},
            {"max_unavailable", r.max_unavailable},
            {"max_failures", r.max_failures},
            {"on_failure", r.on_failure},
            {"gate", r.gate},
            {"gate_timeout_s", r.gate_timeout_s},
            {"pause_between_s", r.pause_between_s},
            {"spread_by", r.spread_by ? json(*r.spread_by) : json(nullptr)},
            {"config_sha256", r.config_sha256 ? json(*r.config_sha256) : json(nullptr)},
            {"failures", counted_failures(r)},
            {"requested_by", r.requested_by},
            {"created_at", format_rfc3339_ms(r.created_at)},
            {"started_at", ts(r.started_at)},
            {"finished_at", ts(r.finished_at)},
            {"updated_at", format_rfc3339_ms(r.updated_at)},
            {"current_batch", current ? json(*current) : json(nullptr)},
            {"counts", counts_json(count(r))},
            {"batches", std::move(bs)}};
  if (with_machines) {
    json ms = json::array();
    for (const auto& m : r.machines) ms.push_back(to_json(m));
    j["machines"] = std::move(ms);
  }
  return j;
}

}  // namespace kiln::proto
