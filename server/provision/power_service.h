// provision/power_service.h — acting on running machines through their BMCs: power actions
// for the API, reimage-on-assign (one-time network boot, then a power cycle, or power on when
// off), and the deadlines of a deployment's stages with their recovery (power-cycle and retry,
// then fail, then, by policy, roll back to the last version that booted).
//
// Every BMC operation, whoever asks for it, holds one of `max_concurrent` slots, so a bulk
// assignment to 500 machines reaches at most that many BMCs at once; the rest queue. API calls
// wait for a slot at most `slot_wait` (then kUnavailable); reimages queue (bounded) and run on
// the service's own worker threads. Each BMC step becomes an event with its timing and outcome
// (never a credential: the drivers' messages carry none).
//
// Deadlines: the image must be written within `written_deadline` of kilnd's power-on (only a
// machine kilnd powered has that clock), and the deployed OS must confirm its boot within
// `booted_deadline` of the image being written. A deadline missed is retried `deadline_retries`
// times — kilnd power-cycles the machine through its BMC (network boot once for the write
// stage, the disk for the boot stage) — then the deployment fails; with `auto_rollback` the
// machine is then rolled back (with reboot) to the last version it confirmed booting. A machine
// without a BMC cannot be power-cycled: its first missed deadline fails the deployment.
//
// It reaches machines and deployments only through provision/ports.h. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "power/driver.h"
#include "provision/ports.h"

namespace spdlog {
class logger;
}

