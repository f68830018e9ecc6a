#include "dhcp/engine.h"

#include <algorithm>
#include <charconv>

#include "core/hex.h"

namespace kiln::dhcp {

bool parse_cidr(std::string_view s, Ipv4& network, int& prefix) {
  const auto slash = s.find('/');
  if (slash == std::string_view::npos) return false;
  auto ip = parse_ipv4(s.substr(0, slash));
  if (!ip) return false;
  const auto p = s.substr(slash + 1);
  int v = -1;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  if (ec != std::errc() || end != p.data() + p.size() || v < 0 || v > 32) return false;
  network = *ip;
  prefix = v;
  return true;
}

const char* to_string(Lease::State s) {
  switch (s) {
    case Lease::State::kOffered:
      return "offered";
    case Lease::State::kBound:
      return "bound";
    case Lease::State::kReleased:
      return "released";
    case Lease::State::kDeclined:
      return "declined";
  }
  return "?";
}

std::string client_key(const Packet& p) {
  if (const Option* id = p.find(opt::kClientId); id && !id->data.empty()) {
    return "id:" + hex_encode(std::string_view(reinterpret_cast<const char*>(id->data.data()),
                                               id->data.size()));
  }
  return p.mac();
}

// --- LeaseTable ---------------------------------------------------------------------------

void LeaseTable::put(const Lease& l) {
  const std::uint32_t ip = to_u32(l.ip);
  if (auto old = by_ip_.find(ip); old != by_ip_.end() && old->second.client != l.client) {
    // The address moves to another client: the old client's index entry goes.
    if (auto c = by_client_.find(old->second.client); c != by_client_.end() && c->second == ip) {
      by_client_.erase(c);
    }
  }
  if (auto c = by_client_.find(l.client); c != by_client_.end() && c->second != ip) {
    // The client moves to another address: its old lease is dropped from the table.
    by_ip_.erase(c->second);
  }
  by_ip_[ip] = l;
  by_client_[l.client] = ip;
}

void LeaseTable::erase(const Ipv4& ip) {
  auto it = by_ip_.find(to_u32(ip));
  if (it == by_ip_.end()) return;
  if (auto c = by_client_.find(it->second.client);
      c != by_client_.end() && c->second == it->first) {
    by_client_.erase(c);
  }
  by_ip_.erase(it);
}

void Engine::reload_lease(const Ipv4& ip, const std::optional<Lease>& stored) {
  leases_.erase(ip);
  if (stored && stored->ip == ip) leases_.put(*stored);
}

const Lease* LeaseTable::by_ip(const Ipv4& ip) const {
  auto it = by_ip_.find(to_u32(ip));
  return it == by_ip_.end() ? nullptr : &it->second;
}

const Lease* LeaseTable::by_client(const std::string& client) const {
  auto it = by_client_.find(client);
  return it == by_client_.end() ? nullptr : by_ip(from_u32(it->second));
}

bool LeaseTable::taken(const Ipv4& ip, const std::string& client, std::int64_t now) const {
  const Lease* l = by_ip(ip);
  if (!l || l->expires_ms <= now) return false;
  if (l->state == Lease::State::kDeclined) return true;
  if (l->state == Lease::State::kReleased) return false;
  return l->client != client;
}

std::vector<Lease> LeaseTable::all() const {
  std::vector<Lease> out;
  out.reserve(by_ip_.size());
  for (const auto& [_, l] : by_ip_) out.push_back(l);
  return out;
}

// --- TokenBucket --------------------------------------------------------------------------

void TokenBucket::refill(std::int64_t now) {
  if (now > last_ms_) {
    tokens_ = std::min<double>(
        burst_, tokens_ + static_cast<double>(now - last_ms_) * per_minute_ / 60'000.0);
  }
  last_ms_ = now;
}

bool TokenBucket::has(std::int64_t now) {
  if (unlimited()) return true;
  refill(now);
  return tokens_ >= 1.0;
}

void TokenBucket::take(std::int64_t now) {
  if (unlimited()) return;
  refill(now);
  tokens_ = std::max(0.0, tokens_ - 1.0);
}

bool TokenBucket::full(std::int64_t now) {
  refill(now);
  return unlimited() || tokens_ >= burst_;
}

// --- Engine -------------------------------------------------------------------------------

bool Engine::from_relay(const RequestContext& ctx) const {
  return std::find(cfg_.relays.begin(), cfg_.relays.end(), ctx.source) != cfg_.relays.end();
}

std::string Engine::admit_new_lease(const Packet& req, const std::string& client, const Ipv4& ip,
                                    std::int64_t now) {
  if (const Lease* l = leases_.by_client(client); l && l->ip == ip) return "";  // not new
  const std::string mac = req.mac();
  auto it = per_mac_.find(mac);
  if (cfg_.new_lease_rate_per_mac != 0 && it != per_mac_.end() && !it->second.has(now)) {
    return "rate_limited_mac";
  }
  if (!global_.has(now)) return "rate_limited_global";
  global_.take(now);
  if (cfg_.new_lease_rate_per_mac == 0) return "";
  if (it == per_mac_.end()) {
    // Entries are made only for granted leases (so at most at the global rate) and dropped
    // once full again: the map stays small whatever a flood of MACs does.
    if (per_mac_.size() >= 256 && now - pruned_ms_ >= 10'000) {
      pruned_ms_ = now;
      for (auto m = per_mac_.begin(); m != per_mac_.end();) {
        m = m->second.full(now) ? per_mac_.erase(m) : std::next(m);
      }
    }
    it =
        per_mac_.emplace(mac, TokenBucket(cfg_.new_lease_rate_per_mac, cfg_.new_lease_rate_per_mac))
            .first;
    it->second.full(now);  // starts full at `now`
  }
  it->second.take(now);
  return "";
}

const Subnet* Engine::select_subnet(const Packet& req, const RequestContext& ctx) const {
  const Ipv4 zero{};
  // Relayed: the subnet of the relay's address. Direct: the interface's subnet.
  const Ipv4 key = req.giaddr != zero ? req.giaddr : ctx.interface_address;
  for (const auto& s : cfg_.subnets) {
    if (s.contains(key)) return &s;
  }
  return nullptr;
}

std::optional<Ipv4> Engine::pick_address(const Subnet& s, const std::string& client,
                                         const Packet& req, const RequestContext& ctx) {
  auto usable = [&](const Ipv4& ip) {
    return s.contains(ip) && !leases_.taken(ip, client, ctx.now_ms) &&
           !(ctx.reserved_for_other && ctx.reserved_for_other(ip));
  };
  if (ctx.reserved && s.contains(*ctx.reserved)) return ctx.reserved;
  if (const Lease* l = leases_.by_client(client);
      l && l->state != Lease::State::kDeclined && s.in_pool(l->ip) && usable(l->ip)) {
    return l->ip;
  }
  if (auto want = req.requested_ip(); want && s.in_pool(*want) && usable(*want)) return want;
  const std::uint32_t first = to_u32(s.pool_first), last = to_u32(s.pool_last);
  if (last < first) return std::nullopt;
  const std::uint64_t n = std::uint64_t{last} - first + 1;
  std::uint32_t& cur = cursor_[&s];
  for (std::uint64_t i = 0; i < n; ++i) {
    const Ipv4 ip = from_u32(first + static_cast<std::uint32_t>((cur + i) % n));
    if (usable(ip)) {
      cur = static_cast<std::uint32_t>((cur + i + 1) % n);
      return ip;
    }
  }
  return std::nullopt;
}

Packet Engine::base_reply(const Packet& req, MessageType type) const {
  Packet p;
  p.op = 2;
  p.htype = req.htype;
  p.hlen = req.hlen;
  p.xid = req.xid;
  p.flags = req.flags;
  p.giaddr = req.giaddr;
  p.chaddr = req.chaddr;
  p.set(opt::kMessageType, std::vector<std::uint8_t>{static_cast<std::uint8_t>(type)});
  p.set_ip(opt::kServerId, cfg_.server_id);
  if (const Option* relay = req.find(opt::kRelayAgent)) p.set(opt::kRelayAgent, relay->data);
  return p;
}

void Engine::add_config(Packet& p, const Subnet& s, bool with_lease) const {
  p.set_ip(opt::kSubnetMask, s.mask());
  if (s.router) p.set_ip(opt::kRouter, *s.router);
  if (!s.dns.empty()) {
    std::vector<std::uint8_t> d;
    for (const auto& a : s.dns) d.insert(d.end(), a.begin(), a.end());
    p.set(opt::kDns, std::move(d));
  }
  if (!s.domain.empty()) p.set(opt::kDomainName, s.domain);
  p.set_ip(opt::kBroadcast, from_u32(to_u32(s.network) | ~s.mask_u32()));
  if (with_lease) {
    p.set_u32(opt::kLeaseTime, s.lease_time_s);
    p.set_u32(opt::kRenewalTime, s.lease_time_s / 2);
    p.set_u32(opt::kRebindingTime, static_cast<std::uint32_t>(s.lease_time_s * 7ull / 8));
  }
}

void Engine::add_boot(Packet& p, const Packet& req, const RequestContext& ctx) const {
  boot::BootClient c{req.mac(),        req.client_arch(), req.vendor_class(),
                     req.user_class(), ctx.known,         req.ipxe_feature(opt::kIpxeFeatureHttps)};
  const auto d = boot::decide(c, cfg_.boot);
  if (d.kind == boot::BootDecision::Kind::kNone) return;
  p.siaddr = cfg_.server_id;
  p.file = d.file;
  p.set(opt::kBootfile, d.file);
  if (d.kind == boot::BootDecision::Kind::kTftp) p.set(opt::kTftpServer, to_string(cfg_.server_id));
  if (d.http_client) p.set(opt::kVendorClass, std::string_view("HTTPClient"));
  // Everything iPXE needs is in this offer: tell it not to wait 2 s for ProxyDHCP offers
  // (DHCP_DISC_PROXY_TIMEOUT_SEC) on every start. Not in proxy mode, where the address comes
  // from another server and ours is the ProxyDHCP offer.
  if (!cfg_.proxy && boot::is_ipxe(req.user_class())) {
    p.set(opt::kIpxeEncap, std::vector<std::uint8_t>{opt::kIpxeNoPxeDhcp, 1, 1});
  }
}

Reply Engine::addressed(Reply r, const Packet& req) const {
  const Ipv4 zero{};
  const auto type = r.packet.message_type();
  if (req.giaddr != zero) {
    r.to = Reply::To::kRelay;
  } else if (type == MessageType::kNak) {
    r.to = Reply::To::kBroadcast;
  } else if (req.ciaddr != zero) {
    r.to = Reply::To::kCiaddr;
  } else if (req.broadcast()) {
    r.to = Reply::To::kBroadcast;
  } else {
    r.to = Reply::To::kClientHw;
  }
  return r;
}

Reply Engine::nak(const Packet& req, std::string why) const {
  Reply r;
  r.packet = base_reply(req, MessageType::kNak);
  r.packet.set(opt::kMessage, why);
  r.log = "nak reason=\"" + why + "\"";
  // RFC 2131 4.3.2: a NAK to a client that is not relayed is broadcast.
  if (req.giaddr == Ipv4{}) r.packet.flags |= 0x8000;
  return addressed(std::move(r), req);
}

Reply Engine::handle(const Packet& req, const RequestContext& ctx) {
  Reply none;
  if (req.op != 1) return none;
  const auto type = req.message_type();
  if (!type) {
    none.log = "ignored: no DHCP message type (BOOTP is not served)";
    return none;
  }
  const Ipv4 zero{};
  auto refuse = [&](std::string reason, std::string why) {
    Reply r;
    r.refused = std::move(reason);
    r.log = "refused: " + why;
    return r;
  };
  const bool relayed = req.giaddr != zero;
  if (relayed && !from_relay(ctx)) {
    // A directly attached client setting giaddr would reach another subnet's pool.
    return refuse("relay_not_allowed", "giaddr " + to_string(req.giaddr) + " from " +
                                           to_string(ctx.source) + ", which is not in dhcp.relays");
  }
  if (cfg_.proxy) return handle_proxy(req, ctx);
  if (cfg_.known_only && !ctx.known &&
      (type == MessageType::kDiscover || type == MessageType::kRequest ||
       type == MessageType::kInform)) {
    return refuse("unknown_client", "MAC " + req.mac() + " is no machine kiln knows (known_only)");
  }

  const Subnet* s = select_subnet(req, ctx);
  if (!s) {
    none.log = "ignored: no subnet for giaddr " + to_string(req.giaddr) + " / interface " +
               to_string(ctx.interface_address);
    return none;
  }
  const std::string client = client_key(req);
  const std::int64_t now = ctx.now_ms;
  const std::int64_t lease_end = now + std::int64_t{s->lease_time_s} * 1000;
  auto bind = [&](const Ipv4& ip, Lease::State st, std::int64_t expires) {
    Lease l;
    l.ip = ip;
    l.client = client;
    l.mac = req.mac();
    l.hostname = req.hostname();
    l.state = st;
    l.expires_ms = expires;
    l.updated_ms = now;
    leases_.put(l);
    return l;
  };
  auto limited = [&](const Ipv4& ip) -> std::optional<Reply> {
    std::string why = admit_new_lease(req, client, ip, now);
    if (why.empty()) return std::nullopt;
    return refuse(why, "new lease for " + req.mac() + " over the " +
                           (why == "rate_limited_mac" ? "per-MAC" : "global") + " rate limit");
  };

  switch (*type) {
    case MessageType::kDiscover: {
      auto ip = pick_address(*s, client, req, ctx);
      if (!ip) {
        none.log = "no free address in the pool";
        return none;
      }
      if (!(ctx.reserved && *ctx.reserved == *ip)) {
        if (auto r = limited(*ip)) return *r;
      }
      const Lease* cur = leases_.by_ip(*ip);
      // A bound lease stays bound (and persisted) while the client re-discovers.
      if (!cur || cur->client != client || cur->state != Lease::State::kBound ||
          cur->expires_ms <= now) {
        bind(*ip, Lease::State::kOffered, now + std::int64_t{cfg_.offer_ttl_s} * 1000);
      }
      Reply r;
      r.packet = base_reply(req, MessageType::kOffer);
      r.packet.yiaddr = *ip;
      add_config(r.packet, *s, true);
      add_boot(r.packet, req, ctx);
      r.log = "offer ip=" + to_string(*ip);
      return addressed(std::move(r), req);
    }
    case MessageType::kRequest: {
      const auto sid = req.server_id();
      Ipv4 ip{};
      bool init_reboot = false;
      if (sid) {
        // SELECTING: the client chose a server.
        if (*sid != cfg_.server_id) {
          if (const Lease* l = leases_.by_client(client); l && l->state == Lease::State::kOffered) {
            Lease freed = *l;
            freed.state = Lease::State::kReleased;
            leases_.put(freed);
          }
          none.log = "client chose server " + to_string(*sid);
          return none;
        }
        auto want = req.requested_ip();
        if (!want) return nak(req, "no requested address");
        ip = *want;
      } else if (req.ciaddr != zero) {
        ip = req.ciaddr;  // RENEWING / REBINDING
      } else if (auto want = req.requested_ip()) {
        ip = *want;  // INIT-REBOOT
        init_reboot = true;
      } else {
        return nak(req, "no requested address");
      }
      if (!s->contains(ip)) return nak(req, "address " + to_string(ip) + " is not on this network");
      if (init_reboot && !ctx.reserved) {
        // RFC 2131 4.3.2: without a record of the client the server MUST remain silent (else
        // a stream of spoofed INIT-REBOOTs binds the whole pool). A reservation is a record.
        const Lease* rec = leases_.by_client(client);
        if (!rec) {
          return refuse("init_reboot_unknown", "INIT-REBOOT for " + to_string(ip) + " from " +
                                                   req.mac() + ", a client without a lease record");
        }
        if (rec->ip != ip) return nak(req, "this client's address is " + to_string(rec->ip));
      }
      const bool reserved_here = ctx.reserved && *ctx.reserved == ip;
      if (ctx.reserved && !reserved_here) {
        return nak(req, "this machine's address is " + to_string(*ctx.reserved));
      }
      if (!reserved_here) {
        if (!s->in_pool(ip)) return nak(req, "address " + to_string(ip) + " is outside the pool");
        if (leases_.taken(ip, client, now))
          return nak(req, "address " + to_string(ip) + " is in use");
        if (ctx.reserved_for_other && ctx.reserved_for_other(ip)) {
          return nak(req, "address " + to_string(ip) + " is reserved");
        }
      }
      if (!reserved_here) {
        if (auto r = limited(ip)) return *r;
      }
      Reply r;
      Lease bound = bind(ip, Lease::State::kBound, lease_end);
      if (req.ciaddr == zero) {
        // A fresh binding: the client now ARP-checks the address and may DECLINE it.
        bound.decline_until_ms = now + std::int64_t{cfg_.decline_window_s} * 1000;
        leases_.put(bound);
      }
      r.persist = bound;
      r.packet = base_reply(req, MessageType::kAck);
      r.packet.yiaddr = ip;
      r.packet.ciaddr = req.ciaddr;
      add_config(r.packet, *s, true);
      add_boot(r.packet, req, ctx);
      r.log = "ack ip=" + to_string(ip) + " lease_s=" + std::to_string(s->lease_time_s);
      return addressed(std::move(r), req);
    }
    case MessageType::kDecline: {
      auto ip = req.requested_ip();
      if (!ip || (req.server_id() && *req.server_id() != cfg_.server_id)) return none;
      const Lease* l = leases_.by_ip(*ip);
      if (!l || l->client != client) {
        none.log = "decline of an address not leased to this client ignored";
        return none;
      }
      // The client declines from 0.0.0.0 (or through its relay) right after the ACK, when its
      // ARP check finds the address in use; anything else is someone else's DECLINE.
      const bool fresh = now < l->decline_until_ms;
      if (!(ctx.source == *ip || (fresh && (ctx.source == zero || relayed)))) {
        return refuse("decline_not_from_client", "DECLINE of " + to_string(*ip) + " for " +
                                                     req.mac() + " from " + to_string(ctx.source) +
                                                     (fresh ? "" : " after the ARP-check window"));
      }
      Lease d = *l;
      d.state = Lease::State::kDeclined;
      d.expires_ms = now + std::int64_t{cfg_.decline_quarantine_s} * 1000;
      d.updated_ms = now;
      d.decline_until_ms = 0;
      leases_.put(d);
      none.persist = d;
      none.log = "decline ip=" + to_string(*ip) + " (quarantined: another host uses it)";
      return none;
    }
    case MessageType::kRelease: {
      // A client releases from its own address (a relay forwards it from a configured one).
      if (!relayed && ctx.source != req.ciaddr) {
        return refuse("release_not_from_client", "RELEASE of " + to_string(req.ciaddr) + " for " +
                                                     req.mac() + " from " + to_string(ctx.source));
      }
      const Lease* l = leases_.by_ip(req.ciaddr);
      if (!l || l->client != client || l->state != Lease::State::kBound) {
        none.log = "release of an address not leased to this client ignored";
        return none;
      }
      Lease rel = *l;
      rel.state = Lease::State::kReleased;
      rel.updated_ms = now;
      leases_.put(rel);
      none.persist = rel;
      none.log = "release ip=" + to_string(req.ciaddr);
      return none;
    }
    case MessageType::kInform: {
      Reply r;
      r.packet = base_reply(req, MessageType::kAck);
      r.packet.ciaddr = req.ciaddr;
      add_config(r.packet, *s, false);
      add_boot(r.packet, req, ctx);
      r.log = "inform";
      return addressed(std::move(r), req);
    }
    default:
      none.log = std::string("ignored: ") + to_string(*type) + " from a client";
      return none;
  }
}

Reply Engine::handle_proxy(const Packet& req, const RequestContext& ctx) {
  Reply none;
  const auto type = *req.message_type();
  const std::string vc = req.vendor_class();
  if (!boot::is_pxe_client(vc) && !boot::is_http_client(vc)) {
    none.log = "proxy: not a PXE client";
    return none;
  }
  const bool on_4011 = ctx.via_4011;
  if (!(type == MessageType::kDiscover && !on_4011) &&
      !(type == MessageType::kRequest && on_4011)) {
    // Port 67 REQUESTs belong to the address server; 4011 DISCOVERs are not PXE.
    none.log = std::string("proxy: ") + to_string(type) + " not for proxyDHCP";
    return none;
  }
  Reply r;
  r.packet =
      base_reply(req, type == MessageType::kDiscover ? MessageType::kOffer : MessageType::kAck);
  add_boot(r.packet, req, ctx);
  if (r.packet.file.empty()) {
    none.log = "proxy: no boot file for this client";
    return none;
  }
  // PXE 2.1: a proxy offer identifies itself with option 60 and tells the ROM to boot the file
  // it names (vendor option 43, PXE_DISCOVERY_CONTROL = 8) instead of a boot server discovery.
  if (!r.packet.find(opt::kVendorClass))
    r.packet.set(opt::kVendorClass, std::string_view("PXEClient"));
  r.packet.set(opt::kVendorSpecific, std::vector<std::uint8_t>{6, 1, 8, 255});
  if (const Option* uuid = req.find(opt::kClientUuid)) r.packet.set(opt::kClientUuid, uuid->data);
  r.log = std::string("proxy ") + (on_4011 ? "ack" : "offer") + " file=" + r.packet.file;
  if (on_4011) {
    r.to = Reply::To::kSource;
    return r;
  }
  return addressed(std::move(r), req);
}

}  // namespace kiln::dhcp
