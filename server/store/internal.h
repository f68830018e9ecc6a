// store/internal.h — what the store's implementation files share (not part of the store's
// interface): row mapping, the SELECT lists, event recording, the assignment transaction, the
// reader-connection lease. Included only by server/store/*.cc.
#pragma once

#include <nlohmann/json.hpp>
#include <unordered_map>
#include <variant>

#include "core/crypto.h"
#include "store/db.h"
#include "store/store.h"

namespace kiln::store::internal {

using proto::DeploymentStatus;
using proto::MachineState;
using Bind = std::variant<std::int64_t, std::string>;

inline constexpr char kActive[] = "('pending', 'running')";

inline void bind_all(Stmt& s, const std::vector<Bind>& binds, int first = 1) {
  int i = first;
  for (const auto& b : binds) {
    std::visit([&](const auto& v) { s.bind(i, v); }, b);
    ++i;
  }
}

// Runs an `INSERT ... RETURNING id` and returns the id.
inline std::int64_t returning_id(Stmt& s) {
  if (!s.step()) throw DbError(0, "INSERT ... RETURNING returned no row");
  const std::int64_t id = s.int64(0);
  s.run();
  return id;
}

// Splits `n` rows into statements of 64, 16, 4 or 1 rows (few round trips, few cached
// statements): calls fn(first, count) for each.
template <typename Fn>
void for_chunks(std::size_t n, Fn&& fn) {
  for (std::size_t at = 0; at < n;) {
    std::size_t count = 64;
    while (count > n - at) count /= 4;
    fn(at, count);
    at += count;
  }
}

inline nlohmann::json parse_json_object(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

inline std::optional<VersionRef> version_ref(const Stmt& s, int col) {
  if (s.is_null(col)) return std::nullopt;
  return VersionRef{s.int64(col), s.text(col + 1), s.text(col + 2)};
}

// Appends `selector` and `state` conditions over machines aliased `m`.
inline void append_machine_filter(const proto::Selector& selector,
                                  const std::optional<MachineState>& state, std::string& where,
                                  std::vector<Bind>& binds) {
  for (const auto& t : selector) {
    using Op = proto::LabelTerm::Op;
    const bool with_value = t.op == Op::kEquals || t.op == Op::kNotEquals;
    const bool negate = t.op == Op::kNotEquals || t.op == Op::kNotExists;
    where += negate ? " AND NOT EXISTS" : " AND EXISTS";
    where += " (SELECT 1 FROM machine_labels l WHERE l.machine_id = m.id AND l.key = ?";
    binds.emplace_back(t.key);
    if (with_value) {
      where += " AND l.value = ?";
      binds.emplace_back(t.value);
    }
    where += ")";
  }
  if (state) {
    where += " AND m.state = ?";
    binds.emplace_back(std::string(proto::to_string(*state)));
  }
}

// The live, approved machines `selector` matches, by id: the selection of bulk assignments and
// rollouts. Machines awaiting approval are not part of any selection: a stray MAC on the
// network must not block (or join) a fleet-wide change. Not found when none matches.
inline Result<std::vector<std::int64_t>> select_machine_ids(Db& db,
                                                            const proto::Selector& selector) {
  std::string sql = "SELECT m.id FROM machines m WHERE m.deleted_at IS NULL AND m.approved = 1";
  std::vector<Bind> binds;
  append_machine_filter(selector, std::nullopt, sql, binds);
  sql += " ORDER BY m.id";
  auto s = db.prepare(sql);
  bind_all(s, binds);
  std::vector<std::int64_t> ids;
  while (s.step()) ids.push_back(s.int64(0));
  if (ids.empty()) {
    return make_error(Errc::kNotFound,
                      "selector '" + proto::format_selector(selector) + "' matched no machines");
  }
  return ids;
}

inline constexpr char kMachineSelect[] =
    "SELECT m.id, m.name, m.uuid, m.state, m.state_reason, m.inventory, m.created_at, "
    "m.updated_at, cv.id, cv.name, cv.version, d.id, av.id, av.name, av.version, m.ipv4, "
    "m.approved, b.driver "
    "FROM machines m "
    "LEFT JOIN machine_bmcs b ON b.machine_id = m.id "
    "LEFT JOIN image_versions cv ON cv.id = m.current_version_id "
    "LEFT JOIN deployments d ON d.machine_id = m.id AND d.status IN ('pending', 'running') "
    "LEFT JOIN image_versions av ON av.id = d.to_version_id "
    "WHERE m.deleted_at IS NULL";

inline Machine machine_from_row(const Stmt& s) {
  Machine m;
  m.id = s.int64(0);
  m.name = s.text(1);
  m.uuid = s.opt_text(2);
  m.ipv4 = s.opt_text(15);
  m.state = proto::parse_machine_state(s.text(3)).value_or(MachineState::kFailed);
  m.state_reason = s.text(4);
  m.inventory_json = s.text(5);
  m.created_at = s.int64(6);
  m.updated_at = s.int64(7);
  m.current_version = version_ref(s, 8);
  m.active_deployment_id = s.opt_int64(11);
  m.assigned_version = version_ref(s, 12);
  m.approved = s.int64(16) != 0;
  m.bmc_driver = s.opt_text(17);
  return m;
}

// Fills macs and labels of `machines` (sorted by id) with two range queries.
inline void load_machine_details(Db& db, std::vector<Machine>& machines) {
  if (machines.empty()) return;
  std::unordered_map<std::int64_t, Machine*> by_id;
  for (auto& m : machines) by_id[m.id] = &m;
  const std::int64_t lo = machines.front().id;
  const std::int64_t hi = machines.back().id;
  auto macs = db.prepare(
      "SELECT machine_id, mac FROM machine_macs WHERE machine_id BETWEEN ? AND ? "
      "ORDER BY machine_id, position");
  macs.bind(1, lo).bind(2, hi);
  while (macs.step()) {
    if (auto it = by_id.find(macs.int64(0)); it != by_id.end()) {
      it->second->macs.push_back(macs.text(1));
    }
  }
  auto labels = db.prepare(
      "SELECT machine_id, key, value FROM machine_labels WHERE machine_id BETWEEN ? AND ?");
  labels.bind(1, lo).bind(2, hi);
  while (labels.step()) {
    if (auto it = by_id.find(labels.int64(0)); it != by_id.end()) {
      it->second->labels[labels.text(1)] = labels.text(2);
    }
  }
}

inline std::optional<Machine> load_machine(Db& db, std::int64_t id) {
  auto s = db.prepare(std::string(kMachineSelect) + " AND m.id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  std::vector<Machine> one{machine_from_row(s)};
  load_machine_details(db, one);
  return std::move(one.front());
}

inline Error machine_not_found(std::int64_t id) {
  return make_error(Errc::kNotFound, "machine " + std::to_string(id) + " not found");
}

inline Error deployment_not_found(std::int64_t id) {
  return make_error(Errc::kNotFound, "deployment " + std::to_string(id) + " not found");
}

inline constexpr char kDeploymentSelect[] =
    "SELECT d.id, d.machine_id, fv.id, fv.name, fv.version, tv.id, tv.name, tv.version, d.kind, "
    "d.requested_by, d.created_at, d.status, d.status_reason, d.stage, d.bytes_done, "
    "d.bytes_total, d.started_at, d.finished_at, d.reboot, d.written_at, d.powered_at, "
    "d.booted_at, d.deadline_at, d.deadline_misses, d.config_sha256 "
    "FROM deployments d "
    "LEFT JOIN image_versions fv ON fv.id = d.from_version_id "
    "JOIN image_versions tv ON tv.id = d.to_version_id ";

inline Deployment deployment_from_row(const Stmt& s) {
  Deployment d;
  d.id = s.int64(0);
  d.machine_id = s.int64(1);
  d.from_version = version_ref(s, 2);
  d.to_version = *version_ref(s, 5);
  d.kind = s.text(8);
  d.requested_by = s.text(9);
  d.created_at = s.int64(10);
  d.status = proto::parse_deployment_status(s.text(11)).value_or(DeploymentStatus::kFailed);
  d.status_reason = s.text(12);
  d.stage = s.text(13);
  d.bytes_done = s.int64(14);
  d.bytes_total = s.int64(15);
  d.started_at = s.opt_int64(16);
  d.finished_at = s.opt_int64(17);
  d.reboot = s.int64(18) != 0;
  d.written_at = s.opt_int64(19);
  d.powered_at = s.opt_int64(20);
  d.booted_at = s.opt_int64(21);
  d.deadline_at = s.opt_int64(22);
  d.deadline_misses = static_cast<int>(s.int64(23));
  d.config_sha256 = s.opt_text(24);
  return d;
}

inline std::optional<Deployment> load_deployment(Db& db, std::int64_t id) {
  auto s = db.prepare(std::string(kDeploymentSelect) + "WHERE d.id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return deployment_from_row(s);
}

inline void append_event(Db& db, std::int64_t now, std::string_view type,
                         std::optional<std::int64_t> machine_id,
                         std::optional<std::int64_t> deployment_id, const nlohmann::json& data) {
  auto ins = db.prepare(
      "INSERT INTO events (created_at, type, machine_id, deployment_id, data) "
      "VALUES (?, ?, ?, ?, ?) RETURNING id");
  ins.bind(1, now).bind(2, type).bind(3, machine_id).bind(4, deployment_id).bind(5, data.dump());
  db.note_event(returning_id(ins));
}

inline nlohmann::json ref_json(const std::optional<VersionRef>& v) {
  if (!v) return nullptr;
  return {{"image", v->name}, {"version", v->version}};
}

// The deployed OS of `d` (succeeded) proved it is up: booted now, recorded with how (`via`).
inline Deployment mark_booted(Db& db, std::int64_t now, const Deployment& d,
                              const std::string& address, const std::string& via) {
  db.prepare(
        "UPDATE deployments SET status = 'booted', booted_at = ?, deadline_at = NULL "
        "WHERE id = ?")
      .bind(1, now)
      .bind(2, d.id)
      .run();
  auto out = *load_deployment(db, d.id);
  nlohmann::json boot_ms = nullptr;
  if (auto ms = proto::boot_ms(out)) boot_ms = *ms;
  append_event(db, now, "deployment.booted", out.machine_id, out.id,
               {{"to", ref_json(out.to_version)},
                {"address", address},
                {"boot_ms", boot_ms},
                {"via", via},
                {"since", out.powered_at ? "power-on" : "written"}});
  return out;
}

inline ImageVersion image_from_row(const Stmt& s) {
  ImageVersion v;
  v.id = s.int64(0);
  v.name = s.text(1);
  v.version = s.text(2);
  v.size_bytes = s.int64(3);
  v.sha256 = s.text(4);
  v.format = s.text(5);
  v.source_url = s.opt_text(6);
  v.description = s.text(7);
  v.labels = parse_json_object(s.text(8));
  v.created_by = s.text(9);
  v.created_at = s.int64(10);
  v.signature = s.opt_text(11);
  return v;
}

inline constexpr char kImageSelect[] =
    "SELECT id, name, version, size_bytes, sha256, format, source_url, description, labels, "
    "created_by, created_at, signature FROM image_versions WHERE deleted_at IS NULL ";

inline std::optional<ImageVersion> load_image_version(Db& db, const std::string& name,
                                                      const std::string& version) {
  auto s = db.prepare(std::string(kImageSelect) + "AND name = ? AND version = ?");
  s.bind(1, name).bind(2, version);
  if (!s.step()) return std::nullopt;
  return image_from_row(s);
}

inline Error image_not_found(const std::string& name, const std::string& version) {
  return make_error(Errc::kNotFound, "image version " + name + ":" + version + " not found");
}

// Marks the active deployment `id` superseded, recording why.
inline void supersede(Db& db, std::int64_t now, std::int64_t machine_id, std::int64_t id,
                      const std::string& why) {
  db.prepare(
        "UPDATE deployments SET status = 'superseded', status_reason = ?, finished_at = ? "
        "WHERE id = ?")
      .bind(1, why)
      .bind(2, now)
      .bind(3, id)
      .run();
  append_event(db, now, "deployment.superseded", machine_id, id, {{"reason", why}});
}

struct ActiveDeployment {
  std::int64_t id;
  std::int64_t to_version_id;
  std::optional<std::string> config_sha256;
};

inline std::optional<ActiveDeployment> active_deployment(Db& db, std::int64_t machine_id) {
  auto s = db.prepare(
      std::string("SELECT id, to_version_id, config_sha256 FROM deployments WHERE machine_id = ? "
                  "AND status IN ") +
      kActive);
  s.bind(1, machine_id);
  if (!s.step()) return std::nullopt;
  return ActiveDeployment{s.int64(0), s.int64(1), s.opt_text(2)};
}

inline std::vector<ProfileRecord> load_profiles(Db& db) {
  auto s = db.prepare(
      "SELECT id, name, selector, priority, config, config_sha256, updated_at, created_at "
      "FROM config_profiles ORDER BY priority, name");
  std::vector<ProfileRecord> out;
  while (s.step()) {
    ProfileRecord p;
    p.id = s.int64(0);
    p.name = s.text(1);
    p.selector = s.text(2);
    p.priority = static_cast<int>(s.int64(3));
    p.config = {s.text(4), s.text(5), s.int64(6)};
    p.created_at = s.int64(7);
    out.push_back(std::move(p));
  }
  return out;
}

inline std::optional<ConfigRecord> load_machine_config(Db& db, std::int64_t machine_id) {
  auto s = db.prepare(
      "SELECT config, config_sha256, updated_at FROM machine_configs WHERE machine_id = ?");
  s.bind(1, machine_id);
  if (!s.step()) return std::nullopt;
  return ConfigRecord{s.text(0), s.text(1), s.int64(2)};
}

// `profiles`: the profiles already loaded in this transaction (a bulk assignment reads them
// once, not once per machine); null: read them now.
inline Result<ConfigInputs> config_inputs(Db& db, std::int64_t machine_id,
                                          const std::vector<ProfileRecord>* profiles) {
  auto m = load_machine(db, machine_id);
  if (!m) return machine_not_found(machine_id);
  return ConfigInputs{std::move(*m), load_machine_config(db, machine_id),
                      profiles ? *profiles : load_profiles(db), std::nullopt};
}

// Whether a new deployment of machine `machine_id` (with a BMC or not) reboots it: only when
// asked; Invalid when a reboot is required and there is no BMC to do it.
inline Result<bool> reboot_for(std::int64_t machine_id, bool has_bmc, const AssignRequest& req) {
  if (!req.reboot) return false;
  if (!has_bmc && req.reboot_required) {
    return make_error(Errc::kInvalid, "machine " + std::to_string(machine_id) +
                                          " has no BMC, so kilnd cannot reboot it: set one (PUT "
                                          "/api/v1/machines/" +
                                          std::to_string(machine_id) +
                                          "/bmc) or assign without reboot");
  }
  return has_bmc;
}

// Records a new pending deployment of `target` on machine `machine_id` (the machine's state is
// the caller's) and its deployment.created event; returns its id.
inline std::int64_t insert_deployment(Db& db, std::int64_t now, std::int64_t machine_id,
                                      const std::optional<VersionRef>& from,
                                      const ImageVersion& target, std::string_view kind,
                                      const AssignRequest& req, bool reboot,
                                      const std::optional<ConfigRecord>& config) {
  const std::optional<std::string> config_sha =
      config ? std::optional<std::string>(config->sha256) : std::nullopt;
  auto ins = db.prepare(
      "INSERT INTO deployments (machine_id, from_version_id, to_version_id, kind, "
      "requested_by, created_at, status, reboot, deadline_at, config, config_sha256) "
      "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?) RETURNING id");
  ins.bind(1, machine_id)
      .bind(2, from ? std::optional<std::int64_t>(from->id) : std::nullopt)
      .bind(3, target.id)
      .bind(4, kind)
      .bind(5, req.requested_by)
      .bind(6, now)
      .bind(7, static_cast<std::int64_t>(reboot ? 1 : 0))
      .bind(8, reboot ? req.deadline_at : std::nullopt)
      .bind(9, config ? std::optional<std::string>(config->sealed) : std::nullopt)
      .bind(10, config_sha);
  const std::int64_t id = returning_id(ins);
  append_event(db, now, "deployment.created", machine_id, id,
               {{"kind", kind},
                {"to", ref_json(VersionRef{target.id, target.name, target.version})},
                {"from", ref_json(from)},
                {"requested_by", req.requested_by},
                {"reboot", reboot},
                {"config_sha256", config_sha ? nlohmann::json(*config_sha) : nullptr}});
  return id;
}

// The core of assign/bulk/rollback; runs inside the caller's write transaction.
// `fixed_config`: the snapshot to apply (rollback, retry: the one of the deployment repeated);
// without it, req.config makes one (when set) from `profiles` (see config_inputs).
inline Result<AssignOutcome> assign_in_tx(
    Db& db, std::int64_t now, std::int64_t machine_id, const ImageVersion& target,
    const AssignRequest& req, std::string_view kind,
    const std::optional<std::optional<ConfigRecord>>& fixed_config = std::nullopt,
    const std::vector<ProfileRecord>* profiles = nullptr) {
  auto m = db.prepare(
      "SELECT m.approved, cv.id, cv.name, cv.version FROM machines m "
      "LEFT JOIN image_versions cv ON cv.id = m.current_version_id "
      "WHERE m.id = ? AND m.deleted_at IS NULL");
  m.bind(1, machine_id);
  if (!m.step()) return machine_not_found(machine_id);
  std::optional<VersionRef> from;
  if (!m.is_null(1)) from = VersionRef{m.int64(1), m.text(2), m.text(3)};
  if (m.int64(0) == 0) {
    return make_error(Errc::kConflict, "machine " + std::to_string(machine_id) +
                                           " awaits an operator's approval (POST "
                                           "/api/v1/machines/" +
                                           std::to_string(machine_id) + "/approve)");
  }

  bool has_bmc = false;
  if (req.reboot) {
    auto b = db.prepare("SELECT 1 FROM machine_bmcs WHERE machine_id = ?");
    b.bind(1, machine_id);
    has_bmc = b.step();
  }
  const auto reboot = reboot_for(machine_id, has_bmc, req);
  if (!reboot) return reboot.error();

  std::optional<ConfigRecord> config;
  if (fixed_config) {
    config = *fixed_config;
  } else if (req.config) {
    auto inputs = config_inputs(db, machine_id, profiles);
    if (!inputs) return inputs.error();
    inputs->layer = req.config_layer;
    auto made = req.config(*inputs);
    if (!made) return made.error();
    config = std::move(*made);
  }
  const std::optional<std::string> config_sha =
      config ? std::optional<std::string>(config->sha256) : std::nullopt;

  AssignOutcome out;
  if (auto active = active_deployment(db, machine_id)) {
    if (active->to_version_id == target.id && active->config_sha256 == config_sha) {
      out.deployment = *load_deployment(db, active->id);
      out.created = false;
      return out;
    }
    if (!req.force) {
      auto d = load_deployment(db, active->id);
      return make_error(Errc::kConflict,
                        "machine " + std::to_string(machine_id) + " is already deploying " +
                            d->to_version.name + ":" + d->to_version.version + " (deployment " +
                            std::to_string(active->id) + "); use force to supersede it");
    }
    supersede(db, now, machine_id, active->id,
              "superseded by " + std::string(kind) + " to " + target.name + ":" + target.version +
                  " requested by " + req.requested_by);
    out.superseded_id = active->id;
  }
  // An earlier deployment still waiting for its boot confirmation is no longer watched: this
  // one replaces what the machine runs.
  db.prepare(
        "UPDATE deployments SET deadline_at = NULL WHERE machine_id = ? AND status = 'succeeded' "
        "AND deadline_at IS NOT NULL")
      .bind(1, machine_id)
      .run();
  const std::int64_t id =
      insert_deployment(db, now, machine_id, from, target, kind, req, *reboot, config);
  db.prepare(
        "UPDATE machines SET state = 'deploying', state_reason = '', updated_at = ? "
        "WHERE id = ?")
      .bind(1, now)
      .bind(2, machine_id)
      .run();
  out.deployment = *load_deployment(db, id);
  return out;
}

// Connection settings that do not write to the database file.
inline void configure_connection(Db& db, const StoreOptions& o, bool writer) {
  if (db.dialect() == Dialect::kPostgres) {
    // busy_timeout_ms bounds waits for the writer lock and row locks (then DbError is_busy).
    // Durability (synchronous_commit) is the server's configuration.
    std::string sql = "SET lock_timeout = " + std::to_string(o.busy_timeout_ms) +
                      "; SET client_min_messages = warning";
    if (!writer) sql += "; SET default_transaction_read_only = on";
    db.exec(sql);
    return;
  }
  db.exec("PRAGMA busy_timeout = " + std::to_string(o.busy_timeout_ms));
  db.exec("PRAGMA foreign_keys = ON");
  if (writer) {
    db.exec(o.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
  } else {
    db.exec("PRAGMA query_only = ON");
  }
}

}  // namespace kiln::store::internal

namespace kiln::store {

// A reader connection borrowed from the pool; returned on destruction.
class Store::ReaderLease {
 public:
  ReaderLease(Store& store, std::unique_ptr<Db> db) : store_(store), db_(std::move(db)) {}
  ReaderLease(ReaderLease&& o) noexcept : store_(o.store_), db_(std::move(o.db_)) {}
  ~ReaderLease() {
    if (!db_) return;
    std::lock_guard lock(store_.readers_mu_);
    if (static_cast<int>(store_.idle_readers_.size()) < store_.options_.readers) {
      store_.idle_readers_.push_back(std::move(db_));
    }
  }
  Db& operator*() { return *db_; }
  Db* operator->() { return db_.get(); }

 private:
  Store& store_;
  std::unique_ptr<Db> db_;
};

}  // namespace kiln::store
