#include "provision/rollout_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace kiln::provision {

using proto::Rollout;
using proto::RolloutMachineState;
using proto::RolloutState;

RolloutDecision decide(const Rollout& r, std::int64_t now_ms) {
  RolloutDecision d;
  const auto counts = proto::count(r);
  switch (r.state) {
    case RolloutState::kPending:
      d.next = RolloutState::kRunning;
      d.reason = "started";
      return d;
    case RolloutState::kRunning: {
      const int failures = proto::counted_failures(r);
      if (failures > r.max_failures) {
        d.reason = std::to_string(failures) + " machine(s) failed, more than max_failures " +
                   std::to_string(r.max_failures);
        d.next = r.on_failure == "rollback" ? RolloutState::kRollingBack
                 : r.on_failure == "stop"   ? RolloutState::kFailed
                                            : RolloutState::kPaused;
        return d;
      }
      const auto bs = proto::batches(r);
      const proto::RolloutBatch* current = nullptr;
      std::optional<std::int64_t> last_end;
      for (const auto& b : bs) {
        if (b.index < 0) continue;  // skipped / already there: in no batch
        if (b.counts.pending > 0 || b.counts.deploying > 0) {
          current = &b;
          break;
        }
        if (b.finished_at) last_end = std::max(last_end.value_or(0), *b.finished_at);
      }
      if (!current) {
        d.next = RolloutState::kSucceeded;
        d.reason = std::to_string(counts.done) + " done";
        if (counts.failed) d.reason += ", " + std::to_string(counts.failed) + " failed";
        if (counts.skipped) d.reason += ", " + std::to_string(counts.skipped) + " skipped";
        return d;
      }
      // The canary batch must let at least one machine through before anything else starts
      // (unless an operator resumed: they acknowledged its failures).
      for (const auto& b : bs) {
        if (b.canary && b.finished_at && b.counts.done == 0 && b.counts.total > 0 &&
            current->index != b.index && r.failure_base == 0) {
          d.next = RolloutState::kPaused;
          d.reason = "no machine of the canary batch passed its gate";
          return d;
        }
      }
      if (current->counts.pending == 0) return d;  // waits for its gate
      // A batch not begun yet waits out the pause after the previous one.
      const bool begun = current->started_at.has_value();
      if (!begun && last_end &&
          now_ms < *last_end + static_cast<std::int64_t>(r.pause_between_s) * 1000) {
        return d;
      }
      const int unavailable = counts.deploying + failures;
      const int room = r.max_unavailable - unavailable;
      if (room <= 0) {
        if (counts.deploying == 0) {
          d.next = RolloutState::kPaused;
          d.reason = std::to_string(failures) + " failed machine(s) fill max_unavailable " +
                     std::to_string(r.max_unavailable);
        }
        return d;
      }
      for (const auto& m : r.machines) {
        if (static_cast<int>(d.start.size()) >= room) break;
        if (m.batch == current->index && m.state == RolloutMachineState::kPending) {
          d.start.push_back(m.machine_id);
        }
      }
      return d;
    }
    case RolloutState::kRollingBack: {
      // In waves of max_unavailable, like the rollout itself: a failure found late must not
      // reboot most of the fleet at once.
      const int room = r.max_unavailable - counts.rolling_back;
      int waiting = 0;
      for (const auto& m : r.machines) {
        const bool touched = m.deployment_id && (m.state == RolloutMachineState::kDeploying ||
                                                 m.state == RolloutMachineState::kDone ||
                                                 m.state == RolloutMachineState::kFailed);
        if (!touched) continue;
        ++waiting;
        if (static_cast<int>(d.roll_back.size()) < room) d.roll_back.push_back(m.machine_id);
      }
      if (waiting == 0 && counts.rolling_back == 0) {
        if (counts.rollback_failed == 0) {
          d.next = RolloutState::kRolledBack;
          d.reason =
              std::to_string(counts.rolled_back) + " machine(s) back on their previous version";
        } else {
          d.next = RolloutState::kFailed;
          d.reason = std::to_string(counts.rollback_failed) +
                     " machine(s) could not be rolled back; " + std::to_string(counts.rolled_back) +
                     " are back on their previous version";
        }
      }
      return d;
    }
    default:
      return d;
  }
}

