// Store: rollouts (docs/rollouts.md). The plan (which machine in which batch) is fixed at
// creation; the engine (provision/rollout_service) moves machines forward through the methods
// here, each move in one transaction with the deployment it starts and the event that records
// it, so a kilnd killed at any moment resumes from exactly what was committed.
#include <algorithm>
#include <map>
#include <set>

#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers
using nlohmann::json;
using proto::Rollout;
using proto::RolloutMachine;
using proto::RolloutMachineState;
using proto::RolloutState;

namespace {

constexpr char kActiveRollouts[] = "('pending', 'running', 'paused', 'rolling_back')";

Error rollout_not_found(std::int64_t id) {
  return make_error(Errc::kNotFound, "rollout " + std::to_string(id) + " not found");
}

void rollout_event(Db& db, std::int64_t now, std::string_view type, std::int64_t rollout_id,
                   std::optional<std::int64_t> machine_id, std::optional<std::int64_t> deployment,
                   json data) {
  data["rollout"] = rollout_id;
  append_event(db, now, type, machine_id, deployment, data);
}

// `machines` false: the per-batch summary instead of every machine (one grouped query).
std::optional<Rollout> load_rollout(Db& db, std::int64_t id, bool machines = true) {
  auto s = db.prepare(
      "SELECT r.id, r.selector, v.id, v.name, v.version, r.batch_count, r.batch_percent, "
      "r.batch_size, r.canary, r.max_unavailable, r.max_failures, r.on_failure, r.gate, "
      "r.gate_timeout_s, r.pause_between_s, r.spread_by, r.config_sha256, r.state, r.reason, "
      "r.failure_base, r.requested_by, r.created_at, r.started_at, r.finished_at, r.updated_at "
      "FROM rollouts r JOIN image_versions v ON v.id = r.image_version_id WHERE r.id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  Rollout r;
  r.id = s.int64(0);
  r.selector = s.text(1);
  r.target = VersionRef{s.int64(2), s.text(3), s.text(4)};
  if (auto c = s.opt_int64(5)) r.batch_count = static_cast<int>(*c);
  if (auto p = s.opt_int64(6)) r.batch_percent = static_cast<int>(*p);
  r.batch_size = static_cast<int>(s.int64(7));
  r.canary = static_cast<int>(s.int64(8));
  r.max_unavailable = static_cast<int>(s.int64(9));
  r.max_failures = static_cast<int>(s.int64(10));
  r.on_failure = s.text(11);
  r.gate = s.text(12);
  r.gate_timeout_s = static_cast<int>(s.int64(13));
  r.pause_between_s = static_cast<int>(s.int64(14));
  r.spread_by = s.opt_text(15);
  r.config_sha256 = s.opt_text(16);
  r.state = proto::parse_rollout_state(s.text(17)).value_or(RolloutState::kFailed);
  r.reason = s.text(18);
  r.failure_base = static_cast<int>(s.int64(19));
  r.requested_by = s.text(20);
  r.created_at = s.int64(21);
  r.started_at = s.opt_int64(22);
  r.finished_at = s.opt_int64(23);
  r.updated_at = s.int64(24);
  if (!machines) {
    auto g = db.prepare(
        "SELECT batch, state, COUNT(*), MIN(started_at), MAX(finished_at) FROM rollout_machines "
        "WHERE rollout_id = ? GROUP BY batch, state ORDER BY batch");
    g.bind(1, id);
    std::vector<proto::RolloutBatch> out;
    while (g.step()) {
      const int batch = static_cast<int>(g.int64(0));
      if (out.empty() || out.back().index != batch) {
        out.emplace_back();
        out.back().index = batch;
        out.back().canary = r.canary > 0 && batch == 0;
      }
      auto& b = out.back();
      const auto st =
          proto::parse_rollout_machine_state(g.text(1)).value_or(RolloutMachineState::kFailed);
      for (std::int64_t i = 0; i < g.int64(2); ++i) b.counts.add(st);
      if (auto t = g.opt_int64(3); t && (!b.started_at || *t < *b.started_at)) b.started_at = t;
      if (auto t = g.opt_int64(4); t && (!b.finished_at || *t > *b.finished_at)) b.finished_at = t;
    }
    for (auto& b : out) {
      if (b.counts.pending > 0 || b.counts.deploying > 0) b.finished_at.reset();
    }
    r.summary = std::move(out);
    return r;
  }
  auto m = db.prepare(
      "SELECT rm.machine_id, m.name, rm.position, rm.batch, rm.state, rm.reason, pv.id, pv.name, "
      "pv.version, rm.deployment_id, rm.rollback_deployment_id, rm.started_at, rm.finished_at "
      "FROM rollout_machines rm JOIN machines m ON m.id = rm.machine_id "
      "LEFT JOIN image_versions pv ON pv.id = rm.previous_version_id "
      "WHERE rm.rollout_id = ? ORDER BY rm.position");
  m.bind(1, id);
  while (m.step()) {
    RolloutMachine rm;
    rm.machine_id = m.int64(0);
    rm.name = m.text(1);
    rm.position = static_cast<int>(m.int64(2));
    rm.batch = static_cast<int>(m.int64(3));
    rm.state = proto::parse_rollout_machine_state(m.text(4)).value_or(RolloutMachineState::kFailed);
    rm.reason = m.text(5);
    rm.previous = version_ref(m, 6);
    rm.deployment_id = m.opt_int64(9);
    rm.rollback_deployment_id = m.opt_int64(10);
    rm.started_at = m.opt_int64(11);
    rm.finished_at = m.opt_int64(12);
    r.machines.push_back(std::move(rm));
  }
  return r;
}

void set_machine(Db& db, std::int64_t rollout_id, std::int64_t machine_id,
                 RolloutMachineState state, const std::string& reason, std::int64_t now,
                 bool finished) {
  db.prepare(
        "UPDATE rollout_machines SET state = ?, reason = ?, "
        "finished_at = CASE WHEN ? <> 0 THEN CAST(? AS BIGINT) ELSE finished_at END "
        "WHERE rollout_id = ? AND machine_id = ?")
      .bind(1, std::string(proto::to_string(state)))
      .bind(2, reason)
      .bind(3, static_cast<std::int64_t>(finished ? 1 : 0))
      .bind(4, now)
      .bind(5, rollout_id)
      .bind(6, machine_id)
      .run();
}

// Pending machines become skipped with `why` (the rollout stopped before them).
void skip_pending(Db& db, std::int64_t rollout_id, const std::string& why) {
  db.prepare(
        "UPDATE rollout_machines SET state = 'skipped', reason = ? "
        "WHERE rollout_id = ? AND state = 'pending'")
      .bind(1, why)
      .bind(2, rollout_id)
      .run();
}

void set_state(Db& db, std::int64_t now, Rollout& r, RolloutState to, const std::string& reason) {
  const bool terminal = proto::is_terminal(to);
  db.prepare(
        "UPDATE rollouts SET state = ?, reason = ?, updated_at = ?, "
        "started_at = COALESCE(started_at, CASE WHEN ? = 'running' THEN CAST(? AS BIGINT) END), "
        "finished_at = CASE WHEN ? <> 0 THEN CAST(? AS BIGINT) ELSE NULL END WHERE id = ?")
      .bind(1, std::string(proto::to_string(to)))
      .bind(2, reason)
      .bind(3, now)
      .bind(4, std::string(proto::to_string(to)))
      .bind(5, now)
      .bind(6, static_cast<std::int64_t>(terminal ? 1 : 0))
      .bind(7, now)
      .bind(8, r.id)
      .run();
  if (to == RolloutState::kRollingBack) skip_pending(db, r.id, "the rollout is rolled back");
  if (to == RolloutState::kAborted) skip_pending(db, r.id, "the rollout was aborted");
  if (to == RolloutState::kFailed) skip_pending(db, r.id, "the rollout failed: " + reason);
  rollout_event(db, now, std::string("rollout.") + proto::to_string(to), r.id, std::nullopt,
                std::nullopt,
                {{"from", proto::to_string(r.state)},
                 {"reason", reason},
                 {"image", r.target.name},
                 {"version", r.target.version}});
  r.state = to;
}

// Machines in the order they deploy: by id, or round-robin over the values of label
// `spread_by` (sorted; machines without it form one more group), so every batch takes a few
// machines from each rack rather than a whole rack at once.
std::vector<std::int64_t> spread(const std::vector<std::int64_t>& ids,
                                 const std::map<std::int64_t, std::string>& group_of) {
  std::map<std::string, std::vector<std::int64_t>> groups;
  for (auto id : ids) {
    auto it = group_of.find(id);
    groups[it == group_of.end() ? std::string() : it->second].push_back(id);
  }
  std::vector<std::int64_t> out;
  for (std::size_t round = 0; out.size() < ids.size(); ++round) {
    for (auto& [_, g] : groups) {
      if (round < g.size()) out.push_back(g[round]);
    }
  }
  return out;
}

// The rollback of one machine of a rollout: back to the version it ran before the rollout, with
// the configuration it ran it with (its latest deployment of that version before the rollout's),
// with reboot. A machine deployed by someone else since the rollout's deployment is theirs: not
// rolled back (an error saying so), unless that deployment already takes it back to its
// previous version (kilnd's own auto-rollback), which is then followed.
Result<AssignOutcome> roll_back_one(Db& db, std::int64_t now, const RolloutMachine& rm,
                                    const AssignRequest& base) {
  auto latest = db.prepare(
      "SELECT id, to_version_id, status FROM deployments WHERE machine_id = ? "
      "ORDER BY id DESC LIMIT 1");
  latest.bind(1, rm.machine_id);
  if (!latest.step()) return make_error(Errc::kConflict, "no deployment to roll back");
  const std::int64_t latest_id = latest.int64(0);
  if (!rm.previous) {
    return make_error(Errc::kConflict,
                      "it ran no version before the rollout: there is nothing to go back to");
  }
  if (latest_id != *rm.deployment_id) {
    const std::string status = latest.text(2);
    if (latest.int64(1) == rm.previous->id && status != "failed" && status != "superseded") {
      AssignOutcome adopted;
      adopted.deployment = *load_deployment(db, latest_id);
      adopted.created = false;
      return adopted;
    }
    return make_error(Errc::kConflict, "deployed by someone else since the rollout (deployment " +
                                           std::to_string(latest_id) + "): not rolled back");
  }
  auto v = db.prepare(std::string(kImageSelect) + "AND id = ?");
  v.bind(1, rm.previous->id);
  if (!v.step()) {
    return make_error(Errc::kConflict, "its previous version " + rm.previous->name + ":" +
                                           rm.previous->version + " has been deleted");
  }
  const ImageVersion target = image_from_row(v);
  std::optional<ConfigRecord> config;
  auto c = db.prepare(
      "SELECT config, config_sha256 FROM deployments WHERE machine_id = ? AND to_version_id = ? "
      "AND id < ? AND status IN ('booted', 'succeeded') ORDER BY id DESC LIMIT 1");
  c.bind(1, rm.machine_id).bind(2, target.id).bind(3, *rm.deployment_id);
  if (c.step() && !c.is_null(0)) config = ConfigRecord{c.text(0), c.text(1), 0};
  AssignRequest req = base;
  req.image = target.name;
  req.version = target.version;
  req.reboot = true;
  req.reboot_required = true;
  req.force = true;
  req.config = nullptr;
  return assign_in_tx(db, now, rm.machine_id, target, req, "rollback", config);
}

// Conflict when one of `ids` is in an unfinished rollout other than `self`.
std::optional<Error> busy_elsewhere(Db& db, std::int64_t self,
                                    const std::vector<std::int64_t>& ids) {
  auto busy = db.prepare(std::string("SELECT rm.machine_id, rm.rollout_id FROM rollout_machines "
                                     "rm JOIN rollouts r ON r.id = rm.rollout_id WHERE r.state "
                                     "IN ") +
                         kActiveRollouts + " AND r.id != ? ORDER BY rm.machine_id");
  busy.bind(1, self);
  std::set<std::int64_t> wanted(ids.begin(), ids.end());
  std::string clash;
  int n = 0;
  while (busy.step()) {
    if (!wanted.count(busy.int64(0))) continue;
    if (n++ < 5) {
      clash += (clash.empty() ? "" : ", ") + std::string("machine ") +
               std::to_string(busy.int64(0)) + " (rollout " + std::to_string(busy.int64(1)) + ")";
    }
  }
  if (n == 0) return std::nullopt;
  return make_error(Errc::kConflict, std::to_string(n) +
                                         " of the machines are in a rollout that has not "
                                         "finished: " +
                                         clash + (n > 5 ? ", ..." : ""));
}

// Rollout `id` when it is in state `want`: not found, or conflict naming the state it is in.
Result<Rollout> load_rollout_in(Db& db, std::int64_t id, RolloutState want) {
  auto r = load_rollout(db, id);
  if (!r) return rollout_not_found(id);
  if (r->state != want) {
    return make_error(Errc::kConflict, "rollout " + std::to_string(id) + " is " +
                                           proto::to_string(r->state) + ", not " +
                                           proto::to_string(want));
  }
  return std::move(*r);
}

}  // namespace

Result<Rollout> Store::create_rollout(const NewRollout& req) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto target = load_image_version(db, req.image, req.version);
  if (!target) return image_not_found(req.image, req.version);
  auto selected = select_machine_ids(db, req.selector);
  if (!selected) return selected.error();
  const auto& ids = *selected;
  // A machine is in one unfinished rollout at a time.
  if (auto clash = busy_elsewhere(db, 0, ids)) return *clash;
  // What each machine is: deployable, or why not (reported, never silently left out).
  std::map<std::int64_t, std::string> skip;  // machine -> reason
  std::set<std::int64_t> already;            // runs the target, booted: nothing to do
  std::map<std::int64_t, std::string> group_of;
  for (auto id : ids) {
    auto m = load_machine(db, id);
    if (req.spread_by) {
      if (auto it = m->labels.find(*req.spread_by); it != m->labels.end()) {
        group_of[id] = it->second;
      }
    }
    if (!m->bmc_driver) {
      skip[id] = "no BMC: kilnd cannot reboot it (set one with PUT /api/v1/machines/" +
                 std::to_string(id) + "/bmc)";
    } else if (m->state == MachineState::kFailed) {
      skip[id] = "failed before: " + m->state_reason;
    } else if (m->active_deployment_id) {
      skip[id] = "deployment " + std::to_string(*m->active_deployment_id) + " is in progress";
    } else {
      auto last = db.prepare(
          "SELECT to_version_id, status FROM deployments WHERE machine_id = ? "
          "ORDER BY id DESC LIMIT 1");
      last.bind(1, id);
      if (!req.config && last.step() && last.int64(0) == target->id && last.text(1) == "booted") {
        already.insert(id);
      }
    }
  }
  std::vector<std::int64_t> deployable;
  for (auto id : ids) {
    if (!skip.count(id) && !already.count(id)) deployable.push_back(id);
  }
  deployable = spread(deployable, group_of);
  const int n = static_cast<int>(deployable.size());
  int batch_size = req.batch_count.value_or(1);
  if (req.batch_percent) batch_size = (n * *req.batch_percent + 99) / 100;
  batch_size = std::max(1, batch_size);
  const int canary = std::min(req.canary, n);
  const int max_unavailable = req.max_unavailable.value_or(std::max(batch_size, canary));
  auto ins = db.prepare(
      "INSERT INTO rollouts (selector, image_version_id, batch_count, batch_percent, "
      "batch_size, canary, max_unavailable, max_failures, on_failure, gate, gate_timeout_s, "
      "pause_between_s, spread_by, config, config_sha256, state, requested_by, created_at, "
      "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) "
      "RETURNING id");
  ins.bind(1, proto::format_selector(req.selector))
      .bind(2, target->id)
      .bind(3, req.batch_count ? std::optional<std::int64_t>(*req.batch_count) : std::nullopt)
      .bind(4, req.batch_percent ? std::optional<std::int64_t>(*req.batch_percent) : std::nullopt)
      .bind(5, static_cast<std::int64_t>(batch_size))
      .bind(6, static_cast<std::int64_t>(canary))
      .bind(7, static_cast<std::int64_t>(max_unavailable))
      .bind(8, static_cast<std::int64_t>(req.max_failures))
      .bind(9, req.on_failure)
      .bind(10, req.gate)
      .bind(11, static_cast<std::int64_t>(req.gate_timeout_s))
      .bind(12, static_cast<std::int64_t>(req.pause_between_s))
      .bind(13, req.spread_by)
      .bind(14, req.config ? std::optional<std::string>(req.config->sealed) : std::nullopt)
      .bind(15, req.config ? std::optional<std::string>(req.config->sha256) : std::nullopt)
      .bind(16, req.requested_by)
      .bind(17, now)
      .bind(18, now);
  const std::int64_t rid = returning_id(ins);
  struct Row {
    std::int64_t mid;
    int position;
    int batch;
    std::string_view state;
    std::string reason;
  };
  std::vector<Row> rows;
  rows.reserve(ids.size());
  for (int i = 0; i < n; ++i) {
    int batch = i < canary ? 0 : (canary > 0 ? 1 : 0) + (i - canary) / batch_size;
    rows.push_back({deployable[static_cast<std::size_t>(i)], i, batch, "pending", ""});
  }
  int position = n;
  for (auto id : ids) {
    if (already.count(id)) {
      rows.push_back({id, position++, -1, "done",
                      "already runs " + target->name + ":" + target->version + " (booted)"});
    } else if (auto it = skip.find(id); it != skip.end()) {
      rows.push_back({id, position++, -1, "skipped", it->second});
    }
  }
  // The plan's rows, several per statement (one round trip each on PostgreSQL).
  for_chunks(rows.size(), [&](std::size_t at, std::size_t count) {
    std::string sql =
        "INSERT INTO rollout_machines (rollout_id, machine_id, position, batch, state, reason, "
        "previous_version_id, finished_at) VALUES ";
    for (std::size_t k = 0; k < count; ++k) {
      sql += k ? ", " : "";
      sql += "(?, ?, ?, ?, ?, ?, (SELECT current_version_id FROM machines WHERE id = ?), ?)";
    }
    auto s = db.prepare(sql);
    int i = 1;
    for (std::size_t k = 0; k < count; ++k) {
      const Row& r = rows[at + k];
      s.bind(i++, rid)
          .bind(i++, r.mid)
          .bind(i++, static_cast<std::int64_t>(r.position))
          .bind(i++, static_cast<std::int64_t>(r.batch))
          .bind(i++, r.state)
          .bind(i++, r.reason)
          .bind(i++, r.mid)
          .bind(i++, r.state == "pending" ? std::nullopt : std::optional<std::int64_t>(now));
    }
    s.run();
  });
  json skipped = json::array();
  for (const auto& [id, why] : skip) skipped.push_back({{"machine_id", id}, {"reason", why}});
  rollout_event(db, now, "rollout.created", rid, std::nullopt, std::nullopt,
                {{"image", target->name},
                 {"version", target->version},
                 {"selector", proto::format_selector(req.selector)},
                 {"machines", ids.size()},
                 {"deployable", n},
                 {"already", already.size()},
                 {"skipped", std::move(skipped)},
                 {"batch_size", batch_size},
                 {"canary", canary},
                 {"by", req.requested_by}});
  auto out = load_rollout(db, rid);
  tx.commit();
  return std::move(*out);
}

