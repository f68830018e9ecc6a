// The rollout engine over a real store (SQLite in a temp dir) through the daemon's adapter:
// machines "deploy" by the store calls an agent and a deployed OS make, under a fake clock.
#include "provision/rollout_service.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <filesystem>
#include <map>

#include "daemon/store_adapters.h"
#include "store/store.h"
#include "tests/unit/fake_clock.h"
#include "tests/unit/test_dir.h"

namespace kiln::provision {
namespace {

using proto::DeploymentStatus;
using proto::RolloutMachineState;
using proto::RolloutState;

using kiln::testing::FakeClock;

// Another kilnd holds the database lease while `held` is false.
struct FakeLeadership : Leadership {
  bool is_held = true;
  bool held() override { return is_held; }
};

class RolloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kiln::testing::make_test_dir("kiln-rollout-test");
    store::StoreOptions o;
    o.path = (dir_ / "kiln.db").string();
    o.synchronous_full = false;
    auto s = store::Store::open(o, clock_);
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
    ledger_ = std::make_unique<daemon::StoreRolloutLedger>(*store_, nullptr);
    restart();
    for (const auto& v : {"1", "2"}) register_version(v);
  }
  // Registers img:`v` (an external raw image: nothing to fetch, the store only needs it).
  void register_version(const std::string& v) {
    proto::ImageVersion iv;
    iv.name = "img";
    iv.version = v;
    iv.size_bytes = 1 << 20;
    iv.sha256 = std::string(64, 'a');
    iv.format = "raw";
    iv.source_url = "http://images.example/" + v;
    iv.created_by = "test";
    ASSERT_TRUE(store_->register_image_version(iv));
  }
  void TearDown() override {
    service_.reset();
    ledger_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // A new engine over the same database: what a kilnd restart leaves.
  void restart() {
    service_ = std::make_unique<RolloutService>(
        RolloutOptions{}, *ledger_, power(), metrics_, clock_,
        std::make_shared<spdlog::logger>("rollout",
                                         std::make_shared<spdlog::sinks::null_sink_mt>()));
  }

  // Records what the engine asks of the BMCs.
  RolloutPower power() {
    return {[this](std::int64_t machine, std::int64_t deployment, const std::string&) -> Status {
              reimages_.emplace_back(machine, deployment);
              return Unit{};
            },
            nullptr};
  }
  std::int64_t machine(int i, const std::string& rack, bool bmc = true) {
    store::NewMachine nm;
    char mac[32];
    std::snprintf(mac, sizeof mac, "52:54:00:00:%02x:%02x", i / 256, i % 256);
    nm.macs = {mac};
    nm.name = "m" + std::to_string(i);
    nm.labels = {{"rack", rack}, {"fleet", "a"}};
    auto m = store_->create_machine(nm, "test");
    EXPECT_TRUE(m) << m.error().message;
    if (bmc) {
      store::BmcRecord b;
      b.machine_id = m->id;
      b.driver = "redfish";
      b.address = "http://127.0.0.1:1";
      b.credentials = "v1:x";
      EXPECT_TRUE(store_->put_bmc(b, "test"));
    }
    return m->id;
  }
  // The machine runs img:1, booted (its history before the rollout).
  void on_v1(std::int64_t id) {
    store::AssignRequest r{"img", "1", "test"};
    auto o = store_->assign(id, r);
    ASSERT_TRUE(o) << o.error().message;
    write(o->deployment.id, true);
    boot(o->deployment.id);
  }
  // The agent writes it; the plan it fetched carried the deployed OS's credential.
  void write(std::int64_t deployment, bool ok) {
    auto t = store_->mint_instance_token(deployment);
    ASSERT_TRUE(t) << t.error().message;
    tokens_[deployment] = *t;
    proto::AgentReport r;
    r.stage = "done";
    r.result = ok ? DeploymentStatus::kSucceeded : DeploymentStatus::kFailed;
    r.reason = ok ? "" : "disk error";
    ASSERT_TRUE(store_->report_progress(deployment, r));
  }
  void boot(std::int64_t deployment) {
    auto d = store_->confirm_boot(tokens_[deployment], "10.0.0.1");
    ASSERT_TRUE(d) << d.error().message;
  }
  proto::Rollout get(std::int64_t id) { return *store_->get_rollout(id); }
  const proto::RolloutMachine& of(const proto::Rollout& r, std::int64_t machine) {
    for (const auto& m : r.machines) {
      if (m.machine_id == machine) return m;
    }
    throw std::runtime_error("no such machine");
  }
  // Deploys (written + booted) every machine of the rollout that is deploying now.
  int deploy_all(std::int64_t id, bool boots = true) {
    int n = 0;
    for (const auto& m : get(id).machines) {
      if (m.state != RolloutMachineState::kDeploying) continue;
      write(*m.deployment_id, true);
      if (boots) boot(*m.deployment_id);
      ++n;
    }
    return n;
  }
  std::vector<proto::Deployment> history(std::int64_t machine) {
    return *store_->list_deployments(machine);
  }
  store::NewRollout plan(int canary, int pct) {
    store::NewRollout r;
    r.selector = *proto::parse_selector("fleet=a");
    r.image = "img";
    r.version = "2";
    r.batch_percent = pct;
    r.canary = canary;
    r.gate_timeout_s = 600;
    r.requested_by = "ops";
    return r;
  }

  std::filesystem::path dir_;
  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<daemon::StoreRolloutLedger> ledger_;
  std::unique_ptr<RolloutService> service_;
  std::map<std::int64_t, std::string> tokens_;
  std::vector<std::pair<std::int64_t, std::int64_t>> reimages_;
};

TEST_F(RolloutTest, PlansBatchesCanaryFirstSpreadOverRacksAndReportsWhatItCannotDeploy) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 10; ++i) {
    ids.push_back(machine(i, i < 5 ? "r1" : "r2"));
    on_v1(ids.back());
  }
  const auto no_bmc = machine(10, "r1", /*bmc=*/false);
  const auto broken = machine(11, "r2");
  {
    store::AssignRequest r{"img", "1", "test"};
    write(store_->assign(broken, r)->deployment.id, false);
  }
  auto p = plan(1, 30);
  p.spread_by = "rack";
  auto r = store_->create_rollout(p);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->state, RolloutState::kPending);
  EXPECT_EQ(r->batch_size, 3);  // 30% of the 10 deployable machines
  auto c = proto::count(*r);
  EXPECT_EQ(c.total, 12);
  EXPECT_EQ(c.pending, 10);
  EXPECT_EQ(c.skipped, 2);
  EXPECT_NE(of(*r, no_bmc).reason.find("no BMC"), std::string::npos) << of(*r, no_bmc).reason;
  EXPECT_NE(of(*r, broken).reason.find("failed before"), std::string::npos);
  // Canary: the first machine; then batches of 3 alternating racks.
  EXPECT_EQ(of(*r, ids[0]).batch, 0);
  std::vector<std::string> racks;
  for (const auto& m : r->machines) {
    if (m.batch == 1) racks.push_back(store_->get_machine(m.machine_id)->labels.at("rack"));
  }
  ASSERT_EQ(racks.size(), 3u);
  EXPECT_NE(racks[0], racks[1]);             // interleaved, not one rack at a time
  EXPECT_EQ(proto::batches(*r).size(), 5u);  // canary, 3 batches of 3, "no batch"
  // A machine is in one unfinished rollout at a time.
  EXPECT_EQ(store_->create_rollout(p).error().code, Errc::kConflict);
}

