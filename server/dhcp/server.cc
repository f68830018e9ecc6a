#include "dhcp/server.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/io.h"
#include "core/log_util.h"
#include "core/unique_fd.h"

namespace kiln::dhcp {

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

sockaddr_in sa(const Ipv4& ip, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  std::memcpy(&a.sin_addr, ip.data(), 4);
  return a;
}

Ipv4 ip_of(const in_addr& a) {
  Ipv4 out;
  std::memcpy(out.data(), &a, 4);
  return out;
}

std::optional<Ipv4> interface_ipv4(const std::string& name) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return std::nullopt;
  std::optional<Ipv4> found;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && name == i->ifa_name) {
      found = ip_of(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr);
      break;
    }
  }
  ::freeifaddrs(list);
  return found;
}

const char* type_name(const Packet& p) {
  auto t = p.message_type();
  return t ? to_string(*t) : "BOOTP";
}

Lease::State parse_state(const std::string& s) {
  if (s == "bound") return Lease::State::kBound;
  if (s == "released") return Lease::State::kReleased;
  if (s == "declined") return Lease::State::kDeclined;
  return Lease::State::kOffered;
}

}  // namespace

proto::DhcpLease to_row(const Lease& l) {
  return {to_string(l.ip),    l.client,     l.mac,       l.hostname,
          to_string(l.state), l.expires_ms, l.updated_ms};
}

std::optional<Lease> from_row(const proto::DhcpLease& r) {
  auto ip = parse_ipv4(r.ip);
  if (!ip) return std::nullopt;
  return Lease{*ip, r.client, r.mac, r.hostname, parse_state(r.state), r.expires_at, r.updated_at};
}

struct Server::Impl {
  struct Iface {
    std::string name;
    Ipv4 address{};
    UniqueFd fd;       // 0.0.0.0:67 bound to the device
    UniqueFd fd_4011;  // proxy mode
  };
  struct Outgoing {
    int fd = -1;
    std::string ifname;
    sockaddr_in to{};
    std::vector<std::uint8_t> bytes;
    std::optional<Ipv4> arp_ip;  // unicast to a client without an address: add its ARP entry
    std::array<std::uint8_t, 6> arp_mac{};
    std::string type;
    std::string lease_ip;  // the persisted lease this reply waits for ("" none)
  };

  Impl(ServerOptions o, Backend& b, Metrics& m, std::shared_ptr<spdlog::logger> l)
      : opts(std::move(o)), backend(b), metrics(m), log(std::move(l)) {}

  ServerOptions opts;
  Backend& backend;
  Metrics& metrics;
  std::shared_ptr<spdlog::logger> log;
  std::unique_ptr<Engine> engine;
  std::vector<Iface> ifaces;
  UniqueFd wake;  // eventfd: stop
  std::atomic<bool> stopping{false};
  std::thread rx, writer;

  std::mutex mu;  // the writer's queue
  std::condition_variable cv;
  std::vector<proto::DhcpLease> q_leases;
  std::vector<Outgoing> q_replies;
  std::vector<std::string> q_reload;  // refused addresses the engine re-reads (rx thread)
  bool writer_stop = false;

  std::unordered_map<std::string, std::optional<Ipv4>> known;  // machine MACs -> reservation
  std::unordered_set<std::uint32_t> reserved;                  // every reserved address
  std::int64_t known_loaded = 0;

  LogBudget log_budget;  // malformed packets and send errors: at most 20 lines a second
  bool may_log() { return log_budget.allow(); }
  LogBudget refused_budget{10};  // requests refused by policy: at most 10 lines a second

  void refresh_known() {
    const std::int64_t now = now_ms();
    if (now - known_loaded < 2000) return;
    known_loaded = now;
    try {
      std::unordered_map<std::string, std::optional<Ipv4>> k;
      std::unordered_set<std::uint32_t> r;
      for (const auto& [mac, ip] : backend.machine_macs()) {
        std::optional<Ipv4> a = ip ? parse_ipv4(*ip) : std::nullopt;
        if (a) r.insert(to_u32(*a));
        k.emplace(mac, a);
      }
      known.swap(k);
      reserved.swap(r);
    } catch (const std::exception& e) {
      log->error("event=dhcp.machines_unreadable err=\"{}\"", e.what());
    }
  }