Result<Rollout> Store::get_rollout(std::int64_t id) {
  auto db = reader();
  Transaction tx(*db, TxKind::kRead);
  auto r = load_rollout(*db, id);
  tx.commit();
  if (!r) return rollout_not_found(id);
  return std::move(*r);
}

std::vector<Rollout> Store::list_rollouts(std::optional<RolloutState> state, int limit) {
  auto db = reader();
  Transaction tx(*db, TxKind::kRead);
  auto s = db->prepare(state ? "SELECT id FROM rollouts WHERE state = ? ORDER BY id DESC LIMIT ?"
                             : "SELECT id FROM rollouts ORDER BY id DESC LIMIT ?");
  if (state) {
    s.bind(1, std::string(proto::to_string(*state))).bind(2, static_cast<std::int64_t>(limit));
  } else {
    s.bind(1, static_cast<std::int64_t>(limit));
  }
  std::vector<std::int64_t> ids;
  while (s.step()) ids.push_back(s.int64(0));
  std::vector<Rollout> out;
  for (auto id : ids) {
    if (auto r = load_rollout(*db, id, /*machines=*/false)) out.push_back(std::move(*r));
  }
  tx.commit();
  return out;
}

std::vector<std::int64_t> Store::active_rollout_ids() {
  auto db = reader();
  // An aborted rollout is still followed while machines it started are deploying, so their
  // outcome shows in it.
  auto s = db->prepare(std::string("SELECT id FROM rollouts r WHERE state IN ") + kActiveRollouts +
                       " OR (state = 'aborted' AND EXISTS (SELECT 1 FROM rollout_machines rm "
                       "WHERE rm.rollout_id = r.id AND rm.state IN ('deploying', "
                       "'rolling_back'))) ORDER BY id");
  std::vector<std::int64_t> out;
  while (s.step()) out.push_back(s.int64(0));
  return out;
}

