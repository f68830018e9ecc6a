// Store: BMC records, instance credentials and boot confirmations, power bookkeeping and
// deadlines (docs/power.md).
#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

namespace {

constexpr char kBmcSelect[] =
    "SELECT machine_id, driver, address, credentials, ca_file, insecure, system_id, boot_mode, "
    "updated_at FROM machine_bmcs WHERE machine_id = ?";

BmcRecord bmc_from_row(const Stmt& s) {
  BmcRecord r;
  r.machine_id = s.int64(0);
  r.driver = s.text(1);
  r.address = s.text(2);
  r.credentials = s.text(3);
  r.ca_file = s.text(4);
  r.insecure = s.int64(5) != 0;
  r.system_id = s.text(6);
  r.boot_mode = s.text(7);
  r.updated_at = s.int64(8);
  return r;
}

Error bmc_not_found(std::int64_t machine_id) {
  return make_error(Errc::kNotFound,
                    "machine " + std::to_string(machine_id) + " has no BMC configured");
}

}  // namespace

Result<BmcRecord> Store::put_bmc(const BmcRecord& r, const std::string& who) {
  if (r.driver != "redfish" && r.driver != "ipmi") {
    return make_error(Errc::kInvalid, "driver must be 'redfish' or 'ipmi'");
  }
  if (r.boot_mode != "auto" && r.boot_mode != "uefi" && r.boot_mode != "legacy") {
    return make_error(Errc::kInvalid, "boot_mode must be 'auto', 'uefi' or 'legacy'");
  }
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  if (!load_machine(db, r.machine_id)) return machine_not_found(r.machine_id);
  db.prepare(
        "INSERT INTO machine_bmcs (machine_id, driver, address, credentials, ca_file, insecure, "
        "system_id, boot_mode, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (machine_id) DO UPDATE SET driver = excluded.driver, "
        "address = excluded.address, credentials = excluded.credentials, "
        "ca_file = excluded.ca_file, insecure = excluded.insecure, "
        "system_id = excluded.system_id, boot_mode = excluded.boot_mode, "
        "updated_at = excluded.updated_at")
      .bind(1, r.machine_id)
      .bind(2, r.driver)
      .bind(3, r.address)
      .bind(4, r.credentials)
      .bind(5, r.ca_file)
      .bind(6, static_cast<std::int64_t>(r.insecure ? 1 : 0))
      .bind(7, r.system_id)
      .bind(8, r.boot_mode)
      .bind(9, now)
      .run();
  // Never the credentials, not even sealed.
  append_event(
      db, now, "machine.bmc_set", r.machine_id, std::nullopt,
      {{"driver", r.driver}, {"address", r.address}, {"insecure", r.insecure}, {"by", who}});
  auto s = db.prepare(kBmcSelect);
  s.bind(1, r.machine_id);
  s.step();
  auto out = bmc_from_row(s);
  tx.commit();
  return out;
}

Result<BmcRecord> Store::get_bmc(std::int64_t machine_id) {
  auto db = reader();
  auto s = db->prepare(kBmcSelect);
  s.bind(1, machine_id);
  if (!s.step()) return bmc_not_found(machine_id);
  return bmc_from_row(s);
}

Status Store::delete_bmc(std::int64_t machine_id, const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  db.prepare("DELETE FROM machine_bmcs WHERE machine_id = ?").bind(1, machine_id).run();
  if (db.changes() == 0) return bmc_not_found(machine_id);
  append_event(db, now, "machine.bmc_removed", machine_id, std::nullopt, {{"by", who}});
  tx.commit();
  return Unit{};
}

std::int64_t Store::count_bmcs() {
  auto db = reader();
  auto s = db->prepare("SELECT COUNT(*) FROM machine_bmcs");
  s.step();
  return s.int64(0);
}

