#include "provision/power_service.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "tests/unit/fake_clock.h"

namespace kiln::provision {
namespace {

using namespace std::chrono_literals;
using proto::DeploymentStatus;

using kiln::testing::FakeClock;

// What the fake BMCs were asked, shared by every driver the factory makes.
struct BmcLog {
  std::mutex mu;
  std::vector<std::string> calls;                  // "<address> <call>"
  std::map<std::string, power::PowerState> state;  // by address
  std::optional<Error> boot_error;                 // boot_once_network fails with it
  std::chrono::milliseconds delay{0};              // every call takes this long
  int in_flight = 0, max_in_flight = 0;
  std::function<void(const std::string&)> on_call;  // runs after each call is logged

  void call(const std::string& address, const std::string& what) {
    if (on_call) on_call(what);
    {
      std::lock_guard lock(mu);
      calls.push_back(address + " " + what);
      max_in_flight = std::max(max_in_flight, ++in_flight);
    }
    if (delay.count()) std::this_thread::sleep_for(delay);
    std::lock_guard lock(mu);
    --in_flight;
  }
  std::vector<std::string> snapshot() {
    std::lock_guard lock(mu);
    return calls;
  }
};

class FakeDriver final : public power::Driver {
 public:
  FakeDriver(BmcLog& log, std::string address) : log_(log), address_(std::move(address)) {}
  Result<power::PowerState> status() override {
    log_.call(address_, "status");
    std::lock_guard lock(log_.mu);
    return log_.state[address_];
  }
  Result<std::vector<power::Step>> power(power::PowerAction a) override {
    log_.call(address_, std::string("power ") + power::power_action_name(a));
    std::lock_guard lock(log_.mu);
    log_.state[address_] = a == power::PowerAction::kOff || a == power::PowerAction::kSoftOff
                               ? power::PowerState::kOff
                               : power::PowerState::kOn;
    return std::vector<power::Step>{{"fake.power", power::power_action_name(a), 1ms, 1}};
  }
  Result<std::vector<power::Step>> boot_once_network(power::BootMode mode) override {
    log_.call(address_, mode == power::BootMode::kUefi ? "pxe uefi" : "pxe legacy");
    std::lock_guard lock(log_.mu);
    if (log_.boot_error) return *log_.boot_error;
    return std::vector<power::Step>{{"fake.boot", "Pxe Once", 1ms, 1}};
  }

 private:
  BmcLog& log_;
  std::string address_;
};

class FakeFactory final : public DriverFactory {
 public:
  explicit FakeFactory(BmcLog& log) : log_(log) {}
  Result<std::unique_ptr<power::Driver>> make(const power::BmcConfig& c) override {
    return std::unique_ptr<power::Driver>(new FakeDriver(log_, c.address));
  }

 private:
  BmcLog& log_;
};

class FakeBmcs final : public BmcBook {
 public:
  std::mutex mu;
  std::map<std::int64_t, MachineBmc> by_machine;
  void add(std::int64_t machine, power::BootMode mode = power::BootMode::kLegacy) {
    std::lock_guard lock(mu);
    MachineBmc b;
    b.config.driver = "redfish";
    b.config.address = "bmc-" + std::to_string(machine);
    b.mode = mode;
    by_machine[machine] = b;
  }
  Result<MachineBmc> bmc(std::int64_t machine_id) override {
    std::lock_guard lock(mu);
    auto it = by_machine.find(machine_id);
    if (it == by_machine.end()) return make_error(Errc::kNotFound, "no BMC");
    return it->second;
  }
};

class FakeLedger final : public PowerLedger {
 public:
  std::mutex mu;
  std::map<std::int64_t, proto::Deployment> deployments;
  std::vector<std::pair<std::string, nlohmann::json>> events;
  std::int64_t next_id = 100;
  bool can_roll_back = true;
  const FakeClock* clock = nullptr;

