#include "store/store.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "store/copy.h"
#include "store/pg.h"
#include "store/sqlite.h"
#include "tests/unit/fake_clock.h"
#include "tests/unit/pg_server.h"
#include "tests/unit/test_dir.h"

namespace kiln::store {
namespace {

using proto::DeploymentStatus;
using proto::MachineState;

using kiln::testing::FakeClock;

// The conformance suite: every test of a TEST_P fixture runs against both backends.
enum class Backend { kSqlite, kPostgres };

std::string backend_name(const ::testing::TestParamInfo<Backend>& i) {
  return i.param == Backend::kSqlite ? "sqlite" : "postgres";
}

// `o` pointed at a fresh database of `backend` (a file in `dir` or a new PostgreSQL database).
// In SetUp: skips the test when no PostgreSQL can run (fails with KILN_REQUIRE_PG=1).
#define KILN_STORE_DATABASE(backend, o, dir)        \
  do {                                              \
    if ((backend) == Backend::kPostgres) {          \
      KILN_PG_DATABASE((o).url, /*migrated=*/true); \
    } else {                                        \
      (o).path = ((dir) / "kiln.db").string();      \
    }                                               \
  } while (0)

// A raw connection to the store's database (bypassing the Store).
std::unique_ptr<Db> open_raw(const StoreOptions& o, bool read_only) {
  if (!o.url.empty()) return std::make_unique<PgDb>(o.url);
  return std::make_unique<SqliteDb>(o.path, read_only);
}

class StoreFixture : public ::testing::Test {
 protected:
  virtual Backend backend() const = 0;
  void SetUp() override {
    dir_ = kiln::testing::make_test_dir("kiln-store-test");
    options_.synchronous_full = false;
    KILN_STORE_DATABASE(backend(), options_, dir_);
    auto s = Store::open(options_, clock_);
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<Db> open_raw(bool read_only) { return store::open_raw(options_, read_only); }
  // Another Store on the same database (another kilnd sharing it).
  std::unique_ptr<Store> open_second() {
    auto s = Store::open(options_, clock_);
    EXPECT_TRUE(s) << s.error().message;
    return s ? std::move(*s) : nullptr;
  }

  Machine make_machine(const std::string& mac, std::map<std::string, std::string> labels = {}) {
    NewMachine nm;
    nm.macs = {mac};
    nm.labels = std::move(labels);
    auto m = store_->create_machine(nm, "test");
    EXPECT_TRUE(m) << m.error().message;
    return *m;
  }

  ImageVersion make_image(const std::string& name, const std::string& version) {
    ImageVersion v;
    v.name = name;
    v.version = version;
    v.size_bytes = 1 << 20;
    v.sha256 = std::string(64, 'a');
    v.format = "raw";
    v.source_url = "http://images.example/" + name + "-" + version + ".raw";
    v.created_by = "test";
    auto r = store_->register_image_version(v);
    EXPECT_TRUE(r) << r.error().message;
    return r->first;
  }

  AssignRequest req(const std::string& image, const std::string& version, bool force = false) {
    return AssignRequest{image, version, "tester", force};
  }

  // Drives a deployment to its end the way an agent does.
  void finish(std::int64_t deployment_id, bool ok) {
    AgentReport r;
    r.stage = "done";
    r.result = ok ? DeploymentStatus::kSucceeded : DeploymentStatus::kFailed;
    r.reason = ok ? "" : "disk write error";
    auto d = store_->report_progress(deployment_id, r);
    ASSERT_TRUE(d) << d.error().message;
  }

  std::int64_t deploy(std::int64_t machine, const std::string& image, const std::string& v,
                      bool ok = true) {
    auto o = store_->assign(machine, req(image, v));
    EXPECT_TRUE(o) << o.error().message;
    finish(o->deployment.id, ok);
    return o->deployment.id;
  }

  std::filesystem::path dir_;
  StoreOptions options_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
};

class StoreTest : public StoreFixture, public ::testing::WithParamInterface<Backend> {
 protected:
  Backend backend() const override { return GetParam(); }
};
INSTANTIATE_TEST_SUITE_P(Backends, StoreTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres), backend_name);

// What only SQLite has: WAL, the file's bytes, sqlite_master.
class SqliteStoreTest : public StoreFixture {
 protected:
  Backend backend() const override { return Backend::kSqlite; }
};

// Tests that need two Stores on one database: PostgreSQL only.
class PgStoreTest : public StoreFixture {
 protected:
  Backend backend() const override { return Backend::kPostgres; }
};

TEST_F(SqliteStoreTest, OpensWithSchemaAndWal) {
  EXPECT_EQ(store_->schema_version(), static_cast<int>(embedded_migrations().back().version));
  EXPECT_EQ(store_->integrity_check(), "ok");
  SqliteDb raw(options_.path, true);
  auto s = raw.prepare("PRAGMA journal_mode");
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.text(0), "wal");
}

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_F(SqliteStoreTest, RefusesDatabaseNewerThanBinaryWithoutTouchingIt) {
  store_.reset();
  {
    SqliteDb raw(options_.path, false);
    raw.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)");
    raw.exec("PRAGMA journal_mode = DELETE");  // as a database from elsewhere might be
  }
  const auto before = file_bytes(options_.path);
  auto s = Store::open(options_, clock_);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("newer than this kilnd supports"), std::string::npos)
      << s.error().message;
  EXPECT_EQ(file_bytes(options_.path), before) << "a refused database must not change";
  EXPECT_FALSE(std::filesystem::exists(options_.path + "-wal")) << "nor be switched to WAL";
}

TEST(Migrations, FailedMigrationLeavesDatabaseUntouched) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("kiln-migrate-" + std::to_string(::getpid()) + ".db");
  std::filesystem::remove(path);
  FakeClock clock;
  StoreOptions o;
  o.path = path.string();
  std::vector<Migration> first = {{1, "one", "CREATE TABLE a (x INTEGER);"}};
  ASSERT_TRUE(Store::open(o, clock, first));
  std::vector<Migration> more = {first[0],
                                 {2, "two", "CREATE TABLE b (y INTEGER);"},
                                 {3, "broken", "CREATE TABLE c (z INTEGER); SELECT nosuchfn();"}};
  auto s = Store::open(o, clock, more);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("3_broken"), std::string::npos) << s.error().message;
  {
    SqliteDb raw(o.path, true);
    EXPECT_EQ(schema_version(raw), 1);
    auto t = raw.prepare("SELECT count(*) FROM sqlite_master WHERE name IN ('b', 'c')");
    t.step();
    EXPECT_EQ(t.int64(0), 0) << "tables of the failed batch must not exist";
  }
  // (closed first: no -wal or -shm file is left behind in the temporary directory)
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + suffix);
}

TEST_P(StoreTest, CreatesAndFindsMachines) {
  auto m = make_machine("52:54:00:00:00:01", {{"rack", "r12"}});
  EXPECT_EQ(m.state, MachineState::kReady);
  EXPECT_EQ(m.labels.at("rack"), "r12");
  auto by_mac = store_->find_machine_by_mac("52:54:00:00:00:01");
  ASSERT_TRUE(by_mac);
  EXPECT_EQ(by_mac->id, m.id);
  auto missing = store_->get_machine(999);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
}

TEST_P(StoreTest, DuplicateMacIsAConflictAndChangesNothing) {
  make_machine("52:54:00:00:00:01");
  NewMachine nm;
  nm.macs = {"52:54:00:00:00:02", "52:54:00:00:00:01"};
  auto r = store_->create_machine(nm, "test");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  EXPECT_FALSE(store_->find_machine_by_mac("52:54:00:00:00:02"));
  EXPECT_EQ(store_->list_machines({}).items.size(), 1u);
}

TEST_P(StoreTest, ListFiltersBySelectorAndStateAndPaginates) {
  for (int i = 0; i < 25; ++i) {
    char mac[32];
    std::snprintf(mac, sizeof mac, "52:54:00:00:01:%02x", i);
    make_machine(mac, {{"rack", i % 2 ? "r1" : "r2"}, {"role", i % 5 ? "web" : "db"}});
  }
  MachineFilter f;
  f.selector = *proto::parse_selector("rack=r1,role!=db");
  auto page = store_->list_machines(f);
  for (const auto& m : page.items) {
    EXPECT_EQ(m.labels.at("rack"), "r1");
    EXPECT_NE(m.labels.at("role"), "db");
  }
  EXPECT_EQ(page.items.size(), 10u);  // 12 odd ids, minus 5 and 15 which are db

  f = {};
  f.limit = 10;
  std::vector<std::int64_t> seen;
  while (true) {
    auto p = store_->list_machines(f);
    for (const auto& m : p.items) seen.push_back(m.id);
    if (!p.next_after) break;
    f.after_id = *p.next_after;
  }
  ASSERT_EQ(seen.size(), 25u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));

  f = {};
  f.state = MachineState::kDeploying;
  EXPECT_TRUE(store_->list_machines(f).items.empty());
}

TEST_P(StoreTest, PatchesLabels) {
  auto m = make_machine("52:54:00:00:00:01", {{"rack", "r1"}, {"old", "x"}});
  auto r = store_->patch_machine_labels(m.id, {{"rack", "r2"}, {"old", std::nullopt}, {"new", "y"}},
                                        "test");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->labels, (std::map<std::string, std::string>{{"rack", "r2"}, {"new", "y"}}));
}

