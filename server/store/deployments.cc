// Store: deployments (assign, bulk, rollback, retry), agent tokens and reports.
#include <algorithm>
#include <map>

#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

// --- deployments -----------------------------------------------------------------------------

namespace {

constexpr std::size_t kBulkChunk = 500;  // machines a bulk assignment takes at a time

// Runs a statement over `ids` (at most kBulkChunk) with one IN list of always kBulkChunk
// places, the last id repeated to fill it: one cached statement per SQL text, whatever the
// count (an IN list is a set). make(in) prepares it for the list `in` ("(?, ?, ...)"), the ids
// are bound from parameter `first` on (bind_before binds the ones before), each(stmt) runs it.
template <typename Make, typename Before, typename Each>
void over_id_list(const std::vector<std::int64_t>& ids, int first, Make&& make,
                  Before&& bind_before, Each&& each) {
  if (ids.empty()) return;
  std::string in = "(";
  for (std::size_t i = 0; i < kBulkChunk; ++i) in += i ? ", ?" : "?";
  Stmt s = make(in + ")");
  bind_before(s);
  for (std::size_t i = 0; i < kBulkChunk; ++i) {
    s.bind(first + static_cast<int>(i), ids[std::min(i, ids.size() - 1)]);
  }
  each(s);
}

}  // namespace

Result<AssignOutcome> Store::assign(std::int64_t machine_id, const AssignRequest& req) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto target = load_image_version(db, req.image, req.version);
  if (!target) return image_not_found(req.image, req.version);
  auto out = assign_in_tx(db, now, machine_id, *target, req, "assign");
  if (out) tx.commit();
  return out;
}

