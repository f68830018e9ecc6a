// Store: cloud-init configuration (profiles, machine documents, deployment snapshots) and the
// metadata service's view of deployed instances (docs/config.md). Documents arrive sealed.
#include "core/crypto.h"
#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

namespace {

Error profile_not_found(const std::string& name) {
  return make_error(Errc::kNotFound, "no profile named '" + name + "'");
}

// The machine's latest deployment when its image is on the disk (succeeded or booted).
Result<Deployment> written_latest(Db& db, std::int64_t machine_id) {
  auto s = db.prepare("SELECT MAX(id) FROM deployments WHERE machine_id = ?");
  s.bind(1, machine_id);
  if (!s.step() || s.is_null(0)) return make_error(Errc::kNotFound, "no deployed instance");
  auto d = load_deployment(db, s.int64(0));
  if (!d || (d->status != DeploymentStatus::kSucceeded && d->status != DeploymentStatus::kBooted)) {
    return make_error(Errc::kNotFound, "no deployed instance");
  }
  return std::move(*d);
}

}  // namespace

Result<ProfileRecord> Store::put_profile(const ProfileRecord& p, const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  db.prepare(
        "INSERT INTO config_profiles (name, selector, priority, config, config_sha256, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET selector = excluded.selector, "
        "priority = excluded.priority, config = excluded.config, "
        "config_sha256 = excluded.config_sha256, updated_at = excluded.updated_at")
      .bind(1, p.name)
      .bind(2, p.selector)
      .bind(3, p.priority)
      .bind(4, p.config.sealed)
      .bind(5, p.config.sha256)
      .bind(6, now)
      .bind(7, now)
      .run();
  append_event(db, now, "profile.set", std::nullopt, std::nullopt,
               {{"name", p.name},
                {"selector", p.selector},
                {"priority", p.priority},
                {"config_sha256", p.config.sha256},
                {"by", who}});
  ProfileRecord out;
  for (auto& r : load_profiles(db)) {
    if (r.name == p.name) out = std::move(r);
  }
  tx.commit();
  return out;
}

Result<ProfileRecord> Store::get_profile(const std::string& name) {
  auto db = reader();
  for (auto& r : load_profiles(*db)) {
    if (r.name == name) return std::move(r);
  }
  return profile_not_found(name);
}

std::vector<ProfileRecord> Store::list_profiles() {
  auto db = reader();
  return load_profiles(*db);
}

Status Store::delete_profile(const std::string& name, const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  db.prepare("DELETE FROM config_profiles WHERE name = ?").bind(1, name).run();
  if (db.changes() == 0) return profile_not_found(name);
  append_event(db, now, "profile.deleted", std::nullopt, std::nullopt,
               {{"name", name}, {"by", who}});
  tx.commit();
  return Unit{};
}

Result<ConfigRecord> Store::put_machine_config(std::int64_t machine_id, const ConfigRecord& c,
                                               const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  if (!load_machine(db, machine_id)) return machine_not_found(machine_id);
  db.prepare(
        "INSERT INTO machine_configs (machine_id, config, config_sha256, updated_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (machine_id) DO UPDATE SET config = excluded.config, "
        "config_sha256 = excluded.config_sha256, updated_at = excluded.updated_at")
      .bind(1, machine_id)
      .bind(2, c.sealed)
      .bind(3, c.sha256)
      .bind(4, now)
      .run();
  append_event(db, now, "machine.config_set", machine_id, std::nullopt,
               {{"config_sha256", c.sha256}, {"by", who}});
  auto out = *load_machine_config(db, machine_id);
  tx.commit();
  return out;
}

Result<ConfigRecord> Store::get_machine_config(std::int64_t machine_id) {
  auto db = reader();
  if (!load_machine(*db, machine_id)) return machine_not_found(machine_id);
  auto c = load_machine_config(*db, machine_id);
  if (!c) {
    return make_error(Errc::kNotFound,
                      "machine " + std::to_string(machine_id) + " has no configuration of its own");
  }
  return std::move(*c);
}

Status Store::delete_machine_config(std::int64_t machine_id, const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  if (!load_machine(db, machine_id)) return machine_not_found(machine_id);
  db.prepare("DELETE FROM machine_configs WHERE machine_id = ?").bind(1, machine_id).run();
  if (db.changes() == 0) {
    return make_error(Errc::kNotFound,
                      "machine " + std::to_string(machine_id) + " has no configuration of its own");
  }
  append_event(db, now, "machine.config_deleted", machine_id, std::nullopt, {{"by", who}});
  tx.commit();
  return Unit{};
}

Result<std::optional<ConfigRecord>> Store::deployment_config(std::int64_t deployment_id) {
  auto db = reader();
  auto s = db->prepare("SELECT config, config_sha256 FROM deployments WHERE id = ?");
  s.bind(1, deployment_id);
  if (!s.step()) return deployment_not_found(deployment_id);
  if (s.is_null(0)) return std::optional<ConfigRecord>{};
  return std::optional<ConfigRecord>(ConfigRecord{s.text(0), s.text(1), 0});
}

Result<Deployment> Store::instance_by_token(const std::string& token) {
  if (token.empty()) return make_error(Errc::kNotFound, "no deployed instance");
  auto db = reader();
  auto s = db->prepare("SELECT machine_id, id FROM deployments WHERE instance_token_hash = ?");
  s.bind(1, sha256_hex(token));
  if (!s.step()) return make_error(Errc::kNotFound, "no deployed instance");
  const auto machine_id = s.int64(0), id = s.int64(1);
  auto d = written_latest(*db, machine_id);
  if (!d || d->id != id) return make_error(Errc::kNotFound, "no deployed instance");
  return d;
}

Result<Deployment> Store::instance_by_address(const std::string& address) {
  if (address.empty()) return make_error(Errc::kNotFound, "no deployed instance");
  auto db = reader();
  auto s = db->prepare(
      "SELECT DISTINCT mm.machine_id FROM dhcp_leases l "
      "JOIN machine_macs mm ON mm.mac = l.mac "
      "JOIN machines m ON m.id = mm.machine_id AND m.deleted_at IS NULL "
      "WHERE l.ip = ? AND l.state = 'bound' AND l.expires_at > ?");
  s.bind(1, address).bind(2, clock_.now_ms());
  std::optional<std::int64_t> machine_id;
  while (s.step()) {
    if (machine_id) return make_error(Errc::kNotFound, "no deployed instance");  // ambiguous
    machine_id = s.int64(0);
  }
  if (!machine_id) return make_error(Errc::kNotFound, "no deployed instance");
  return written_latest(*db, *machine_id);
}

Result<Deployment> Store::confirm_instance_boot(std::int64_t deployment_id,
                                                const std::string& address,
                                                const std::string& via) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto d = load_deployment(db, deployment_id);
  if (!d) return deployment_not_found(deployment_id);
  auto latest = written_latest(db, d->machine_id);
  if (!latest || latest->id != d->id) {
    return make_error(Errc::kConflict, "deployment " + std::to_string(d->id) +
                                           " is not the machine's written latest deployment");
  }
  if (d->status == DeploymentStatus::kBooted) return std::move(*d);
  auto out = mark_booted(db, now, *d, address, via);
  tx.commit();
  return out;
}

}  // namespace kiln::store