  void send(const Outgoing& o) {
    if (o.arp_ip) {
      // Unicast to a client that has no address yet (RFC 2131 4.1): tell the kernel its MAC.
      arpreq req{};
      auto* pa = reinterpret_cast<sockaddr_in*>(&req.arp_pa);
      *pa = sa(*o.arp_ip, 0);
      req.arp_ha.sa_family = ARPHRD_ETHER;
      std::memcpy(req.arp_ha.sa_data, o.arp_mac.data(), 6);
      req.arp_flags = ATF_COM;
      std::snprintf(req.arp_dev, sizeof req.arp_dev, "%s", o.ifname.c_str());
      if (::ioctl(o.fd, SIOCSARP, &req) != 0) {
        // No CAP_NET_ADMIN or no ARP on this device: broadcast instead (clients accept both).
        sockaddr_in b = sa({255, 255, 255, 255}, opts.client_port);
        ::sendto(o.fd, o.bytes.data(), o.bytes.size(), 0, reinterpret_cast<sockaddr*>(&b),
                 sizeof b);
        metrics.add("kiln_dhcp_sent_total", {{"type", o.type}});
        return;
      }
    }
    if (::sendto(o.fd, o.bytes.data(), o.bytes.size(), 0, reinterpret_cast<const sockaddr*>(&o.to),
                 sizeof o.to) < 0) {
      if (may_log()) {
        log->warn("event=dhcp.send_failed to={}:{} err=\"{}\"", inet_ntoa(o.to.sin_addr),
                  ntohs(o.to.sin_port), std::strerror(errno));
      }
      metrics.add("kiln_dhcp_dropped_total", {{"reason", "send_failed"}});
      return;
    }
    metrics.add("kiln_dhcp_sent_total", {{"type", o.type}});
  }

  // `req` is the client's message: its option 57 bounds the reply's size.
  Outgoing route(const Reply& r, const Packet& req, const Iface& iface, const sockaddr_in& from,
                 int fd) {
    Outgoing o;
    o.fd = fd;
    o.ifname = iface.name;
    o.type = type_name(r.packet);
    std::size_t max = 1500 - 28;
    if (const Option* mms = req.find(opt::kMaxMessageSize); mms && mms->data.size() == 2) {
      max = std::min<std::size_t>(max, (mms->data[0] << 8 | mms->data[1]) - 28u);
    }
    o.bytes = encode(r.packet, max).bytes;
    switch (r.to) {
      case Reply::To::kRelay:
        o.to = sa(r.packet.giaddr, opts.server_port);
        break;
      case Reply::To::kCiaddr:
        o.to = sa(r.packet.ciaddr, opts.client_port);
        break;
      case Reply::To::kSource:
        o.to = from;
        break;
      case Reply::To::kClientHw:
        if (r.packet.yiaddr != Ipv4{} && r.packet.hlen == 6) {
          o.to = sa(r.packet.yiaddr, opts.client_port);
          o.arp_ip = r.packet.yiaddr;
          std::copy(r.packet.chaddr.begin(), r.packet.chaddr.begin() + 6, o.arp_mac.begin());
          break;
        }
        [[fallthrough]];
      case Reply::To::kBroadcast:
      case Reply::To::kNone:
        o.to = sa({255, 255, 255, 255}, opts.client_port);
        break;
    }
    return o;
  }

