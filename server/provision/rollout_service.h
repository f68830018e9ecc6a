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
// With several kilnd on one database only the holder of `leadership` drives rollouts; another
// instance takes over when it dies and resumes from the database (powering what was recorded
// but, as far as it knows, never powered: at worst one extra power-cycle of a machine the dead
// holder had queued). The others' passes do nothing.
//
// It reaches rollouts only through RolloutLedger (provision/ports.h). Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
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

struct RolloutOptions {
  std::chrono::milliseconds tick{1000};  // rollouts.tick_ms: how often rollouts are driven
  // After a start, no machine fails for its gate's timeout this early (boot.deadlines.
  // startup_grace_s): OSes that could not confirm while kilnd was down get a chance.
  std::chrono::milliseconds startup_grace{60'000};
};

// How the engine reaches the BMCs (kilnd: its PowerService; tests: recorders).
struct RolloutPower {
  // Queues a reimage (one-time network boot + power cycle) of deployment `deployment_id`.
  std::function<Status(std::int64_t machine_id, std::int64_t deployment_id, const std::string& why)>
      reimage;
  // The write deadline of a deployment starting now (nullopt: none).
  std::function<std::optional<std::int64_t>(std::int64_t now_ms)> written_deadline;
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
//   back, at most max_unavailable rolling back at once; when none is left rolling back →
//   rolled_back, or failed when some could not be.
// - a canary batch that finished without one machine passing its gate pauses the rollout
//   (whatever max_failures allows, until an operator resumes it): the rest of the fleet never
//   goes first.
// - paused and finished rollouts: nothing.
RolloutDecision decide(const proto::Rollout& r, std::int64_t now_ms);

class RolloutService {
 public:
  // `ledger`, `metrics`, `clock` and `leadership` must outlive the service. Without
  // `power.reimage`, rollouts only record deployments (machines pick them up at their next PXE
  // boot). Without `leadership`, this engine is the only one.
  RolloutService(RolloutOptions options, RolloutLedger& ledger, RolloutPower power,
                 Metrics& metrics, const Clock& clock, std::shared_ptr<spdlog::logger> log,
                 Leadership* leadership = nullptr);
  ~RolloutService();  // stop()
  RolloutService(const RolloutService&) = delete;
  RolloutService& operator=(const RolloutService&) = delete;

  void start();
  void stop();
  // Runs a pass soon (an operator acted, a rollout was made).
  void wake();
  // One pass over every unfinished rollout (the thread's; tests call it directly). Returns how
  // many it changed (state changes, machines started or rolled back). Does nothing (0) while
  // another instance holds the leadership.
  int run_once();
  // Whether this engine drove rollouts at its last pass (metrics, tests).
  bool leading() const;

 private:
  int drive(std::int64_t id);
  bool lead();  // asks `leadership_`; on taking over, forgets what it powered before
  void power(const std::vector<MachineDeployment>& started, const std::string& why);
  void publish(const proto::Rollout& r);

  RolloutOptions options_;
  RolloutLedger& ledger_;
  RolloutPower power_;
  std::int64_t started_ms_ = 0;  // when this engine was made (the startup grace runs from it)
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
  Leadership* leadership_;
  std::atomic<bool> leading_{false};
  std::map<std::int64_t, std::set<int>> finished_batches_;  // per rollout, for the metrics
};

}  // namespace kiln::provision