TEST_P(StoreTest, AssignIsIdempotentConflictsAndSupersedesWithForce) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  make_image("ubuntu", "2");
  auto a = store_->assign(m.id, req("ubuntu", "1"));
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->created);
  EXPECT_EQ(store_->get_machine(m.id)->state, MachineState::kDeploying);

  auto again = store_->assign(m.id, req("ubuntu", "1"));
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->deployment.id, a->deployment.id);

  auto other = store_->assign(m.id, req("ubuntu", "2"));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, Errc::kConflict);

  auto forced = store_->assign(m.id, req("ubuntu", "2", /*force=*/true));
  ASSERT_TRUE(forced);
  EXPECT_EQ(forced->superseded_id, a->deployment.id);
  EXPECT_EQ(store_->get_deployment(a->deployment.id)->status, DeploymentStatus::kSuperseded);
  auto mm = store_->get_machine(m.id);
  EXPECT_EQ(mm->active_deployment_id, forced->deployment.id);
  EXPECT_EQ(mm->assigned_version->version, "2");

  auto missing = store_->assign(m.id, req("ubuntu", "9"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
}

TEST_P(StoreTest, BulkAssignIsAllOrNothing) {
  auto a = make_machine("52:54:00:00:00:01", {{"rack", "r12"}});
  auto b = make_machine("52:54:00:00:00:02", {{"rack", "r12"}});
  make_machine("52:54:00:00:00:03", {{"rack", "r13"}});
  make_image("ubuntu", "1");
  make_image("ubuntu", "2");
  ASSERT_TRUE(store_->assign(b.id, req("ubuntu", "1")));

  auto sel = *proto::parse_selector("rack=r12");
  auto r = store_->assign_bulk(sel, req("ubuntu", "2"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  EXPECT_FALSE(store_->get_machine(a.id)->active_deployment_id) << "nothing may be assigned";

  auto forced = store_->assign_bulk(sel, req("ubuntu", "2", true));
  ASSERT_TRUE(forced) << forced.error().message;
  EXPECT_EQ(forced->results.size(), 2u);
  for (auto id : {a.id, b.id}) EXPECT_EQ(store_->get_machine(id)->assigned_version->version, "2");

  auto none = store_->assign_bulk(*proto::parse_selector("rack=nowhere"), req("ubuntu", "2"));
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Errc::kNotFound);
}

// A bulk assignment takes its machines in chunks, most of them with two statements each: it
// must record what one assignment at a time records.
TEST_P(StoreTest, BulkAssignRecordsWhatSingleAssignmentsRecord) {
  make_image("img", "1");
  make_image("img", "2");
  std::vector<std::int64_t> fleet;
  for (int i = 0; i < 520; ++i) {  // past one chunk of 500
    char mac[32];
    std::snprintf(mac, sizeof mac, "52:54:00:01:%02x:%02x", i / 256, i % 256);
    fleet.push_back(make_machine(mac, {{"rack", "r1"}}).id);
  }
  // Runs v1, written and waiting for its boot confirmation (a deadline the bulk clears).
  auto v1 = store_->assign(fleet[0], req("img", "1"));
  ASSERT_TRUE(v1);
  AgentReport written;
  written.result = DeploymentStatus::kSucceeded;
  ASSERT_TRUE(store_->report_progress(v1->deployment.id, written, clock_.now.load() + 60'000));
  ASSERT_TRUE(store_->assign(fleet[501], req("img", "1")));         // v1 active (second chunk)
  ASSERT_TRUE(store_->assign(fleet[502], req("img", "2")));         // v2 active: idempotent
  auto twin = make_machine("52:54:00:02:00:01", {{"rack", "r2"}});  // the single-assign twin
  deploy(twin.id, "img", "1");
  auto single = store_->assign(twin.id, req("img", "2"));
  ASSERT_TRUE(single);
  const auto after = store_->last_event_id();
  clock_.now += 1000;

  auto bulk = store_->assign_bulk(*proto::parse_selector("rack=r1"), req("img", "2", true));
  ASSERT_TRUE(bulk) << bulk.error().message;
  ASSERT_EQ(bulk->results.size(), fleet.size());
  for (std::size_t i = 0; i < fleet.size(); ++i) {
    const auto& [mid, o] = bulk->results[i];
    EXPECT_EQ(mid, fleet[i]);
    EXPECT_EQ(o.deployment.machine_id, mid);
    EXPECT_EQ(o.deployment.to_version.version, "2");
    EXPECT_EQ(o.deployment.status, DeploymentStatus::kPending);
    EXPECT_EQ(o.created, i != 502) << i;
    auto m = store_->get_machine(mid);
    EXPECT_EQ(m->state, MachineState::kDeploying) << i;
    EXPECT_EQ(m->assigned_version->version, "2") << i;
    if (i != 502) EXPECT_EQ(m->updated_at, clock_.now.load()) << i;
  }
  EXPECT_FALSE(store_->get_deployment(v1->deployment.id)->deadline_at)
      << "the boot confirmation of what it replaces is no longer awaited";
  EXPECT_EQ(bulk->results[0].second.deployment.from_version->version, "1");
  EXPECT_FALSE(bulk->results[1].second.deployment.from_version);
  EXPECT_TRUE(bulk->results[501].second.superseded_id);
  EXPECT_EQ(bulk->results[502].second.deployment.id,
            store_->get_machine(fleet[502])->active_deployment_id.value_or(-1));
  // The events: one deployment.created per new deployment (a superseded one first), shaped
  // as a single assignment's.
  auto events = store_->events_since(after, 5000, std::nullopt);
  std::map<std::int64_t, nlohmann::json> created;
  int superseded = 0;
  for (const auto& e : events) {
    if (e.type == "deployment.created") created[*e.machine_id] = e.data;
    superseded += e.type == "deployment.superseded";
  }
  EXPECT_EQ(created.size(), fleet.size() - 1);
  EXPECT_EQ(superseded, 1);
  auto twin_event = store_->events_since(0, 5000, twin.id);
  nlohmann::json single_created;
  for (const auto& e : twin_event) {
    if (e.type == "deployment.created" && e.deployment_id == single->deployment.id) {
      single_created = e.data;
    }
  }
  nlohmann::json bulk_created = created.at(fleet[0]);
  bulk_created["requested_by"] = single_created["requested_by"];
  EXPECT_EQ(bulk_created, single_created);
}

// With a snapshotter, a bulk assignment asks it for every machine that has a source (its own
// config, a profile); a machine without any gets none without asking.
TEST_P(StoreTest, BulkAssignAsksForAConfigurationWhereThereIsASource) {
  make_image("img", "1");
  auto a = make_machine("52:54:00:03:00:01", {{"rack", "r1"}});
  auto b = make_machine("52:54:00:03:00:02", {{"rack", "r1"}});
  ASSERT_TRUE(
      store_->put_machine_config(b.id, ConfigRecord{"sealed-b", std::string(64, 'b'), 0}, "ops"));
  std::vector<std::int64_t> asked;
  AssignRequest q = req("img", "1");
  q.config = [&](const ConfigInputs& in) -> Result<std::optional<ConfigRecord>> {
    asked.push_back(in.machine.id);
    if (!in.machine_config && in.profiles.empty()) return std::optional<ConfigRecord>{};
    return std::optional<ConfigRecord>(ConfigRecord{"sealed", std::string(64, 'c'), 0});
  };
  auto sel = *proto::parse_selector("rack=r1");
  auto r = store_->assign_bulk(sel, q);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(asked, std::vector<std::int64_t>{b.id});
  EXPECT_FALSE(r->results[0].second.deployment.config_sha256);
  EXPECT_EQ(r->results[1].second.deployment.config_sha256, std::string(64, 'c'));
  // A profile is a source for every machine: each is asked.
  ProfileRecord p;
  p.name = "base";
  p.selector = "";
  p.config = ConfigRecord{"sealed-p", std::string(64, 'p'), 0};
  ASSERT_TRUE(store_->put_profile(p, "ops"));
  asked.clear();
  q.force = true;
  q.image = "img";
  make_image("img", "2");
  q.version = "2";
  r = store_->assign_bulk(sel, q);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(asked, (std::vector<std::int64_t>{a.id, b.id}));
  EXPECT_EQ(r->results[0].second.deployment.config_sha256, std::string(64, 'c'));
}

TEST_P(StoreTest, AgentReportsDriveTheLifecycle) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  auto a = store_->assign(m.id, req("ubuntu", "1"));
  AgentReport p;
  p.stage = "writing";
  p.bytes_done = 10;
  p.bytes_total = 100;
  clock_.now += 1000;
  auto d = store_->report_progress(a->deployment.id, p);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, DeploymentStatus::kRunning);
  EXPECT_EQ(d->started_at, clock_.now.load());
  finish(a->deployment.id, true);
  auto mm = store_->get_machine(m.id);
  EXPECT_EQ(mm->state, MachineState::kDeployed);
  EXPECT_EQ(mm->current_version->version, "1");
  EXPECT_FALSE(mm->active_deployment_id);
  // A finished deployment takes no more reports.
  auto late = store_->report_progress(a->deployment.id, p);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, Errc::kConflict);
}

TEST_P(StoreTest, FailedDeploymentMarksMachineFailed) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  deploy(m.id, "ubuntu", "1", /*ok=*/false);
  auto mm = store_->get_machine(m.id);
  EXPECT_EQ(mm->state, MachineState::kFailed);
  EXPECT_NE(mm->state_reason.find("disk write error"), std::string::npos);
  EXPECT_FALSE(mm->current_version);
}

TEST_P(StoreTest, RollbackReassignsPreviousSuccessfulVersion) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  make_image("ubuntu", "2");
  make_image("ubuntu", "3");

  auto none = store_->rollback(m.id, "ops");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Errc::kConflict);

  deploy(m.id, "ubuntu", "1");
  auto only_one = store_->rollback(m.id, "ops");
  ASSERT_FALSE(only_one);
  EXPECT_NE(only_one.error().message.find("no previous"), std::string::npos);

  deploy(m.id, "ubuntu", "2");
  auto rb = store_->rollback(m.id, "ops");
  ASSERT_TRUE(rb) << rb.error().message;
  EXPECT_EQ(rb->deployment.kind, "rollback");
  EXPECT_EQ(rb->deployment.to_version.version, "1");
  EXPECT_EQ(rb->deployment.from_version->version, "2");
  finish(rb->deployment.id, true);

  // A failed deploy of 3 rolls back to the last good version, 1 (not 2).
  deploy(m.id, "ubuntu", "3", /*ok=*/false);
  auto rb2 = store_->rollback(m.id, "ops");
  ASSERT_TRUE(rb2);
  EXPECT_EQ(rb2->deployment.to_version.version, "1");

  // Rollback supersedes an in-progress deployment.
  auto busy = store_->assign(m.id, req("ubuntu", "3", true));
  ASSERT_TRUE(busy);
  auto rb3 = store_->rollback(m.id, "ops");
  ASSERT_TRUE(rb3);
  EXPECT_EQ(rb3->superseded_id, busy->deployment.id);

  auto history = store_->list_deployments(m.id);
  ASSERT_TRUE(history);
  EXPECT_EQ(history->size(), 7u);
  EXPECT_EQ(history->front().id, rb3->deployment.id);  // newest first
}