RolloutService::RolloutService(RolloutOptions options, RolloutLedger& ledger, RolloutPower power,
                               Metrics& metrics, const Clock& clock,
                               std::shared_ptr<spdlog::logger> log, Leadership* leadership)
    : options_(options),
      ledger_(ledger),
      power_(std::move(power)),
      started_ms_(clock.now_ms()),
      metrics_(metrics),
      clock_(clock),
      log_(std::move(log)),
      leadership_(leadership) {
  metrics_.describe("kiln_rollout_machines", Metrics::Type::kGauge,
                    "Machines of each unfinished rollout, by their state in it.");
  metrics_.describe("kiln_rollout_batches_total", Metrics::Type::kCounter,
                    "Rollout batches finished (gate passed or failed) since kilnd started.");
  metrics_.describe("kiln_rollout_batch_seconds_total", Metrics::Type::kCounter,
                    "Sum of the wall time of the batches counted in kiln_rollout_batches_total.");
  metrics_.describe("kiln_rollout_state_changes_total", Metrics::Type::kCounter,
                    "Rollout state changes made by the engine, by the state entered.");
  metrics_.describe("kiln_rollout_engine_leader", Metrics::Type::kGauge,
                    "1 when this kilnd drives the rollouts (holds the engine's lease), else 0.");
}

RolloutService::~RolloutService() { stop(); }

void RolloutService::start() {
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, options_.tick, [this] { return stopping_ || woken_; });
      if (stopping_) break;
      woken_ = false;
      lock.unlock();
      try {
        // Passes run until nothing changes, so a finished batch starts the next one at once.
        for (int i = 0; i < 8 && run_once() > 0; ++i) {
        }
      } catch (const std::exception& e) {
        // A storage failure (disk full): the next pass tries again; nothing was half-done
        // (every step is one transaction).
        log_->error("event=rollout.pass_failed err=\"{}\"", e.what());
      }
      lock.lock();
    }
  });
}

void RolloutService::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void RolloutService::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

bool RolloutService::leading() const { return leading_.load(); }

bool RolloutService::lead() {
  const bool now = leadership_ == nullptr || leadership_->held();
  const bool before = leading_.exchange(now);
  if (now && !before) {
    // Taking over (or starting): what another holder, or this one in an earlier term, handed
    // to the power service is unknown; the store's record of what was powered decides.
    powered_.clear();
    if (leadership_ != nullptr) log_->info("event=rollout.leader_acquired");
  } else if (!now && before) {
    log_->warn("event=rollout.leader_lost");
  }
  metrics_.set("kiln_rollout_engine_leader", {}, now ? 1 : 0);
  return now;
}

int RolloutService::run_once() {
  std::lock_guard pass(pass_mu_);
  if (!lead()) return 0;
  int changed = 0;
  const auto ids = ledger_.active();
  for (auto id : ids) changed += drive(id);
  // Rollouts that finished leave the gauges.
  for (auto it = finished_batches_.begin(); it != finished_batches_.end();) {
    if (std::find(ids.begin(), ids.end(), it->first) == ids.end()) {
      for (const char* s : {"pending", "skipped", "deploying", "done", "failed", "rolling_back",
                            "rolled_back", "rollback_failed"}) {
        metrics_.set("kiln_rollout_machines",
                     {{"rollout", std::to_string(it->first)}, {"state", s}}, 0);
      }
      it = finished_batches_.erase(it);
    } else {
      ++it;
    }
  }
  return changed;
}

