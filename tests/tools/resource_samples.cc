// Prints proto's resources as its codecs encode them, keyed by their proto/openapi.yaml schema
// name, for tests/integration/openapi_schemas_test.sh: each resource once with every optional
// part set and once with every optional part empty, so both shapes meet the schema.
#include <iostream>
#include <nlohmann/json.hpp>

#include "proto/resources.h"
#include "proto/rollout.h"

using namespace kiln::proto;
using json = nlohmann::json;

int main() {
  const std::int64_t t = 1'700'000'000'123;
  Machine full;
  full.id = 7;
  full.name = "r12-node1";
  full.macs = {"52:54:00:12:00:01", "52:54:00:12:00:02"};
  full.uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
  full.ipv4 = "10.0.0.7";
  full.state = MachineState::kDeploying;
  full.labels = {{"rack", "r12"}};
  full.inventory_json = R"({"cpu":{"cores":4}})";
  full.current_version = VersionRef{0, "web", "1"};
  full.active_deployment_id = 3;
  full.assigned_version = VersionRef{0, "web", "2"};
  full.created_at = full.updated_at = t;
  Machine bare;
  bare.macs = {"52:54:00:12:00:03"};
  bare.created_at = bare.updated_at = t;

  Deployment d;
  d.id = 3;
  d.machine_id = 7;
  d.kind = "assign";
  d.from_version = VersionRef{0, "web", "1"};
  d.to_version = VersionRef{0, "web", "2"};
  d.requested_by = "ci";
  d.created_at = t;
  d.status = DeploymentStatus::kSucceeded;
  d.stage = "done";
  d.bytes_done = d.bytes_total = 4096;
  d.started_at = t + 1;
  d.finished_at = t + 2;
  Deployment pending;
  pending.id = 4;
  pending.machine_id = 7;
  pending.kind = "rollback";
  pending.to_version = VersionRef{0, "web", "1"};
  pending.created_at = t;

  ImageVersion v;
  v.name = "web";
  v.version = "2";
  v.size_bytes = 1 << 20;
  v.sha256 = std::string(64, 'a');
  v.format = "raw.zst";
  v.source_url = "http://images/web.raw.zst";
  v.signature = std::string(128, 'c');
  v.labels = {{"os", "debian"}};
  v.created_by = "ci";
  v.created_at = t;
  ImageVersion kiln = v;
  kiln.format = "kiln";
  kiln.source_url.reset();
  kiln.labels = json::object();

  Token tok{1, "ci", Scope::kAdmin, t, t + 5};
  Token live{2, "grafana", Scope::kRead, t, std::nullopt};
  Event ev{9, t, "deployment.succeeded", 7, 3, {{"k", 1}}};
  Event bare_ev{10, t, "token.created", std::nullopt, std::nullopt, json::object()};

  AgentReport progress;
  progress.stage = "writing";
  progress.bytes_done = 1;
  progress.bytes_total = 2;
  progress.detail = {{"rate", 1.5}};
  AgentReport result = progress;
  result.result = DeploymentStatus::kFailed;
  result.reason = "disk gone";
  AgentReport done;
  done.result = DeploymentStatus::kSucceeded;
  SuccessProof proof;
  proof.manifest_sha256 = std::string(64, 'a');
  proof.image_sha256 = std::string(64, 'b');
  proof.image_bytes = 10;
  proof.written_bytes = 4;
  proof.skipped_bytes = 3;
  proof.zeroed_bytes = 2;
  proof.unmapped_bytes = 1;
  done.proof = proof;

  // A rollout in its first batches: a canary done, a machine deploying, one skipped.
  Rollout ro;
  ro.id = 3;
  ro.selector = "rack=r1";
  ro.target = VersionRef{2, "web", "2"};
  ro.batch_percent = 5;
  ro.batch_size = 2;
  ro.canary = 1;
  ro.spread_by = "rack";
  ro.config_sha256 = std::string(64, 'c');
  ro.state = RolloutState::kRunning;
  ro.requested_by = "ops";
  ro.created_at = 1'700'000'000'000;
  ro.started_at = ro.created_at + 5;
  ro.updated_at = ro.created_at + 9;
  RolloutMachine canary;
  canary.machine_id = 1;
  canary.name = "m1";
  canary.state = RolloutMachineState::kDone;
  canary.previous = VersionRef{1, "web", "1"};
  canary.deployment_id = 10;
  canary.rollback_deployment_id = 12;
  canary.started_at = ro.created_at + 6;
  canary.finished_at = ro.created_at + 7;
  RolloutMachine next;
  next.machine_id = 2;
  next.position = 1;
  next.batch = 1;
  next.state = RolloutMachineState::kDeploying;
  RolloutMachine skipped;
  skipped.machine_id = 3;
  skipped.position = 2;
  skipped.batch = -1;
  skipped.state = RolloutMachineState::kSkipped;
  skipped.reason = "no BMC";
  ro.machines = {canary, next, skipped};
  Rollout done_ro = ro;
  done_ro.batch_percent.reset();
  done_ro.batch_count = 2;
  done_ro.spread_by.reset();
  done_ro.config_sha256.reset();
  done_ro.state = RolloutState::kSucceeded;
  done_ro.finished_at = ro.created_at + 20;
  done_ro.machines = {canary};

  json out = {
      {"Rollout", {to_json(ro, true), to_json(done_ro, false)}},
      {"RolloutMachine", {to_json(canary), to_json(next), to_json(skipped)}},
      {"Machine", {to_json(full), to_json(bare)}},
      {"Deployment", {to_json(d), to_json(pending)}},
      {"ImageVersion", {to_json(v), to_json(kiln)}},
      {"Token", {to_json(tok), to_json(live)}},
      {"Event", {to_json(ev), to_json(bare_ev)}},
      {"AgentProgress", {to_json(progress), to_json(AgentReport{})}},
      {"AgentResult", {to_json(result), to_json(done)}},
  };
  std::cout << out.dump(2) << "\n";
  return 0;
}
