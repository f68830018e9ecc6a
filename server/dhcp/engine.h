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
// Hostile clients (issue 14): relayed requests count only from the configured relays' source
// addresses; an INIT-REBOOT REQUEST from a client without a lease record gets no answer (RFC
// 2131 4.3.2); RELEASE is honoured only from the client's own address and DECLINE only from it
// or, as RFC 2131 4.4.1 sends it, from 0.0.0.0 right after the ACK it declines; new leases (a
// client without a record at the address) cost a token of a global and of a per-MAC bucket,
// renewals never do; `known_only` serves only the MACs of machines kiln knows. A refused
// request is silent: Reply::refused names why (a metric label) and Reply::log says it in full.
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
  // Not persisted: until then a DECLINE from 0.0.0.0 is believed (the client's ARP check after
  // a fresh ACK); renewals and leases loaded at start have none.
  std::int64_t decline_until_ms = 0;
};
const char* to_string(Lease::State s);

// Leases by address and by client. Not thread-safe: the DHCP server owns it on one strand.
class LeaseTable {
 public:
  void put(const Lease& l);
  const Lease* by_ip(const Ipv4& ip) const;
  // Forgets the address's lease (and its client's index entry).
  void erase(const Ipv4& ip);
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

// A token bucket: holds up to `burst` tokens, refilled at `per_minute` a minute. per_minute 0
// means unlimited. Times are the engine's milliseconds; a clock going back refills nothing.
class TokenBucket {
 public:
  TokenBucket(std::uint32_t per_minute, std::uint32_t burst)
      : per_minute_(per_minute), burst_(burst), tokens_(burst) {}
  bool unlimited() const { return per_minute_ == 0; }
  bool has(std::int64_t now);
  void take(std::int64_t now);
  bool full(std::int64_t now);

 private:
  void refill(std::int64_t now);
  std::uint32_t per_minute_, burst_;
  double tokens_;
  std::int64_t last_ms_ = 0;
};

struct EngineConfig {
  Ipv4 server_id{};  // this server's address on the network (option 54, siaddr, TFTP server)
  std::vector<Subnet> subnets;
  bool proxy = false;
  boot::BootPolicy boot;
  std::uint32_t offer_ttl_s = 60;
  std::uint32_t decline_quarantine_s = 600;
  // A DECLINE from 0.0.0.0 is believed this long after the ACK of a new binding.
  std::uint32_t decline_window_s = 60;
  std::vector<Ipv4> relays;  // relayed (giaddr) requests are served only from these sources
  bool known_only = false;   // only machines kiln knows get leases (and INFORM answers)
  // New leases: globally and per MAC (chaddr), each a token bucket; 0 = unlimited.
  std::uint32_t new_lease_rate = 1200;  // a minute, all clients
  std::uint32_t new_lease_burst = 100;
  std::uint32_t new_lease_rate_per_mac = 6;  // a minute per MAC (also its burst)
};

// Per-request facts the server looks up before calling the engine.
struct RequestContext {
  std::int64_t now_ms = 0;
  Ipv4 interface_address{};      // the address of the interface the request came in on
  Ipv4 source{};                 // the packet's IP source address
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
  // Not served because of a policy against hostile clients: the reason, a metric label
  // (relay_not_allowed, init_reboot_unknown, release_not_from_client, decline_not_from_client,
  // rate_limited_mac, rate_limited_global, unknown_client). Empty otherwise.
  std::string refused;
};

class Engine {
 public:
  explicit Engine(EngineConfig cfg)
      : cfg_(std::move(cfg)), global_(cfg_.new_lease_rate, cfg_.new_lease_burst) {}
  const EngineConfig& config() const { return cfg_; }
  LeaseTable& leases() { return leases_; }

  Reply handle(const Packet& req, const RequestContext& ctx);
  // The backend refused to persist this engine's lease of `ip` (another instance holds it):
  // the engine's record of it is replaced by what the backend holds (`stored`, or nothing), so
  // the client that was offered it gets another address next time.
  void reload_lease(const Ipv4& ip, const std::optional<Lease>& stored);

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
  // A lease `client` holds no record for at `ip` takes a token of both buckets: "" if granted,
  // else the refusal reason.
  std::string admit_new_lease(const Packet& req, const std::string& client, const Ipv4& ip,
                              std::int64_t now);
  bool from_relay(const RequestContext& ctx) const;

  EngineConfig cfg_;
  TokenBucket global_;
  std::map<std::string, TokenBucket> per_mac_;  // only MACs that got a new lease; full ones pruned
  std::int64_t pruned_ms_ = 0;
  LeaseTable leases_;
  std::map<const Subnet*, std::uint32_t> cursor_;
};

// The client key: option 61 as hex when present, else the MAC.
std::string client_key(const Packet& p);

}  // namespace kiln::dhcp
