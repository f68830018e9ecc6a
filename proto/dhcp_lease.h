// proto/dhcp_lease.h — a DHCP lease as it is persisted: the value type the DHCP server
// (dhcp/server.h, which keeps the live table in dhcp/engine.h) hands to its lease backend and
// that the store writes as one `dhcp_leases` row. Shared here because dhcp sits above store.
#pragma once

#include <cstdint>
#include <string>

namespace kiln::proto {

struct DhcpLease {
  std::string ip;      // dotted quad; the row's key
  std::string client;  // client identifier (option 61, hex) or the MAC
  std::string mac;
  std::string hostname;
  std::string state;            // offered | bound | released | declined
  std::int64_t expires_at = 0;  // ms since the epoch: end of the lease (declined: of quarantine)
  std::int64_t updated_at = 0;  // ms since the epoch
};

}  // namespace kiln::proto
