// proto/resources.h: every resource survives encode -> decode unchanged, decoders name the
// property that is wrong, and the machine's fast text encoder equals its DOM encoder.
#include "proto/resources.h"

#include <gtest/gtest.h>

namespace kiln::proto {
namespace {

using json = nlohmann::json;

Machine full_machine() {
  Machine m;
  m.id = 7;
  m.name = "r12-node1";
  m.macs = {"52:54:00:12:00:01", "52:54:00:12:00:02"};
  m.uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
  m.ipv4 = "10.0.0.7";
  m.state = MachineState::kDeploying;
  m.state_reason = "assigned \"web\"\n";
  m.labels = {{"rack", "r12"}, {"role", "web"}};
  m.inventory_json = R"({"cpu":{"cores":4}})";
  m.current_version = VersionRef{0, "web", "1"};
  m.active_deployment_id = 3;
  m.assigned_version = VersionRef{0, "web", "2"};
  m.created_at = 1'700'000'000'123;
  m.updated_at = 1'700'000'001'456;
  return m;
}

TEST(Resources, MachineRoundTripsAndBothEncodersAgree) {
  for (Machine m : {full_machine(), Machine{}}) {
    std::string text;
    append_json(text, m);
    EXPECT_EQ(text, json::parse(text).dump());  // sorted keys, compact: nlohmann's own form
    auto back = machine_from_json(to_json(m));
    ASSERT_TRUE(back) << back.error().message;
    std::string again;
    append_json(again, *back);
    EXPECT_EQ(again, text);
  }
}

TEST(Resources, DeploymentRoundTrips) {
  Deployment d;
  d.id = 3;
  d.machine_id = 7;
  d.kind = "rollback";
  d.from_version = VersionRef{0, "web", "2"};
  d.to_version = VersionRef{0, "web", "1"};
  d.requested_by = "ci";
  d.created_at = 1'700'000'000'000;
  d.status = DeploymentStatus::kSucceeded;
  d.stage = "done";
  d.bytes_done = d.bytes_total = 4096;
  d.started_at = 1'700'000'000'500;
  d.finished_at = 1'700'000'002'000;
  const json j = to_json(d);
  EXPECT_EQ(j["duration_ms"], 2000);
  auto back = deployment_from_json(j);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(to_json(*back), j);
}

TEST(Resources, ImageVersionTokenEventRoundTrip) {
  ImageVersion v;
  v.name = "web";
  v.version = "2026.11.1";
  v.size_bytes = 1 << 30;
  v.sha256 = std::string(64, 'a');
  v.format = "raw.zst";
  v.source_url = "http://images/web.raw.zst";
  v.labels = {{"os", "debian"}};
  v.created_at = 1'700'000'000'000;
  auto vb = image_version_from_json(to_json(v));
  ASSERT_TRUE(vb) << vb.error().message;
  EXPECT_EQ(to_json(*vb), to_json(v));

  Token t{4, "ci", Scope::kAdmin, 1'700'000'000'000, 1'700'000'100'000};
  auto tb = token_from_json(to_json(t));
  ASSERT_TRUE(tb) << tb.error().message;
  EXPECT_EQ(to_json(*tb), to_json(t));

  Event e{9, 1'700'000'000'000, "deployment.succeeded", 7, std::nullopt, {{"k", 1}}};
  auto eb = event_from_json(to_json(e));
  ASSERT_TRUE(eb) << eb.error().message;
  EXPECT_EQ(to_json(*eb), to_json(e));
}

TEST(Resources, AgentReportRoundTripsAndChecksRanges) {
  AgentReport r;
  r.stage = "writing";
  r.bytes_done = 10;
  r.bytes_total = 20;
  r.detail = {{"rate", 1.5}};
  r.result = DeploymentStatus::kFailed;
  r.reason = "disk gone";
  auto back = agent_report_from_json(to_json(r));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(to_json(*back), to_json(r));
  EXPECT_EQ(to_json(AgentReport{}), json::object());

  struct Case {
    const char* body;
    const char* names;  // the property the error must name
    Errc code;          // wrong type: 400; out of range: 422
  } bad[] = {
      {R"({"stage": 5})", "stage", Errc::kBadRequest},
      {R"({"stage": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"})", "stage",
       Errc::kInvalid},
      {R"({"bytes_done": -1})", "bytes_done", Errc::kInvalid},
      {R"({"bytes_done": 5, "bytes_total": 4})", "bytes_done", Errc::kInvalid},
      {R"({"bytes_done": 1.5})", "bytes_done", Errc::kBadRequest},
      {R"({"detail": []})", "detail", Errc::kBadRequest},
      {R"({"status": "exploded"})", "status", Errc::kInvalid},
  };
  for (const auto& c : bad) {
    auto r2 = agent_report_from_json(json::parse(c.body));
    ASSERT_FALSE(r2) << c.body;
    EXPECT_EQ(r2.error().code, c.code) << c.body;
    EXPECT_NE(r2.error().message.find(c.names), std::string::npos) << r2.error().message;
  }
}

TEST(Resources, DecodersNameTheBadProperty) {
  json m = to_json(full_machine());
  struct Case {
    const char* key;
    json value;
  } cases[] = {{"id", "7"},        {"state", "melting"},    {"macs", "52:54:00:12:00:01"},
               {"labels", {1, 2}}, {"created_at", "today"}, {"current_version", 5}};
  for (const auto& c : cases) {
    json broken = m;
    broken[c.key] = c.value;
    auto r = machine_from_json(broken);
    ASSERT_FALSE(r) << c.key;
    EXPECT_NE(r.error().message.find(c.key), std::string::npos) << r.error().message;
  }
  json missing = m;
  missing.erase("id");
  EXPECT_FALSE(machine_from_json(missing));
  EXPECT_FALSE(machine_from_json(json::array()));
  // Unknown properties are a newer server's business, not an error.
  json extra = m;
  extra["added_later"] = true;
  EXPECT_TRUE(machine_from_json(extra));
}

}  // namespace
}  // namespace kiln::proto