TEST_F(RolloutTest, AGoodImageRollsOutBatchByBatchEachMachineOnce) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 7; ++i) {
    ids.push_back(machine(i, "r1"));
    on_v1(ids.back());
  }
  auto id = store_->create_rollout(plan(1, 50))->id;  // canary 1, then batches of 4, 2
  service_->run_once();                               // pending -> running
  service_->run_once();
  auto r = get(id);
  EXPECT_EQ(r.state, RolloutState::kRunning);
  EXPECT_EQ(proto::count(r).deploying, 1);  // only the canary
  EXPECT_EQ(of(r, ids[0]).state, RolloutMachineState::kDeploying);
  // Nothing else starts while the canary has not passed its gate, even written.
  write(*of(r, ids[0]).deployment_id, true);
  service_->run_once();
  EXPECT_EQ(proto::count(get(id)).deploying, 1);
  boot(*of(r, ids[0]).deployment_id);
  service_->run_once();
  r = get(id);
  EXPECT_EQ(of(r, ids[0]).state, RolloutMachineState::kDone);
  EXPECT_EQ(proto::count(r).deploying, 4);
  EXPECT_EQ(deploy_all(id), 4);
  service_->run_once();
  EXPECT_EQ(deploy_all(id), 2);
  service_->run_once();
  service_->run_once();
  r = get(id);
  EXPECT_EQ(r.state, RolloutState::kSucceeded) << r.reason;
  EXPECT_EQ(proto::count(r).done, 7);
  for (auto m : ids) {
    auto h = history(m);
    ASSERT_EQ(h.size(), 2u);  // v1, then exactly one deployment of v2
    EXPECT_EQ(h[0].to_version.version, "2");
    EXPECT_EQ(h[0].status, DeploymentStatus::kBooted);
    EXPECT_EQ(h[0].requested_by, "rollout " + std::to_string(id));
    EXPECT_TRUE(h[0].reboot);
  }
  // Batch timings are recorded per batch, and in the metrics.
  for (const auto& b : proto::batches(r)) {
    EXPECT_TRUE(b.started_at && b.finished_at) << b.index;
  }
  EXPECT_EQ(metrics_.value("kiln_rollout_batches_total", {}), 3);
}