  proto::Deployment& add(std::int64_t id, std::int64_t machine, DeploymentStatus st,
                         std::optional<std::int64_t> deadline) {
    std::lock_guard lock(mu);
    auto& d = deployments[id];
    d.id = id;
    d.machine_id = machine;
    d.status = st;
    d.deadline_at = deadline;
    return d;
  }
  proto::Deployment get(std::int64_t id) {
    std::lock_guard lock(mu);
    return deployments.at(id);
  }
  std::vector<std::string> event_types() {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (const auto& [t, _] : events) out.push_back(t);
    return out;
  }
  void record(std::string_view type, std::int64_t, std::optional<std::int64_t>,
              const nlohmann::json& data) override {
    std::lock_guard lock(mu);
    events.emplace_back(std::string(type), data);
  }
  Status mark_powered(std::int64_t id, std::optional<std::int64_t> deadline_at) override {
    std::lock_guard lock(mu);
    auto& d = deployments.at(id);
    d.powered_at = 1;
    if (deadline_at) d.deadline_at = deadline_at;
    return Unit{};
  }
  Status watch(std::int64_t id, std::int64_t deadline_at) override {
    std::lock_guard lock(mu);
    auto& d = deployments.at(id);
    if (!d.deadline_at) d.deadline_at = deadline_at;
    return Unit{};
  }
  std::vector<proto::Deployment> overdue(std::int64_t now, int) override {
    std::lock_guard lock(mu);
    std::vector<proto::Deployment> out;
    for (const auto& [id, d] : deployments) {
      const bool watched = d.status == DeploymentStatus::kPending ||
                           d.status == DeploymentStatus::kRunning ||
                           d.status == DeploymentStatus::kSucceeded;
      if (watched && d.deadline_at && *d.deadline_at <= now) out.push_back(d);
    }
    return out;
  }
  Result<proto::Deployment> miss_deadline(std::int64_t id, std::int64_t expected, std::int64_t next,
                                          const std::string&) override {
    std::lock_guard lock(mu);
    auto& d = deployments.at(id);
    if (d.deadline_at != expected) return make_error(Errc::kConflict, "moved on");
    ++d.deadline_misses;
    d.deadline_at = next;
    return d;
  }
  Result<proto::Deployment> return_miss(std::int64_t id, std::int64_t expected,
                                        const std::string&) override {
    std::lock_guard lock(mu);
    auto& d = deployments.at(id);
    if (d.deadline_at != expected || d.deadline_misses <= 0) {
      return make_error(Errc::kConflict, "moved on");
    }
    --d.deadline_misses;
    d.deadline_at = clock->now_ms();
    return d;
  }
  Result<proto::Deployment> fail_overdue(std::int64_t id, std::int64_t expected,
                                         const std::string& why) override {
    std::lock_guard lock(mu);
    auto& d = deployments.at(id);
    if (d.deadline_at != expected) return make_error(Errc::kConflict, "moved on");
    d.status = DeploymentStatus::kFailed;
    d.status_reason = why;
    d.deadline_at.reset();
    return d;
  }
  Result<proto::Deployment> deployment(std::int64_t id) override {
    std::lock_guard lock(mu);
    auto it = deployments.find(id);
    if (it == deployments.end()) return make_error(Errc::kNotFound, "no deployment");
    return it->second;
  }
  Result<proto::Deployment> rollback_to_booted(std::int64_t machine, const std::string& who,
                                               std::optional<std::int64_t> deadline) override {
    std::lock_guard lock(mu);
    if (!can_roll_back) return make_error(Errc::kConflict, "no version confirmed booted");
    auto& d = deployments[next_id];
    d.id = next_id++;
    d.machine_id = machine;
    d.kind = "rollback";
    d.requested_by = who;
    d.status = DeploymentStatus::kPending;
    d.deadline_at = deadline;
    return d;
  }
};

// Another kilnd holds the database lease while `held` is false.
struct FakeLeadership : provision::Leadership {
  std::atomic<bool> is_held{true};
  bool held() override { return is_held.load(); }
};

class PowerServiceTest : public ::testing::Test {
 protected:
  void start(PowerOptions o = {}) {
    o.tick = std::chrono::hours(1);  // deadlines only when the test calls check_deadlines()
    ledger_.clock = &clock_;
    service_ = std::make_unique<PowerService>(
        o, bmcs_, factory_, ledger_, clock_,
        std::make_shared<spdlog::logger>("power_test",
                                         std::make_shared<spdlog::sinks::null_sink_mt>()),
        &lead_);
    service_->start();
  }
  // Waits (bounded) until the BMCs were called `n` times in all.
  bool wait_calls(std::size_t n) {
    for (int i = 0; i < 500; ++i) {
      if (bmc_.snapshot().size() >= n && service_->busy() == 0) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  FakeLeadership lead_;
  FakeClock clock_;
  BmcLog bmc_;
  FakeFactory factory_{bmc_};
  FakeBmcs bmcs_;
  FakeLedger ledger_;
  std::unique_ptr<PowerService> service_;
};

TEST_F(PowerServiceTest, ReimageOfARunningMachineBootsTheNetworkOnceThenCycles) {
  start(PowerOptions{.written_deadline = 600s});
  bmcs_.add(1, power::BootMode::kLegacy);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  ledger_.add(7, 1, DeploymentStatus::kPending, std::nullopt);
  ASSERT_TRUE(service_->reimage(1, 7, "test"));
  ASSERT_TRUE(wait_calls(3));
  EXPECT_EQ(bmc_.snapshot(),
            (std::vector<std::string>{"bmc-1 status", "bmc-1 pxe legacy", "bmc-1 power cycle"}));
  auto d = ledger_.get(7);
  EXPECT_TRUE(d.powered_at);
  EXPECT_EQ(d.deadline_at, clock_.now_ms() + 600'000);  // the write stage's clock starts now
  auto types = ledger_.event_types();
  EXPECT_EQ(std::count(types.begin(), types.end(), "power.step"), 3);
  EXPECT_EQ(std::count(types.begin(), types.end(), "power.reimage"), 1);
}

TEST_F(PowerServiceTest, ReimageOfAnOffMachinePowersItOn) {
  start();
  bmcs_.add(1, power::BootMode::kUefi);
  bmc_.state["bmc-1"] = power::PowerState::kOff;
  ledger_.add(7, 1, DeploymentStatus::kPending, std::nullopt);
  ASSERT_TRUE(service_->reimage(1, 7, "test"));
  ASSERT_TRUE(wait_calls(3));
  EXPECT_EQ(bmc_.snapshot().back(), "bmc-1 power on");
  EXPECT_EQ(bmc_.snapshot()[1], "bmc-1 pxe uefi");
  EXPECT_FALSE(ledger_.get(7).deadline_at);  // no written deadline configured
}

TEST_F(PowerServiceTest, AnOverrideTheBmcDidNotApplyStopsBeforeAnyPowerAction) {
  start();
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  bmc_.boot_error =
      make_error(Errc::kConflict, "the BMC accepted the boot override and did not apply it");
  ledger_.add(7, 1, DeploymentStatus::kPending, std::nullopt);
  ASSERT_TRUE(service_->reimage(1, 7, "test"));
  ASSERT_TRUE(wait_calls(2));
  for (const auto& c : bmc_.snapshot()) EXPECT_EQ(c.find("power"), std::string::npos) << c;
  std::lock_guard lock(ledger_.mu);
  ASSERT_FALSE(ledger_.events.empty());
  const auto& [type, data] = ledger_.events.back();
  EXPECT_EQ(type, "power.failed");
  EXPECT_EQ(data["step"], "boot_once_network");
  EXPECT_NE(data["error"].get<std::string>().find("did not apply"), std::string::npos);
}

TEST_F(PowerServiceTest, WithoutABmcThereIsNothingToDo) {
  start();
  EXPECT_EQ(service_->reimage(1, 7, "test").error().code, Errc::kNotFound);
  EXPECT_EQ(service_->power(1, power::PowerAction::kOn, "t").error().code, Errc::kNotFound);
  EXPECT_EQ(service_->status(1, "t").error().code, Errc::kNotFound);
}

TEST_F(PowerServiceTest, NeverMoreBmcOperationsAtOnceThanMaxConcurrent) {
  bmc_.delay = 20ms;
  start(PowerOptions{.max_concurrent = 2});
  for (int m = 1; m <= 8; ++m) {
    bmcs_.add(m);
    bmc_.state["bmc-" + std::to_string(m)] = power::PowerState::kOn;
    ledger_.add(m, m, DeploymentStatus::kPending, std::nullopt);
    ASSERT_TRUE(service_->reimage(m, m, "bulk"));
  }
  ASSERT_TRUE(wait_calls(8 * 3));
  std::lock_guard lock(bmc_.mu);
  EXPECT_LE(bmc_.max_in_flight, 2);
  EXPECT_EQ(bmc_.calls.size(), 24u);
}

TEST_F(PowerServiceTest, AMissedBootDeadlinePowerCyclesFromDiskThenFailsAndRollsBack) {
  start(PowerOptions{.booted_deadline = 60s, .deadline_retries = 1, .auto_rollback = true});
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  const auto now = clock_.now_ms();
  ledger_.add(7, 1, DeploymentStatus::kSucceeded, now - 1);
  // First miss: a power cycle from the disk (no network boot), a fresh deadline.
  EXPECT_EQ(service_->check_deadlines(), 1);
  ASSERT_TRUE(wait_calls(2));
  EXPECT_EQ(bmc_.snapshot(), (std::vector<std::string>{"bmc-1 status", "bmc-1 power cycle"}));
  auto d = ledger_.get(7);
  EXPECT_EQ(d.deadline_misses, 1);
  EXPECT_EQ(d.deadline_at, now + 60'000);
  EXPECT_EQ(d.status, DeploymentStatus::kSucceeded);
  // Not due yet: nothing happens.
  EXPECT_EQ(service_->check_deadlines(), 0);
  // Second miss: failed, then the rollback is reimaged (network boot once).
  clock_.now = now + 60'000;
  EXPECT_EQ(service_->check_deadlines(), 1);
  ASSERT_TRUE(wait_calls(5));
  EXPECT_EQ(ledger_.get(7).status, DeploymentStatus::kFailed);
  EXPECT_NE(ledger_.get(7).status_reason.find("did not confirm its boot"), std::string::npos);
  auto rb = ledger_.get(100);
  EXPECT_EQ(rb.requested_by, "kilnd:auto-rollback");
  EXPECT_TRUE(rb.powered_at);
  auto calls = bmc_.snapshot();
  EXPECT_EQ(calls[3], "bmc-1 pxe legacy");
}

TEST_F(PowerServiceTest, OnlyTheLeaderChecksDeadlines) {
  start(PowerOptions{.written_deadline = 300s, .deadline_retries = 1});
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  ledger_.add(7, 1, DeploymentStatus::kRunning, clock_.now_ms() - 1);
  // Another instance holds the lease: it acts on the deadline, this one does not.
  lead_.is_held = false;
  EXPECT_EQ(service_->check_deadlines(), 0);
  EXPECT_EQ(ledger_.get(7).deadline_misses, 0);
  EXPECT_TRUE(bmc_.snapshot().empty());
  // The holder died and this instance took the lease over: the missed deadline is handled.
  lead_.is_held = true;
  EXPECT_EQ(service_->check_deadlines(), 1);
  ASSERT_TRUE(wait_calls(1));
  EXPECT_EQ(ledger_.get(7).deadline_misses, 1);
}

TEST_F(PowerServiceTest, AMissedWriteDeadlineReimagesOverTheNetworkAgain) {
  start(PowerOptions{.written_deadline = 300s, .deadline_retries = 1});
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  ledger_.add(7, 1, DeploymentStatus::kPending, clock_.now_ms());
  EXPECT_EQ(service_->check_deadlines(), 1);
  ASSERT_TRUE(wait_calls(3));
  EXPECT_EQ(bmc_.snapshot()[1], "bmc-1 pxe legacy");
  EXPECT_EQ(ledger_.get(7).deadline_misses, 1);
}

TEST_F(PowerServiceTest, WithoutABmcTheFirstMissedDeadlineFails) {
  start(PowerOptions{.booted_deadline = 60s, .deadline_retries = 3, .auto_rollback = true});
  ledger_.can_roll_back = false;
  ledger_.add(7, 1, DeploymentStatus::kSucceeded, clock_.now_ms());
  EXPECT_EQ(service_->check_deadlines(), 1);
  auto d = ledger_.get(7);
  EXPECT_EQ(d.status, DeploymentStatus::kFailed);
  EXPECT_NE(d.status_reason.find("no BMC"), std::string::npos);
  EXPECT_TRUE(bmc_.snapshot().empty());
  auto types = ledger_.event_types();
  EXPECT_EQ(std::count(types.begin(), types.end(), "deployment.auto_rollback_failed"), 1);
}

}  // namespace
}  // namespace kiln::provision

namespace kiln::provision {
namespace {

TEST_F(PowerServiceTest, KilndNeverRollsBackItsOwnFailedRollback) {
  start(PowerOptions{.booted_deadline = 60s, .deadline_retries = 0, .auto_rollback = true});
  bmcs_.add(1);
  auto& d = ledger_.add(7, 1, DeploymentStatus::kSucceeded, clock_.now_ms());
  d.requested_by = "kilnd:auto-rollback";
  EXPECT_EQ(service_->check_deadlines(), 1);
  EXPECT_EQ(ledger_.get(7).status, DeploymentStatus::kFailed);
  std::lock_guard lock(ledger_.mu);
  EXPECT_EQ(ledger_.deployments.count(100), 0u);  // no new rollback
  EXPECT_EQ(ledger_.events.back().first, "deployment.auto_rollback_failed");
}

TEST_F(PowerServiceTest, AQueuedJobWhoseDeploymentMovedOnDoesNotTouchThePower) {
  start();
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  ledger_.add(7, 1, DeploymentStatus::kSuperseded, std::nullopt);
  ASSERT_TRUE(service_->reimage(1, 7, "stale"));
  ASSERT_TRUE(wait_calls(1));
  EXPECT_EQ(bmc_.snapshot(), std::vector<std::string>{"bmc-1 status"});
  EXPECT_EQ(ledger_.event_types().back(), "power.skipped");
}

TEST_F(PowerServiceTest, AnEngineJobQueuedBeforeTheLeadershipMovedDoesNotTouchTheBmc) {
  start();
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  ledger_.add(7, 1, DeploymentStatus::kPending, std::nullopt);
  lead_.is_held = false;  // lost between the rollout's pass and the job's turn
  ASSERT_TRUE(service_->reimage(1, 7, "rollout 1", PowerService::Origin::kEngine));
  for (int i = 0; i < 500 && ledger_.event_types().empty(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(bmc_.snapshot().empty());
  EXPECT_FALSE(ledger_.get(7).powered_at);  // left for the new leader to power
  std::lock_guard lock(ledger_.mu);
  ASSERT_EQ(ledger_.events.size(), 1u);
  EXPECT_EQ(ledger_.events[0].first, "power.skipped");
  EXPECT_NE(ledger_.events[0].second["reason"].get<std::string>().find("leadership"),
            std::string::npos);
}

TEST_F(PowerServiceTest, AnEngineJobStopsBeforeThePowerActionWhenTheLeadershipMovesMidJob) {
  start();
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  ledger_.add(7, 1, DeploymentStatus::kPending, std::nullopt);
  bmc_.on_call = [&](const std::string& what) {
    if (what.rfind("pxe", 0) == 0) lead_.is_held = false;  // during the boot override
  };
  ASSERT_TRUE(service_->reimage(1, 7, "rollout 1", PowerService::Origin::kEngine));
  ASSERT_TRUE(wait_calls(2));
  EXPECT_EQ(bmc_.snapshot(), (std::vector<std::string>{"bmc-1 status", "bmc-1 pxe legacy"}));
  EXPECT_FALSE(ledger_.get(7).powered_at);
  EXPECT_EQ(ledger_.event_types().back(), "power.skipped");
}

TEST_F(PowerServiceTest, ARecoveryTheLeaderCouldNotRunGivesItsMissBackForTheNextLeader) {
  start(PowerOptions{.booted_deadline = 60s, .deadline_retries = 1});
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  ledger_.add(7, 1, DeploymentStatus::kSucceeded, clock_.now_ms() - 1);
  bmc_.on_call = [&](const std::string& what) {
    if (what == "status") lead_.is_held = false;  // lost while the recovery runs
  };
  EXPECT_EQ(service_->check_deadlines(), 1);  // counts the miss, queues the power-cycle
  ASSERT_TRUE(wait_calls(1));
  EXPECT_EQ(bmc_.snapshot(), std::vector<std::string>{"bmc-1 status"});  // no power action
  auto d = ledger_.get(7);
  EXPECT_EQ(d.deadline_misses, 0) << "the retry is not used up by a cycle that never ran";
  EXPECT_EQ(d.deadline_at, clock_.now_ms()) << "due now, for whoever leads";
  EXPECT_EQ(d.status, DeploymentStatus::kSucceeded);
  // The next leader (this instance again, here) power-cycles it: the retry it is owed.
  bmc_.on_call = nullptr;
  lead_.is_held = true;
  EXPECT_EQ(service_->check_deadlines(), 1);
  ASSERT_TRUE(wait_calls(3));
  EXPECT_EQ(bmc_.snapshot().back(), "bmc-1 power cycle");
  EXPECT_EQ(ledger_.get(7).deadline_misses, 1);
  EXPECT_EQ(ledger_.get(7).status, DeploymentStatus::kSucceeded);
}

TEST_F(PowerServiceTest, ARecoveryStillQueuedWhenKilndStopsGivesItsMissBack) {
  start(PowerOptions{.max_concurrent = 1, .booted_deadline = 60s, .deadline_retries = 1});
  bmcs_.add(1);
  bmcs_.add(2);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  bmc_.state["bmc-2"] = power::PowerState::kOn;
  ledger_.add(6, 1, DeploymentStatus::kPending, std::nullopt);
  ledger_.add(7, 2, DeploymentStatus::kSucceeded, clock_.now_ms() - 1);
  std::promise<void> first_call, go_on;
  auto gate = go_on.get_future().share();
  std::atomic<bool> once{false};
  bmc_.on_call = [&, gate](const std::string&) {
    if (once.exchange(true)) return;
    first_call.set_value();
    gate.wait();  // holds the only slot until kilnd is stopping
  };
  ASSERT_TRUE(service_->reimage(1, 6, "holds the only slot"));
  first_call.get_future().wait();
  EXPECT_EQ(service_->check_deadlines(), 1);  // the recovery waits for the slot
  EXPECT_EQ(ledger_.get(7).deadline_misses, 1);
  service_->request_stop();
  go_on.set_value();
  service_->stop();
  auto d = ledger_.get(7);
  EXPECT_EQ(d.deadline_misses, 0) << "a power-cycle that never ran uses no retry";
  EXPECT_EQ(d.deadline_at, clock_.now_ms());
  for (const auto& c : bmc_.snapshot()) EXPECT_EQ(c.find("bmc-2"), std::string::npos) << c;
}

TEST_F(PowerServiceTest, AnOperatorsReimageRunsWhoeverLeadsTheEngine) {
  start();
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOn;
  ledger_.add(7, 1, DeploymentStatus::kPending, std::nullopt);
  lead_.is_held = false;  // another instance leads; this one serves its operator's assignment
  ASSERT_TRUE(service_->reimage(1, 7, "assignment by ops"));
  ASSERT_TRUE(wait_calls(3));
  EXPECT_EQ(bmc_.snapshot().back(), "bmc-1 power cycle");
  EXPECT_TRUE(ledger_.get(7).powered_at);
}

TEST_F(PowerServiceTest, OperatorCallsAnswerFromTheWorkers) {
  start();
  bmcs_.add(1);
  bmc_.state["bmc-1"] = power::PowerState::kOff;
  std::promise<Result<PowerOutcome>> got;
  service_->power_async(1, power::PowerAction::kOn, "ops",
                        [&](Result<PowerOutcome> r) { got.set_value(std::move(r)); });
  auto r = got.get_future().get();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->state, power::PowerState::kOn);
  std::promise<Result<PowerOutcome>> none;
  service_->power_async(2, std::nullopt, "ops",
                        [&](Result<PowerOutcome> r) { none.set_value(std::move(r)); });
  EXPECT_EQ(none.get_future().get().error().code, Errc::kNotFound);
}

}  // namespace
}  // namespace kiln::provision
