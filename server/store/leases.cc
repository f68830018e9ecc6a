// Store: DHCP leases and the machines' MACs for the DHCP server.
#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

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

}  // namespace kiln::store
