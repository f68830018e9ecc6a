// tests/unit/dhcp/fakes.h — what the DHCP unit tests share: client packets for the engine, the
// request context of the server at 10.0.0.1, and a lease table shared by several kilnd
// instances that refuses an address another client holds.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dhcp/backend.h"
#include "dhcp/engine.h"

namespace kiln::dhcp::test_support {

inline constexpr Ipv4 kServer{10, 0, 0, 1};

// A client's packet of type `t`: MAC 52:54:00:00:00:<n>, xid 1000+n, broadcast flag.
inline Packet client(std::uint8_t n, MessageType t) {
  Packet p;
  p.op = 1;
  p.xid = 1000u + n;
  p.chaddr = {0x52, 0x54, 0, 0, 0, n};
  p.flags = 0x8000;
  p.set(opt::kMessageType, std::vector<std::uint8_t>{static_cast<std::uint8_t>(t)});
  return p;
}

// A packet received at `now` on the interface of kServer.
inline RequestContext at(std::int64_t now) {
  RequestContext c;
  c.now_ms = now;
  c.interface_address = kServer;
  return c;
}

// Client `n` requests `ip`; `selecting`: in answer to kServer's offer (server id set).
inline Packet request_for(std::uint8_t n, const Ipv4& ip, bool selecting = true) {
  Packet p = client(n, MessageType::kRequest);
  p.set_ip(opt::kRequestedIp, ip);
  if (selecting) p.set_ip(opt::kServerId, kServer);
  return p;
}

// The lease table of several instances: a write for an address another client holds (bound,
// unexpired) is refused, as the shared store's conditional upsert does. `rows` is guarded by
// `mu` while a server thread may use the backend.
class SharedBackend : public Backend {
 public:
  std::vector<proto::DhcpLease> load_leases() override {
    std::lock_guard l(mu);
    std::vector<proto::DhcpLease> out;
    for (const auto& [ip, r] : rows) out.push_back(r);
    return out;
  }
  std::vector<std::string> save_leases(const std::vector<proto::DhcpLease>& leases) override {
    std::lock_guard l(mu);
    std::vector<std::string> refused;
    for (const auto& x : leases) {
      auto it = rows.find(x.ip);
      if (it != rows.end() && it->second.client != x.client && it->second.state == "bound" &&
          it->second.expires_at > x.updated_at) {
        refused.push_back(x.ip);
        continue;
      }
      rows[x.ip] = x;
    }
    return refused;
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> machine_macs() override {
    return {};
  }
  std::mutex mu;
  std::map<std::string, proto::DhcpLease> rows;
};

}  // namespace kiln::dhcp::test_support