TEST_P(StoreTest, DeploymentHistoryIsAppendOnly) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  auto id = deploy(m.id, "ubuntu", "1");
  auto rawp = open_raw(false);
  Db& raw = *rawp;
  EXPECT_THROW(raw.exec("DELETE FROM deployments"), SqliteError);
  EXPECT_THROW(raw.exec("UPDATE deployments SET requested_by = 'mallory'"), SqliteError);
  EXPECT_THROW(
      raw.exec("UPDATE deployments SET status = 'pending' WHERE id = " + std::to_string(id)),
      SqliteError);
  EXPECT_EQ(store_->get_deployment(id)->requested_by, "tester");
}

TEST_P(StoreTest, ImagesAreImmutableAndDeletedOnlyWhenUnused) {
  auto v = make_image("ubuntu", "1");
  auto same = store_->register_image_version(v);
  ASSERT_TRUE(same);
  EXPECT_FALSE(same->second);
  auto changed = v;
  changed.sha256 = std::string(64, 'b');
  auto r = store_->register_image_version(changed);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);

  auto m = make_machine("52:54:00:00:00:01");
  deploy(m.id, "ubuntu", "1");
  auto in_use = store_->delete_image_version("ubuntu", "1", "ops");
  ASSERT_FALSE(in_use);
  EXPECT_EQ(in_use.error().code, Errc::kConflict);

  make_image("ubuntu", "2");
  deploy(m.id, "ubuntu", "2");
  ASSERT_TRUE(store_->delete_image_version("ubuntu", "1", "ops"));
  EXPECT_FALSE(store_->get_image_version("ubuntu", "1"));
  // History still names the deleted version; rollback to it is refused clearly.
  auto history = store_->list_deployments(m.id);
  EXPECT_EQ(history->back().to_version.version, "1");
  auto rb = store_->rollback(m.id, "ops");
  ASSERT_FALSE(rb);
  EXPECT_NE(rb.error().message.find("deleted"), std::string::npos);
}

TEST_P(StoreTest, DeleteMachineRefusesActiveDeploymentUnlessForced) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  auto a = store_->assign(m.id, req("ubuntu", "1"));
  auto r = store_->delete_machine(m.id, false, "ops");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  ASSERT_TRUE(store_->delete_machine(m.id, true, "ops"));
  EXPECT_FALSE(store_->get_machine(m.id));
  EXPECT_EQ(store_->get_deployment(a->deployment.id)->status, DeploymentStatus::kSuperseded);
  // The MAC is free again.
  make_machine("52:54:00:00:00:01");
}

TEST_P(StoreTest, ApiTokensAreStoredHashed) {
  auto t = store_->create_token("ci", proto::Scope::kRead);
  ASSERT_TRUE(t);
  const std::string clear = t->second;
  auto who = store_->authenticate(clear);
  ASSERT_TRUE(who);
  EXPECT_EQ(who->name, "ci");
  EXPECT_EQ(who->scope, proto::Scope::kRead);
  EXPECT_FALSE(store_->authenticate(clear + "x"));
  {
    auto raw = open_raw(true);
    auto s = raw->prepare("SELECT count(*) FROM api_tokens WHERE token_hash = ?");
    s.bind(1, clear);
    s.step();
    EXPECT_EQ(s.int64(0), 0) << "the clear token must never be stored";
  }
  ASSERT_TRUE(store_->revoke_token(t->first.id, "ops"));
  EXPECT_FALSE(store_->authenticate(clear));
  EXPECT_FALSE(store_->revoke_token(t->first.id, "ops"));
}