TEST_F(RolloutTest, ACanaryThatNeverBootsStopsTheRolloutAndComesBackOnItsPreviousVersion) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(machine(i, "r1"));
    on_v1(ids.back());
  }
  auto p = plan(2, 50);
  p.on_failure = "rollback";
  auto id = store_->create_rollout(p)->id;
  service_->run_once();
  service_->run_once();
  EXPECT_EQ(deploy_all(id, /*boots=*/false), 2);  // written, never confirmed
  clock_.now += 601'000;                          // past gate_timeout_s
  service_->run_once();                           // canary fails -> rolling_back
  auto r = get(id);
  EXPECT_EQ(r.state, RolloutState::kRollingBack) << r.reason;
  EXPECT_EQ(proto::count(r).failed, 2);
  EXPECT_NE(of(r, ids[0]).reason.find("no confirmed boot within 600 s"), std::string::npos)
      << of(r, ids[0]).reason;
  EXPECT_EQ(proto::count(r).skipped, 4);  // the rest never started
  service_->run_once();                   // rollback deployments
  r = get(id);
  EXPECT_EQ(proto::count(r).rolling_back, 2);
  for (auto m : {ids[0], ids[1]}) {
    const auto& rm = of(r, m);
    ASSERT_TRUE(rm.rollback_deployment_id);
    auto d = *store_->get_deployment(*rm.rollback_deployment_id);
    EXPECT_EQ(d.to_version.version, "1");
    EXPECT_EQ(d.kind, "rollback");
    EXPECT_TRUE(d.reboot);
    write(d.id, true);
    boot(d.id);
  }
  service_->run_once();
  service_->run_once();
  r = get(id);
  EXPECT_EQ(r.state, RolloutState::kRolledBack) << r.reason;
  EXPECT_EQ(proto::count(r).rolled_back, 2);
  for (auto m : {ids[2], ids[3], ids[4], ids[5]}) EXPECT_EQ(history(m).size(), 1u);
  EXPECT_EQ(store_->get_machine(ids[0])->current_version->version, "1");
}

TEST_F(RolloutTest, FailuresPauseByDefaultAndResumeAcknowledgesThem) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(machine(i, "r1"));
  auto p = plan(1, 50);
  auto id = store_->create_rollout(p)->id;
  service_->run_once();
  service_->run_once();
  write(*of(get(id), ids[0]).deployment_id, false);  // the canary's write fails
  service_->run_once();
  auto r = get(id);
  EXPECT_EQ(r.state, RolloutState::kPaused);
  EXPECT_NE(r.reason.find("more than max_failures 0"), std::string::npos) << r.reason;
  service_->run_once();
  EXPECT_EQ(proto::count(get(id)).pending, 3);  // paused: nothing starts
  EXPECT_EQ(store_->rollout_action(id, store::RolloutAction::kRollback, "ops").ok(), true);
  EXPECT_EQ(store_->rollout_action(id, store::RolloutAction::kResume, "ops").error().code,
            Errc::kConflict);
}

TEST_F(RolloutTest, ResumeGoesOnAndAbortSkipsWhatDidNotStart) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(machine(i, "r1"));
  auto id = store_->create_rollout(plan(1, 25))->id;
  service_->run_once();
  service_->run_once();
  write(*of(get(id), ids[0]).deployment_id, false);
  service_->run_once();
  ASSERT_EQ(get(id).state, RolloutState::kPaused);
  ASSERT_TRUE(store_->rollout_action(id, store::RolloutAction::kResume, "ops"));
  service_->run_once();
  auto r = get(id);
  EXPECT_EQ(r.state, RolloutState::kRunning);
  EXPECT_EQ(r.failure_base, 1);
  EXPECT_EQ(proto::count(r).deploying, 2);  // the next batch: 25% of 5, rounded up
  ASSERT_TRUE(store_->rollout_action(id, store::RolloutAction::kAbort, "ops"));
  r = get(id);
  EXPECT_EQ(r.state, RolloutState::kAborted);
  EXPECT_EQ(proto::count(r).skipped, 2);
  EXPECT_EQ(proto::count(r).deploying, 2);  // in flight: they finish on their own
  EXPECT_NE(of(r, ids[4]).reason.find("aborted"), std::string::npos);
  EXPECT_EQ(store_->rollout_action(id, store::RolloutAction::kPause, "ops").error().code,
            Errc::kConflict);
}