Result<BulkOutcome> Store::assign_bulk(const proto::Selector& selector, const AssignRequest& req) {
  if (selector.empty()) return make_error(Errc::kInvalid, "a bulk assignment needs a selector");
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto target = load_image_version(db, req.image, req.version);
  if (!target) return image_not_found(req.image, req.version);
  auto selected = select_machine_ids(db, selector);
  if (!selected) return selected.error();
  const auto& ids = *selected;
  BulkOutcome out;
  const auto profiles = req.config ? load_profiles(db) : std::vector<ProfileRecord>{};
  // The machines are taken a chunk at a time: what each one needs (its current version, BMC,
  // active deployment) is read for the whole chunk in one statement, and a machine with nothing
  // active and no configuration to make (the common fleet-wide case) costs two statements
  // (its deployment and event) instead of seven; the chunk's machine rows and deployments are
  // then updated and read back together. A machine with an active deployment or a
  // configuration goes through assign_in_tx, as a single assignment does. On PostgreSQL each
  // statement is a network round trip.
  for (std::size_t at = 0; at < ids.size(); at += kBulkChunk) {
    const std::vector<std::int64_t> chunk(
        ids.begin() + static_cast<std::ptrdiff_t>(at),
        ids.begin() + static_cast<std::ptrdiff_t>(std::min(at + kBulkChunk, ids.size())));
    const auto none = [](Stmt&) {};
    const auto run = [](Stmt& s) { s.run(); };
    struct Facts {
      std::optional<VersionRef> from;
      bool bmc = false;
      bool active = false;
      bool config = false;  // a machine config of its own
    };
    std::map<std::int64_t, Facts> facts;
    over_id_list(
        chunk, 1,
        [&](const std::string& in) {
          return db.prepare(
              std::string("SELECT m.id, cv.id, cv.name, cv.version, "
                          "EXISTS (SELECT 1 FROM machine_bmcs b WHERE b.machine_id = m.id), "
                          "EXISTS (SELECT 1 FROM machine_configs c WHERE c.machine_id = m.id), "
                          "EXISTS (SELECT 1 FROM deployments d WHERE d.machine_id = m.id "
                          "AND d.status IN ") +
              kActive +
              ") FROM machines m LEFT JOIN image_versions cv ON cv.id = m.current_version_id "
              "WHERE m.id IN " +
              in);
        },
        none,
        [&](Stmt& s) {
          while (s.step()) {
            Facts f;
            if (!s.is_null(1)) f.from = VersionRef{s.int64(1), s.text(2), s.text(3)};
            f.bmc = s.int64(4) != 0;
            f.config = s.int64(5) != 0;
            f.active = s.int64(6) != 0;
            facts[s.int64(0)] = std::move(f);
          }
        });
    // Nothing active, and no configuration: none asked for, or none to make (no source: no
    // machine config, no profile, no layer; see ConfigSnapshotter).
    const bool no_profiles = profiles.empty() && !req.config_layer;
    std::vector<std::int64_t> fresh;
    for (auto id : chunk) {
      const auto& f = facts.at(id);
      if (!f.active && (!req.config || (no_profiles && !f.config))) fresh.push_back(id);
    }
    // Their earlier deployments still waiting for a boot confirmation are no longer watched.
    over_id_list(
        fresh, 1,
        [&](const std::string& in) {
          return db.prepare(
              "UPDATE deployments SET deadline_at = NULL WHERE status = 'succeeded' "
              "AND deadline_at IS NOT NULL AND machine_id IN " +
              in);
        },
        none, run);
    std::vector<std::int64_t> created;  // deployments of the fresh machines
    std::map<std::int64_t, AssignOutcome> outcomes;
    for (auto id : chunk) {
      if (!std::binary_search(fresh.begin(), fresh.end(), id)) {
        auto r = assign_in_tx(db, now, id, *target, req, "assign", std::nullopt, &profiles);
        if (!r) return make_error(r.error().code, r.error().message + "; nothing was assigned");
        outcomes[id] = std::move(*r);
        continue;
      }
      const auto reboot = reboot_for(id, facts.at(id).bmc, req);
      if (!reboot) {
        return make_error(reboot.error().code, reboot.error().message + "; nothing was assigned");
      }
      created.push_back(insert_deployment(db, now, id, facts.at(id).from, *target, "assign", req,
                                          *reboot, std::nullopt));
    }
    over_id_list(
        fresh, 2,
        [&](const std::string& in) {
          return db.prepare(
              "UPDATE machines SET state = 'deploying', state_reason = '', updated_at = ? "
              "WHERE id IN " +
              in);
        },
        [&](Stmt& s) { s.bind(1, now); }, run);
    over_id_list(
        created, 1,
        [&](const std::string& in) {
          return db.prepare(std::string(kDeploymentSelect) + "WHERE d.id IN " + in);
        },
        none,
        [&](Stmt& s) {
          while (s.step()) {
            AssignOutcome o;
            o.deployment = deployment_from_row(s);
            o.created = true;
            outcomes[o.deployment.machine_id] = std::move(o);
          }
        });
    for (auto id : chunk) out.results.emplace_back(id, std::move(outcomes.at(id)));
  }
  tx.commit();
  return out;
}

Result<AssignOutcome> Store::rollback(std::int64_t machine_id, const AssignRequest& request,
                                      bool booted_only) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  if (!load_machine(db, machine_id)) return machine_not_found(machine_id);
  auto latest = db.prepare(
      "SELECT to_version_id, config_sha256 FROM deployments WHERE machine_id = ? "
      "ORDER BY id DESC LIMIT 1");
  latest.bind(1, machine_id);
  if (!latest.step()) {
    return make_error(Errc::kConflict, "machine " + std::to_string(machine_id) +
                                           " has no deployment history to roll back");
  }
  const std::int64_t latest_version = latest.int64(0);
  const std::optional<std::string> latest_config = latest.opt_text(1);
  // The last version (with its configuration: a redeploy of the same image with a new
  // configuration is a change too) the machine confirmed booting. An operator's rollback falls
  // back to the last one written when no other ever confirmed a boot (images without the hook,
  // or a fleet adopting it); kilnd's own (booted_only) never does.
  auto pick = [&](const char* status) {
    auto s =
        db.prepare(std::string("SELECT v.name, v.version, v.deleted_at, d.config, d.config_sha256 "
                               "FROM deployments d JOIN image_versions v ON v.id = d.to_version_id "
                               "WHERE d.machine_id = ? AND d.status = ") +
                   status +
                   " AND NOT (d.to_version_id = ? AND d.config_sha256 IS NOT DISTINCT FROM ?) "
                   "ORDER BY d.id DESC LIMIT 1");
    s.bind(1, machine_id).bind(2, latest_version).bind(3, latest_config);
    return s;
  };
  std::optional<Stmt> prev(pick("'booted'"));
  bool found = prev->step();
  if (!found && !booted_only) {
    prev.reset();
    prev.emplace(pick("'succeeded'"));
    found = prev->step();
  }
  if (!found) {
    return make_error(
        Errc::kConflict,
        "machine " + std::to_string(machine_id) +
            (booted_only ? " has no previous version confirmed booted to roll back to"
                         : " has no previous successfully deployed version to roll back to"));
  }
  const std::string name = prev->text(0), version = prev->text(1);
  if (!prev->is_null(2)) {
    return make_error(Errc::kConflict, "the previous version " + name + ":" + version +
                                           " has been deleted; assign a version explicitly");
  }
  std::optional<ConfigRecord> config;
  if (!prev->is_null(3)) config = ConfigRecord{prev->text(3), prev->text(4), 0};
  auto target = load_image_version(db, name, version);
  AssignRequest req = request;
  req.image = name;
  req.version = version;
  req.force = true;
  req.config = nullptr;
  auto out = assign_in_tx(db, now, machine_id, *target, req, "rollback", config);
  if (out) tx.commit();
  return out;
}

