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

}  // namespace kiln::store
