// Store: the event log and the aggregates behind /metrics.
#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

// --- events ----------------------------------------------------------------------------------

std::vector<Event> Store::events_since(std::int64_t cursor, int limit,
                                       std::optional<std::int64_t> machine_id) {
  auto db = reader();
  auto s = db->prepare(std::string("SELECT id, created_at, type, machine_id, deployment_id, data "
                                   "FROM events WHERE id > ? ") +
                       (machine_id ? "AND machine_id = ? " : "") + "ORDER BY id LIMIT ?");
  int i = 1;
  s.bind(i++, cursor);
  if (machine_id) s.bind(i++, *machine_id);
  s.bind(i, limit);
  std::vector<Event> out;
  while (s.step()) {
    out.push_back(Event{s.int64(0), s.int64(1), s.text(2), s.opt_int64(3), s.opt_int64(4),
                        parse_json_object(s.text(5))});
  }
  return out;
}

std::int64_t Store::last_event_id() {
  auto db = reader();
  auto s = db->prepare("SELECT COALESCE(MAX(id), 0) FROM events");
  s.step();
  return s.int64(0);
}

std::map<std::string, std::int64_t> Store::count_machines_by_state() {
  std::map<std::string, std::int64_t> out;
  for (auto st : proto::kAllMachineStates) out[proto::to_string(st)] = 0;
  auto db = reader();
  auto s =
      db->prepare("SELECT state, count(*) FROM machines WHERE deleted_at IS NULL GROUP BY state");
  while (s.step()) out[s.text(0)] = s.int64(1);
  return out;
}

std::map<std::string, std::int64_t> Store::count_deployments_by_status() {
  std::map<std::string, std::int64_t> out;
  for (auto st : proto::kAllDeploymentStatuses) out[proto::to_string(st)] = 0;
  auto db = reader();
  auto s = db->prepare("SELECT status, count(*) FROM deployments GROUP BY status");
  while (s.step()) out[s.text(0)] = s.int64(1);
  return out;
}

std::vector<DeploymentMilestone> Store::deployment_milestones_since(std::int64_t cursor,
                                                                    int limit) {
  auto db = reader();
  auto s = db->prepare(
      "SELECT e.id, e.created_at, e.type, d.id, d.created_at, d.started_at, d.written_at, "
      "d.booted_at, d.finished_at FROM events e JOIN deployments d ON d.id = e.deployment_id "
      "WHERE e.id > ? AND e.type IN ('deployment.progress', 'deployment.succeeded', "
      "'deployment.failed', 'deployment.booted', 'deployment.superseded') ORDER BY e.id LIMIT ?");
  s.bind(1, cursor).bind(2, limit);
  std::vector<DeploymentMilestone> out;
  while (s.step()) {
    out.push_back(DeploymentMilestone{s.int64(0), s.int64(1), s.text(2), s.int64(3), s.int64(4),
                                      s.opt_int64(5), s.opt_int64(6), s.opt_int64(7),
                                      s.opt_int64(8)});
  }
  return out;
}

std::map<std::string, std::optional<std::int64_t>> Store::oldest_active_deployments() {
  std::map<std::string, std::optional<std::int64_t>> out{{"pending", std::nullopt},
                                                         {"running", std::nullopt}};
  auto db = reader();
  auto s = db->prepare(
      "SELECT status, MIN(created_at) FROM deployments WHERE status IN ('pending', 'running') "
      "GROUP BY status");
  while (s.step()) out[s.text(0)] = s.int64(1);
  return out;
}

std::map<std::string, std::int64_t> Store::count_rollouts_by_state() {
  std::map<std::string, std::int64_t> out;
  for (auto st : proto::kAllRolloutStates) out[proto::to_string(st)] = 0;
  auto db = reader();
  auto s = db->prepare("SELECT state, count(*) FROM rollouts GROUP BY state");
  while (s.step()) out[s.text(0)] = s.int64(1);
  return out;
}

std::vector<std::int64_t> Store::bmc_machine_ids() {
  auto db = reader();
  auto s = db->prepare(
      "SELECT b.machine_id FROM machine_bmcs b JOIN machines m ON m.id = b.machine_id "
      "WHERE m.deleted_at IS NULL ORDER BY b.machine_id");
  std::vector<std::int64_t> out;
  while (s.step()) out.push_back(s.int64(0));
  return out;
}

}  // namespace kiln::store
