// dhcp/engine.h — the DHCP server's decisions as pure code: which address a client gets, how
// leases move between states, what a reply contains and where it goes. No sockets, no SQL:
// the server feeds parsed packets and the time in, sends the replies out and persists the lease
// changes the engine returns (before an ACK leaves; see dhcp/server.h).
//
// Authoritative mode (RFC 2131): DISCOVER -> OFFER (an in-memory offer that expires), REQUEST
// in SELECTING / INIT-REBOOT / RENEWING / REBINDING -> ACK or NAK, DECLINE quarantines the
// address, RELEASE frees it, INFORM gets configuration without an address. Addresses come from
// the machine's reservation, then the client's previous lease, then the address it asks for,
// then the pool. Relayed requests (giaddr) are served from the subnet containing giaddr and
// answered through the relay with option 82 echoed.
//
// Proxy mode (PXE spec 2.1 proxyDHCP): only PXE/HTTP boot clients get an answer, with boot
// information and no address; another server hands out addresses.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "boot/pxe.h"
#include "dhcp/packet.h"

namespace kiln::dhcp {

struct Subnet {
  Ipv4 network{};
  int prefix = 24;
  Ipv4 pool_first{}, pool_last{};  // inclusive
  std::optional<Ipv4> router;
  std::vector<Ipv4> dns;
  std::string domain;
  std::uint32_t lease_time_s = 3600;

  std::uint32_t mask_u32() const { return prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix); }
  Ipv4 mask() const { return from_u32(mask_u32()); }
  bool contains(const Ipv4& a) const {
    return (to_u32(a) & mask_u32()) == (to_u32(network) & mask_u32());
  }
  bool in_pool(const Ipv4& a) const {
    return to_u32(a) >= to_u32(pool_first) && to_u32(a) <= to_u32(pool_last);
  }
};
// "10.0.0.0/24" -> network and prefix; false if malformed.
bool parse_cidr(std::string_view s, Ipv4& network, int& prefix);

struct Lease {
  enum class State { kOffered, kBound, kReleased, kDeclined };
  Ipv4 ip{};
  std::string client;  // client identifier (option 61, hex) or the MAC
  std::string mac;
  std::string hostname;
  State state = State::kOffered;
  std::int64_t expires_ms = 0;  // kOffered/kBound: end of the lease; kDeclined: of quarantine
  std::int64_t updated_ms = 0;
};
const char* to_string(Lease::State s);

// Leases by address and by client. Not thread-safe: the DHCP server owns it on one strand.
class LeaseTable {
 public:
  void put(const Lease& l);
  const Lease* by_ip(const Ipv4& ip) const;
  const Lease* by_client(const std::string& client) const;
  // The address is taken at `now` by someone other than `client` (an unexpired offer or lease,
  // or a quarantined declined address).
  bool taken(const Ipv4& ip, const std::string& client, std::int64_t now) const;
  std::size_t size() const { return by_ip_.size(); }
  std::vector<Lease> all() const;

 private:
  std::map<std::uint32_t, Lease> by_ip_;
  std::map<std::string, std::uint32_t> by_client_;
};

struct EngineConfig {
  Ipv4 server_id{};  // this server's address on the network (option 54, siaddr, TFTP server)
  std::vector<Subnet> subnets;
  bool proxy = false;
  boot::BootPolicy boot;
  std::uint32_t offer_ttl_s = 60;
  std::uint32_t decline_quarantine_s = 600;
};

// Per-request facts the server looks up before calling the engine.
struct RequestContext {
  std::int64_t now_ms = 0;
  Ipv4 interface_address{};      // the address of the interface the request came in on
  bool via_4011 = false;         // proxyDHCP port
  bool known = false;            // kiln has a machine with this MAC
  std::optional<Ipv4> reserved;  // that machine's reserved address
  // Another machine's reservation: never offered to anyone else.
  std::function<bool(const Ipv4&)> reserved_for_other;
};

struct Reply {
  enum class To {
    kNone,       // no answer (not for us, or nothing to say)
    kBroadcast,  // 255.255.255.255:68 on the interface
    kClientHw,   // unicast to yiaddr at chaddr (needs an ARP entry; broadcast otherwise)
    kCiaddr,     // unicast to ciaddr:68
    kRelay,      // unicast to giaddr:67
    kSource,     // back to the sender's address and port (proxyDHCP on 4011)
  } to = To::kNone;
  Packet packet;
  std::optional<Lease> persist;  // write this lease durably before sending an ACK
  std::string log;               // one line: what happened and why
};

class Engine {
 public:
  explicit Engine(EngineConfig cfg) : cfg_(std::move(cfg)) {}
  const EngineConfig& config() const { return cfg_; }
  LeaseTable& leases() { return leases_; }

  Reply handle(const Packet& req, const RequestContext& ctx);

 private:
  const Subnet* select_subnet(const Packet& req, const RequestContext& ctx) const;
  std::optional<Ipv4> pick_address(const Subnet& s, const std::string& client, const Packet& req,
                                   const RequestContext& ctx);
  Packet base_reply(const Packet& req, MessageType type) const;
  void add_config(Packet& p, const Subnet& s, bool with_lease) const;
  void add_boot(Packet& p, const Packet& req, const RequestContext& ctx) const;
  Reply addressed(Reply r, const Packet& req) const;
  Reply nak(const Packet& req, std::string why) const;
  Reply handle_proxy(const Packet& req, const RequestContext& ctx);

  EngineConfig cfg_;
  LeaseTable leases_;
  std::map<const Subnet*, std::uint32_t> cursor_;
};

// The client key: option 61 as hex when present, else the MAC.
std::string client_key(const Packet& p);

}  // namespace kiln::dhcp