Result<std::string> Store::mint_instance_token(std::int64_t deployment_id) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  Transaction tx(db);
  auto d = load_deployment(db, deployment_id);
  if (!d) return deployment_not_found(deployment_id);
  if (!proto::is_active(d->status)) {
    return make_error(Errc::kConflict, "deployment " + std::to_string(deployment_id) + " is " +
                                           proto::to_string(d->status));
  }
  std::string token = random_hex(32);
  db.prepare("UPDATE deployments SET instance_token_hash = ? WHERE id = ?")
      .bind(1, sha256_hex(token))
      .bind(2, deployment_id)
      .run();
  tx.commit();
  return token;
}

Result<Deployment> Store::confirm_boot(const std::string& token, const std::string& address) {
  if (token.empty()) return make_error(Errc::kUnauthorized, "missing instance credential");
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto s = db.prepare("SELECT id FROM deployments WHERE instance_token_hash = ?");
  s.bind(1, sha256_hex(token));
  if (!s.step()) return make_error(Errc::kUnauthorized, "unknown instance credential");
  auto d = load_deployment(db, s.int64(0));
  // An older deployment's credential confirms nothing, even one that booted once.
  auto latest = db.prepare("SELECT MAX(id) FROM deployments WHERE machine_id = ?");
  latest.bind(1, d->machine_id);
  latest.step();
  if (latest.int64(0) != d->id) {
    return make_error(Errc::kConflict, "deployment " + std::to_string(d->id) +
                                           " is no longer the machine's latest (deployment " +
                                           std::to_string(latest.int64(0)) + ")");
  }
  if (d->status == DeploymentStatus::kBooted) return std::move(*d);  // a repeated confirmation
  if (d->status != DeploymentStatus::kSucceeded) {
    return make_error(Errc::kConflict, "deployment " + std::to_string(d->id) + " is " +
                                           proto::to_string(d->status) +
                                           ", not written: nothing to confirm");
  }
  auto out = mark_booted(db, now, *d, address, "instance-credential");
  tx.commit();
  return out;
}

Status Store::mark_powered(std::int64_t deployment_id, std::optional<std::int64_t> deadline_at) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto d = load_deployment(db, deployment_id);
  if (!d) return deployment_not_found(deployment_id);
  if (!proto::is_active(d->status) && d->status != DeploymentStatus::kSucceeded) {
    return make_error(Errc::kConflict, "deployment " + std::to_string(deployment_id) + " is " +
                                           proto::to_string(d->status));
  }
  db.prepare(
        "UPDATE deployments SET powered_at = ?, deadline_at = COALESCE(?, deadline_at) "
        "WHERE id = ?")
      .bind(1, now)
      .bind(2, deadline_at)
      .bind(3, deployment_id)
      .run();
  tx.commit();
  return Unit{};
}

Status Store::watch_deployment(std::int64_t deployment_id, std::int64_t deadline_at) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  db.prepare(
        "UPDATE deployments SET deadline_at = ? WHERE id = ? AND deadline_at IS NULL "
        "AND status IN ('pending', 'running')")
      .bind(1, deadline_at)
      .bind(2, deployment_id)
      .run();
  return Unit{};
}

std::vector<Deployment> Store::overdue_deployments(std::int64_t now, int limit) {
  auto db = reader();
  auto s = db->prepare(std::string(kDeploymentSelect) +
                       "WHERE d.deadline_at IS NOT NULL AND d.deadline_at <= ? "
                       "AND d.status IN ('pending', 'running', 'succeeded') "
                       "ORDER BY d.deadline_at LIMIT ?");
  s.bind(1, now).bind(2, static_cast<std::int64_t>(limit));
  std::vector<Deployment> out;
  while (s.step()) out.push_back(deployment_from_row(s));
  return out;
}