  void handle(std::span<const std::uint8_t> bytes, const Iface& iface, int fd,
              const sockaddr_in& from, bool via_4011) {
    auto p = parse(bytes);
    if (!p) {
      metrics.add("kiln_dhcp_dropped_total", {{"reason", "malformed"}});
      if (may_log()) {
        log->info("event=dhcp.packet_dropped reason=malformed iface={} from={} err=\"{}\"",
                  iface.name, inet_ntoa(from.sin_addr), p.error().message);
      }
      return;
    }
    metrics.add("kiln_dhcp_received_total", {{"type", type_name(*p)}});
    refresh_known();
    reload_refused();
    RequestContext ctx;
    ctx.now_ms = now_ms();
    ctx.interface_address = iface.address;
    ctx.source = ip_of(from.sin_addr);
    ctx.via_4011 = via_4011;
    if (auto it = known.find(p->mac()); it != known.end()) {
      ctx.known = true;
      ctx.reserved = it->second;
    }
    if (!reserved.empty()) {
      ctx.reserved_for_other = [this, own = ctx.reserved](const Ipv4& ip) {
        return reserved.count(to_u32(ip)) > 0 && !(own && *own == ip);
      };
    }
    Reply r = engine->handle(*p, ctx);
    if (!r.refused.empty()) {
      metrics.add("kiln_dhcp_dropped_total", {{"reason", r.refused}});
      if (refused_budget.allow()) {
        log->warn("event=dhcp.refused reason={} type={} iface={} from={} mac={} xid={:08x} {}",
                  r.refused, type_name(*p), iface.name, to_string(ctx.source), p->mac(), p->xid,
                  r.log);
      }
      return;
    }
    if (log->should_log(spdlog::level::debug)) {
      log->debug("event=dhcp.{} iface={} mac={} xid={:08x} giaddr={} {}", type_name(*p), iface.name,
                 p->mac(), p->xid, to_string(p->giaddr), r.log);
    }
    if (r.persist) {
      std::lock_guard lock(mu);
      q_leases.push_back(to_row(*r.persist));
      if (r.to != Reply::To::kNone) {
        q_replies.push_back(route(r, *p, iface, from, fd));
        q_replies.back().lease_ip = to_string(r.persist->ip);
      }
      cv.notify_one();
      return;
    }
    if (r.to != Reply::To::kNone) send(route(r, *p, iface, from, fd));
  }

  // Addresses the backend refused (another instance holds them): the engine takes the stored
  // lease instead of its own, so the next DISCOVER/REQUEST of that client gets another address.
  void reload_refused() {
    std::vector<std::string> ips;
    {
      std::lock_guard lock(mu);
      if (q_reload.empty()) return;
      ips.swap(q_reload);
    }
    for (const auto& text : ips) {
      auto ip = parse_ipv4(text);
      if (!ip) continue;
      std::optional<Lease> stored;
      try {
        if (auto l = backend.load_lease(text)) stored = from_row(*l);
      } catch (const std::exception& e) {
        log->error("event=dhcp.lease_reload_failed ip={} err=\"{}\"", text, e.what());
        std::lock_guard lock(mu);
        q_reload.push_back(text);  // tried again with the next packet
        continue;
      }
      engine->reload_lease(*ip, stored);
    }
  }

