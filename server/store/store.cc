#include "store/store.h"

#include <sqlite3.h>

#include <unordered_map>
#include <variant>

#include "core/crypto.h"
#include "store/sqlite.h"

namespace kiln::store {
namespace {

using proto::DeploymentStatus;
using proto::MachineState;
using Bind = std::variant<std::int64_t, std::string>;

constexpr char kActive[] = "('pending', 'running')";

void bind_all(Stmt& s, const std::vector<Bind>& binds, int first = 1) {
  int i = first;
  for (const auto& b : binds) {
    std::visit([&](const auto& v) { s.bind(i, v); }, b);
    ++i;
  }
}

nlohmann::json parse_json_object(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

std::optional<VersionRef> version_ref(const Stmt& s, int col) {
  if (s.is_null(col)) return std::nullopt;
  return VersionRef{s.int64(col), s.text(col + 1), s.text(col + 2)};
}

// Appends `selector` and `state` conditions over machines aliased `m`.
void append_machine_filter(const proto::Selector& selector,
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

constexpr char kMachineSelect[] =
    "SELECT m.id, m.name, m.uuid, m.state, m.state_reason, m.inventory, m.created_at, "
    "m.updated_at, cv.id, cv.name, cv.version, d.id, av.id, av.name, av.version, m.ipv4 "
    "FROM machines m "
    "LEFT JOIN image_versions cv ON cv.id = m.current_version_id "
    "LEFT JOIN deployments d ON d.machine_id = m.id AND d.status IN ('pending', 'running') "
    "LEFT JOIN image_versions av ON av.id = d.to_version_id "
    "WHERE m.deleted_at IS NULL";

Machine machine_from_row(const Stmt& s) {
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
  return m;
}

// Fills macs and labels of `machines` (sorted by id) with two range queries.
void load_machine_details(Db& db, std::vector<Machine>& machines) {
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

std::optional<Machine> load_machine(Db& db, std::int64_t id) {
  auto s = db.prepare(std::string(kMachineSelect) + " AND m.id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  std::vector<Machine> one{machine_from_row(s)};
  load_machine_details(db, one);
  return std::move(one.front());
}

Error machine_not_found(std::int64_t id) {
  return make_error(Errc::kNotFound, "machine " + std::to_string(id) + " not found");
}

constexpr char kDeploymentSelect[] =
    "SELECT d.id, d.machine_id, fv.id, fv.name, fv.version, tv.id, tv.name, tv.version, d.kind, "
    "d.requested_by, d.created_at, d.status, d.status_reason, d.stage, d.bytes_done, "
    "d.bytes_total, d.started_at, d.finished_at "
    "FROM deployments d "
    "LEFT JOIN image_versions fv ON fv.id = d.from_version_id "
    "JOIN image_versions tv ON tv.id = d.to_version_id ";

Deployment deployment_from_row(const Stmt& s) {
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
  return d;
}

std::optional<Deployment> load_deployment(Db& db, std::int64_t id) {
  auto s = db.prepare(std::string(kDeploymentSelect) + "WHERE d.id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return deployment_from_row(s);
}

void append_event(Db& db, std::int64_t now, std::string_view type,
                  std::optional<std::int64_t> machine_id, std::optional<std::int64_t> deployment_id,
                  const nlohmann::json& data) {
  db.prepare(
        "INSERT INTO events (created_at, type, machine_id, deployment_id, data) "
        "VALUES (?, ?, ?, ?, ?)")
      .bind(1, now)
      .bind(2, type)
      .bind(3, machine_id)
      .bind(4, deployment_id)
      .bind(5, data.dump())
      .run();
}

nlohmann::json ref_json(const std::optional<VersionRef>& v) {
  if (!v) return nullptr;
  return {{"image", v->name}, {"version", v->version}};
}

ImageVersion image_from_row(const Stmt& s) {
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
  return v;
}

constexpr char kImageSelect[] =
    "SELECT id, name, version, size_bytes, sha256, format, source_url, description, labels, "
    "created_by, created_at FROM image_versions WHERE deleted_at IS NULL ";

std::optional<ImageVersion> load_image_version(Db& db, const std::string& name,
                                               const std::string& version) {
  auto s = db.prepare(std::string(kImageSelect) + "AND name = ? AND version = ?");
  s.bind(1, name).bind(2, version);
  if (!s.step()) return std::nullopt;
  return image_from_row(s);
}

Error image_not_found(const std::string& name, const std::string& version) {
  return make_error(Errc::kNotFound, "image version " + name + ":" + version + " not found");
}

// Marks the active deployment `id` superseded, recording why.
void supersede(Db& db, std::int64_t now, std::int64_t machine_id, std::int64_t id,
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
};

std::optional<ActiveDeployment> active_deployment(Db& db, std::int64_t machine_id) {
  auto s = db.prepare(std::string("SELECT id, to_version_id FROM deployments WHERE machine_id = ? "
                                  "AND status IN ") +
                      kActive);
  s.bind(1, machine_id);
  if (!s.step()) return std::nullopt;
  return ActiveDeployment{s.int64(0), s.int64(1)};
}

// The core of assign/bulk/rollback; runs inside the caller's write transaction.
Result<AssignOutcome> assign_in_tx(Db& db, std::int64_t now, std::int64_t machine_id,
                                   const ImageVersion& target, const AssignRequest& req,
                                   std::string_view kind) {
  auto m =
      db.prepare("SELECT current_version_id FROM machines WHERE id = ? AND deleted_at IS NULL");
  m.bind(1, machine_id);
  if (!m.step()) return machine_not_found(machine_id);
  const std::optional<std::int64_t> from = m.opt_int64(0);

  AssignOutcome out;
  if (auto active = active_deployment(db, machine_id)) {
    if (active->to_version_id == target.id) {
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
  db.prepare(
        "INSERT INTO deployments (machine_id, from_version_id, to_version_id, kind, "
        "requested_by, created_at, status) VALUES (?, ?, ?, ?, ?, ?, 'pending')")
      .bind(1, machine_id)
      .bind(2, from)
      .bind(3, target.id)
      .bind(4, kind)
      .bind(5, req.requested_by)
      .bind(6, now)
      .run();
  const std::int64_t id = db.last_insert_rowid();
  db.prepare(
        "UPDATE machines SET state = 'deploying', state_reason = '', updated_at = ? "
        "WHERE id = ?")
      .bind(1, now)
      .bind(2, machine_id)
      .run();
  out.deployment = *load_deployment(db, id);
  append_event(db, now, "deployment.created", machine_id, id,
               {{"kind", kind},
                {"to", ref_json(out.deployment.to_version)},
                {"from", ref_json(out.deployment.from_version)},
                {"requested_by", req.requested_by}});
  return out;
}

// Connection settings that do not write to the database file.
void configure_connection(Db& db, const StoreOptions& o, bool writer) {
  db.exec("PRAGMA busy_timeout = " + std::to_string(o.busy_timeout_ms));
  db.exec("PRAGMA foreign_keys = ON");
  if (writer) {
    db.exec(o.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
  } else {
    db.exec("PRAGMA query_only = ON");
  }
}

}  // namespace

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

Store::ReaderLease Store::reader() {
  {
    std::lock_guard lock(readers_mu_);
    if (!idle_readers_.empty()) {
      auto db = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return ReaderLease(*this, std::move(db));
    }
  }
  auto db = std::make_unique<Db>(options_.path, /*read_only=*/false);
  configure_connection(*db, options_, /*writer=*/false);
  return ReaderLease(*this, std::move(db));
}

Store::Store(const StoreOptions& options, const Clock& clock) : options_(options), clock_(clock) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options, const Clock& clock,
                                           std::span<const Migration> migrations) {
  std::unique_ptr<Store> s(new Store(options, clock));
  try {
    s->writer_ = std::make_unique<Db>(options.path, /*read_only=*/false);
    configure_connection(*s->writer_, options, /*writer=*/true);
    auto report = migrate(*s->writer_, migrations, clock.now_ms());
    if (!report) return report.error();
    // Only a database this binary accepts is switched to WAL (a persistent file change).
    s->writer_->exec("PRAGMA journal_mode = WAL");
  } catch (const SqliteError& e) {
    return make_error(Errc::kInternal, "cannot open database " + options.path + ": " + e.what());
  }
  return s;
}

int Store::schema_version() {
  std::lock_guard lock(write_mu_);
  return kiln::store::schema_version(*writer_);
}

std::string Store::integrity_check() {
  std::lock_guard lock(write_mu_);
  auto s = writer_->prepare("PRAGMA integrity_check");
  std::string out;
  while (s.step()) {
    if (!out.empty()) out += "\n";
    out += s.text(0);
  }
  return out;
}

// --- machines --------------------------------------------------------------------------------

Result<Machine> Store::create_machine(const NewMachine& nm, const std::string& who) {
  if (nm.macs.empty()) return make_error(Errc::kInvalid, "a machine needs at least one MAC");
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  for (const auto& mac : nm.macs) {
    auto s = db.prepare("SELECT machine_id FROM machine_macs WHERE mac = ?");
    s.bind(1, mac);
    if (s.step()) {
      return make_error(Errc::kConflict, "MAC " + mac + " is already registered to machine " +
                                             std::to_string(s.int64(0)));
    }
  }
  if (nm.uuid) {
    auto s = db.prepare("SELECT id FROM machines WHERE uuid = ? AND deleted_at IS NULL");
    s.bind(1, *nm.uuid);
    if (s.step()) {
      return make_error(Errc::kConflict, "UUID " + *nm.uuid + " is already registered to machine " +
                                             std::to_string(s.int64(0)));
    }
  }
  if (nm.ipv4) {
    auto s = db.prepare("SELECT id FROM machines WHERE ipv4 = ? AND deleted_at IS NULL");
    s.bind(1, *nm.ipv4);
    if (s.step()) {
      return make_error(
          Errc::kConflict,
          "address " + *nm.ipv4 + " is already reserved for machine " + std::to_string(s.int64(0)));
    }
  }
  db.prepare(
        "INSERT INTO machines (name, uuid, ipv4, state, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?)")
      .bind(1, nm.name)
      .bind(2, nm.uuid)
      .bind(3, nm.ipv4)
      .bind(4, proto::to_string(nm.state))
      .bind(5, now)
      .bind(6, now)
      .run();
  const std::int64_t id = db.last_insert_rowid();
  int pos = 0;
  for (const auto& mac : nm.macs) {
    try {
      db.prepare("INSERT INTO machine_macs (mac, machine_id, position) VALUES (?, ?, ?)")
          .bind(1, mac)
          .bind(2, id)
          .bind(3, pos++)
          .run();
    } catch (const SqliteError& e) {
      if (e.is_constraint()) return make_error(Errc::kInvalid, "MAC " + mac + " listed twice");
      throw;
    }
  }
  for (const auto& [k, v] : nm.labels) {
    db.prepare("INSERT INTO machine_labels (machine_id, key, value) VALUES (?, ?, ?)")
        .bind(1, id)
        .bind(2, k)
        .bind(3, v)
        .run();
  }
  append_event(db, now, "machine.created", id, std::nullopt,
               {{"macs", nm.macs}, {"labels", nm.labels}, {"by", who}});
  auto m = load_machine(db, id);
  tx.commit();
  return std::move(*m);
}

Result<Machine> Store::get_machine(std::int64_t id) {
  auto db = reader();
  auto m = load_machine(*db, id);
  if (!m) return machine_not_found(id);
  return std::move(*m);
}

Result<Machine> Store::find_machine_by_mac(const std::string& mac) {
  auto db = reader();
  auto s = db->prepare("SELECT machine_id FROM machine_macs WHERE mac = ?");
  s.bind(1, mac);
  if (!s.step()) return make_error(Errc::kNotFound, "no machine with MAC " + mac);
  auto m = load_machine(*db, s.int64(0));
  if (!m) return make_error(Errc::kNotFound, "no machine with MAC " + mac);
  return std::move(*m);
}

MachinePage Store::list_machines(const MachineFilter& f) {
  std::string sql = kMachineSelect;
  std::vector<Bind> binds;
  append_machine_filter(f.selector, f.state, sql, binds);
  sql += " AND m.id > ? ORDER BY m.id LIMIT ?";
  binds.emplace_back(f.after_id);
  binds.emplace_back(static_cast<std::int64_t>(f.limit) + 1);
  auto db = reader();
  // One read transaction, so rows and their labels/MACs come from the same snapshot.
  Transaction tx(*db, /*immediate=*/false);
  auto s = db->prepare(sql);
  bind_all(s, binds);
  MachinePage page;
  while (s.step()) page.items.push_back(machine_from_row(s));
  if (static_cast<int>(page.items.size()) > f.limit) {
    page.items.pop_back();
    page.next_after = page.items.back().id;
  }
  load_machine_details(*db, page.items);
  tx.commit();
  return page;
}

Result<Machine> Store::patch_machine_labels(std::int64_t id, const LabelPatch& patch,
                                            const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  if (!load_machine(db, id)) return machine_not_found(id);
  nlohmann::json changes = nlohmann::json::object();
  for (const auto& [k, v] : patch) {
    if (v) {
      db.prepare(
            "INSERT INTO machine_labels (machine_id, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (machine_id, key) DO UPDATE SET value = excluded.value")
          .bind(1, id)
          .bind(2, k)
          .bind(3, *v)
          .run();
      changes[k] = *v;
    } else {
      db.prepare("DELETE FROM machine_labels WHERE machine_id = ? AND key = ?")
          .bind(1, id)
          .bind(2, k)
          .run();
      changes[k] = nullptr;
    }
  }
  db.prepare("UPDATE machines SET updated_at = ? WHERE id = ?").bind(1, now).bind(2, id).run();
  append_event(db, now, "machine.labels_changed", id, std::nullopt,
               {{"labels", changes}, {"by", who}});
  auto m = load_machine(db, id);
  tx.commit();
  return std::move(*m);
}

Status Store::delete_machine(std::int64_t id, bool force, const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  if (!load_machine(db, id)) return machine_not_found(id);
  if (auto active = active_deployment(db, id)) {
    if (!force) {
      return make_error(Errc::kConflict,
                        "machine " + std::to_string(id) + " has an active deployment (" +
                            std::to_string(active->id) + "); use force to delete it anyway");
    }
    supersede(db, now, id, active->id, "machine deleted by " + who);
  }
  db.prepare("DELETE FROM machine_macs WHERE machine_id = ?").bind(1, id).run();
  db.prepare("DELETE FROM machine_labels WHERE machine_id = ?").bind(1, id).run();
  db.prepare("UPDATE machines SET deleted_at = ?, updated_at = ? WHERE id = ?")
      .bind(1, now)
      .bind(2, now)
      .bind(3, id)
      .run();
  append_event(db, now, "machine.deleted", id, std::nullopt, {{"by", who}});
  tx.commit();
  return ok_status();
}

// --- image versions --------------------------------------------------------------------------

Result<std::pair<ImageVersion, bool>> Store::register_image_version(const ImageVersion& v) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  if (auto existing = load_image_version(db, v.name, v.version)) {
    if (existing->size_bytes == v.size_bytes && existing->sha256 == v.sha256 &&
        existing->format == v.format && existing->source_url == v.source_url) {
      return std::make_pair(std::move(*existing), false);
    }
    return make_error(Errc::kConflict, "image version " + v.name + ":" + v.version +
                                           " already exists with different content; versions "
                                           "are immutable, register a new version instead");
  }
  db.prepare(
        "INSERT INTO image_versions (name, version, size_bytes, sha256, format, source_url, "
        "description, labels, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind(1, v.name)
      .bind(2, v.version)
      .bind(3, v.size_bytes)
      .bind(4, v.sha256)
      .bind(5, v.format)
      .bind(6, v.source_url)
      .bind(7, v.description)
      .bind(8, v.labels.dump())
      .bind(9, v.created_by)
      .bind(10, now)
      .run();
  append_event(db, now, "image.registered", std::nullopt, std::nullopt,
               {{"image", v.name}, {"version", v.version}, {"by", v.created_by}});
  auto out = load_image_version(db, v.name, v.version);
  tx.commit();
  return std::make_pair(std::move(*out), true);
}

std::vector<ImageVersion> Store::list_image_versions(const std::optional<std::string>& name) {
  auto db = reader();
  auto s = db->prepare(std::string(kImageSelect) + (name ? "AND name = ? " : "") +
                       "ORDER BY name, created_at, id");
  if (name) s.bind(1, *name);
  std::vector<ImageVersion> out;
  while (s.step()) out.push_back(image_from_row(s));
  return out;
}

Result<ImageVersion> Store::get_image_version(const std::string& name, const std::string& version) {
  auto db = reader();
  auto v = load_image_version(*db, name, version);
  if (!v) return image_not_found(name, version);
  return std::move(*v);
}

Status Store::delete_image_version(const std::string& name, const std::string& version,
                                   const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto v = load_image_version(db, name, version);
  if (!v) return image_not_found(name, version);
  auto held = db.prepare(
      "SELECT count(*) FROM machines WHERE current_version_id = ? AND deleted_at IS NULL");
  held.bind(1, v->id);
  held.step();
  auto pending = db.prepare(std::string("SELECT count(*) FROM deployments WHERE to_version_id = ? "
                                        "AND status IN ") +
                            kActive);
  pending.bind(1, v->id);
  pending.step();
  if (held.int64(0) > 0 || pending.int64(0) > 0) {
    return make_error(Errc::kConflict,
                      "image version " + name + ":" + version + " is in use: deployed on " +
                          std::to_string(held.int64(0)) + " machine(s), target of " +
                          std::to_string(pending.int64(0)) + " active deployment(s)");
  }
  db.prepare("UPDATE image_versions SET deleted_at = ? WHERE id = ?")
      .bind(1, now)
      .bind(2, v->id)
      .run();
  append_event(db, now, "image.deleted", std::nullopt, std::nullopt,
               {{"image", name}, {"version", version}, {"by", who}});
  tx.commit();
  return ok_status();
}

// --- deployments -----------------------------------------------------------------------------

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
  std::string sql = "SELECT m.id FROM machines m WHERE m.deleted_at IS NULL";
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
  BulkOutcome out;
  for (auto id : ids) {
    auto r = assign_in_tx(db, now, id, *target, req, "assign");
    if (!r) {
      return make_error(r.error().code, r.error().message + "; nothing was assigned");
    }
    out.results.emplace_back(id, std::move(*r));
  }
  tx.commit();
  return out;
}

Result<AssignOutcome> Store::rollback(std::int64_t machine_id, const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  if (!load_machine(db, machine_id)) return machine_not_found(machine_id);
  auto latest = db.prepare(
      "SELECT to_version_id FROM deployments WHERE machine_id = ? ORDER BY id DESC LIMIT 1");
  latest.bind(1, machine_id);
  if (!latest.step()) {
    return make_error(Errc::kConflict, "machine " + std::to_string(machine_id) +
                                           " has no deployment history to roll back");
  }
  auto prev = db.prepare(
      "SELECT v.name, v.version, v.deleted_at FROM deployments d "
      "JOIN image_versions v ON v.id = d.to_version_id "
      "WHERE d.machine_id = ? AND d.status = 'succeeded' AND d.to_version_id != ? "
      "ORDER BY d.id DESC LIMIT 1");
  prev.bind(1, machine_id).bind(2, latest.int64(0));
  if (!prev.step()) {
    return make_error(Errc::kConflict, "machine " + std::to_string(machine_id) +
                                           " has no previous successfully deployed version "
                                           "to roll back to");
  }
  const std::string name = prev.text(0), version = prev.text(1);
  if (!prev.is_null(2)) {
    return make_error(Errc::kConflict, "the previous version " + name + ":" + version +
                                           " has been deleted; assign a version explicitly");
  }
  auto target = load_image_version(db, name, version);
  AssignRequest req{name, version, who, /*force=*/true};
  auto out = assign_in_tx(db, now, machine_id, *target, req, "rollback");
  if (out) tx.commit();
  return out;
}

// --- the boot path ----------------------------------------------------------------------------

Result<std::pair<Machine, bool>> Store::discover_machine(const std::string& mac,
                                                         const std::string& who) {
  if (auto m = find_machine_by_mac(mac)) return std::pair{std::move(*m), false};
  NewMachine nm;
  nm.macs = {mac};
  nm.state = MachineState::kDiscovered;
  auto created = create_machine(nm, who);
  if (created) return std::pair{std::move(*created), true};
  // Lost a race with another request for the same MAC: that one registered it.
  if (created.error().code == Errc::kConflict) {
    if (auto m = find_machine_by_mac(mac)) return std::pair{std::move(*m), false};
  }
  return created.error();
}

Result<Machine> Store::record_inventory(const std::string& mac, const nlohmann::json& inventory,
                                        const std::vector<std::string>& other_macs) {
  if (!inventory.is_object()) return make_error(Errc::kInvalid, "inventory must be an object");
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto s = db.prepare(
      "SELECT m.id, m.state FROM machine_macs mm JOIN machines m ON m.id = mm.machine_id "
      "WHERE mm.mac = ? AND m.deleted_at IS NULL");
  s.bind(1, mac);
  if (!s.step()) return make_error(Errc::kNotFound, "no machine with MAC " + mac);
  const std::int64_t id = s.int64(0);
  const std::string state = s.text(1);
  if (state != "discovered") {
    return make_error(Errc::kConflict, "machine " + std::to_string(id) + " is " + state +
                                           "; inventory is taken only while it is discovered");
  }
  db.prepare(
        "UPDATE machines SET inventory = ?, state = 'ready', state_reason = '', updated_at = ? "
        "WHERE id = ?")
      .bind(1, inventory.dump())
      .bind(2, now)
      .bind(3, id)
      .run();
  std::vector<std::string> added, skipped;
  for (const auto& other : other_macs) {
    auto owner = db.prepare("SELECT machine_id FROM machine_macs WHERE mac = ?");
    owner.bind(1, other);
    if (owner.step()) {
      if (owner.int64(0) != id) skipped.push_back(other);
      continue;
    }
    db.prepare(
          "INSERT INTO machine_macs (mac, machine_id, position) VALUES (?, ?, "
          "(SELECT COALESCE(MAX(position), -1) + 1 FROM machine_macs WHERE machine_id = ?))")
        .bind(1, other)
        .bind(2, id)
        .bind(3, id)
        .run();
    added.push_back(other);
  }
  append_event(
      db, now, "machine.inventory", id, std::nullopt,
      {{"mac", mac}, {"from_state", state}, {"macs_added", added}, {"macs_skipped", skipped}});
  auto m = load_machine(db, id);
  tx.commit();
  return std::move(*m);
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
  // The streak: the latest failed deployments of one version, back to (and including) the
  // last one someone asked for; a new assignment, even of the same version, starts afresh.
  auto s = db.prepare(
      "SELECT status, to_version_id, requested_by FROM deployments WHERE machine_id = ? "
      "ORDER BY id DESC LIMIT ?");
  s.bind(1, machine_id).bind(2, static_cast<std::int64_t>(max_attempts) + 1);
  int failed_in_a_row = 0;
  std::optional<std::int64_t> version_id;
  while (s.step()) {
    if (s.text(0) != "failed") break;
    if (version_id && *version_id != s.int64(1)) break;
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
  AssignRequest req{target.name, target.version, who, /*force=*/false};
  auto out = assign_in_tx(db, now, machine_id, target, req, "assign");
  if (out) tx.commit();
  return out;
}

Result<std::vector<Deployment>> Store::list_deployments(std::int64_t machine_id) {
  auto db = reader();
  Transaction tx(*db, /*immediate=*/false);
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
  if (!d) return make_error(Errc::kNotFound, "deployment " + std::to_string(id) + " not found");
  return std::move(*d);
}

Result<std::string> Store::mint_agent_token(std::int64_t deployment_id,
                                            std::int64_t expires_at_ms) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  Transaction tx(db);
  auto d = load_deployment(db, deployment_id);
  if (!d) {
    return make_error(Errc::kNotFound,
                      "deployment " + std::to_string(deployment_id) + " not found");
  }
  if (!proto::is_active(d->status)) {
    return make_error(Errc::kConflict, "deployment " + std::to_string(deployment_id) + " is " +
                                           proto::to_string(d->status) + "; no agent token");
  }
  std::string token = "kilnagent_" + random_hex(20);
  db.prepare("UPDATE deployments SET agent_token_hash = ?, agent_token_expires_at = ? WHERE id = ?")
      .bind(1, sha256_hex(token))
      .bind(2, expires_at_ms)
      .bind(3, deployment_id)
      .run();
  tx.commit();
  return token;
}

Result<Deployment> Store::authenticate_agent(const std::string& token) {
  auto db = reader();
  auto s = db->prepare(std::string("SELECT id, agent_token_expires_at FROM deployments WHERE "
                                   "agent_token_hash = ? AND status IN ") +
                       kActive);
  s.bind(1, sha256_hex(token));
  if (!s.step() || s.int64(1) <= clock_.now_ms()) {
    return make_error(Errc::kUnauthorized, "unknown, expired or finished deployment token");
  }
  return std::move(*load_deployment(*db, s.int64(0)));
}

Result<Deployment> Store::report_progress(std::int64_t deployment_id, const AgentReport& r) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto d = load_deployment(db, deployment_id);
  if (!d) {
    return make_error(Errc::kNotFound,
                      "deployment " + std::to_string(deployment_id) + " not found");
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
          "started_at = COALESCE(started_at, ?), finished_at = ? WHERE id = ?")
        .bind(1, proto::to_string(*r.result))
        .bind(2, r.reason)
        .bind(3, r.stage)
        .bind(4, r.bytes_done)
        .bind(5, r.bytes_total)
        .bind(6, now)
        .bind(7, now)
        .bind(8, deployment_id)
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

// --- API tokens ------------------------------------------------------------------------------

Result<std::pair<Token, std::string>> Store::create_token(const std::string& name,
                                                          proto::Scope scope) {
  if (name.empty() || name.size() > 64) {
    return make_error(Errc::kInvalid, "token name must be 1-64 characters");
  }
  std::string clear = "kiln_" + random_hex(20);
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  db.prepare("INSERT INTO api_tokens (name, scope, token_hash, created_at) VALUES (?, ?, ?, ?)")
      .bind(1, name)
      .bind(2, proto::to_string(scope))
      .bind(3, sha256_hex(clear))
      .bind(4, now)
      .run();
  Token t{db.last_insert_rowid(), name, scope, now, std::nullopt};
  append_event(db, now, "token.created", std::nullopt, std::nullopt,
               {{"token_id", t.id}, {"name", name}, {"scope", proto::to_string(scope)}});
  tx.commit();
  return std::make_pair(t, clear);
}

std::optional<Token> Store::authenticate(const std::string& clear_token) {
  auto db = reader();
  auto s = db->prepare(
      "SELECT id, name, scope, created_at FROM api_tokens WHERE token_hash = ? AND "
      "revoked_at IS NULL");
  s.bind(1, sha256_hex(clear_token));
  if (!s.step()) return std::nullopt;
  return Token{s.int64(0), s.text(1), proto::parse_scope(s.text(2)).value_or(proto::Scope::kRead),
               s.int64(3), std::nullopt};
}

std::vector<Token> Store::list_tokens() {
  auto db = reader();
  auto s =
      db->prepare("SELECT id, name, scope, created_at, revoked_at FROM api_tokens ORDER BY id");
  std::vector<Token> out;
  while (s.step()) {
    out.push_back(Token{s.int64(0), s.text(1),
                        proto::parse_scope(s.text(2)).value_or(proto::Scope::kRead), s.int64(3),
                        s.opt_int64(4)});
  }
  return out;
}

Status Store::revoke_token(std::int64_t id, const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  db.prepare("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
      .bind(1, now)
      .bind(2, id)
      .run();
  if (db.changes() == 0) {
    return make_error(Errc::kNotFound, "no active token with id " + std::to_string(id));
  }
  append_event(db, now, "token.revoked", std::nullopt, std::nullopt,
               {{"token_id", id}, {"by", who}});
  tx.commit();
  return ok_status();
}

// --- DHCP leases -----------------------------------------------------------------------------

std::vector<DhcpLease> Store::load_dhcp_leases() {
  auto db = reader();
  auto s = db->prepare(
      "SELECT ip, client, mac, hostname, state, expires_at, updated_at FROM dhcp_leases");
  std::vector<DhcpLease> out;
  while (s.step()) {
    out.push_back({s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.int64(5), s.int64(6)});
  }
  return out;
}

std::vector<std::string> Store::bound_lease_addresses(const std::string& mac) {
  auto db = reader();
  auto s = db->prepare(
      "SELECT ip FROM dhcp_leases WHERE mac = ? AND state = 'bound' AND expires_at > ?");
  s.bind(1, mac).bind(2, clock_.now_ms());
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

void Store::save_dhcp_leases(const std::vector<DhcpLease>& leases) {
  if (leases.empty()) return;
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  Transaction tx(db);
  for (const auto& l : leases) {
    db.prepare(
          "INSERT INTO dhcp_leases (ip, client, mac, hostname, state, expires_at, updated_at) "
          "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ip) DO UPDATE SET client = excluded.client, "
          "mac = excluded.mac, hostname = excluded.hostname, state = excluded.state, "
          "expires_at = excluded.expires_at, updated_at = excluded.updated_at")
        .bind(1, l.ip)
        .bind(2, l.client)
        .bind(3, l.mac)
        .bind(4, l.hostname)
        .bind(5, l.state)
        .bind(6, l.expires_at)
        .bind(7, l.updated_at)
        .run();
  }
  tx.commit();
}

std::vector<std::pair<std::string, std::optional<std::string>>> Store::list_machine_macs() {
  auto db = reader();
  auto s = db->prepare(
      "SELECT mm.mac, m.ipv4 FROM machine_macs mm JOIN machines m ON m.id = mm.machine_id "
      "WHERE m.deleted_at IS NULL");
  std::vector<std::pair<std::string, std::optional<std::string>>> out;
  while (s.step()) out.emplace_back(s.text(0), s.opt_text(1));
  return out;
}

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