TEST_P(StoreTest, BootTicketsAreStableAndOpenSessionsBoundToOneAddress) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  auto a = store_->assign(m.id, req("ubuntu", "1"));
  const auto id = a->deployment.id;
  auto ticket = store_->agent_ticket(id, clock_.now + 60'000);
  ASSERT_TRUE(ticket);
  EXPECT_EQ(*store_->agent_ticket(id, clock_.now + 60'000), *ticket) << "stable";
  EXPECT_FALSE(store_->authenticate_agent(*ticket, "10.0.0.5")) << "a ticket is no session";

  auto s1 = store_->open_agent_session(*ticket, "10.0.0.5", 3, clock_.now + 60'000);
  ASSERT_TRUE(s1) << s1.error().message;
  EXPECT_EQ(s1->boot, 1);
  EXPECT_EQ(s1->deployment.id, id);
  ASSERT_TRUE(store_->authenticate_agent(s1->token, "10.0.0.5"));
  auto elsewhere = store_->authenticate_agent(s1->token, "10.0.0.6");
  ASSERT_FALSE(elsewhere);
  EXPECT_EQ(elsewhere.error().code, Errc::kForbidden);

  // Someone else with the (public) ticket: refused, recorded, the running session untouched.
  auto thief = store_->open_agent_session(*ticket, "10.0.0.66", 3, clock_.now + 60'000);
  ASSERT_FALSE(thief);
  EXPECT_EQ(thief.error().code, Errc::kForbidden);
  EXPECT_TRUE(store_->authenticate_agent(s1->token, "10.0.0.5"));
  auto events = store_->events_since(0, 100, std::nullopt);
  EXPECT_TRUE(std::ranges::any_of(events, [](const Event& e) {
    return e.type == "agent.session_refused" && e.data.value("address", "") == "10.0.0.66";
  }));

  // The machine booted again: a new session from its address replaces the old token.
  auto s2 = store_->open_agent_session(*ticket, "10.0.0.5", 3, clock_.now + 60'000);
  ASSERT_TRUE(s2);
  EXPECT_EQ(s2->boot, 2);
  EXPECT_FALSE(store_->authenticate_agent(s1->token, "10.0.0.5")) << "replaced";
  ASSERT_TRUE(store_->open_agent_session(*ticket, "10.0.0.5", 3, clock_.now + 60'000));
  // The fourth boot is past max_boots = 3: the deployment fails.
  auto s4 = store_->open_agent_session(*ticket, "10.0.0.5", 3, clock_.now + 60'000);
  ASSERT_FALSE(s4);
  EXPECT_EQ(s4.error().code, Errc::kConflict);
  EXPECT_EQ(store_->get_deployment(id)->status, DeploymentStatus::kFailed);
  EXPECT_NE(store_->get_deployment(id)->status_reason.find("booted 3 times"), std::string::npos);
  EXPECT_FALSE(store_->agent_ticket(id, clock_.now + 60'000)) << "ended with the deployment";
}

TEST_P(StoreTest, ReissuedTicketUnbindsAndTicketsExpire) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  auto a = store_->assign(m.id, req("ubuntu", "1"));
  const auto id = a->deployment.id;
  auto ticket = store_->agent_ticket(id, clock_.now + 60'000);
  auto s1 = store_->open_agent_session(*ticket, "10.0.0.5", 5, clock_.now + 60'000);
  ASSERT_TRUE(s1);
  auto fresh = store_->reissue_agent_ticket(id, clock_.now + 60'000, "ops");
  ASSERT_TRUE(fresh);
  EXPECT_NE(*fresh, *ticket);
  EXPECT_FALSE(store_->authenticate_agent(s1->token, "10.0.0.5")) << "the old session ended";
  EXPECT_FALSE(store_->open_agent_session(*ticket, "10.0.0.5", 5, clock_.now + 60'000));
  auto s2 = store_->open_agent_session(*fresh, "10.0.0.9", 5, clock_.now + 60'000);
  ASSERT_TRUE(s2) << "unbound: any address may open the next session";
  clock_.now += 61'000;
  EXPECT_FALSE(store_->authenticate_agent(s2->token, "10.0.0.9")) << "expired";
  auto expired = store_->open_agent_session(*fresh, "10.0.0.9", 5, clock_.now + 60'000);
  ASSERT_FALSE(expired);
  EXPECT_EQ(expired.error().code, Errc::kUnauthorized);
  EXPECT_NE(*store_->agent_ticket(id, clock_.now + 60'000), *fresh) << "a new one after expiry";
}

TEST_P(StoreTest, InventoryClaimingAnotherMachinesMacIsRefusedWhole) {
  auto other = make_machine("52:54:00:00:00:02");
  auto d = store_->discover_machine("52:54:00:00:00:01", "kilnd:pxe");
  ASSERT_TRUE(d);
  auto r = store_->record_inventory("52:54:00:00:00:01", nlohmann::json::object(),
                                    {"52:54:00:00:00:03", "52:54:00:00:00:02"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  EXPECT_EQ(store_->get_machine(d->first.id)->state, MachineState::kDiscovered);
  EXPECT_FALSE(store_->find_machine_by_mac("52:54:00:00:00:03")) << "nothing attached";
  EXPECT_EQ(store_->find_machine_by_mac("52:54:00:00:00:02")->id, other.id);
  ASSERT_TRUE(store_->record_inventory("52:54:00:00:00:01", nlohmann::json::object(),
                                       {"52:54:00:00:00:03"}));
  EXPECT_EQ(store_->find_machine_by_mac("52:54:00:00:00:03")->id, d->first.id);
}

TEST_P(StoreTest, UnapprovedMachinesTakeNoInventoryNorAssignment) {
  make_image("ubuntu", "1");
  auto d = store_->discover_machine("52:54:00:00:00:01", "kilnd:pxe", /*approved=*/false);
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->first.approved);
  EXPECT_FALSE(store_->record_inventory("52:54:00:00:00:01", nlohmann::json::object()));
  auto a = store_->assign(d->first.id, req("ubuntu", "1"));
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, Errc::kConflict);
  auto approved = store_->approve_machine(d->first.id, "ops");
  ASSERT_TRUE(approved);
  EXPECT_TRUE(approved->approved);
  EXPECT_TRUE(store_->record_inventory("52:54:00:00:00:01", nlohmann::json::object()));
}

TEST_P(StoreTest, EventsRecordEveryChangeInOrder) {
  const auto start = store_->last_event_id();
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  deploy(m.id, "ubuntu", "1");
  auto events = store_->events_since(start, 100, std::nullopt);
  std::vector<std::string> types;
  for (const auto& e : events) types.push_back(e.type);
  EXPECT_EQ(types, (std::vector<std::string>{"machine.created", "image.registered",
                                             "deployment.created", "deployment.succeeded"}));
  auto for_machine = store_->events_since(start, 100, m.id);
  EXPECT_EQ(for_machine.size(), 3u);
  auto after = store_->events_since(events[1].id, 1, std::nullopt);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].type, "deployment.created");
}

TEST_P(StoreTest, ConcurrentWritersAndReadersStayConsistent) {
  make_image("ubuntu", "1");
  std::vector<std::thread> threads;
  std::atomic<int> created{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        char mac[32];
        std::snprintf(mac, sizeof mac, "52:54:00:%02x:00:%02x", t, i);
        NewMachine nm;
        nm.macs = {mac};
        if (store_->create_machine(nm, "t")) ++created;
        store_->list_machines({});
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), 100);
  MachineFilter f;
  f.limit = 1000;
  EXPECT_EQ(store_->list_machines(f).items.size(), 100u);
  EXPECT_EQ(store_->integrity_check(), "ok");
}

}  // namespace
}  // namespace kiln::store

namespace kiln::store {
namespace {

TEST_P(StoreTest, DhcpLeasesRoundTripAndUpsert) {
  EXPECT_TRUE(store_->load_dhcp_leases().empty());
  EXPECT_TRUE(
      store_
          ->save_dhcp_leases(
              {{"10.0.0.100", "52:54:00:00:00:01", "52:54:00:00:00:01", "pc1", "bound", 1000, 10},
               {"10.0.0.101", "id:01525400000002", "52:54:00:00:00:02", "", "offered", 2000, 20}})
          .empty());
  EXPECT_TRUE(store_
                  ->save_dhcp_leases({{"10.0.0.100", "52:54:00:00:00:01", "52:54:00:00:00:01",
                                       "pc1", "released", 1000, 30}})
                  .empty());
  auto all = store_->load_dhcp_leases();
  ASSERT_EQ(all.size(), 2u);
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.ip < b.ip; });
  EXPECT_EQ(all[0].state, "released");
  EXPECT_EQ(all[0].updated_at, 30);
  EXPECT_EQ(all[1].client, "id:01525400000002");
  EXPECT_THROW((void)store_->save_dhcp_leases({{"10.0.0.9", "c", "m", "", "bogus", 0, 0}}),
               std::exception);
  EXPECT_EQ(store_->load_dhcp_leases().size(), 2u);  // the failed batch wrote nothing
}

TEST_P(StoreTest, ListsMachineMacsWithReservations) {
  make_machine("52:54:00:00:00:07", {});
  NewMachine nm;
  nm.macs = {"52:54:00:00:00:08"};
  nm.ipv4 = "10.0.0.42";
  auto m = store_->create_machine(nm, "test");
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->ipv4, "10.0.0.42");
  auto macs = store_->list_machine_macs();
  std::map<std::string, std::optional<std::string>> by_mac(macs.begin(), macs.end());
  EXPECT_EQ(by_mac.at("52:54:00:00:00:07"), std::nullopt);
  EXPECT_EQ(by_mac.at("52:54:00:00:00:08"), "10.0.0.42");
  // One address, one machine.
  NewMachine dup;
  dup.macs = {"52:54:00:00:00:09"};
  dup.ipv4 = "10.0.0.42";
  auto conflict = store_->create_machine(dup, "test");
  ASSERT_FALSE(conflict);
  EXPECT_EQ(conflict.error().code, Errc::kConflict);
  ASSERT_TRUE(store_->delete_machine(m->id, false, "test"));
  EXPECT_TRUE(store_->create_machine(dup, "test"));  // free again once the machine is gone
}

}  // namespace
}  // namespace kiln::store

namespace kiln::store {
namespace {

class BootPathTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    dir_ = kiln::testing::make_test_dir("kiln-store-boot");
    StoreOptions o;
    KILN_STORE_DATABASE(GetParam(), o, dir_);
    o.synchronous_full = false;
    auto s = Store::open(o, clock_);
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
    ImageVersion v;
    v.name = "web";
    v.size_bytes = 1 << 20;
    v.sha256 = std::string(64, 'a');
    v.format = "raw";
    v.source_url = "http://images.example/web.raw";
    v.created_by = "test";
    for (const char* ver : {"1", "2"}) {
      v.version = ver;
      ASSERT_TRUE(store_->register_image_version(v));
    }
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void fail_deployment(std::int64_t id) {
    AgentReport r;
    r.result = proto::DeploymentStatus::kFailed;
    r.reason = "chunk 3: sha256 mismatch";
    ASSERT_TRUE(store_->report_progress(id, r));
  }

  struct Clk : Clock {
    std::int64_t now_ms() const override { return 1'700'000'000'000; }
  } clock_;
  std::filesystem::path dir_;
  std::unique_ptr<Store> store_;
};
INSTANTIATE_TEST_SUITE_P(Backends, BootPathTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres), backend_name);

TEST_P(BootPathTest, DiscoveryRegistersOnceThenInventoryMakesReady) {
  auto a = store_->discover_machine("52:54:00:00:00:01", "kilnd:pxe");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_TRUE(a->second);
  EXPECT_EQ(a->first.state, proto::MachineState::kDiscovered);
  auto b = store_->discover_machine("52:54:00:00:00:01", "kilnd:pxe");
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->second);
  EXPECT_EQ(b->first.id, a->first.id);

  EXPECT_EQ(store_->record_inventory("52:54:00:00:00:01", nlohmann::json::array()).error().code,
            Errc::kInvalid);
  EXPECT_EQ(store_->record_inventory("52:54:00:00:00:99", {{"cpus", 1}}).error().code,
            Errc::kNotFound);
  auto m = store_->record_inventory("52:54:00:00:00:01", {{"cpus", 2}});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->state, proto::MachineState::kReady);
  EXPECT_EQ(nlohmann::json::parse(m->inventory_json)["cpus"], 2);
  // Once ready, nobody unauthenticated rewrites it.
  EXPECT_EQ(m->macs, (std::vector<std::string>{"52:54:00:00:00:01"}));
  EXPECT_EQ(store_->record_inventory("52:54:00:00:00:01", {{"cpus", 8}}).error().code,
            Errc::kConflict);

  // Once it is deploying, an unauthenticated inventory report cannot touch it.
  ASSERT_TRUE(store_->assign(m->id, {"web", "1", "op", false}));
  auto refused = store_->record_inventory("52:54:00:00:00:01", {{"cpus", 64}});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kConflict);
  EXPECT_EQ(nlohmann::json::parse(store_->get_machine(m->id)->inventory_json)["cpus"], 2);
}

TEST_P(BootPathTest, InventoryAddsTheOtherNics) {
  ASSERT_TRUE(store_->discover_machine("52:54:00:00:00:10", "kilnd:pxe"));
  auto other = store_->discover_machine("52:54:00:00:00:20", "kilnd:pxe");  // another machine
  ASSERT_TRUE(other);
  // A report claiming a NIC another machine holds is refused whole, and recorded.
  auto claimed = store_->record_inventory("52:54:00:00:00:10", {{"nics", 2}},
                                          {"52:54:00:00:00:11", "52:54:00:00:00:20"});
  ASSERT_FALSE(claimed);
  EXPECT_EQ(claimed.error().code, Errc::kConflict);
  EXPECT_EQ(store_->find_machine_by_mac("52:54:00:00:00:20")->id, other->first.id);
  auto ev = store_->events_since(0, 100, std::nullopt);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().type, "machine.inventory_refused");
  EXPECT_EQ(ev.back().data["claimed_mac"], "52:54:00:00:00:20");
  // Its own second NIC becomes its own.
  auto m = store_->record_inventory("52:54:00:00:00:10", {{"nics", 2}}, {"52:54:00:00:00:11"});
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->macs, (std::vector<std::string>{"52:54:00:00:00:10", "52:54:00:00:00:11"}));
  EXPECT_EQ(store_->find_machine_by_mac("52:54:00:00:00:11")->id, m->id);
  ev = store_->events_since(0, 100, m->id);
  EXPECT_EQ(ev.back().type, "machine.inventory");
  EXPECT_EQ(ev.back().data["macs_added"], nlohmann::json::array({"52:54:00:00:00:11"}));
}

TEST_P(BootPathTest, RetryFailedIsBounded) {
  auto m = *store_->discover_machine("52:54:00:00:00:02", "kilnd:pxe");
  const auto id = m.first.id;
  EXPECT_EQ(store_->retry_failed(id, 3, "kilnd:retry").error().code, Errc::kConflict);
  auto d = store_->assign(id, {"web", "2", "op", false});
  ASSERT_TRUE(d);
  fail_deployment(d->deployment.id);
  for (int attempt = 2; attempt <= 3; ++attempt) {
    auto r = store_->retry_failed(id, 3, "kilnd:retry");
    ASSERT_TRUE(r) << attempt << ": " << r.error().message;
    EXPECT_EQ(r->deployment.to_version.version, "2");
    EXPECT_EQ(r->deployment.requested_by, "kilnd:retry");
    EXPECT_EQ(store_->get_machine(id)->state, proto::MachineState::kDeploying);
    // not failed (deploying): nothing to retry
    EXPECT_EQ(store_->retry_failed(id, 3, "kilnd:retry").error().code, Errc::kConflict);
    fail_deployment(r->deployment.id);
  }
  auto done = store_->retry_failed(id, 3, "kilnd:retry");
  ASSERT_FALSE(done);
  EXPECT_NE(done.error().message.find("3 deployments"), std::string::npos);
  EXPECT_EQ(store_->list_deployments(id)->size(), 3u);
  // An operator's new assignment starts a fresh count, even of the same version.
  auto again = store_->assign(id, {"web", "2", "op", false});
  ASSERT_TRUE(again);
  fail_deployment(again->deployment.id);
  auto fresh = store_->retry_failed(id, 3, "kilnd:retry");
  ASSERT_TRUE(fresh) << fresh.error().message;
  fail_deployment(fresh->deployment.id);
  EXPECT_TRUE(store_->retry_failed(id, 3, "kilnd:retry"));
}

}  // namespace
}  // namespace kiln::store

// --- confirmed boots, deadlines, BMC records (power.cc) ----------------------------------------

namespace kiln::store {
namespace {

class PowerStoreTest : public StoreTest {
 protected:
  // Deploys `v` and has its OS confirm the boot; returns the deployment id.
  std::int64_t deploy_booted(std::int64_t machine, const std::string& v) {
    auto o = store_->assign(machine, req("img", v));
    EXPECT_TRUE(o) << o.error().message;
    auto token = store_->mint_instance_token(o->deployment.id);
    EXPECT_TRUE(token);
    finish(o->deployment.id, true);
    auto d = store_->confirm_boot(*token, "10.0.0.5");
    EXPECT_TRUE(d) << d.error().message;
    return o->deployment.id;
  }
};
INSTANTIATE_TEST_SUITE_P(Backends, PowerStoreTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres), backend_name);

TEST_P(PowerStoreTest, ABootIsConfirmedOnlyByItsOwnCredentialOnceWritten) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("img", "1");
  auto o = store_->assign(m.id, req("img", "1"));
  ASSERT_TRUE(o);
  auto token = store_->mint_instance_token(o->deployment.id);
  ASSERT_TRUE(token);
  // Not written yet: nothing to confirm.
  auto early = store_->confirm_boot(*token, "10.0.0.5");
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().code, Errc::kConflict);
  EXPECT_EQ(store_->confirm_boot("0000", "10.0.0.5").error().code, Errc::kUnauthorized);
  EXPECT_EQ(store_->confirm_boot("", "10.0.0.5").error().code, Errc::kUnauthorized);
  clock_.now += 1000;
  finish(o->deployment.id, true);
  clock_.now += 5000;
  auto d = store_->confirm_boot(*token, "10.0.0.5");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->status, DeploymentStatus::kBooted);
  EXPECT_EQ(*d->booted_at - *d->written_at, 5000);
  // Again: the same answer, one event only.
  ASSERT_TRUE(store_->confirm_boot(*token, "10.0.0.5"));
  int booted_events = 0;
  for (const auto& e : store_->events_since(0, 1000, m.id))
    booted_events += e.type == "deployment.booted";
  EXPECT_EQ(booted_events, 1);
  EXPECT_EQ(store_->get_machine(m.id)->state, MachineState::kDeployed);
}

TEST_P(PowerStoreTest, AnOlderDeploymentsCredentialConfirmsNothing) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("img", "1");
  make_image("img", "2");
  auto a = store_->assign(m.id, req("img", "1"));
  auto old_token = store_->mint_instance_token(a->deployment.id);
  finish(a->deployment.id, true);
  deploy(m.id, "img", "2");
  auto r = store_->confirm_boot(*old_token, "10.0.0.5");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
}