int RolloutService::drive(std::int64_t id) {
  const bool timeouts = clock_.now_ms() >= started_ms_ + options_.startup_grace.count();
  auto r = ledger_.sync(id, timeouts);
  if (!r) {
    log_->warn("event=rollout.sync_failed rollout={} err=\"{}\"", id, r.error().message);
    return 0;
  }
  publish(*r);
  const std::string why = "rollout " + std::to_string(id);
  // Deployments recorded with a reboot that was never asked of the power service in this
  // process (kilnd restarted between the two): ask now.
  std::vector<MachineDeployment> unpowered;
  for (const auto& md : ledger_.unpowered(id)) {
    if (!powered_.count(md.second)) unpowered.push_back(md);
  }
  if (!unpowered.empty()) {
    log_->info("event=rollout.repower rollout={} deployments={}", id, unpowered.size());
    power(unpowered, why);
  }
  const auto d = decide(*r, clock_.now_ms());
  int changed = 0;
  if (d.next) {
    auto t = ledger_.transition(id, r->state, *d.next, d.reason, r->updated_at);
    if (!t) {
      // An operator acted meanwhile: the next pass sees it.
      log_->info("event=rollout.transition_lost rollout={} err=\"{}\"", id, t.error().message);
      return 0;
    }
    metrics_.add("kiln_rollout_state_changes_total", {{"state", proto::to_string(*d.next)}});
    log_->info("event=rollout.{} rollout={} reason=\"{}\"", proto::to_string(*d.next), id,
               d.reason);
    return 1;
  }
  const auto deadline =
      power_.written_deadline ? power_.written_deadline(clock_.now_ms()) : std::nullopt;
  if (!d.start.empty()) {
    auto started = ledger_.start(id, d.start, deadline);
    if (!started) {
      log_->info("event=rollout.start_refused rollout={} err=\"{}\"", id, started.error().message);
      return 0;
    }
    log_->info("event=rollout.machines_started rollout={} asked={} started={}", id, d.start.size(),
               started->size());
    power(*started, why);
    changed += static_cast<int>(d.start.size());
  }
  if (!d.roll_back.empty()) {
    auto back = ledger_.roll_back(id, d.roll_back, deadline);
    if (!back) {
      log_->info("event=rollout.rollback_refused rollout={} err=\"{}\"", id, back.error().message);
      return 0;
    }
    log_->info("event=rollout.machines_rolled_back rollout={} machines={}", id, back->size());
    power(*back, why + " rollback");
    changed += static_cast<int>(d.roll_back.size());
  }
  return changed;
}

void RolloutService::power(const std::vector<MachineDeployment>& started, const std::string& why) {
  for (const auto& [machine, deployment] : started) {
    powered_.insert(deployment);
    if (!power_.reimage) continue;
    if (auto q = power_.reimage(machine, deployment, why); !q) {
      // The write deadline (or the rollout's gate) recovers it.
      log_->warn("event=rollout.power_not_queued machine={} deployment={} err=\"{}\"", machine,
                 deployment, q.error().message);
    }
  }
}

void RolloutService::publish(const Rollout& r) {
  const auto c = proto::count(r);
  const std::string rid = std::to_string(r.id);
  const std::pair<const char*, int> states[] = {
      {"pending", c.pending},         {"skipped", c.skipped},
      {"deploying", c.deploying},     {"done", c.done},
      {"failed", c.failed},           {"rolling_back", c.rolling_back},
      {"rolled_back", c.rolled_back}, {"rollback_failed", c.rollback_failed}};
  for (const auto& [s, n] : states) {
    metrics_.set("kiln_rollout_machines", {{"rollout", rid}, {"state", s}}, n);
  }
  auto [it, fresh] = finished_batches_.try_emplace(r.id);
  auto& seen = it->second;
  for (const auto& b : proto::batches(r)) {
    if (b.index < 0 || !b.finished_at || !b.started_at || seen.count(b.index)) continue;
    seen.insert(b.index);
    if (fresh) continue;  // finished before this kilnd started: counted by the one before
    metrics_.add("kiln_rollout_batches_total", {});
    metrics_.add("kiln_rollout_batch_seconds_total", {},
                 static_cast<double>(*b.finished_at - *b.started_at) / 1000.0);
  }
}

}  // namespace kiln::provision
