// Store: machines (create, get, list, label, delete), discovery and inventory.
#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

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
  auto ins = db.prepare(
      "INSERT INTO machines (name, uuid, ipv4, state, created_at, updated_at, approved) "
      "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id");
  ins.bind(1, nm.name)
      .bind(2, nm.uuid)
      .bind(3, nm.ipv4)
      .bind(4, proto::to_string(nm.state))
      .bind(5, now)
      .bind(6, now)
      .bind(7, std::int64_t{nm.approved ? 1 : 0});
  const std::int64_t id = returning_id(ins);
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
  Transaction tx(*db, TxKind::kRead);
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
  // Its BMC credentials go with it, and no deadline of its deployments is watched any more.
  db.prepare("DELETE FROM machine_bmcs WHERE machine_id = ?").bind(1, id).run();
  db.prepare(
        "UPDATE deployments SET deadline_at = NULL WHERE machine_id = ? AND status = "
        "'succeeded' AND deadline_at IS NOT NULL")
      .bind(1, id)
      .run();
  db.prepare("UPDATE machines SET deleted_at = ?, updated_at = ? WHERE id = ?")
      .bind(1, now)
      .bind(2, now)
      .bind(3, id)
      .run();
  append_event(db, now, "machine.deleted", id, std::nullopt, {{"by", who}});
  tx.commit();
  return ok_status();
}

// --- the boot path ----------------------------------------------------------------------------

Result<std::pair<Machine, bool>> Store::discover_machine(const std::string& mac,
                                                         const std::string& who, bool approved) {
  if (auto m = find_machine_by_mac(mac)) return std::pair{std::move(*m), false};
  NewMachine nm;
  nm.macs = {mac};
  nm.state = MachineState::kDiscovered;
  nm.approved = approved;
  auto created = create_machine(nm, who);
  if (created) return std::pair{std::move(*created), true};
  // Lost a race with another request for the same MAC: that one registered it.
  if (created.error().code == Errc::kConflict) {
    if (auto m = find_machine_by_mac(mac)) return std::pair{std::move(*m), false};
  }
  return created.error();
}

Result<Machine> Store::approve_machine(std::int64_t id, const std::string& who) {
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto m = load_machine(db, id);
  if (!m) return machine_not_found(id);
  if (!m->approved) {
    db.prepare("UPDATE machines SET approved = 1, updated_at = ? WHERE id = ?")
        .bind(1, now)
        .bind(2, id)
        .run();
    append_event(db, now, "machine.approved", id, std::nullopt, {{"by", who}});
    m = load_machine(db, id);
  }
  tx.commit();
  return std::move(*m);
}

Result<Machine> Store::record_inventory(const std::string& mac, const nlohmann::json& inventory,
                                        const std::vector<std::string>& other_macs) {
  if (!inventory.is_object()) return make_error(Errc::kInvalid, "inventory must be an object");
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db);
  auto s = db.prepare(
      "SELECT m.id, m.state, m.approved FROM machine_macs mm "
      "JOIN machines m ON m.id = mm.machine_id WHERE mm.mac = ? AND m.deleted_at IS NULL");
  s.bind(1, mac);
  if (!s.step()) return make_error(Errc::kNotFound, "no machine with MAC " + mac);
  const std::int64_t id = s.int64(0);
  const std::string state = s.text(1);
  if (s.int64(2) == 0) {
    return make_error(Errc::kConflict, "machine " + std::to_string(id) +
                                           " awaits an operator's approval; no inventory yet");
  }
  if (state != "discovered") {
    return make_error(Errc::kConflict, "machine " + std::to_string(id) + " is " + state +
                                           "; inventory is taken only while it is discovered");
  }
  // The report is not authenticated: a MAC another machine owns is never moved or shared, and
  // a report that claims one is refused whole (and recorded), not quietly trimmed.
  for (const auto& other : other_macs) {
    auto owner = db.prepare(
        "SELECT mm.machine_id FROM machine_macs mm JOIN machines m ON m.id = mm.machine_id "
        "WHERE mm.mac = ?");
    owner.bind(1, other);
    if (owner.step() && owner.int64(0) != id) {
      const std::int64_t owner_id = owner.int64(0);
      // The refusal outlives the refused report: an event an operator can alert on.
      append_event(db, now, "machine.inventory_refused", id, std::nullopt,
                   {{"mac", mac}, {"claimed_mac", other}, {"owner", owner_id}});
      tx.commit();
      return make_error(Errc::kConflict, "MAC " + other + " belongs to machine " +
                                             std::to_string(owner_id) + "; inventory refused");
    }
  }
  db.prepare(
        "UPDATE machines SET inventory = ?, state = 'ready', state_reason = '', updated_at = ? "
        "WHERE id = ?")
      .bind(1, inventory.dump())
      .bind(2, now)
      .bind(3, id)
      .run();
  std::vector<std::string> added;
  for (const auto& other : other_macs) {
    auto owner = db.prepare("SELECT machine_id FROM machine_macs WHERE mac = ?");
    owner.bind(1, other);
    if (owner.step()) continue;  // already this machine's
    db.prepare(
          "INSERT INTO machine_macs (mac, machine_id, position) VALUES (?, ?, "
          "(SELECT COALESCE(MAX(position), -1) + 1 FROM machine_macs WHERE machine_id = ?))")
        .bind(1, other)
        .bind(2, id)
        .bind(3, id)
        .run();
    added.push_back(other);
  }
  append_event(db, now, "machine.inventory", id, std::nullopt,
               {{"mac", mac}, {"from_state", state}, {"macs_added", added}});
  auto m = load_machine(db, id);
  tx.commit();
  return std::move(*m);
}

}  // namespace kiln::store