TEST_P(PowerStoreTest, RollbackGoesToTheLastVersionThatBootedNotTheLastWritten) {
  auto m = make_machine("52:54:00:00:00:01");
  for (auto v : {"1", "2", "3"}) make_image("img", v);
  deploy_booted(m.id, "1");
  deploy(m.id, "img", "2");  // written, never confirmed
  deploy(m.id, "img", "3");
  auto rb = store_->rollback(m.id, "ops");
  ASSERT_TRUE(rb) << rb.error().message;
  EXPECT_EQ(rb->deployment.to_version.version, "1");
}

TEST_P(PowerStoreTest, AMachineThatNeverConfirmedFallsBackToTheLastWrittenUnlessBootedOnly) {
  auto m = make_machine("52:54:00:00:00:01");
  for (auto v : {"1", "2"}) make_image("img", v);
  deploy(m.id, "img", "1");
  deploy(m.id, "img", "2");
  AssignRequest r;
  r.requested_by = "kilnd:auto-rollback";
  auto strict = store_->rollback(m.id, r, /*booted_only=*/true);
  ASSERT_FALSE(strict);
  EXPECT_NE(strict.error().message.find("confirmed booted"), std::string::npos);
  auto loose = store_->rollback(m.id, r);
  ASSERT_TRUE(loose);
  EXPECT_EQ(loose->deployment.to_version.version, "1");
}

