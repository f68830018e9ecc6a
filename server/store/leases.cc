// Store: DHCP leases and the machines' MACs for the DHCP server.
#include <algorithm>
#include <cstdint>
#include <unordered_set>

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

std::optional<DhcpLease> Store::load_dhcp_lease(const std::string& ip) {
  auto db = reader();
  auto s = db->prepare(
      "SELECT ip, client, mac, hostname, state, expires_at, updated_at FROM dhcp_leases "
      "WHERE ip = ?");
  s.bind(1, ip);
  if (!s.step()) return std::nullopt;
  return DhcpLease{s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.int64(5), s.int64(6)};
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

namespace {

// One conditional upsert for `rows` leases: a row is overwritten only when the same client
// holds it, or its lease expired, or it was released (a declined address stays quarantined
// until its row expires, whichever instance recorded the decline). Returns the addresses written.
std::string lease_upsert_sql(std::size_t rows) {
  std::string sql =
      "INSERT INTO dhcp_leases (ip, client, mac, hostname, state, expires_at, updated_at) VALUES ";
  for (std::size_t i = 0; i < rows; ++i)
    sql += i ? ", (?, ?, ?, ?, ?, ?, ?)" : "(?, ?, ?, ?, ?, ?, ?)";
  sql +=
      " ON CONFLICT (ip) DO UPDATE SET client = excluded.client, mac = excluded.mac, "
      "hostname = excluded.hostname, state = excluded.state, expires_at = excluded.expires_at, "
      "updated_at = excluded.updated_at "
      "WHERE dhcp_leases.client = excluded.client OR dhcp_leases.expires_at < ? "
      "OR dhcp_leases.state = 'released' RETURNING ip";
  return sql;
}

}  // namespace

std::vector<std::string> Store::save_dhcp_leases(const std::vector<DhcpLease>& leases) {
  if (leases.empty()) return {};
  // Within one batch a later row for an address supersedes an earlier one (one statement may
  // not touch a row twice).
  std::vector<const DhcpLease*> rows;
  {
    std::unordered_map<std::string_view, std::size_t> at;
    for (const auto& l : leases) {
      auto [it, fresh] = at.emplace(l.ip, rows.size());
      if (fresh) {
        rows.push_back(&l);
      } else {
        rows[it->second] = &l;
      }
    }
  }
  // In address order: two instances' batches then lock rows in the same order and cannot
  // deadlock each other.
  const auto v4 = [](std::string_view ip) {
    std::uint32_t v = 0, part = 0;
    for (char c : ip) {
      if (c == '.') {
        v = (v << 8) | part;
        part = 0;
      } else if (c >= '0' && c <= '9') {
        part = part * 10 + static_cast<std::uint32_t>(c - '0');
      }
    }
    return (v << 8) | part;
  };
  std::sort(rows.begin(), rows.end(),
            [&](const DhcpLease* a, const DhcpLease* b) { return v4(a->ip) < v4(b->ip); });
  std::unordered_set<std::string> written;
  std::lock_guard lock(write_mu_);
  Db& db = *writer_;
  const auto now = clock_.now_ms();
  Transaction tx(db, TxKind::kLeases);
  for_chunks(rows.size(), [&](std::size_t at, std::size_t n) {
    auto s = db.prepare(lease_upsert_sql(n));
    int i = 1;
    for (std::size_t k = 0; k < n; ++k) {
      const DhcpLease& l = *rows[at + k];
      s.bind(i++, l.ip)
          .bind(i++, l.client)
          .bind(i++, l.mac)
          .bind(i++, l.hostname)
          .bind(i++, l.state)
          .bind(i++, l.expires_at)
          .bind(i++, l.updated_at);
    }
    s.bind(i, now);
    while (s.step()) written.insert(s.text(0));
  });
  tx.commit();
  std::vector<std::string> refused;
  for (const auto* l : rows) {
    if (!written.contains(l->ip)) refused.push_back(l->ip);
  }
  return refused;
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