namespace kiln::provision {

struct PowerOptions {
  int max_concurrent = 16;                      // power.max_concurrent: BMC operations at once
  std::chrono::milliseconds slot_wait{30'000};  // an API call's longest wait for a slot
  std::size_t max_queued = 100'000;             // reimages waiting for a slot, at most
  bool reboot_on_assign = false;                // power.reboot_on_assign: the default of "reboot"
  std::chrono::seconds written_deadline{0};     // boot.deadlines.written_s (0: none)
  std::chrono::seconds booted_deadline{0};      // boot.deadlines.booted_s (0: none)
  int deadline_retries = 1;                     // boot.deadlines.retries: power-cycles, then fail
  bool auto_rollback = false;                   // boot.auto_rollback
  std::chrono::milliseconds tick{1000};         // how often deadlines are checked
  // After a start, deadlines are first checked this late: OSes that could not confirm while
  // kilnd was down get a chance before they are power-cycled.
  std::chrono::milliseconds startup_grace{60'000};
};

// What a power call did, for the API's answer.
struct PowerOutcome {
  power::PowerState state = power::PowerState::kUnknown;  // after the action
  std::vector<power::Step> steps;
  std::chrono::milliseconds took{0};
};

class PowerService {
 public:
  // `bmcs`, `drivers`, `ledger`, `clock` and `leadership` must outlive the service. With
  // several kilnd on one database only the holder of `leadership` checks deadlines (each
  // instance still serves its own operators' power calls and reimages); without it, this one
  // always does.
  PowerService(PowerOptions options, BmcBook& bmcs, DriverFactory& drivers, PowerLedger& ledger,
               const Clock& clock, std::shared_ptr<spdlog::logger> log,
               Leadership* leadership = nullptr);
  ~PowerService();  // stop()
  PowerService(const PowerService&) = delete;
  PowerService& operator=(const PowerService&) = delete;

  // Starts the workers and the deadline thread. Call once.
  void start();
  // Stops taking work and drops the queued operations (their deadlines recover them after a
  // restart) without waiting: safe on an I/O thread (the signal handler).
  void request_stop();
  // request_stop(), then waits for the operations in progress to finish.
  void stop();

  const PowerOptions& options() const { return options_; }

  // Whether machine `id` has a BMC configured.
  bool has_bmc(std::int64_t machine_id);
  // The machine's power state (kNotFound: no BMC; the driver's errors otherwise).
  Result<PowerOutcome> status(std::int64_t machine_id, const std::string& who);
  // Performs `action` now (waits for a slot); recorded as a power.action event.
  Result<PowerOutcome> power(std::int64_t machine_id, power::PowerAction action,
                             const std::string& who);
  // The same on the service's workers, ahead of queued reimages; `done` is called there (or
  // here, at once, when the machine has no BMC or the service is stopping). For the API: an
  // I/O thread never waits for a BMC. `action` nullopt: status.
  using Done = std::function<void(Result<PowerOutcome>)>;
  void power_async(std::int64_t machine_id, std::optional<power::PowerAction> action,
                   const std::string& who, Done done);
  // Who asked for a reimage. An operator's (an assignment through this instance's API) runs
  // whatever happens; the engine's (a rollout's batch, a deadline's recovery) only while this
  // instance still holds the leadership when its turn comes: the instance that took the
  // leadership over powers the deployments nobody powered, so a queued engine job run by a
  // former leader would power-cycle the machine a second time.
  enum class Origin { kOperator, kEngine };
  // Queues a reimage of machine `machine_id` for deployment `deployment_id`: one-time network
  // boot, then a power cycle (or on, when off). kNotFound: no BMC; kUnavailable: queue full.
  // The outcome is an event (power.reimage, power.failed or power.skipped).
  Status reimage(std::int64_t machine_id, std::int64_t deployment_id, const std::string& why,
                 Origin origin = Origin::kOperator);

  // The boot deadline of a deployment written at `written_ms` (nullopt: none configured).
  std::optional<std::int64_t> booted_deadline(std::int64_t written_ms) const;
  // The write deadline of a deployment whose write stage starts at `from_ms` (nullopt: none).
  std::optional<std::int64_t> written_deadline(std::int64_t from_ms) const;

  // One pass over the deployments whose deadline passed (the deadline thread runs it every
  // `tick`; tests call it directly). Returns how many it acted on: none while another
  // instance holds the leadership.
  int check_deadlines();

  // Operations queued or running now (for tests and /metrics).
  int busy();

  // What kilnd last learnt from each BMC it talked to since it started (for /metrics): the
  // power state it reported and whether the last operation reached it; and operations by outcome.
  struct BmcHealth {
    power::PowerState state = power::PowerState::kUnknown;
    bool reachable = true;
  };
  struct BmcStats {
    std::map<std::int64_t, BmcHealth> machines;
    std::uint64_t ok = 0, failed = 0;
  };
  BmcStats bmc_stats();

 private:
  bool acquire(std::chrono::milliseconds wait);
  // `fn` holding a slot (kNotFound without a BMC; kUnavailable when none frees up in time).
  Result<PowerOutcome> with_slot(std::int64_t machine_id,
                                 const std::function<Result<PowerOutcome>()>& fn);
  Result<PowerOutcome> do_status(std::int64_t machine_id, const std::string& who);
  Result<PowerOutcome> do_power(std::int64_t machine_id, power::PowerAction action,
                                const std::string& who);
  // Queues a reimage or reboot job; a queued one of the same machine is replaced (a machine
  // gets one pending BMC sequence, the newest).
  // `missed`: the deadline a counted miss set (a deadline's recovery), given back if the job
  // is skipped for lack of the leadership.
  Status enqueue(std::int64_t machine_id, std::int64_t deployment_id, const std::string& why,
                 bool network, Origin origin, std::optional<std::int64_t> missed = std::nullopt);
  void release();
  void worker();
  void deadline_loop();
  // The reimage itself, on a worker holding a slot.
  void run_reimage(std::int64_t machine_id, std::int64_t deployment_id, const std::string& why,
                   bool network, Origin origin, std::optional<std::int64_t> missed);
  // Whether an engine job may still act: this instance holds the leadership (always without
  // one, or for an operator's job).
  bool may_act(Origin origin);
  // A deadline recovery of `deployment_id` (`missed` set) that will not run: its counted miss
  // is given back with the deadline due now (PowerLedger::return_miss). Nothing without `missed`.
  void give_back(std::int64_t deployment_id, std::optional<std::int64_t> missed,
                 const std::string& why);
  void overdue(const proto::Deployment& d);
  Result<std::unique_ptr<power::Driver>> driver_for(std::int64_t machine_id, power::BootMode* mode);

  PowerOptions options_;
  BmcBook& bmcs_;
  DriverFactory& drivers_;
  PowerLedger& ledger_;
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  Leadership* leadership_;

  // A BMC operation's outcome: `ok` with the state it reported (kUnknown: none, the last known
  // state stands). `changed`: the operation changed the power state, so a kUnknown state
  // replaces the last known one.
  void note_bmc(std::int64_t machine_id, bool ok, power::PowerState state, bool changed = false);
  std::mutex health_mu_;
  BmcStats health_;
  std::mutex mu_;
  std::condition_variable slot_cv_;  // a slot was released
  std::condition_variable work_cv_;  // a job was queued, or stopping
  std::condition_variable stop_cv_;  // stopping (wakes the deadline thread)
  int slots_free_ = 0;
  int running_ = 0;
  bool stopping_ = false;
  struct Job {
    std::int64_t machine_id = 0;
    std::int64_t deployment_id = 0;
    std::string why;
    bool network = false;  // one-time network boot first (the write stage); false: disk
    Origin origin = Origin::kOperator;
    std::optional<std::int64_t> missed;  // the deadline a counted miss set (enqueue)
    std::function<void()> call;          // set: an operator's power call instead of a reimage
  };
  std::deque<Job> queue_;
  std::vector<Job> unreturned_;  // dropped deadline recoveries; stop() gives their misses back
  std::vector<std::thread> workers_;
  std::thread deadlines_;
};

}  // namespace kiln::provision