TEST_P(PowerStoreTest, DeadlinesAreMissedThenFailTheDeploymentAndTheMachine) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("img", "1");
  auto o = store_->assign(m.id, req("img", "1"));
  AgentReport ok;
  ok.result = DeploymentStatus::kSucceeded;
  const auto t = clock_.now.load();
  ASSERT_TRUE(store_->report_progress(o->deployment.id, ok, t + 60'000));
  EXPECT_TRUE(store_->overdue_deployments(t + 59'999, 10).empty());
  auto due = store_->overdue_deployments(t + 60'000, 10);
  ASSERT_EQ(due.size(), 1u);
  // A stale view (another deadline than the one seen) changes nothing.
  EXPECT_EQ(store_->miss_deadline(o->deployment.id, t, t + 1, "x").error().code, Errc::kConflict);
  auto missed = store_->miss_deadline(o->deployment.id, t + 60'000, t + 120'000, "power-cycling");
  ASSERT_TRUE(missed);
  EXPECT_EQ(missed->deadline_misses, 1);
  EXPECT_EQ(missed->status, DeploymentStatus::kSucceeded);
  // Its power-cycle never ran (the engine lease moved): the miss is given back, due now.
  EXPECT_EQ(store_->return_miss(o->deployment.id, t, "x").error().code, Errc::kConflict);
  auto returned = store_->return_miss(o->deployment.id, t + 120'000, "lease lost");
  ASSERT_TRUE(returned) << returned.error().message;
  EXPECT_EQ(returned->deadline_misses, 0);
  EXPECT_EQ(returned->deadline_at, clock_.now.load());
  EXPECT_EQ(store_->events_since(0, 1000, std::nullopt).back().type,
            "deployment.deadline_returned");
  EXPECT_EQ(store_->return_miss(o->deployment.id, clock_.now.load(), "again").error().code,
            Errc::kConflict)
      << "no miss left to give back";
  missed = store_->miss_deadline(o->deployment.id, clock_.now.load(), t + 120'000, "power-cycling");
  ASSERT_TRUE(missed);
  EXPECT_EQ(missed->deadline_misses, 1);
  auto failed = store_->fail_overdue(o->deployment.id, t + 120'000, "did not confirm its boot");
  ASSERT_TRUE(failed) << failed.error().message;
  EXPECT_EQ(failed->status, DeploymentStatus::kFailed);
  auto mm = store_->get_machine(m.id);
  EXPECT_EQ(mm->state, MachineState::kFailed);
  // The version is still on the disk (written, it just does not boot).
  ASSERT_TRUE(mm->current_version);
  EXPECT_EQ(mm->current_version->version, "1");
  EXPECT_TRUE(store_->overdue_deployments(t + 1'000'000, 10).empty());
}

TEST_P(PowerStoreTest, ANewAssignmentStopsWatchingTheOldBootDeadline) {
  auto m = make_machine("52:54:00:00:00:01");
  make_image("img", "1");
  make_image("img", "2");
  auto o = store_->assign(m.id, req("img", "1"));
  AgentReport ok;
  ok.result = DeploymentStatus::kSucceeded;
  ASSERT_TRUE(store_->report_progress(o->deployment.id, ok, clock_.now + 10));
  ASSERT_TRUE(store_->assign(m.id, req("img", "2")));
  EXPECT_TRUE(store_->overdue_deployments(clock_.now + 1'000'000, 10).empty());
}

TEST_P(PowerStoreTest, BmcRecordsKeepOnlyWhatTheyAreGivenAndGoWithTheMachine) {
  auto m = make_machine("52:54:00:00:00:01");
  BmcRecord r;
  r.machine_id = m.id;
  r.driver = "redfish";
  r.address = "https://bmc1";
  r.credentials = "v1:sealed-elsewhere";
  ASSERT_TRUE(store_->put_bmc(r, "ops"));
  EXPECT_EQ(store_->get_bmc(m.id)->credentials, "v1:sealed-elsewhere");
  EXPECT_EQ(store_->get_machine(m.id)->bmc_driver, "redfish");
  r.driver = "telnet";
  EXPECT_EQ(store_->put_bmc(r, "ops").error().code, Errc::kInvalid);
  // The event names the driver and address, never the credentials.
  for (const auto& e : store_->events_since(0, 1000, m.id)) {
    EXPECT_EQ(e.data.dump().find("sealed"), std::string::npos) << e.data.dump();
  }
  ASSERT_TRUE(store_->delete_machine(m.id, false, "ops"));
  auto raw = open_raw(true);
  auto s = raw->prepare("SELECT COUNT(*) FROM machine_bmcs");
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.int64(0), 0);
}

TEST_P(PowerStoreTest, AnExplicitRebootNeedsABmcAndRefusesTheWholeBulkAssignment) {
  auto a = make_machine("52:54:00:00:00:01", {{"rack", "r1"}});
  auto b = make_machine("52:54:00:00:00:02", {{"rack", "r1"}});
  make_image("img", "1");
  BmcRecord r;
  r.machine_id = a.id;
  r.driver = "ipmi";
  r.address = "10.0.0.9";
  r.credentials = "v1:x";
  ASSERT_TRUE(store_->put_bmc(r, "ops"));
  AssignRequest q = req("img", "1");
  q.reboot = q.reboot_required = true;
  auto sel = proto::parse_selector("rack=r1");
  auto bulk = store_->assign_bulk(*sel, q);
  ASSERT_FALSE(bulk);
  EXPECT_EQ(bulk.error().code, Errc::kInvalid);
  EXPECT_FALSE(store_->get_machine(a.id)->active_deployment_id);
  // By default (not required) only the machine with a BMC is recorded as rebooted.
  q.reboot_required = false;
  auto ok = store_->assign_bulk(*sel, q);
  ASSERT_TRUE(ok) << ok.error().message;
  for (const auto& [mid, out] : ok->results) EXPECT_EQ(out.deployment.reboot, mid == a.id);
}

}  // namespace
}  // namespace kiln::store

namespace kiln::store {
namespace {

// 0004 rebuilds the deployments table (its CHECK gains 'booted'): a database made by the
// previous schema keeps every row, and the history stays append-only.
TEST(Migration0004, KeepsDeploymentsAndTheirGuards) {
  auto dir = kiln::testing::make_test_dir("kiln-migration-0004");
  StoreOptions o;
  o.path = (dir / "kiln.db").string();
  o.synchronous_full = false;
  FakeClock clock;
  const auto& all = embedded_migrations();
  std::vector<Migration> upto3;
  for (const auto& m : all) {
    if (m.version <= 3) upto3.push_back(m);
  }
  const std::int64_t ok_id = 1, failed_id = 2;
  {
    // The previous schema, and rows as its code wrote them (raw SQL: today's code expects 0004).
    auto old = Store::open(o, clock, upto3);
    ASSERT_TRUE(old) << old.error().message;
    old->reset();
    SqliteDb raw(o.path, false);
    raw.exec(
        "INSERT INTO image_versions (id, name, version, size_bytes, sha256, format, created_by, "
        "created_at) VALUES (1, 'img', '1', 0, '" +
        std::string(64, 'b') +
        "', 'raw', 't', 1), "
        "(2, 'img', '2', 0, '" +
        std::string(64, 'c') +
        "', 'raw', 't', 1);"
        "INSERT INTO machines (id, state, created_at, updated_at) VALUES (1, 'failed', 1, 1);"
        "INSERT INTO deployments (id, machine_id, to_version_id, kind, requested_by, created_at, "
        "status, finished_at, agent_boots) VALUES "
        "(1, 1, 1, 'assign', 't', 10, 'succeeded', 20, 1);"
        "INSERT INTO deployments (id, machine_id, from_version_id, to_version_id, kind, "
        "requested_by, created_at, status, status_reason, finished_at) VALUES "
        "(2, 1, 1, 2, 'assign', 't', 30, 'failed', 'disk', 40);");
  }
  auto s = Store::open(o, clock);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ((*s)->schema_version(), static_cast<int>(all.back().version));
  EXPECT_EQ((*s)->integrity_check(), "ok");
  auto d = (*s)->get_deployment(ok_id);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, DeploymentStatus::kSucceeded);
  EXPECT_EQ(d->written_at, std::optional<std::int64_t>(20));  // succeeded: written then
  EXPECT_EQ((*s)->get_deployment(failed_id)->written_at, std::nullopt);
  EXPECT_EQ((*s)->get_deployment(failed_id)->status_reason, "disk");
  SqliteDb raw(o.path, false);
  EXPECT_THROW(raw.exec("DELETE FROM deployments"), SqliteError);
  EXPECT_THROW(
      raw.exec("UPDATE deployments SET status = 'pending' WHERE id = " + std::to_string(failed_id)),
      SqliteError);
  EXPECT_THROW(raw.exec("UPDATE deployments SET to_version_id = 1"), SqliteError);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kiln::store

// --- several kilnd on one database (issue 20) -------------------------------------------------

namespace kiln::store {
namespace {

TEST(Migrations, BothBackendsHaveTheSameVersions) {
  std::vector<std::pair<int, std::string>> sqlite, pg;
  for (const auto& m : embedded_migrations()) sqlite.emplace_back(m.version, m.name);
  for (const auto& m : embedded_pg_migrations()) pg.emplace_back(m.version, m.name);
  EXPECT_EQ(sqlite, pg) << "every db-migrations/NNNN_name.sql needs its postgres/ twin";
}

TEST(PgDialect, PlaceholdersAreNumberedOutsideQuotesAndComments) {
  int n = 0;
  EXPECT_EQ(pg_rewrite_placeholders("SELECT '?', \"a?\" FROM t WHERE x = ? AND y IN (?, ?) -- ?\n"
                                    "AND z = ?",
                                    &n),
            "SELECT '?', \"a?\" FROM t WHERE x = $1 AND y IN ($2, $3) -- ?\nAND z = $4");
  EXPECT_EQ(n, 4);
}

TEST(StoreUrl, PostgresIsAUriOrAConninfoAndAnythingElseIsASqliteFile) {
  EXPECT_TRUE(is_postgres_url("postgresql://kiln@db.example/kiln"));
  EXPECT_TRUE(is_postgres_url("postgres://db/kiln?sslmode=require"));
  EXPECT_TRUE(is_postgres_url("host=/run/postgresql dbname=kiln"));
  EXPECT_TRUE(is_postgres_url("dbname=kiln user=kiln"));
  EXPECT_FALSE(is_postgres_url("/var/lib/kiln/kiln.db"));
  EXPECT_FALSE(is_postgres_url("var/kiln.db"));
  EXPECT_FALSE(is_postgres_url(""));
  EXPECT_TRUE(is_postgres_url("host = db dbname = kiln"));
  EXPECT_TRUE(is_postgres_url("keepalives=1 host=db"));
  EXPECT_FALSE(is_postgres_url("/var/lib/kiln/host=x.db"));
}

// kilnd db-copy: a SQLite kiln into an empty PostgreSQL database.
TEST_F(SqliteStoreTest, DbCopyMovesEveryRowIntoAnEmptyPostgresKeepingIds) {
  std::string pg;
  KILN_PG_DATABASE(pg, /*migrated=*/false);
  auto m1 = make_machine("52:54:00:00:0d:01", {{"rack", "r1"}, {"role", "web"}});
  auto m2 = make_machine("52:54:00:00:0d:02");
  make_image("os", "1");
  make_image("os", "2");
  deploy(m1.id, "os", "1");
  const auto active = store_->assign(m1.id, req("os", "2"));
  ASSERT_TRUE(active);
  auto token = store_->create_token("ops", proto::Scope::kAdmin);
  ASSERT_TRUE(token);
  DhcpLease lease{"10.0.0.9",     "id:01", "52:54:00:00:0d:02",
                  "n2",           "bound", clock_.now_ms() + 60'000,
                  clock_.now_ms()};
  ASSERT_TRUE(store_->save_dhcp_leases({lease}).empty());
  const auto events = store_->events_since(0, 1000, std::nullopt);
  ASSERT_GE(events.size(), 5u);
  store_.reset();  // kilnd stopped

  auto report = copy_sqlite_to_postgres(options_.path, pg, clock_);
  ASSERT_TRUE(report) << report.error().message;
  std::map<std::string, std::int64_t> rows;
  for (const auto& t : report->tables) rows[t.name] = t.rows;
  EXPECT_EQ(rows["machines"], 2);
  EXPECT_EQ(rows["machine_labels"], 2);
  EXPECT_EQ(rows["deployments"], 2);
  EXPECT_EQ(rows["events"], static_cast<std::int64_t>(events.size()));
  EXPECT_EQ(rows["dhcp_leases"], 1);
  EXPECT_EQ(report->tables.size(), 13u) << "every table but schema_migrations";

  StoreOptions po;
  po.url = pg;
  auto copy = Store::open(po, clock_);
  ASSERT_TRUE(copy) << copy.error().message;
  auto& s = **copy;
  auto got = s.get_machine(m1.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->labels, m1.labels);
  EXPECT_EQ(got->macs, m1.macs);
  auto dep = s.get_deployment(active->deployment.id);
  ASSERT_TRUE(dep);
  EXPECT_EQ(dep->status, DeploymentStatus::kPending);
  EXPECT_TRUE(s.authenticate(token->second)) << "the same token";
  auto l = s.load_dhcp_lease("10.0.0.9");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->client, "id:01");
  EXPECT_EQ(l->expires_at, lease.expires_at);
  auto copied = s.events_since(0, 1000, std::nullopt);
  ASSERT_EQ(copied.size(), events.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(copied[i].id, events[i].id);
    EXPECT_EQ(copied[i].type, events[i].type);
    EXPECT_EQ(copied[i].data, events[i].data);
  }
  // The identities continue after the copied ids.
  NewMachine nm;
  nm.macs = {"52:54:00:00:0d:03"};
  auto m3 = s.create_machine(nm, "test");
  ASSERT_TRUE(m3) << m3.error().message;
  EXPECT_EQ(m3->id, m2.id + 1);
  EXPECT_GT(s.last_event_id(), events.back().id);

  // Again into the same database: refused, nothing changed.
  const auto before = s.last_event_id();
  auto again = copy_sqlite_to_postgres(options_.path, pg, clock_);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::kConflict);
  EXPECT_EQ(s.last_event_id(), before);
  EXPECT_TRUE(s.get_machine(m3->id));
}

TEST_F(SqliteStoreTest, DbCopyTakesManyBatchesAndContinuesTheIdsAfterThem) {
  std::string pg;
  KILN_PG_DATABASE(pg, /*migrated=*/false);
  for (int i = 0; i < 450; ++i) {  // more than two INSERT batches of 200, and a partial one
    char mac[32];
    std::snprintf(mac, sizeof mac, "52:54:00:00:%02x:%02x", i / 256, i % 256);
    make_machine(mac, {{"n", std::to_string(i)}});
  }
  const auto last_event = store_->last_event_id();
  store_.reset();
  auto report = copy_sqlite_to_postgres(options_.path, pg, clock_);
  ASSERT_TRUE(report) << report.error().message;
  StoreOptions po;
  po.url = pg;
  auto s = Store::open(po, clock_);
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)->get_machine(450)->labels.at("n"), "449");
  EXPECT_EQ((*s)->last_event_id(), last_event);
  NewMachine nm;
  nm.macs = {"52:54:00:00:ff:ff"};
  auto m = (*s)->create_machine(nm, "test");
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->id, 451);
  EXPECT_EQ((*s)->last_event_id(), last_event + 1);
}

TEST_F(SqliteStoreTest, DbCopyThatFailsMidwayLeavesTheTargetEmpty) {
  std::string pg;
  KILN_PG_DATABASE(pg, /*migrated=*/false);
  make_machine("52:54:00:00:0f:01", {{"rack", "r1"}});
  store_.reset();
  {
    // A label of a machine that does not exist (SQLite with its foreign keys off lets it in;
    // PostgreSQL refuses it after the machines were already written).
    SqliteDb raw(options_.path, false);
    raw.exec("PRAGMA foreign_keys = OFF");
    raw.exec("INSERT INTO machine_labels (machine_id, key, value) VALUES (99, 'rack', 'r9')");
  }
  auto r = copy_sqlite_to_postgres(options_.path, pg, clock_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInternal);
  EXPECT_NE(r.error().message.find("nothing copied"), std::string::npos) << r.error().message;
  StoreOptions po;
  po.url = pg;
  auto s = Store::open(po, clock_);
  ASSERT_TRUE(s);
  EXPECT_FALSE((*s)->get_machine(1)) << "the machines written before the failure are gone";
  EXPECT_EQ((*s)->last_event_id(), 0);
}

TEST_F(SqliteStoreTest, DbCopyRefusesAValueSqliteWouldConvert) {
  std::string pg;
  KILN_PG_DATABASE(pg, /*migrated=*/false);
  make_machine("52:54:00:00:0f:02");
  store_.reset();
  {
    SqliteDb raw(options_.path, false);
    raw.exec("UPDATE machines SET updated_at = 'yesterday'");  // TEXT in an INTEGER column
  }
  auto r = copy_sqlite_to_postgres(options_.path, pg, clock_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  EXPECT_NE(r.error().message.find("machines, column updated_at holds a text value"),
            std::string::npos)
      << r.error().message;
}

TEST_F(SqliteStoreTest, DbCopyRefusesATargetWithATableItDoesNotKnowAndWritesNothing) {
  std::string pg;
  KILN_PG_DATABASE(pg, /*migrated=*/true);
  make_machine("52:54:00:00:0e:01");
  store_.reset();
  StoreOptions po;
  po.url = pg;
  PgDb(pg).exec("CREATE TABLE kiln_extra (x BIGINT)");
  auto r = copy_sqlite_to_postgres(options_.path, pg, clock_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  EXPECT_NE(r.error().message.find("kiln_extra"), std::string::npos) << r.error().message;
  auto s = Store::open(po, clock_);
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)->last_event_id(), 0);
  EXPECT_FALSE((*s)->get_machine(1));
}

TEST_F(SqliteStoreTest, DbCopyRefusesColumnsThatDifferAndAMissingSource) {
  std::string pg;
  KILN_PG_DATABASE(pg, /*migrated=*/true);
  store_.reset();
  PgDb(pg).exec("ALTER TABLE machines ADD COLUMN colour TEXT");
  auto r = copy_sqlite_to_postgres(options_.path, pg, clock_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInvalid);
  EXPECT_NE(r.error().message.find("only in PostgreSQL: colour"), std::string::npos)
      << r.error().message;
  auto missing = copy_sqlite_to_postgres((dir_ / "nothing.db").string(), pg, clock_);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "nothing.db")) << "no empty database made";
}

TEST(StoreUrl, ConnectErrorsNeverQuoteThePassword) {
  // libpq's own parse errors quote the piece they choke on; kilnd does not pass them on.
  for (const char* u : {"postgresql://kiln:pa%zzs3cret@127.0.0.1:1/kiln",
                        "host=127.0.0.1 port=1 password=se s3cret",
                        "host=127.0.0.1 port=1 "
                        "password=s3cret connect_timeout=1"}) {
    try {
      PgDb db(u);
      ADD_FAILURE() << "connected to " << u;
    } catch (const DbError& e) {
      EXPECT_EQ(std::string(e.what()).find("s3cret"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cannot connect to PostgreSQL"), std::string::npos);
    }
  }
}

TEST(StoreUrl, EveryPasswordIsMaskedAndNothingElse) {
  // What libpq takes: user:password@ ('?' and '@' in it too), ?password=, sslpassword, an
  // encoded key, quoted and escaped values, spaces around '=', and conninfos it cannot parse.
  const std::pair<const char*, const char*> cases[] = {
      {"postgresql://kiln:s3cret@db.example:5432/kiln",
       "postgresql://kiln:***@db.example:5432/kiln"},
      {"postgresql://kiln:p@ss@db/kiln", "postgresql://kiln:***@db/kiln"},
      {"postgres://kiln@db/kiln?sslmode=require&password=s3cret&x=1",
       "postgres://kiln@db/kiln?sslmode=require&password=***&x=1"},
      {"postgresql://db/kiln?password=s3cret", "postgresql://db/kiln?password=***"},
      {"postgresql://kiln@db/kiln", "postgresql://kiln@db/kiln"},
      {"host=db password=s3cret dbname=kiln", "host=db password=*** dbname=kiln"},
      {"host=db password = 's3 c\\'ret' dbname=kiln", "host=db password = *** dbname=kiln"},
      {"dbname=kiln password=s3cret", "dbname=kiln password=***"},
      {"dbname=kiln user=kiln", "dbname=kiln user=kiln"},
      {"/var/lib/kiln/password=x.db", "/var/lib/kiln/password=x.db"},
      {"postgresql://kiln:pa?ss@db/kiln", "postgresql://kiln:***@db/kiln"},
      {"postgresql://db/kiln?sslpassword=s3cret&pass%77ord=s3cret",
       "postgresql://db/kiln?sslpassword=***&pass%77ord=***"},
      {"host=db password=s3\\ cret dbname=kiln", "host=db password=*** dbname=kiln"},
      {"host = db password = s3cret", "host = db password = ***"},
      {"host=db dbname kiln password=s3cret", "host=db dbname kiln ***"},
      {"host=db password='s3cret", "host=db ***"},
      {"password=s3cret dbname=kiln application_name=a://b",
       "password=*** dbname=kiln application_name=a://b"},
  };
  for (const auto& [url, want] : cases) EXPECT_EQ(redact_db_url(url), want) << url;
  for (const char* u : {"postgresql://kiln:pa?ss@db/kiln", "host = db password = s3cret",
                        "host=db dbname kiln password=s3cret", "host=db sslpassword=s3cret"}) {
    EXPECT_EQ(redact_db_url(u).find("s3cret"), std::string::npos) << u;
  }
}

TEST_F(PgStoreTest, RefusesDatabaseNewerThanBinaryWithoutTouchingIt) {
  store_.reset();
  open_raw(false)->exec(
      "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)");
  auto s = Store::open(options_, clock_);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("newer than this kilnd supports"), std::string::npos)
      << s.error().message;
  auto raw = open_raw(true);
  auto n = raw->prepare("SELECT count(*) FROM schema_migrations");
  ASSERT_TRUE(n.step());
  EXPECT_EQ(n.int64(0), static_cast<std::int64_t>(embedded_pg_migrations().size()) + 1);
}

TEST_F(PgStoreTest, FailedMigrationLeavesDatabaseUntouched) {
  store_.reset();
  std::string url;
  KILN_PG_DATABASE(url, /*migrated=*/false);
  StoreOptions o;
  o.url = url;
  std::vector<Migration> first = {{1, "one", "CREATE TABLE a (x BIGINT);"}};
  ASSERT_TRUE(Store::open(o, clock_, first));
  std::vector<Migration> more = {first[0],
                                 {2, "two", "CREATE TABLE b (y BIGINT);"},
                                 {3, "broken", "CREATE TABLE c (z BIGINT); SELECT nosuchfn();"}};
  auto s = Store::open(o, clock_, more);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("3_broken"), std::string::npos) << s.error().message;
  PgDb raw(url);
  EXPECT_EQ(schema_version(raw), 1);
  auto t = raw.prepare("SELECT count(*) FROM pg_tables WHERE tablename IN ('b', 'c')");
  ASSERT_TRUE(t.step());
  EXPECT_EQ(t.int64(0), 0) << "tables of the failed batch must not exist";
}

TEST_F(PgStoreTest, TwoInstancesStartingTogetherMigrateOnce) {
  store_.reset();
  std::string url;
  KILN_PG_DATABASE(url, /*migrated=*/false);
  StoreOptions o;
  o.url = url;
  std::vector<std::thread> threads;
  std::atomic<int> opened{0};
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      if (Store::open(o, clock_)) ++opened;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(opened.load(), 3);
  PgDb raw(url);
  auto n = raw.prepare("SELECT count(*) FROM schema_migrations");
  ASSERT_TRUE(n.step());
  EXPECT_EQ(n.int64(0), static_cast<std::int64_t>(embedded_pg_migrations().size()));
}

TEST_P(StoreTest, MillisecondTimesAndLargeSizesRoundTrip) {
  clock_.now = 4'102'444'800'000;  // 2100-01-01: far past a 32-bit integer
  ImageVersion v;
  v.name = "big";
  v.version = "1";
  v.size_bytes = std::int64_t{5} << 40;  // 5 TiB
  v.sha256 = std::string(64, 'a');
  v.format = "raw";
  v.created_by = "test";
  auto r = store_->register_image_version(v);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->first.size_bytes, std::int64_t{5} << 40);
  EXPECT_EQ(r->first.created_at, 4'102'444'800'000);
}

