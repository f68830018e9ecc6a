// dhcp/backend.h — what the DHCP server needs of kiln's state, declared by the DHCP server
// (the consumer owns the interface): its leases, persisted, and the registered machines' MACs
// with their reserved addresses. daemon/ adapts the store to it; tests use an in-memory fake.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dhcp/engine.h"
#include "proto/dhcp_lease.h"

namespace kiln::dhcp {

// Called from the DHCP server's threads (start(), the packet thread and the lease writer)
// concurrently: implementations are thread-safe. A storage failure throws; the server logs it
// (and, for save_leases, sends none of the batch's replies).
class Backend {
 public:
  virtual ~Backend() = default;
  // Every persisted lease, whatever its state (authoritative mode loads them at start).
  virtual std::vector<proto::DhcpLease> load_leases() = 0;
  // Upserts every lease (keyed by address) durably, in one transaction: when it returns, the
  // whole batch is committed and its ACKs may be sent. An empty batch is a no-op. Returns the
  // addresses it REFUSED to write: another kilnd instance sharing the database holds them for
  // another client (an unexpired lease). Their replies are not sent; the server re-reads them.
  virtual std::vector<std::string> save_leases(const std::vector<proto::DhcpLease>& leases) = 0;
  // The persisted lease of one address, nullopt when there is none. The default scans
  // load_leases(); a database backend may look the one row up.
  virtual std::optional<proto::DhcpLease> load_lease(const std::string& ip) {
    for (auto& l : load_leases()) {
      if (l.ip == ip) return std::move(l);
    }
    return std::nullopt;
  }
  // Every live machine's MACs (canonical, lower-case), each with the machine's reserved IPv4
  // address (dotted quad) if it has one: the "known machine" check and reservations.
  virtual std::vector<std::pair<std::string, std::optional<std::string>>> machine_macs() = 0;
};

// A lease as the backend stores it, and back (nullopt: the row's address does not parse).
proto::DhcpLease to_row(const Lease& l);
std::optional<Lease> from_row(const proto::DhcpLease& r);

}  // namespace kiln::dhcp
