#include "daemon/observability.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>

#include "store/store.h"
#include "tests/unit/fake_clock.h"
#include "tests/unit/test_dir.h"

namespace kiln::daemon {
namespace {

using proto::DeploymentStatus;

using kiln::testing::FakeClock;

// The stage histogram from a real store driven the way the API drives it, on a fake clock:
// exact durations, so exact buckets.
class StageMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kiln::testing::make_test_dir("kiln-stage-metrics-test");
    store::StoreOptions o;
    o.path = (dir_ / "kiln.db").string();
    o.synchronous_full = false;
    auto s = store::Store::open(o, clock_);
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
    proto::ImageVersion v;
    v.name = "img";
    v.version = "1";
    v.size_bytes = 1 << 20;
    v.sha256 = std::string(64, 'a');
    v.format = "raw";
    v.source_url = "http://images.example/img-1.raw";
    v.created_by = "test";
    ASSERT_TRUE(store_->register_image_version(v));
    v.version = "2";
    v.source_url = "http://images.example/img-2.raw";
    ASSERT_TRUE(store_->register_image_version(v));
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::int64_t machine(const std::string& mac) {
    store::NewMachine nm;
    nm.macs = {mac};
    auto m = store_->create_machine(nm, "test");
    EXPECT_TRUE(m) << m.error().message;
    return m->id;
  }
  std::int64_t assign(std::int64_t machine_id, const char* version = "1") {
    auto o = store_->assign(machine_id, store::AssignRequest{"img", version, "tester", true});
    EXPECT_TRUE(o) << o.error().message;
    return o->deployment.id;
  }
  void report(std::int64_t d, std::optional<DeploymentStatus> result = std::nullopt) {
    store::AgentReport r;
    r.stage = "writing";
    r.result = result;
    if (result == DeploymentStatus::kFailed) r.reason = "disk write error";
    auto out = store_->report_progress(d, r);
    ASSERT_TRUE(out) << out.error().message;
  }
  void advance_s(int s) { clock_.now += s * 1000LL; }
  Metrics::HistogramValue h(const char* stage, const char* result) {
    return metrics_.histogram(kStageHistogram, {{"stage", stage}, {"result", result}});
  }

  std::filesystem::path dir_;
  FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  Metrics metrics_;
};

// Buckets: 1 5 10 30 60 120 300 600 900 1800 3600 7200 14400 28800 86400 +Inf.
std::vector<std::uint64_t> one_from(std::size_t bucket) {
  std::vector<std::uint64_t> v(16, 0);
  for (std::size_t i = bucket; i < v.size(); ++i) v[i] = 1;
  return v;
}

TEST_F(StageMetricsTest, EachStageIsObservedOnceWhenItEndsInItsBucket) {
  auto m = machine("52:54:00:00:00:01");
  // Events before the collector exists (kilnd's previous life) are not replayed.
  auto old = assign(m);
  report(old, DeploymentStatus::kFailed);
  DeployStageMetrics stages(*store_, metrics_, clock_);

  auto d = assign(m);
  auto token = store_->mint_instance_token(d);
  ASSERT_TRUE(token);
  advance_s(90);
  report(d);  // the agent's first report ends "waiting": 90 s
  advance_s(300);
  report(d);  // a later report ends nothing
  stages.collect();
  EXPECT_EQ(h("waiting", "ok").cumulative, one_from(5));  // le=120
  EXPECT_EQ(h("imaging", "ok").count, 0u);
  advance_s(300);
  report(d, DeploymentStatus::kSucceeded);  // imaging: 600 s, on the le="600" edge
  advance_s(45);
  ASSERT_TRUE(store_->confirm_boot(*token, "10.0.0.5"));
  metrics_.render();  // a scrape runs the collector
  metrics_.render();  // and a second one counts nothing again
  EXPECT_EQ(h("waiting", "ok").count, 1u);
  EXPECT_EQ(h("imaging", "ok").cumulative, one_from(7));  // le=600, inclusive
  EXPECT_DOUBLE_EQ(h("imaging", "ok").sum, 600);
  EXPECT_EQ(h("booting", "ok").cumulative, one_from(4));  // 45 s: le=60
  EXPECT_EQ(h("total", "ok").cumulative, one_from(8));    // 735 s: le=900
  EXPECT_DOUBLE_EQ(h("total", "ok").sum, 735);
  EXPECT_EQ(h("total", "failed").count, 0u) << "the failure before the collector";
}

TEST_F(StageMetricsTest, FailedAndSupersededEndTheStageTheyWereIn) {
  DeployStageMetrics stages(*store_, metrics_, clock_);
  auto m1 = machine("52:54:00:00:00:01");
  auto m2 = machine("52:54:00:00:00:02");
  auto m3 = machine("52:54:00:00:00:03");
  // m1: the agent fails at once (no progress first): waiting ok, imaging failed (0 s).
  auto d1 = assign(m1);
  advance_s(20);
  report(d1, DeploymentStatus::kFailed);
  // m2: superseded before its agent came: waiting superseded (40 s).
  auto d2 = assign(m2);
  advance_s(40);
  assign(m2, "2");
  // m3: superseded while imaging (after 2 s of it).
  auto d3 = assign(m3);
  advance_s(3);
  report(d3);
  advance_s(2);
  assign(m3, "2");
  stages.collect();
  EXPECT_EQ(h("waiting", "ok").count, 2u);  // d1, d3
  EXPECT_EQ(h("imaging", "failed").cumulative, one_from(0));
  EXPECT_EQ(h("waiting", "superseded").cumulative, one_from(4));  // 40 s: le=60
  EXPECT_EQ(h("imaging", "superseded").cumulative, one_from(1));  // 2 s: le=5
  EXPECT_EQ(h("total", "failed").count, 1u);
  EXPECT_EQ(h("total", "superseded").count, 2u);
  EXPECT_EQ(h("booting", "ok").count, 0u);
  EXPECT_EQ(store_->get_deployment(d2)->status, DeploymentStatus::kSuperseded);
}

}  // namespace
}  // namespace kiln::daemon