  void rx_loop() {
    std::vector<pollfd> fds;
    std::vector<std::pair<std::size_t, bool>> owner;  // iface index, is 4011
    for (std::size_t i = 0; i < ifaces.size(); ++i) {
      fds.push_back({ifaces[i].fd.get(), POLLIN, 0});
      owner.push_back({i, false});
      if (ifaces[i].fd_4011) {
        fds.push_back({ifaces[i].fd_4011.get(), POLLIN, 0});
        owner.push_back({i, true});
      }
    }
    fds.push_back({wake.get(), POLLIN, 0});
    std::vector<std::uint8_t> buf(4096);
    while (!stopping) {
      if (retry_eintr([&] { return ::poll(fds.data(), fds.size(), 1000); }) < 0) break;
      for (std::size_t k = 0; k + 1 < fds.size(); ++k) {
        if (!(fds[k].revents & POLLIN)) continue;
        for (int n = 0; n < 64; ++n) {
          sockaddr_in from{};
          socklen_t flen = sizeof from;
          const ssize_t got =
              ::recvfrom(fds[k].fd, buf.data(), buf.size(), MSG_DONTWAIT | MSG_TRUNC,
                         reinterpret_cast<sockaddr*>(&from), &flen);
          if (got < 0) break;
          if (static_cast<std::size_t>(got) > buf.size()) {
            metrics.add("kiln_dhcp_dropped_total", {{"reason", "oversized"}});
            continue;
          }
          const auto& [idx, is4011] = owner[k];
          handle(std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(got)),
                 ifaces[idx], fds[k].fd, from, is4011);
        }
      }
    }
  }

  void writer_loop() {
    for (;;) {
      std::vector<proto::DhcpLease> leases;
      std::vector<Outgoing> replies;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return writer_stop || !q_leases.empty(); });
        if (q_leases.empty() && writer_stop) return;
        leases.swap(q_leases);
        replies.swap(q_replies);
      }
      std::vector<std::string> refused;
      try {
        refused = backend.save_leases(leases);
        metrics.add("kiln_dhcp_lease_commits_total", {});
        metrics.add("kiln_dhcp_lease_writes_total", {},
                    static_cast<double>(leases.size() - std::min(leases.size(), refused.size())));
      } catch (const std::exception& e) {
        // Not durable: the ACKs are not sent; the clients retry and get a fresh decision.
        log->error("event=dhcp.lease_commit_failed leases={} err=\"{}\"", leases.size(), e.what());
        metrics.add("kiln_dhcp_dropped_total", {{"reason", "commit_failed"}},
                    static_cast<double>(replies.size()));
        continue;
      }
      if (!refused.empty()) {
        for (const auto& ip : refused) {
          const auto l =
              std::find_if(leases.begin(), leases.end(), [&](const auto& x) { return x.ip == ip; });
          log->warn(
              "event=dhcp.lease_refused ip={} client={} msg=\"another instance holds the "
              "address: no reply, the client is offered another\"",
              ip, l == leases.end() ? "" : l->client);
        }
        metrics.add("kiln_dhcp_lease_refused_total", {}, static_cast<double>(refused.size()));
        std::lock_guard lock(mu);
        q_reload.insert(q_reload.end(), refused.begin(), refused.end());
      }
      for (const auto& o : replies) {
        if (!o.lease_ip.empty() &&
            std::find(refused.begin(), refused.end(), o.lease_ip) != refused.end()) {
          metrics.add("kiln_dhcp_dropped_total", {{"reason", "lease_refused"}});
          continue;
        }
        send(o);
      }
    }
  }

  Status open_sockets() {
    for (const auto& name : opts.interfaces) {
      Iface f;
      f.name = name;
      auto addr = interface_ipv4(name);
      if (!addr) {
        return make_error(Errc::kInvalid, "dhcp: interface " + name + " has no IPv4 address");
      }
      f.address = *addr;
      auto open = [&](std::uint16_t port) -> Result<UniqueFd> {
        UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        const int on = 1;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        ::setsockopt(fd.get(), SOL_SOCKET, SO_BROADCAST, &on, sizeof on);
        const int rcvbuf = 4 << 20;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        if (::setsockopt(fd.get(), SOL_SOCKET, SO_BINDTODEVICE, name.c_str(),
                         static_cast<socklen_t>(name.size())) != 0) {
          return make_error(Errc::kUnavailable, "dhcp: cannot bind to device " + name + ": " +
                                                    std::strerror(errno) + " (needs CAP_NET_RAW)");
        }
        sockaddr_in any = sa({0, 0, 0, 0}, port);
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) {
          return make_error(Errc::kUnavailable, "dhcp: cannot bind port " + std::to_string(port) +
                                                    " on " + name + ": " + std::strerror(errno));
        }
        return fd;
      };
      auto fd = open(opts.server_port);
      if (!fd) return fd.error();
      f.fd = std::move(*fd);
      if (opts.proxy) {
        auto p = open(opts.proxy_port);
        if (!p) return p.error();
        f.fd_4011 = std::move(*p);
      }
      ifaces.push_back(std::move(f));
    }
    return ok_status();
  }
};

