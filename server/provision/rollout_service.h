// provision/rollout_service.h — the rollout engine (docs/rollouts.md): drives every unfinished
// rollout forward, one pass every `tick` (and at once when the API wakes it).
//
// A pass over a rollout: sync (its machines move on from their deployments: booted → done,
// failed/superseded/past the gate's timeout → failed), then `decide` (pure policy, below), then
// act: change its state, start machines of the current batch (each a deployment with reboot,
// recorded in the same transaction), or roll machines back. Every deployment it starts is
// handed to the power service (one-time network boot + power cycle). All state is in the
// store: a kilnd killed at any moment resumes at its next start from what was committed — a
// deployment recorded but never powered (kilnd died in between) is powered then; a started
// machine is never started again, and a finished one never redeployed.
//
// It reaches rollouts only through RolloutLedger (provision/ports.h). Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/metrics.h"
#include "proto/rollout.h"
#include "provision/ports.h"

namespace spdlog {
class logger;
}

namespace kiln::provision {

class PowerService;

struct RolloutOptions {
  std::chrono::milliseconds tick{1000};  // rollouts.tick_ms: how often rollouts are driven
};

// What one pass does to a rollout (after its sync).
struct RolloutDecision {
  std::optional<proto::RolloutState> next;  // a state change (with `reason`)
  std::string reason;
  std::vector<std::int64_t> start;      // machines to start now (running)
  std::vector<std::int64_t> roll_back;  // machines to roll back now (rolling_back)
};

// The policy, pure (unit-tested on its own):
// - pending: start running.
// - running: more than max_failures failed machines (not acknowledged by a resume) → the
//   rollout's on_failure (pause → paused, rollback → rolling_back, stop → failed). Otherwise the
//   current batch is the first one with a machine pending or deploying; none left → succeeded.
//   A batch starts only when every earlier one is finished and `pause_between_s` has passed
//   since the last one ended; within it, machines start while fewer than max_unavailable are
//   deploying or failed. When failed machines alone fill max_unavailable → paused.
// - rolling_back: every machine the rollout touched (deploying, done or failed) is rolled
//   back; when none is left rolling back → rolled_back, or failed when some could not be.
// - paused and finished rollouts: nothing.
RolloutDecision decide(const proto::Rollout& r, std::int64_t now_ms);

class RolloutService {
 public:
  // `ledger`, `power`, `metrics` and `clock` must outlive the service. `power` may be null (a
  // server without BMC control: rollouts then only record deployments; machines pick them up
  // at their next PXE boot).
  RolloutService(RolloutOptions options, RolloutLedger& ledger, PowerService* power,
                 Metrics& metrics, const Clock& clock, std::shared_ptr<spdlog::logger> log);
  ~RolloutService();  // stop()
  RolloutService(const RolloutService&) = delete;
  RolloutService& operator=(const RolloutService&) = delete;

  void start();
  void stop();
  // Runs a pass soon (an operator acted, a rollout was made).
  void wake();
  // One pass over every unfinished rollout (the thread's; tests call it directly). Returns how
  // many it changed (state changes, machines started or rolled back).
  int run_once();

 private:
  int drive(std::int64_t id);
  void power(const std::vector<MachineDeployment>& started, const std::string& why);
  void publish(const proto::Rollout& r);

  RolloutOptions options_;
  RolloutLedger& ledger_;
  PowerService* power_;
  Metrics& metrics_;
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread thread_;
  std::mutex pass_mu_;              // one pass at a time
  std::set<std::int64_t> powered_;  // deployments handed to the power service
  std::map<std::int64_t, std::set<int>> finished_batches_;  // per rollout, for the metrics
};

}  // namespace kiln::provision