Result<Rollout> Store::rollout_action(std::int64_t id, RolloutAction action,
                                      const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto r = load_rollout(db, id);
  if (!r) return rollout_not_found(id);
  auto refuse = [&](const char* what) -> Error {
    return make_error(Errc::kConflict, "rollout " + std::to_string(id) + " is " +
                                           proto::to_string(r->state) + ": it cannot " + what);
  };
  const auto st = r->state;
  switch (action) {
    case RolloutAction::kPause:
      if (st != RolloutState::kRunning && st != RolloutState::kPending) return refuse("pause");
      set_state(db, now, *r, RolloutState::kPaused, "paused by " + who);
      break;
    case RolloutAction::kResume:
      if (st != RolloutState::kPaused) return refuse("resume");
      // Resuming acknowledges the failures so far: max_failures counts new ones.
      db.prepare(
            "UPDATE rollouts SET failure_base = (SELECT COUNT(*) FROM rollout_machines "
            "WHERE rollout_id = ? AND state = 'failed') WHERE id = ?")
          .bind(1, id)
          .bind(2, id)
          .run();
      set_state(db, now, *r, RolloutState::kRunning, "resumed by " + who);
      break;
    case RolloutAction::kAbort:
      if (proto::is_terminal(st) || st == RolloutState::kRollingBack) return refuse("abort");
      set_state(db, now, *r, RolloutState::kAborted, "aborted by " + who);
      break;
    case RolloutAction::kRollback: {
      if (st == RolloutState::kRollingBack || st == RolloutState::kRolledBack) {
        return refuse("roll back");
      }
      // Rolling back machines another unfinished rollout is moving would fight it.
      std::vector<std::int64_t> touched;
      for (const auto& m : r->machines) {
        if (m.deployment_id) touched.push_back(m.machine_id);
      }
      if (auto clash = busy_elsewhere(db, id, touched)) return *clash;
      set_state(db, now, *r, RolloutState::kRollingBack, "rollback requested by " + who);
      break;
    }
  }
  auto out = load_rollout(db, id);
  tx.commit();
  return std::move(*out);
}