Result<AssignOutcome> Store::retry_failed(std::int64_t machine_id, int max_attempts,
                                          const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto m = load_machine(db, machine_id);
  if (!m) return machine_not_found(machine_id);
  if (m->state != MachineState::kFailed) {
    return make_error(Errc::kConflict, "machine " + std::to_string(machine_id) + " is " +
                                           proto::to_string(m->state) + ", not failed");
  }
  // A deployment written and then failed by its boot deadline is not rewritten behind the
  // operator's back: its OS may well run (only its confirmation never came).
  auto last = db.prepare(
      "SELECT written_at FROM deployments WHERE machine_id = ? ORDER BY id DESC LIMIT 1");
  last.bind(1, machine_id);
  if (last.step() && !last.is_null(0)) {
    return make_error(Errc::kConflict,
                      "the latest deployment was written and did not confirm its boot; it is not "
                      "retried automatically (assign or roll back to go on)");
  }
  // The streak: the latest failed deployments of one version, back to (and including) the
  // last one someone asked for; a new assignment, even of the same version, starts afresh.
  auto s = db.prepare(
      "SELECT status, to_version_id, requested_by, config, config_sha256 FROM deployments "
      "WHERE machine_id = ? ORDER BY id DESC LIMIT ?");
  s.bind(1, machine_id).bind(2, static_cast<std::int64_t>(max_attempts) + 1);
  int failed_in_a_row = 0;
  std::optional<std::int64_t> version_id;
  std::optional<ConfigRecord> config;  // the latest failed deployment's, retried with it
  while (s.step()) {
    if (s.text(0) != "failed") break;
    if (version_id && *version_id != s.int64(1)) break;
    if (!version_id && !s.is_null(3)) config = ConfigRecord{s.text(3), s.text(4), 0};
    version_id = s.int64(1);
    ++failed_in_a_row;
    if (s.text(2) != who) break;
  }
  if (!version_id) {
    return make_error(Errc::kConflict, "machine " + std::to_string(machine_id) +
                                           "'s latest deployment did not fail; nothing to retry");
  }
  if (failed_in_a_row >= max_attempts) {
    return make_error(Errc::kConflict, std::to_string(failed_in_a_row) +
                                           " deployments of this version failed in a row; "
                                           "reassign or roll back to go on");
  }
  auto v = db.prepare(std::string(kImageSelect) + "AND id = ?");
  v.bind(1, *version_id);
  if (!v.step()) {
    return make_error(Errc::kConflict, "the failed deployment's image version has been deleted");
  }
  const ImageVersion target = image_from_row(v);
  AssignRequest req;
  req.image = target.name;
  req.version = target.version;
  req.requested_by = who;
  auto out = assign_in_tx(db, now, machine_id, target, req, "assign", config);
  if (out) tx.commit();
  return out;
}