TEST_P(StoreTest, ALeaseHeldByAnotherClientIsRefusedAndTheRestCommitted) {
  const std::int64_t now = clock_.now_ms();
  const std::int64_t later = now + 3'600'000;
  ASSERT_TRUE(store_
                  ->save_dhcp_leases({{"10.0.0.10", "mac-a", "mac-a", "", "bound", later, now},
                                      {"10.0.0.11", "mac-a", "mac-a", "", "bound", now - 1, now},
                                      {"10.0.0.12", "mac-a", "mac-a", "", "released", later, now}})
                  .empty());
  // Another client (say through another kilnd): .10 is bound to mac-a and unexpired (refused),
  // .11 expired and .12 was released (both taken over), .13 is free.
  auto refused =
      store_->save_dhcp_leases({{"10.0.0.10", "mac-b", "mac-b", "", "offered", later, now},
                                {"10.0.0.11", "mac-b", "mac-b", "", "offered", later, now},
                                {"10.0.0.12", "mac-b", "mac-b", "", "offered", later, now},
                                {"10.0.0.13", "mac-b", "mac-b", "", "offered", later, now}});
  EXPECT_EQ(refused, std::vector<std::string>{"10.0.0.10"});
  std::map<std::string, std::string> owner;
  for (const auto& l : store_->load_dhcp_leases()) owner[l.ip] = l.client;
  EXPECT_EQ(owner["10.0.0.10"], "mac-a");
  EXPECT_EQ(owner["10.0.0.11"], "mac-b");
  EXPECT_EQ(owner["10.0.0.12"], "mac-b");
  EXPECT_EQ(owner["10.0.0.13"], "mac-b");
  // The holder itself renews.
  EXPECT_TRUE(
      store_->save_dhcp_leases({{"10.0.0.10", "mac-a", "mac-a", "", "bound", later + 1, now}})
          .empty());
}

