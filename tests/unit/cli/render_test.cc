// cli/render.h: what `kiln` prints for decoded resources: the same text the server's JSON
// carries (times as RFC 3339 with milliseconds, version references as image:version), absent
// values as "-".
#include "cli/render.h"

#include <gtest/gtest.h>

#include <map>
#include <sstream>

namespace kiln::cli {
namespace {

proto::Machine machine() {
  proto::Machine m;
  m.id = 7;
  m.name = "web-1";
  m.macs = {"52:54:00:12:00:01", "52:54:00:12:00:02"};
  m.uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
  m.state = proto::MachineState::kDeploying;
  m.state_reason = "assigned";
  m.labels = {{"role", "web"}, {"rack", "r12"}};
  m.inventory_json = R"({"cpu":{"cores":4}})";
  m.current_version = proto::VersionRef{0, "ubuntu", "22.04.1"};
  m.active_deployment_id = 3;
  m.assigned_version = proto::VersionRef{0, "ubuntu", "22.04.2"};
  m.created_at = 1'700'000'000'123;
  m.updated_at = 1'700'000'001'456;
  return m;
}

proto::Deployment deployment() {
  proto::Deployment d;
  d.id = 3;
  d.machine_id = 7;
  d.kind = "assign";
  d.from_version = proto::VersionRef{0, "ubuntu", "22.04.1"};
  d.to_version = proto::VersionRef{0, "ubuntu", "22.04.2"};
  d.requested_by = "token:ops";
  d.created_at = 1'700'000'000'000;
  d.status = proto::DeploymentStatus::kSucceeded;
  d.stage = "write";
  d.bytes_done = 512 * 1024;
  d.bytes_total = 1024 * 1024;
  d.started_at = 1'700'000'001'000;
  d.finished_at = 1'700'000'012'345;
  return d;
}

// "Key:   value" lines -> {key: value}.
std::map<std::string, std::string> details(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    const auto value = line.find_first_not_of(' ', colon + 1);
    out[line.substr(0, colon)] = value == std::string::npos ? "" : line.substr(value);
  }
  return out;
}

TEST(CliRender, MachineRowFromTypedMachine) {
  auto t = machine_table();
  add_machine_row(t, machine());
  proto::Machine bare;
  bare.id = 8;
  add_machine_row(t, bare);
  std::ostringstream out;
  t.print(out);
  EXPECT_EQ(out.str(),
            "ID  NAME   STATE       MACS                                 LABELS             "
            "CURRENT         ASSIGNED\n"
            "7   web-1  deploying   52:54:00:12:00:01,52:54:00:12:00:02  rack=r12,role=web  "
            "ubuntu:22.04.1  ubuntu:22.04.2\n"
            "8   -      discovered  -                                    -                  "
            "-               -\n");
}

TEST(CliRender, MachineDetailsFromDecodedJsonMatchTheServersText) {
  const auto j = proto::to_json(machine());
  auto m = proto::machine_from_json(j);
  ASSERT_TRUE(m) << m.error().message;
  std::ostringstream out;
  print_machine(out, *m);
  auto d = details(out.str());
  EXPECT_EQ(d["ID"], "7");
  EXPECT_EQ(d["State"], "deploying (assigned)");
  EXPECT_EQ(d["MACs"], "52:54:00:12:00:01, 52:54:00:12:00:02");
  EXPECT_EQ(d["Labels"], "rack=r12, role=web");
  EXPECT_EQ(d["Current"], "ubuntu:22.04.1");
  EXPECT_EQ(d["Assigned"], "ubuntu:22.04.2 (deployment 3)");
  EXPECT_EQ(d["Inventory"], j["inventory"].dump());
  EXPECT_EQ(d["Created"], j["created_at"].get<std::string>());
  EXPECT_EQ(d["Updated"], j["updated_at"].get<std::string>());
}

TEST(CliRender, MachineWithoutInventoryOrAssignment) {
  proto::Machine m;
  m.id = 1;
  std::ostringstream out;
  print_machine(out, m);
  auto d = details(out.str());
  EXPECT_EQ(d.count("Inventory"), 0u);
  EXPECT_EQ(d["Assigned"], "-");
  EXPECT_EQ(d["UUID"], "-");
  EXPECT_EQ(d["Created"], "1970-01-01T00:00:00.000Z");
}

TEST(CliRender, DeploymentDetailsFromDecodedJson) {
  const auto j = proto::to_json(deployment());
  auto dep = proto::deployment_from_json(j);
  ASSERT_TRUE(dep) << dep.error().message;
  std::ostringstream out;
  print_deployment(out, *dep);
  auto d = details(out.str());
  EXPECT_EQ(d["From"], "ubuntu:22.04.1");
  EXPECT_EQ(d["To"], "ubuntu:22.04.2");
  EXPECT_EQ(d["Status"], "succeeded");
  EXPECT_EQ(d["Progress"], "512.0 KiB / 1.0 MiB (50%)");
  EXPECT_EQ(d["Started"], j["started_at"].get<std::string>());
  EXPECT_EQ(d["Finished"], j["finished_at"].get<std::string>());
  // The server's duration_ms, in seconds.
  EXPECT_EQ(j["duration_ms"].get<std::int64_t>(), 12'345);
  EXPECT_EQ(d["Duration"], "12.3 s");
}

TEST(CliRender, AssignmentOutcomes) {
  std::ostringstream created, same, first;
  print_assignment(created, deployment(), true, "2");
  EXPECT_EQ(created.str(),
            "deployment 3: machine 7 ubuntu:22.04.1 -> ubuntu:22.04.2 (assign, succeeded)\n"
            "superseded deployment 2\n");
  print_assignment(same, deployment(), false, "");
  EXPECT_EQ(same.str(),
            "deployment 3: machine 7 is already deploying ubuntu:22.04.2 (succeeded); nothing "
            "changed\n");
  auto d = deployment();
  d.from_version.reset();
  print_assignment(first, d, true, "");
  EXPECT_EQ(first.str(), "deployment 3: machine 7 (none) -> ubuntu:22.04.2 (assign, succeeded)\n");
}

TEST(CliRender, EventLine) {
  proto::Event e;
  e.id = 42;
  e.created_at = 1'700'000'000'123;
  e.type = "deployment.progress";
  e.machine_id = 7;
  e.deployment_id = 3;
  e.data = {{"stage", "write"}};
  EXPECT_EQ(event_line(e),
            "2023-11-14T22:13:20.123Z 42 deployment.progress machine=7 deployment=3 "
            "{\"stage\":\"write\"}");
  e.machine_id.reset();
  e.deployment_id.reset();
  e.data = nlohmann::json::object();
  EXPECT_EQ(event_line(e), "2023-11-14T22:13:20.123Z 42 deployment.progress");
}

}  // namespace
}  // namespace kiln::cli