Result<Rollout> Store::sync_rollout(std::int64_t id, bool timeouts) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto r = load_rollout(db, id);
  if (!r) return rollout_not_found(id);
  const bool written_gate = r->gate == "written";
  const std::int64_t timeout_ms = static_cast<std::int64_t>(r->gate_timeout_s) * 1000;
  std::set<int> moved_batches;
  bool changed = false;
  for (const auto& m : r->machines) {
    const bool forward = m.state == RolloutMachineState::kDeploying;
    const bool back = m.state == RolloutMachineState::kRollingBack;
    if (!forward && !back) continue;
    const auto dep_id = forward ? m.deployment_id : m.rollback_deployment_id;
    if (!dep_id) continue;
    auto d = load_deployment(db, *dep_id);
    if (!d) continue;
    std::optional<RolloutMachineState> next;
    std::string why;
    if (d->status == DeploymentStatus::kBooted ||
        (written_gate && d->status == DeploymentStatus::kSucceeded)) {
      next = forward ? RolloutMachineState::kDone : RolloutMachineState::kRolledBack;
    } else if (d->status == DeploymentStatus::kFailed ||
               d->status == DeploymentStatus::kSuperseded) {
      next = forward ? RolloutMachineState::kFailed : RolloutMachineState::kRollbackFailed;
      why = "deployment " + std::to_string(d->id) + " " + proto::to_string(d->status) + ": " +
            d->status_reason;
    } else if (timeouts && now - d->created_at > timeout_ms) {
      next = forward ? RolloutMachineState::kFailed : RolloutMachineState::kRollbackFailed;
      why = std::string(written_gate ? "not written" : "no confirmed boot") + " within " +
            std::to_string(r->gate_timeout_s) + " s (deployment " + std::to_string(d->id) + " is " +
            proto::to_string(d->status) + ")";
    }
    if (!next) continue;
    // Back on its previous version, a machine keeps the reason it was rolled back for.
    set_machine(db, id, m.machine_id, *next, why.empty() && back ? m.reason : why, now, true);
    changed = true;
    if (forward) moved_batches.insert(m.batch);
    const bool bad =
        *next == RolloutMachineState::kFailed || *next == RolloutMachineState::kRollbackFailed;
    json data = {{"state", proto::to_string(*next)}, {"batch", m.batch}};
    if (bad) data["reason"] = why;
    rollout_event(db, now, bad ? "rollout.machine_failed" : "rollout.machine_done", id,
                  m.machine_id, *dep_id, std::move(data));
  }
  if (!changed) {
    tx.commit();
    return std::move(*r);
  }
  db.prepare("UPDATE rollouts SET updated_at = ? WHERE id = ?").bind(1, now).bind(2, id).run();
  auto out = load_rollout(db, id);
  for (const auto& b : proto::batches(*out)) {
    if (!moved_batches.count(b.index) || !b.finished_at) continue;
    json duration = nullptr;
    if (b.started_at) duration = *b.finished_at - *b.started_at;
    rollout_event(db, now, "rollout.batch_finished", id, std::nullopt, std::nullopt,
                  {{"batch", b.index},
                   {"canary", b.canary},
                   {"size", b.counts.total},
                   {"done", b.counts.done},
                   {"failed", b.counts.failed},
                   {"duration_ms", duration}});
  }
  tx.commit();
  return std::move(*out);
}