Server::Server(ServerOptions options, Backend& backend, Metrics& metrics,
               std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(std::move(options), backend, metrics, std::move(log))) {
  metrics.describe("kiln_dhcp_received_total", Metrics::Type::kCounter,
                   "DHCP messages received, by type.");
  metrics.describe("kiln_dhcp_sent_total", Metrics::Type::kCounter, "DHCP replies sent, by type.");
  metrics.describe("kiln_dhcp_dropped_total", Metrics::Type::kCounter,
                   "DHCP messages dropped or replies not sent, by reason (malformed, send_failed, "
                   "commit_failed, or a refusal: relay_not_allowed, init_reboot_unknown, "
                   "release_not_from_client, decline_not_from_client, rate_limited_mac, "
                   "rate_limited_global, unknown_client).");
  metrics.describe("kiln_dhcp_lease_refused_total", Metrics::Type::kCounter,
                   "Lease writes the database refused: another instance holds the address.");
  metrics.describe("kiln_dhcp_lease_commits_total", Metrics::Type::kCounter,
                   "Lease transactions committed (each holds a batch of lease changes).");
  metrics.describe("kiln_dhcp_lease_writes_total", Metrics::Type::kCounter,
                   "Lease changes written.");
}

Server::~Server() { stop(); }

Status Server::start() {
  auto& d = *impl_;
  if (d.opts.interfaces.empty()) {
    return make_error(Errc::kInvalid, "dhcp: no interfaces configured (dhcp.interfaces)");
  }
  if (auto st = d.open_sockets(); !st) return st;
  EngineConfig ec;
  if (!d.opts.server_address.empty()) {
    auto a = parse_ipv4(d.opts.server_address);
    if (!a) return make_error(Errc::kInvalid, "dhcp: bad server_address");
    ec.server_id = *a;
  } else {
    ec.server_id = d.ifaces.front().address;
  }
  ec.subnets = d.opts.subnets;
  ec.proxy = d.opts.proxy;
  ec.boot = d.opts.boot;
  if (ec.boot.http_base.empty()) {
    ec.boot.http_base =
        "http://" + to_string(ec.server_id) + ":" + std::to_string(d.opts.http_port);
  }
  ec.offer_ttl_s = d.opts.offer_ttl_s;
  ec.decline_quarantine_s = d.opts.decline_quarantine_s;
  for (const auto& r : d.opts.relays) {
    auto a = parse_ipv4(r);
    if (!a) return make_error(Errc::kInvalid, "dhcp: bad relay address '" + r + "'");
    ec.relays.push_back(*a);
  }
  ec.known_only = d.opts.known_only;
  ec.new_lease_rate = d.opts.new_lease_rate;
  ec.new_lease_burst = d.opts.new_lease_burst;
  ec.new_lease_rate_per_mac = d.opts.new_lease_rate_per_mac;
  if (!ec.proxy && ec.subnets.empty()) {
    return make_error(Errc::kInvalid, "dhcp: authoritative mode needs at least one subnet");
  }
  d.engine = std::make_unique<Engine>(ec);
  std::size_t loaded = 0;
  if (!ec.proxy) {
    for (const auto& row : d.backend.load_leases()) {
      auto l = from_row(row);
      if (!l) continue;
      d.engine->leases().put(*l);
      ++loaded;
    }
  }
  d.wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  d.writer = std::thread([&d] { d.writer_loop(); });
  d.rx = std::thread([&d] { d.rx_loop(); });
  std::string names;
  for (const auto& f : d.ifaces)
    names += (names.empty() ? "" : ",") + f.name + "=" + to_string(f.address);
  d.log->info(
      "event=dhcp.listening mode={} interfaces={} server_id={} subnets={} leases_loaded={} "
      "boot_http_base={} relays={} known_only={} new_lease_rate={}/min burst={} per_mac={}/min",
      ec.proxy ? "proxy" : "authoritative", names, to_string(ec.server_id), ec.subnets.size(),
      loaded, ec.boot.http_base, ec.relays.size(), ec.known_only, ec.new_lease_rate,
      ec.new_lease_burst, ec.new_lease_rate_per_mac);
  return ok_status();
}

void Server::stop() {
  auto& d = *impl_;
  if (!d.rx.joinable()) return;
  d.stopping = true;
  const std::uint64_t one = 1;
  (void)!::write(d.wake.get(), &one, sizeof one);
  d.rx.join();
  {
    std::lock_guard lock(d.mu);
    d.writer_stop = true;
  }
  d.cv.notify_one();
  d.writer.join();
}

}  // namespace kiln::dhcp