namespace {

// The deployment `id` when it still has the deadline the caller saw (nothing moved it on).
Result<Deployment> still_overdue(Db& db, std::int64_t id, std::int64_t expected_deadline) {
  auto d = load_deployment(db, id);
  if (!d) return deployment_not_found(id);
  const bool watched = proto::is_active(d->status) || d->status == DeploymentStatus::kSucceeded;
  if (!watched || d->deadline_at != expected_deadline) {
    return make_error(Errc::kConflict, "deployment " + std::to_string(id) + " moved on");
  }
  return std::move(*d);
}

// Adds `delta` to `d`'s missed deadlines and sets its next deadline, with event `type`.
Deployment count_miss(Db& db, std::int64_t now, const Deployment& d, int delta,
                      std::int64_t next_deadline, const char* type, const std::string& why) {
  db.prepare(
        "UPDATE deployments SET deadline_misses = deadline_misses + ?, deadline_at = ? "
        "WHERE id = ?")
      .bind(1, delta)
      .bind(2, next_deadline)
      .bind(3, d.id)
      .run();
  append_event(db, now, type, d.machine_id, d.id,
               {{"status", proto::to_string(d.status)},
                {"misses", d.deadline_misses + delta},
                {"reason", why}});
  return *load_deployment(db, d.id);
}

}  // namespace

Result<Deployment> Store::miss_deadline(std::int64_t deployment_id, std::int64_t expected_deadline,
                                        std::int64_t next_deadline, const std::string& why) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto d = still_overdue(db, deployment_id, expected_deadline);
  if (!d) return d.error();
  auto out = count_miss(db, now, *d, +1, next_deadline, "deployment.deadline_missed", why);
  tx.commit();
  return out;
}

Result<Deployment> Store::return_miss(std::int64_t deployment_id, std::int64_t expected_deadline,
                                      const std::string& why) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto d = still_overdue(db, deployment_id, expected_deadline);
  if (!d) return d.error();
  if (d->deadline_misses <= 0) {
    return make_error(Errc::kConflict,
                      "deployment " + std::to_string(deployment_id) + " has no miss to return");
  }
  auto out = count_miss(db, now, *d, -1, now, "deployment.deadline_returned", why);
  tx.commit();
  return out;
}

Result<Deployment> Store::fail_overdue(std::int64_t deployment_id, std::int64_t expected_deadline,
                                       const std::string& why) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto d = still_overdue(db, deployment_id, expected_deadline);
  if (!d) return d.error();
  db.prepare(
        "UPDATE deployments SET status = 'failed', status_reason = ?, deadline_at = NULL, "
        "deadline_misses = deadline_misses + 1, finished_at = COALESCE(finished_at, ?) "
        "WHERE id = ?")
      .bind(1, why)
      .bind(2, now)
      .bind(3, deployment_id)
      .run();
  // A deployment that failed before it was written leaves the disk in an unknown state; one
  // written but never booted leaves the version on the disk (it does not boot).
  const bool written = d->status == DeploymentStatus::kSucceeded;
  db.prepare(
        "UPDATE machines SET state = 'failed', state_reason = ?, "
        "current_version_id = CASE WHEN ? <> 0 THEN current_version_id ELSE NULL END, "
        "updated_at = ? WHERE id = ?")
      .bind(1, "deployment " + std::to_string(deployment_id) + " failed: " + why)
      .bind(2, static_cast<std::int64_t>(written ? 1 : 0))
      .bind(3, now)
      .bind(4, d->machine_id)
      .run();
  append_event(db, now, "deployment.failed", d->machine_id, deployment_id,
               {{"to", ref_json(d->to_version)}, {"reason", why}, {"deadline", true}});
  auto out = *load_deployment(db, deployment_id);
  tx.commit();
  return out;
}

void Store::record_event(std::string_view type, std::optional<std::int64_t> machine_id,
                         std::optional<std::int64_t> deployment_id, const nlohmann::json& data) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  Transaction tx(db);
  append_event(db, clock_.now_ms(), type, machine_id, deployment_id, data);
  tx.commit();
}

}  // namespace kiln::store