Result<Rollout> Store::transition_rollout(std::int64_t id, RolloutState from, RolloutState to,
                                          const std::string& reason,
                                          std::optional<std::int64_t> seen_at) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto r = load_rollout_in(db, id, from);
  if (!r) return r.error();
  // A decision made on an older view (an operator paused and resumed meanwhile) is not applied.
  if (seen_at && r->updated_at != *seen_at) {
    return make_error(Errc::kConflict, "rollout " + std::to_string(id) + " changed meanwhile");
  }
  set_state(db, now, *r, to, reason);
  auto out = load_rollout(db, id);
  tx.commit();
  return std::move(*out);
}

Result<std::vector<RolloutStart>> Store::start_rollout_machines(
    std::int64_t id, const std::vector<std::int64_t>& machines, const AssignRequest& base) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto r = load_rollout_in(db, id, RolloutState::kRunning);
  if (!r) return r.error();
  std::optional<ConfigRecord> layer;
  if (r->config_sha256) {
    auto c = db.prepare("SELECT config FROM rollouts WHERE id = ?");
    c.bind(1, id);
    if (c.step()) layer = ConfigRecord{c.text(0), *r->config_sha256, 0};
  }
  const auto target = load_image_version(db, r->target.name, r->target.version);
  std::map<std::int64_t, const RolloutMachine*> by_id;
  for (const auto& m : r->machines) by_id[m.machine_id] = &m;
  std::set<int> batches_started;
  for (const auto& m : r->machines) {
    if (m.started_at) batches_started.insert(m.batch);
  }
  const auto profiles = base.config ? load_profiles(db) : std::vector<ProfileRecord>{};
  std::vector<RolloutStart> out;
  std::map<int, int> new_in_batch;
  for (auto mid : machines) {
    auto it = by_id.find(mid);
    if (it == by_id.end() || it->second->state != RolloutMachineState::kPending) continue;
    RolloutStart st;
    st.machine_id = mid;
    Result<AssignOutcome> a = make_error(Errc::kNotFound, "the image version was deleted");
    if (target) {
      AssignRequest req = base;
      req.image = target->name;
      req.version = target->version;
      req.reboot = true;
      req.reboot_required = true;
      req.force = false;
      req.config_layer = layer;
      a = assign_in_tx(db, now, mid, *target, req, "assign", std::nullopt, &profiles);
    }
    if (!a || !a->created) {
      // A machine that cannot start now (its BMC removed, someone else's deployment in
      // progress, the version deleted) fails: counted against max_failures, so a canary batch
      // of such machines never opens the rest of the fleet.
      st.error = "could not start: " +
                 (a ? "deployment " + std::to_string(a->deployment.id) + " is in progress already"
                    : a.error().message);
      db.prepare(
            "UPDATE rollout_machines SET state = 'failed', reason = ?, started_at = ?, "
            "finished_at = ? WHERE rollout_id = ? AND machine_id = ?")
          .bind(1, st.error)
          .bind(2, now)
          .bind(3, now)
          .bind(4, id)
          .bind(5, mid)
          .run();
      rollout_event(db, now, "rollout.machine_failed", id, mid, std::nullopt,
                    {{"state", "failed"}, {"reason", st.error}, {"batch", it->second->batch}});
    } else {
      st.deployment = a->deployment;
      db.prepare(
            "UPDATE rollout_machines SET state = 'deploying', deployment_id = ?, started_at = ?, "
            "previous_version_id = ? WHERE rollout_id = ? AND machine_id = ?")
          .bind(1, a->deployment.id)
          .bind(2, now)
          .bind(3, a->deployment.from_version
                       ? std::optional<std::int64_t>(a->deployment.from_version->id)
                       : std::nullopt)
          .bind(4, id)
          .bind(5, mid)
          .run();
      ++new_in_batch[it->second->batch];
    }
    out.push_back(std::move(st));
  }
  for (const auto& [batch, n] : new_in_batch) {
    if (batches_started.count(batch)) continue;
    rollout_event(db, now, "rollout.batch_started", id, std::nullopt, std::nullopt,
                  {{"batch", batch}, {"canary", r->canary > 0 && batch == 0}, {"machines", n}});
  }
  db.prepare("UPDATE rollouts SET updated_at = ? WHERE id = ?").bind(1, now).bind(2, id).run();
  tx.commit();
  return out;
}