TEST_F(RolloutTest, ARestartedEngineNeitherLosesNorRepeatsAMachine) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(machine(i, "r1"));
    on_v1(ids.back());
  }
  auto id = store_->create_rollout(plan(0, 50))->id;  // batches of 3
  service_->run_once();
  service_->run_once();
  EXPECT_EQ(proto::count(get(id)).deploying, 3);
  // The engine asked the BMCs for the three deployments it started, once each.
  ASSERT_EQ(reimages_.size(), 3u);
  service_->run_once();
  EXPECT_EQ(reimages_.size(), 3u);
  // Killed here: three deployments recorded, none powered yet (no power-on was recorded).
  const auto asked = reimages_;
  reimages_.clear();
  restart();
  EXPECT_EQ(ledger_->unpowered(id).size(), 3u);
  service_->run_once();
  EXPECT_EQ(proto::count(get(id)).deploying, 3);
  // The new engine powers exactly those, once, and starts nothing new.
  EXPECT_EQ(reimages_, asked);
  service_->run_once();
  EXPECT_EQ(reimages_, asked);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(history(ids[i]).size(), 2u);
  deploy_all(id);
  restart();
  service_->run_once();
  deploy_all(id);
  restart();
  service_->run_once();
  service_->run_once();
  auto r = get(id);
  EXPECT_EQ(r.state, RolloutState::kSucceeded) << r.reason;
  for (auto m : ids) EXPECT_EQ(history(m).size(), 2u);
}

TEST_F(RolloutTest, OnlyTheLeaseHolderDrivesAndATakeoverResumesWhereTheHolderStopped) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(machine(i, "r1"));
    on_v1(ids.back());
  }
  // Two engines over one database, as two kilnd: `a` holds the lease.
  FakeLeadership lead_a, lead_b;
  lead_b.is_held = false;
  auto log =
      std::make_shared<spdlog::logger>("rollout", std::make_shared<spdlog::sinks::null_sink_mt>());
  RolloutService a(RolloutOptions{}, *ledger_, power(), metrics_, clock_, log, &lead_a);
  RolloutService b(RolloutOptions{}, *ledger_, power(), metrics_, clock_, log, &lead_b);
  auto id = store_->create_rollout(plan(0, 50))->id;  // batches of 3
  EXPECT_EQ(b.run_once(), 0);
  EXPECT_FALSE(b.leading());
  EXPECT_EQ(get(id).state, RolloutState::kPending);
  a.run_once();
  a.run_once();
  EXPECT_TRUE(a.leading());
  EXPECT_EQ(proto::count(get(id)).deploying, 3);
  ASSERT_EQ(reimages_.size(), 3u);
  // `b` still does nothing while `a` holds the lease.
  deploy_all(id);
  EXPECT_EQ(b.run_once(), 0);
  EXPECT_EQ(proto::count(get(id)).deploying, 3);  // not even synced by `b`
  // `a` dies (its lease drops with its connection); `b` takes over and starts the next batch,
  // never a machine of the first one again.
  lead_a.is_held = false;
  lead_b.is_held = true;
  reimages_.clear();
  b.run_once();
  b.run_once();
  EXPECT_TRUE(b.leading());
  EXPECT_EQ(proto::count(get(id)).deploying, 3);
  ASSERT_EQ(reimages_.size(), 3u);
  for (const auto& [machine, deployment] : reimages_) {
    EXPECT_TRUE(std::find(ids.begin() + 3, ids.end(), machine) != ids.end()) << machine;
  }
  EXPECT_EQ(a.run_once(), 0);
  EXPECT_FALSE(a.leading());
  deploy_all(id);
  b.run_once();
  b.run_once();
  EXPECT_EQ(get(id).state, RolloutState::kSucceeded) << get(id).reason;
  for (auto m : ids) EXPECT_EQ(history(m).size(), 2u);
}