Result<std::vector<Deployment>> Store::list_deployments(std::int64_t machine_id) {
  auto db = reader();
  Transaction tx(*db, TxKind::kRead);
  auto exists = db->prepare("SELECT 1 FROM machines WHERE id = ?");
  exists.bind(1, machine_id);
  if (!exists.step()) return machine_not_found(machine_id);
  auto s =
      db->prepare(std::string(kDeploymentSelect) + "WHERE d.machine_id = ? ORDER BY d.id DESC");
  s.bind(1, machine_id);
  std::vector<Deployment> out;
  while (s.step()) out.push_back(deployment_from_row(s));
  tx.commit();
  return out;
}

Result<Deployment> Store::get_deployment(std::int64_t id) {
  auto db = reader();
  auto d = load_deployment(*db, id);
  if (!d) return deployment_not_found(id);
  return std::move(*d);
}

Result<Deployment> Store::report_progress(std::int64_t deployment_id, const AgentReport& r,
                                          std::optional<std::int64_t> booted_deadline_at) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto d = load_deployment(db, deployment_id);
  if (!d) {
    return deployment_not_found(deployment_id);
  }
  if (!proto::is_active(d->status)) {
    return make_error(Errc::kConflict, "deployment " + std::to_string(deployment_id) +
                                           " already ended: " + proto::to_string(d->status));
  }
  if (r.result) {
    const bool ok = *r.result == DeploymentStatus::kSucceeded;
    db.prepare(
          "UPDATE deployments SET status = ?, status_reason = ?, stage = COALESCE(?, stage), "
          "bytes_done = COALESCE(?, bytes_done), bytes_total = COALESCE(?, bytes_total), "
          "started_at = COALESCE(started_at, ?), finished_at = ?, written_at = ?, "
          "deadline_at = ?, deadline_misses = 0 WHERE id = ?")
        .bind(1, proto::to_string(*r.result))
        .bind(2, r.reason)
        .bind(3, r.stage)
        .bind(4, r.bytes_done)
        .bind(5, r.bytes_total)
        .bind(6, now)
        .bind(7, now)
        .bind(8, ok ? std::optional<std::int64_t>(now) : std::nullopt)
        .bind(9, ok ? booted_deadline_at : std::nullopt)
        .bind(10, deployment_id)
        .run();
    // A failed deploy has invalidated the disk's boot metadata: its content is unknown.
    db.prepare(
          "UPDATE machines SET state = ?, state_reason = ?, current_version_id = ?, "
          "updated_at = ? WHERE id = ?")
        .bind(1, ok ? "deployed" : "failed")
        .bind(2, ok ? std::string()
                    : "deployment " + std::to_string(deployment_id) + " failed: " + r.reason)
        .bind(3, ok ? std::optional<std::int64_t>(d->to_version.id) : std::nullopt)
        .bind(4, now)
        .bind(5, d->machine_id)
        .run();
    append_event(db, now, ok ? "deployment.succeeded" : "deployment.failed", d->machine_id,
                 deployment_id,
                 {{"to", ref_json(d->to_version)}, {"reason", r.reason}, {"detail", r.detail}});
  } else {
    db.prepare(
          "UPDATE deployments SET status = 'running', stage = COALESCE(?, stage), "
          "bytes_done = COALESCE(?, bytes_done), bytes_total = COALESCE(?, bytes_total), "
          "started_at = COALESCE(started_at, ?) WHERE id = ?")
        .bind(1, r.stage)
        .bind(2, r.bytes_done)
        .bind(3, r.bytes_total)
        .bind(4, now)
        .bind(5, deployment_id)
        .run();
    append_event(db, now, "deployment.progress", d->machine_id, deployment_id,
                 {{"stage", r.stage.value_or(d->stage)},
                  {"bytes_done", r.bytes_done.value_or(d->bytes_done)},
                  {"bytes_total", r.bytes_total.value_or(d->bytes_total)},
                  {"detail", r.detail}});
  }
  auto out = load_deployment(db, deployment_id);
  tx.commit();
  return std::move(*out);
}

}  // namespace kiln::store