Result<std::vector<RolloutStart>> Store::roll_back_rollout_machines(
    std::int64_t id, const std::vector<std::int64_t>& machines, const AssignRequest& base) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto r = load_rollout_in(db, id, RolloutState::kRollingBack);
  if (!r) return r.error();
  std::map<std::int64_t, const RolloutMachine*> by_id;
  for (const auto& m : r->machines) by_id[m.machine_id] = &m;
  std::vector<RolloutStart> out;
  for (auto mid : machines) {
    auto it = by_id.find(mid);
    if (it == by_id.end() || !it->second->deployment_id) continue;
    const auto s = it->second->state;
    if (s != RolloutMachineState::kDeploying && s != RolloutMachineState::kDone &&
        s != RolloutMachineState::kFailed) {
      continue;
    }
    RolloutStart st;
    st.machine_id = mid;
    const RolloutMachine& rm = *it->second;
    auto a = roll_back_one(db, now, rm, base);
    if (!a) {
      st.error = a.error().message;
      set_machine(db, id, mid, RolloutMachineState::kRollbackFailed, st.error, now, true);
      rollout_event(db, now, "rollout.machine_failed", id, mid, std::nullopt,
                    {{"state", "rollback_failed"}, {"reason", st.error}});
    } else {
      // An adopted deployment (kilnd's own auto-rollback) is powered already.
      if (a->created) st.deployment = a->deployment;
      db.prepare(
            "UPDATE rollout_machines SET state = 'rolling_back', rollback_deployment_id = ?, "
            "reason = CASE WHEN state = 'failed' THEN reason ELSE ? END "
            "WHERE rollout_id = ? AND machine_id = ?")
          .bind(1, a->deployment.id)
          .bind(2, s == RolloutMachineState::kDeploying
                       ? "rolled back while deploying: " + r->reason
                       : "rolled back: " + r->reason)
          .bind(3, id)
          .bind(4, mid)
          .run();
    }
    out.push_back(std::move(st));
  }
  db.prepare("UPDATE rollouts SET updated_at = ? WHERE id = ?").bind(1, now).bind(2, id).run();
  tx.commit();
  return out;
}

std::vector<std::pair<std::int64_t, std::int64_t>> Store::unpowered_rollout_deployments(
    std::int64_t id) {
  auto db = reader();
  auto s = db->prepare(
      "SELECT d.machine_id, d.id FROM rollout_machines rm JOIN deployments d "
      "ON d.id = CASE WHEN rm.state = 'rolling_back' THEN rm.rollback_deployment_id "
      "ELSE rm.deployment_id END "
      "WHERE rm.rollout_id = ? AND rm.state IN ('deploying', 'rolling_back') "
      "AND d.status = 'pending' AND d.reboot = 1 AND d.powered_at IS NULL");
  s.bind(1, id);
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  while (s.step()) out.emplace_back(s.int64(0), s.int64(1));
  return out;
}

}  // namespace kiln::store