// A declined address is quarantined until its row expires: another instance (whose engine
// never saw the DECLINE) must not lend it meanwhile; once the quarantine is over, it may.
TEST_P(StoreTest, ADeclinedAddressStaysQuarantinedForEveryInstance) {
  const std::int64_t now = clock_.now_ms();
  ASSERT_TRUE(
      store_
          ->save_dhcp_leases({{"10.0.0.20", "mac-a", "mac-a", "", "declined", now + 600'000, now}})
          .empty());
  EXPECT_EQ(
      store_->save_dhcp_leases({{"10.0.0.20", "mac-b", "mac-b", "", "offered", now + 60'000, now}}),
      std::vector<std::string>{"10.0.0.20"});
  clock_.now = now + 600'001;
  EXPECT_TRUE(store_
                  ->save_dhcp_leases({{"10.0.0.20", "mac-b", "mac-b", "", "offered", now + 700'000,
                                       now + 600'001}})
                  .empty());
}

// Two instances hand out the same addresses at once (their DHCP engines each think them
// free): every address is granted to exactly one client, the other is told it was refused.
TEST_P(StoreTest, RacingLeaseWritesThroughTwoInstancesGrantEachAddressOnce) {
  auto other = open_second();
  ASSERT_TRUE(other);
  const std::int64_t now = clock_.now_ms();
  std::vector<std::vector<std::string>> refused(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      Store* s = t ? other.get() : store_.get();
      const std::string client = t ? "mac-b" : "mac-a";
      for (int i = 0; i < 40; ++i) {  // one lease per batch, as offers go out
        auto r = s->save_dhcp_leases(
            {{"10.2.0." + std::to_string(i), client, client, "", "offered", now + 60'000, now}});
        refused[t].insert(refused[t].end(), r.begin(), r.end());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(refused[0].size() + refused[1].size(), 40u) << "each address refused to exactly one";
  std::set<std::string> both(refused[0].begin(), refused[0].end());
  for (const auto& ip : refused[1]) EXPECT_TRUE(both.insert(ip).second) << ip << " refused twice";
  std::map<std::string, std::string> owner;
  for (const auto& l : store_->load_dhcp_leases()) owner[l.ip] = l.client;
  for (const auto& ip : refused[0]) EXPECT_EQ(owner[ip], "mac-b") << ip;
  for (const auto& ip : refused[1]) EXPECT_EQ(owner[ip], "mac-a") << ip;
}

TEST_P(StoreTest, LargeLeaseBatchesAreWrittenWhole) {
  const std::int64_t now = clock_.now_ms();
  std::vector<DhcpLease> batch;
  for (int i = 0; i < 150; ++i) {  // 64 + 64 + 16 + 4 + 1 + 1 rows per statement
    batch.push_back({"10.1.0." + std::to_string(i), "c" + std::to_string(i), "m", "", "bound",
                     now + 1000, now});
  }
  batch.push_back(batch[3]);  // an address twice in one batch: the later row wins
  batch.back().hostname = "again";
  EXPECT_TRUE(store_->save_dhcp_leases(batch).empty());
  auto all = store_->load_dhcp_leases();
  EXPECT_EQ(all.size(), 150u);
  for (const auto& l : all) {
    if (l.ip == "10.1.0.3") EXPECT_EQ(l.hostname, "again");
  }
}

TEST_P(StoreTest, ConcurrentAssignsThroughTwoInstancesExactlyOneWins) {
  auto other = open_second();
  ASSERT_TRUE(other);
  auto m = make_machine("52:54:00:00:00:01");
  make_image("ubuntu", "1");
  make_image("ubuntu", "2");
  std::atomic<int> created{0}, conflicts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    Store* s = t % 2 ? other.get() : store_.get();
    threads.emplace_back([&, s, t] {
      // Different versions: only the first may create; the others conflict (no force).
      auto o = s->assign(m.id, req("ubuntu", t % 2 ? "2" : "1"));
      if (o && o->created) ++created;
      if (!o && o.error().code == Errc::kConflict) ++conflicts;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), 1);
  int active = 0;
  for (const auto& d : *store_->list_deployments(m.id)) {
    if (d.status == DeploymentStatus::kPending || d.status == DeploymentStatus::kRunning) ++active;
  }
  EXPECT_EQ(active, 1);
}

TEST_P(StoreTest, ConcurrentRegistrationsOfOneMacThroughTwoInstancesExactlyOneWins) {
  auto other = open_second();
  ASSERT_TRUE(other);
  std::atomic<int> created{0}, conflicts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    Store* s = t % 2 ? other.get() : store_.get();
    threads.emplace_back([&, s] {
      NewMachine nm;
      nm.macs = {"52:54:00:aa:bb:cc"};
      auto r = s->create_machine(nm, "t");
      if (r) ++created;
      if (!r && r.error().code == Errc::kConflict) ++conflicts;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), 1);
  EXPECT_EQ(conflicts.load(), 3);
}

TEST_P(StoreTest, LeadershipIsHeldByOneAndTakenOverWhenReleased) {
  auto other = open_second();
  ASSERT_TRUE(other);
  auto a = store_->try_lead("rollouts");
  auto b = other->try_lead("rollouts");
  EXPECT_TRUE(a->held());
  EXPECT_FALSE(b->held());
  EXPECT_TRUE(a->held()) << "re-checking keeps it";
  auto c = other->try_lead("deadlines");  // another name: independent
  EXPECT_TRUE(c->held());
  a.reset();  // the holder goes away
  EXPECT_TRUE(b->held());
  auto d = store_->try_lead("rollouts");
  EXPECT_FALSE(d->held());
}

// The highest event id a subscription to `store` delivered; waits (bounded) for one.
class HeardEvents {
 public:
  explicit HeardEvents(Store& store)
      : sub_(store.subscribe_events([this](std::int64_t id) {
          std::lock_guard lock(mu_);
          heard_ = std::max(heard_, id);
          cv_.notify_all();
        })) {}
  bool wait_for(std::int64_t id) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return heard_ >= id; });
  }
  std::int64_t heard() {
    std::lock_guard lock(mu_);
    return heard_;
  }
  void unsubscribe() { sub_.reset(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::int64_t heard_ = 0;
  std::unique_ptr<Store::Subscription> sub_;  // last: ends before the state it writes
};

TEST_P(StoreTest, SubscribersHearOfCommittedEvents) {
  HeardEvents events(*store_);
  make_machine("52:54:00:00:00:01");
  const std::int64_t last = store_->last_event_id();
  ASSERT_GT(last, 0);
  EXPECT_TRUE(events.wait_for(last));
  // A refused write appends nothing and commits nothing: no call.
  const std::int64_t before = events.heard();
  NewMachine dup;
  dup.macs = {"52:54:00:00:00:01"};
  EXPECT_FALSE(store_->create_machine(dup, "t"));
  events.unsubscribe();
  make_machine("52:54:00:00:00:02");  // after unsubscribing: not heard
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(events.heard(), before);
}

TEST_F(PgStoreTest, EventsWrittenByAnotherInstanceWakeSubscribers) {
  auto other = open_second();
  ASSERT_TRUE(other);
  HeardEvents events(*store_);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // LISTEN is up (not asserted)
  NewMachine nm;
  nm.macs = {"52:54:00:00:00:01"};
  ASSERT_TRUE(other->create_machine(nm, "t"));  // written through the other instance
  const std::int64_t last = other->last_event_id();
  EXPECT_TRUE(events.wait_for(last)) << "heard " << events.heard() << ", expected " << last;
}

// The server drops every connection (a restart, a failover, an operator's
// pg_terminate_backend): the next reads and writes reconnect by themselves, and subscribers
// hear of events written while their LISTEN connection was gone.
TEST_F(PgStoreTest, LostConnectionsAreReestablished) {
  HeardEvents events(*store_);
  make_machine("52:54:00:00:00:01");
  EXPECT_EQ(store_->list_machines({}).items.size(), 1u);
  {
    auto raw = open_raw(false);
    auto k = raw->prepare(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()");
    ASSERT_TRUE(k.step());
    EXPECT_GE(k.int64(0), 3) << "writer, reader and listener connections";
  }
  auto other = open_second();  // writes while the listener reconnects
  ASSERT_TRUE(other);
  NewMachine nm;
  nm.macs = {"52:54:00:00:00:02"};
  ASSERT_TRUE(other->create_machine(nm, "t"));
  make_machine("52:54:00:00:00:03");  // the writer reconnects before its transaction
  EXPECT_EQ(store_->list_machines({}).items.size(), 3u);  // a reader reconnects
  const std::int64_t last = store_->last_event_id();
  EXPECT_TRUE(events.wait_for(last));
}

// The lease of a process that dies (here a psql session SIGKILLed while holding it, idle as
// kilnd's lease connection is) is released by the server, and another instance takes over.
TEST_F(PgStoreTest, LeadershipOfAKilledProcessIsTakenOver) {
  std::string bin = "psql";
  for (const char* v : {"17", "16", "15", "14", "13"}) {
    std::string p = std::string("/usr/lib/postgresql/") + v + "/bin/psql";
    if (::access(p.c_str(), X_OK) == 0) {
      bin = p;
      break;
    }
  }
  int in[2];
  ASSERT_EQ(::pipe(in), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(in[0], 0);  // psql reads its SQL from the test, then waits idle for more
    ::close(in[1]);
    ::execl(bin.c_str(), "psql", "-X", "-q", "-d", options_.url.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(in[0]);
  const std::string sql =
      "SELECT pg_advisory_lock(" + std::to_string(pg_lead_key("rollouts")) + ");\n";
  ASSERT_EQ(::write(in[1], sql.data(), sql.size()), static_cast<ssize_t>(sql.size()));
  auto lead = store_->try_lead("rollouts");
  bool child_held = false;
  for (int i = 0; i < 200 && !child_held; ++i) {  // bounded: 10 s
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    child_held = !lead->held();
    if (!child_held) {  // we took it before the child: give it back and retry
      lead.reset();
      lead = store_->try_lead("rollouts");
    }
  }
  ASSERT_TRUE(child_held) << "the psql child never took the lock";
  EXPECT_FALSE(lead->held()) << "held by the other process";
  ::kill(pid, SIGKILL);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ::close(in[1]);
  bool taken = false;
  for (int i = 0; i < 200 && !taken; ++i) {  // bounded: 10 s
    taken = lead->held();
    if (!taken) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(taken) << "the dead session's lease was not released";
}

}  // namespace
}  // namespace kiln::store