TEST_F(RolloutTest, MachinesAlreadyOnTheVersionAreDoneWithoutARedeploy) {
  auto a = machine(0, "r1");
  auto b = machine(1, "r1");
  on_v1(a);
  on_v1(b);
  auto p = plan(0, 100);
  p.version = "1";
  auto r = store_->create_rollout(p);
  ASSERT_TRUE(r);
  EXPECT_EQ(proto::count(*r).done, 2);
  service_->run_once();
  service_->run_once();
  EXPECT_EQ(get(r->id).state, RolloutState::kSucceeded);
  EXPECT_EQ(history(a).size(), 1u);
}

TEST_F(RolloutTest, RollbackRestoresWhatEachMachineRanBeforeAndLeavesWhatOthersDeployedSince) {
  const auto a = machine(0, "r1");
  const auto b = machine(1, "r1");
  const auto c = machine(2, "r2");
  for (auto m : {a, b, c}) on_v1(m);
  register_version("3");
  auto finish_rollout = [&](const std::string& selector, const std::string& version) {
    auto p = plan(0, 100);
    p.selector = *proto::parse_selector(selector);
    p.version = version;
    auto id = store_->create_rollout(p)->id;
    service_->run_once();
    service_->run_once();
    deploy_all(id);
    service_->run_once();
    service_->run_once();
    EXPECT_EQ(get(id).state, RolloutState::kSucceeded);
    return id;
  };
  const auto r1 = finish_rollout("fleet=a", "2");   // every machine 1 -> 2
  finish_rollout("rack=r2", "3");                   // machine c 2 -> 3, a later rollout
  store::AssignRequest op{"img", "3", "operator"};  // machine b: an operator's deployment
  auto o = store_->assign(b, op);
  ASSERT_TRUE(o);
  write(o->deployment.id, true);
  boot(o->deployment.id);
  // Rolling back the first rollout: a goes back to what it ran before it; b and c were moved
  // on by others since, and stay where they are (reported).
  ASSERT_TRUE(store_->rollout_action(r1, store::RolloutAction::kRollback, "ops"));
  service_->run_once();
  auto r = get(r1);
  for (auto m : {b, c}) {
    EXPECT_EQ(of(r, m).state, RolloutMachineState::kRollbackFailed) << m;
    EXPECT_NE(of(r, m).reason.find("someone else"), std::string::npos) << of(r, m).reason;
  }
  ASSERT_EQ(of(r, a).state, RolloutMachineState::kRollingBack);
  auto d = *store_->get_deployment(*of(r, a).rollback_deployment_id);
  EXPECT_EQ(d.to_version.version, "1");
  EXPECT_EQ(d.kind, "rollback");
  write(d.id, true);
  boot(d.id);
  service_->run_once();
  service_->run_once();
  r = get(r1);
  EXPECT_EQ(r.state, RolloutState::kFailed) << r.reason;  // two could not be restored
  EXPECT_EQ(of(r, a).state, RolloutMachineState::kRolledBack);
  EXPECT_EQ(history(b).front().to_version.version, "3");
  EXPECT_EQ(history(c).front().to_version.version, "3");
}

TEST_F(RolloutTest, AMachineThatCannotStartFailsAndTheCanaryNeverOpensTheFleet) {
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(machine(i, "r1"));
  auto p = plan(1, 50);
  p.max_failures = 5;  // tolerant: still, a canary that passed nothing stops it
  auto id = store_->create_rollout(p)->id;
  ASSERT_TRUE(store_->delete_bmc(ids[0], "ops"));  // the canary's BMC goes away
  service_->run_once();
  service_->run_once();
  auto r = get(id);
  EXPECT_EQ(of(r, ids[0]).state, RolloutMachineState::kFailed);
  EXPECT_NE(of(r, ids[0]).reason.find("could not start"), std::string::npos)
      << of(r, ids[0]).reason;
  service_->run_once();
  r = get(id);
  EXPECT_EQ(r.state, RolloutState::kPaused) << r.reason;
  EXPECT_EQ(proto::count(r).pending, 3);
}

TEST_F(RolloutTest, AnImageVersionARolloutNeedsCannotBeDeleted) {
  auto a = machine(0, "r1");
  on_v1(a);
  auto id = store_->create_rollout(plan(0, 100))->id;
  EXPECT_EQ(store_->delete_image_version("img", "2", "ops").error().code, Errc::kConflict);
  ASSERT_TRUE(store_->rollout_action(id, store::RolloutAction::kAbort, "ops"));
  EXPECT_TRUE(store_->delete_image_version("img", "2", "ops"));
}

}  // namespace
}  // namespace kiln::provision
