#include "dhcp/engine.h"

#include <gtest/gtest.h>

#include <set>

#include "tests/unit/dhcp/fakes.h"

namespace kiln::dhcp {
namespace {

using namespace test_support;  // NOLINT: the shared packets

EngineConfig config() {
  EngineConfig c;
  c.server_id = kServer;
  Subnet s;
  EXPECT_TRUE(parse_cidr("10.0.0.0/24", s.network, s.prefix));
  s.pool_first = {10, 0, 0, 100};
  s.pool_last = {10, 0, 0, 102};  // three addresses: exhaustion is testable
  s.router = Ipv4{10, 0, 0, 1};
  s.dns = {Ipv4{10, 0, 0, 1}, Ipv4{10, 0, 0, 2}};
  s.domain = "lab";
  s.lease_time_s = 600;
  c.subnets.push_back(s);
  Subnet remote;
  EXPECT_TRUE(parse_cidr("10.9.0.0/16", remote.network, remote.prefix));
  remote.pool_first = {10, 9, 1, 10};
  remote.pool_last = {10, 9, 1, 20};
  c.subnets.push_back(remote);
  c.boot.http_base = "http://10.0.0.1:8080";
  return c;
}

TEST(DhcpEngine, DoraGivesAnAddressWithConfigurationAndPersistsTheAck) {
  Engine e(config());
  auto offer = e.handle(client(1, MessageType::kDiscover), at(0));
  ASSERT_EQ(offer.packet.message_type(), MessageType::kOffer) << offer.log;
  EXPECT_EQ(offer.to, Reply::To::kBroadcast);
  EXPECT_FALSE(offer.persist);  // offers are not persisted
  const Ipv4 ip = offer.packet.yiaddr;
  EXPECT_EQ(ip, (Ipv4{10, 0, 0, 100}));
  EXPECT_EQ(offer.packet.server_id(), kServer);
  EXPECT_EQ(offer.packet.lease_time(), 600u);
  ASSERT_NE(offer.packet.find(opt::kDns), nullptr);
  EXPECT_EQ(offer.packet.find(opt::kDns)->data.size(), 8u);
  EXPECT_EQ(offer.packet.find(opt::kSubnetMask)->data,
            (std::vector<std::uint8_t>{255, 255, 255, 0}));
  EXPECT_TRUE(offer.packet.file.empty());  // not a boot client

  auto ack = e.handle(request_for(1, ip), at(10));
  ASSERT_EQ(ack.packet.message_type(), MessageType::kAck) << ack.log;
  EXPECT_EQ(ack.packet.yiaddr, ip);
  ASSERT_TRUE(ack.persist);
  EXPECT_EQ(ack.persist->state, Lease::State::kBound);
  EXPECT_EQ(ack.persist->expires_ms, 10 + 600'000);
  EXPECT_EQ(ack.persist->mac, "52:54:00:00:00:01");
}

TEST(DhcpEngine, ClientsGetDistinctAddressesAndThePoolRunsOut) {
  Engine e(config());
  std::set<std::uint32_t> seen;
  for (std::uint8_t n = 1; n <= 3; ++n) {
    auto o = e.handle(client(n, MessageType::kDiscover), at(0));
    ASSERT_EQ(o.packet.message_type(), MessageType::kOffer);
    EXPECT_TRUE(seen.insert(to_u32(o.packet.yiaddr)).second);
  }
  auto none = e.handle(client(4, MessageType::kDiscover), at(0));
  EXPECT_EQ(none.to, Reply::To::kNone);
  EXPECT_NE(none.log.find("no free address"), std::string::npos);
  // Offers expire (60 s): the address is free again.
  auto later = e.handle(client(4, MessageType::kDiscover), at(61'000));
  EXPECT_EQ(later.packet.message_type(), MessageType::kOffer);
}

TEST(DhcpEngine, AClientKeepsItsAddressAndGetsTheOneItAsksFor) {
  Engine e(config());
  Packet d = client(1, MessageType::kDiscover);
  d.set_ip(opt::kRequestedIp, {10, 0, 0, 102});
  auto o = e.handle(d, at(0));
  EXPECT_EQ(o.packet.yiaddr, (Ipv4{10, 0, 0, 102}));
  e.handle(request_for(1, {10, 0, 0, 102}), at(1));
  // Rediscovery (after a reboot) offers the same address, and the lease stays bound.
  auto again = e.handle(client(1, MessageType::kDiscover), at(5000));
  EXPECT_EQ(again.packet.yiaddr, (Ipv4{10, 0, 0, 102}));
  EXPECT_EQ(e.leases().by_ip({10, 0, 0, 102})->state, Lease::State::kBound);
  // Someone else asking for it gets another address.
  Packet other = client(2, MessageType::kDiscover);
  other.set_ip(opt::kRequestedIp, {10, 0, 0, 102});
  EXPECT_NE(e.handle(other, at(6000)).packet.yiaddr, (Ipv4{10, 0, 0, 102}));
}

TEST(DhcpEngine, NakForAddressesInUseElsewhereOrOffNetwork) {
  Engine e(config());
  e.handle(client(1, MessageType::kDiscover), at(0));
  e.handle(request_for(1, {10, 0, 0, 100}), at(1));
  auto stolen = e.handle(request_for(2, {10, 0, 0, 100}), at(2));
  EXPECT_EQ(stolen.packet.message_type(), MessageType::kNak);
  EXPECT_EQ(stolen.to, Reply::To::kBroadcast);
  auto moved = e.handle(request_for(3, {192, 168, 1, 5}, false), at(3));  // INIT-REBOOT
  EXPECT_EQ(moved.packet.message_type(), MessageType::kNak);
  EXPECT_NE(moved.log.find("not on this network"), std::string::npos);
  auto outside = e.handle(request_for(3, {10, 0, 0, 7}), at(3));
  EXPECT_EQ(outside.packet.message_type(), MessageType::kNak);
  // A client with a record asking for another address in INIT-REBOOT: NAK (then it discovers).
  auto wrong = e.handle(request_for(1, {10, 0, 0, 101}, false), at(4));
  EXPECT_EQ(wrong.packet.message_type(), MessageType::kNak);
}

TEST(DhcpEngine, InitRebootWithoutARecordIsSilentAndPersistsNothing) {
  Engine e(config());
  // RFC 2131 4.3.2: a spoofed INIT-REBOOT per MAC would otherwise bind the whole pool.
  for (std::uint8_t n = 1; n <= 5; ++n) {
    auto r = e.handle(request_for(n, {10, 0, 0, 100}, false), at(n));
    EXPECT_EQ(r.to, Reply::To::kNone) << r.log;
    EXPECT_FALSE(r.persist);
    EXPECT_EQ(r.refused, "init_reboot_unknown");
  }
  EXPECT_EQ(e.leases().size(), 0u);
  // With a record (a DORA earlier), the same request is ACKed: a reboot keeps its address.
  e.handle(client(1, MessageType::kDiscover), at(10));
  e.handle(request_for(1, {10, 0, 0, 100}), at(11));
  auto again = e.handle(request_for(1, {10, 0, 0, 100}, false), at(5000));
  EXPECT_EQ(again.packet.message_type(), MessageType::kAck) << again.log;
  // A machine with a reservation has a record even without a lease.
  RequestContext reserved = at(6000);
  reserved.known = true;
  reserved.reserved = Ipv4{10, 0, 0, 50};
  EXPECT_EQ(e.handle(request_for(9, {10, 0, 0, 50}, false), reserved).packet.message_type(),
            MessageType::kAck);
}

TEST(DhcpEngine, SelectingAnotherServerReleasesOurOffer) {
  Engine e(config());
  auto o = e.handle(client(1, MessageType::kDiscover), at(0));
  Packet r = request_for(1, o.packet.yiaddr);
  r.set_ip(opt::kServerId, {10, 0, 0, 254});
  auto none = e.handle(r, at(1));
  EXPECT_EQ(none.to, Reply::To::kNone);
  EXPECT_FALSE(e.leases().taken(o.packet.yiaddr, "someone-else", 2));
}

TEST(DhcpEngine, RenewIsUnicastToCiaddrAndExtendsTheLease) {
  Engine e(config());
  e.handle(client(1, MessageType::kDiscover), at(0));
  e.handle(request_for(1, {10, 0, 0, 100}), at(1));
  Packet renew = client(1, MessageType::kRequest);
  renew.flags = 0;
  renew.ciaddr = {10, 0, 0, 100};
  auto ack = e.handle(renew, at(300'000));
  ASSERT_EQ(ack.packet.message_type(), MessageType::kAck) << ack.log;
  EXPECT_EQ(ack.to, Reply::To::kCiaddr);
  EXPECT_EQ(ack.persist->expires_ms, 300'000 + 600'000);
}

TEST(DhcpEngine, LeasesExpire) {
  Engine e(config());
  e.handle(client(1, MessageType::kDiscover), at(0));
  e.handle(request_for(1, {10, 0, 0, 100}), at(0));
  EXPECT_TRUE(e.leases().taken({10, 0, 0, 100}, "x", 599'999));
  EXPECT_FALSE(e.leases().taken({10, 0, 0, 100}, "x", 600'000));
}

TEST(DhcpEngine, DeclineQuarantinesAndReleaseFrees) {
  Engine e(config());
  e.handle(client(1, MessageType::kDiscover), at(0));
  e.handle(request_for(1, {10, 0, 0, 100}), at(0));
  Packet decline = client(1, MessageType::kDecline);
  decline.set_ip(opt::kRequestedIp, {10, 0, 0, 100});
  decline.set_ip(opt::kServerId, kServer);
  auto d = e.handle(decline, at(10));
  EXPECT_EQ(d.to, Reply::To::kNone);
  ASSERT_TRUE(d.persist);
  EXPECT_EQ(d.persist->state, Lease::State::kDeclined);
  // Nobody, not even the client that declined it, gets it during the quarantine.
  auto o = e.handle(client(1, MessageType::kDiscover), at(20));
  EXPECT_NE(o.packet.yiaddr, (Ipv4{10, 0, 0, 100}));
  auto o2 = e.handle(client(2, MessageType::kDiscover), at(30));
  EXPECT_NE(o2.packet.yiaddr, (Ipv4{10, 0, 0, 100}));

  e.handle(request_for(2, o2.packet.yiaddr), at(40));
  Packet release = client(2, MessageType::kRelease);
  release.ciaddr = o2.packet.yiaddr;
  RequestContext from_client = at(50);
  from_client.source = o2.packet.yiaddr;
  auto r = e.handle(release, from_client);
  ASSERT_TRUE(r.persist);
  EXPECT_EQ(r.persist->state, Lease::State::kReleased);
  EXPECT_FALSE(e.leases().taken(o2.packet.yiaddr, "x", 60));
  // A release for someone else's lease changes nothing.
  Packet forged = client(3, MessageType::kRelease);
  forged.ciaddr = o.packet.yiaddr;
  RequestContext forged_from = at(70);
  forged_from.source = o.packet.yiaddr;
  EXPECT_FALSE(e.handle(forged, forged_from).persist);
}

TEST(DhcpEngine, ReleaseAndDeclineOnlyFromTheClientsOwnAddress) {
  EngineConfig c = config();
  c.relays = {Ipv4{10, 9, 1, 1}};
  Engine e(c);
  e.handle(client(1, MessageType::kDiscover), at(0));
  ASSERT_EQ(e.handle(request_for(1, {10, 0, 0, 100}), at(0)).packet.message_type(),
            MessageType::kAck);
  // Someone else's address (or 0.0.0.0) sending the client's RELEASE: ignored, counted.
  Packet release = client(1, MessageType::kRelease);
  release.ciaddr = {10, 0, 0, 100};
  for (const Ipv4 src : {Ipv4{10, 0, 0, 66}, Ipv4{}}) {
    RequestContext ctx = at(100);
    ctx.source = src;
    auto r = e.handle(release, ctx);
    EXPECT_FALSE(r.persist);
    EXPECT_EQ(r.refused, "release_not_from_client") << r.log;
    EXPECT_EQ(e.leases().by_ip({10, 0, 0, 100})->state, Lease::State::kBound);
  }
  // A DECLINE from another address, or from 0.0.0.0 once the ARP-check window (60 s) is over.
  Packet decline = client(1, MessageType::kDecline);
  decline.set_ip(opt::kRequestedIp, {10, 0, 0, 100});
  decline.set_ip(opt::kServerId, kServer);
  RequestContext other = at(200);
  other.source = {10, 0, 0, 66};
  EXPECT_EQ(e.handle(decline, other).refused, "decline_not_from_client");
  EXPECT_EQ(e.handle(decline, at(60'001)).refused, "decline_not_from_client");
  // A renewal (the client uses the address) opens no window.
  Packet renew = client(1, MessageType::kRequest);
  renew.ciaddr = {10, 0, 0, 100};
  ASSERT_EQ(e.handle(renew, at(70'000)).packet.message_type(), MessageType::kAck);
  EXPECT_EQ(e.handle(decline, at(70'001)).refused, "decline_not_from_client");
  EXPECT_EQ(e.leases().by_ip({10, 0, 0, 100})->state, Lease::State::kBound);
  // The client's own RELEASE is honoured; so is a relayed one from a configured relay.
  RequestContext own = at(80'000);
  own.source = {10, 0, 0, 100};
  auto ok = e.handle(release, own);
  ASSERT_TRUE(ok.persist) << ok.log;
  EXPECT_EQ(ok.persist->state, Lease::State::kReleased);
  Packet d = client(2, MessageType::kDiscover);
  d.giaddr = {10, 9, 1, 1};
  RequestContext relay = at(90'000);
  relay.source = {10, 9, 1, 1};
  auto o = e.handle(d, relay);
  Packet req = request_for(2, o.packet.yiaddr);
  req.giaddr = d.giaddr;
  ASSERT_EQ(e.handle(req, relay).packet.message_type(), MessageType::kAck);
  Packet rel2 = client(2, MessageType::kRelease);
  rel2.giaddr = d.giaddr;
  rel2.ciaddr = o.packet.yiaddr;
  EXPECT_TRUE(e.handle(rel2, relay).persist);
}

TEST(DhcpEngine, RelayedRequestsOnlyFromConfiguredRelays) {
  EngineConfig c = config();
  c.relays = {Ipv4{10, 0, 0, 254}};
  Engine e(c);
  Packet d = client(1, MessageType::kDiscover);
  d.giaddr = {10, 9, 1, 1};
  RequestContext direct = at(0);
  direct.source = {10, 0, 0, 77};  // a directly attached client setting giaddr
  auto r = e.handle(d, direct);
  EXPECT_EQ(r.to, Reply::To::kNone);
  EXPECT_EQ(r.refused, "relay_not_allowed");
  Packet req = request_for(1, {10, 9, 1, 12});
  req.giaddr = d.giaddr;
  EXPECT_EQ(e.handle(req, direct).refused, "relay_not_allowed");
  EXPECT_EQ(e.leases().size(), 0u);
  RequestContext relay = at(0);
  relay.source = {10, 0, 0, 254};
  EXPECT_EQ(e.handle(d, relay).packet.message_type(), MessageType::kOffer);
  // With no relays configured, no relayed request is served.
  Engine none(config());
  EXPECT_EQ(none.handle(d, relay).refused, "relay_not_allowed");
}

TEST(DhcpEngine, NewLeasesAreRateLimitedRenewalsNever) {
  EngineConfig c = config();
  c.subnets[0].pool_last = {10, 0, 0, 200};
  c.new_lease_rate = 60;  // one a second
  c.new_lease_burst = 3;
  c.new_lease_rate_per_mac = 2;
  Engine e(c);
  // Global: three at once, then one a second.
  for (std::uint8_t n = 1; n <= 3; ++n) {
    auto o = e.handle(client(n, MessageType::kDiscover), at(1000));
    ASSERT_EQ(o.packet.message_type(), MessageType::kOffer) << o.log;
    ASSERT_EQ(e.handle(request_for(n, o.packet.yiaddr), at(1000)).packet.message_type(),
              MessageType::kAck);  // the REQUEST for an offer is no new lease
  }
  auto over = e.handle(client(4, MessageType::kDiscover), at(1000));
  EXPECT_EQ(over.to, Reply::To::kNone);
  EXPECT_EQ(over.refused, "rate_limited_global");
  // Renewals and re-discovery of leases the clients hold are never limited.
  for (std::uint8_t n = 1; n <= 3; ++n) {
    EXPECT_EQ(e.handle(client(n, MessageType::kDiscover), at(1001)).packet.message_type(),
              MessageType::kOffer);
    Packet renew = client(n, MessageType::kRequest);
    renew.ciaddr = e.leases().by_client(client_key(renew))->ip;
    EXPECT_EQ(e.handle(renew, at(1002)).packet.message_type(), MessageType::kAck);
  }
  // A spoofed SELECTING REQUEST without an offer is a new lease too.
  EXPECT_EQ(e.handle(request_for(5, {10, 0, 0, 150}), at(1003)).refused, "rate_limited_global");
  EXPECT_EQ(e.handle(client(4, MessageType::kDiscover), at(2000)).packet.message_type(),
            MessageType::kOffer);
  // Per MAC: one MAC cycling client identifiers gets two new leases a minute.
  int granted = 0;
  for (int i = 0; i < 5; ++i) {
    Packet p = client(7, MessageType::kDiscover);
    p.set(opt::kClientId, "id-" + std::to_string(i));
    auto r = e.handle(p, at(100'000 + i));
    if (r.packet.message_type() == MessageType::kOffer)
      ++granted;
    else
      EXPECT_EQ(r.refused, "rate_limited_mac");
  }
  EXPECT_EQ(granted, 2);
}

TEST(DhcpEngine, KnownOnlyServesOnlyKnownMachines) {
  EngineConfig c = config();
  c.known_only = true;
  Engine e(c);
  auto r = e.handle(client(1, MessageType::kDiscover), at(0));
  EXPECT_EQ(r.to, Reply::To::kNone);
  EXPECT_EQ(r.refused, "unknown_client");
  EXPECT_EQ(e.handle(request_for(1, {10, 0, 0, 100}), at(0)).refused, "unknown_client");
  RequestContext known = at(0);
  known.known = true;
  EXPECT_EQ(e.handle(client(1, MessageType::kDiscover), known).packet.message_type(),
            MessageType::kOffer);
}

TEST(DhcpEngine, InformGetsConfigurationWithoutALease) {
  Engine e(config());
  Packet inf = client(1, MessageType::kInform);
  inf.ciaddr = {10, 0, 0, 50};
  auto r = e.handle(inf, at(0));
  ASSERT_EQ(r.packet.message_type(), MessageType::kAck);
  EXPECT_EQ(r.packet.yiaddr, Ipv4{});
  EXPECT_FALSE(r.packet.lease_time());
  EXPECT_EQ(r.to, Reply::To::kCiaddr);
  EXPECT_FALSE(r.persist);
}

TEST(DhcpEngine, ReservationsWin) {
  Engine e(config());
  RequestContext ctx = at(0);
  ctx.known = true;
  ctx.reserved = Ipv4{10, 0, 0, 50};  // outside the pool, inside the subnet
  auto o = e.handle(client(1, MessageType::kDiscover), ctx);
  EXPECT_EQ(o.packet.yiaddr, (Ipv4{10, 0, 0, 50}));
  auto ack = e.handle(request_for(1, {10, 0, 0, 50}), ctx);
  EXPECT_EQ(ack.packet.message_type(), MessageType::kAck);
  auto wrong = e.handle(request_for(1, {10, 0, 0, 101}, false), ctx);
  EXPECT_EQ(wrong.packet.message_type(), MessageType::kNak);
  // Reserved addresses are never handed to other clients.
  RequestContext other = at(0);
  other.reserved_for_other = [](const Ipv4& ip) { return ip == Ipv4{10, 0, 0, 100}; };
  EXPECT_EQ(e.handle(client(2, MessageType::kDiscover), other).packet.yiaddr,
            (Ipv4{10, 0, 0, 101}));
}

TEST(DhcpEngine, RelayedRequestsUseTheRelaySubnetAndEchoOption82) {
  EngineConfig c = config();
  c.relays = {Ipv4{10, 9, 1, 1}, Ipv4{172, 16, 0, 1}};
  Engine e(c);
  Packet d = client(1, MessageType::kDiscover);
  d.giaddr = {10, 9, 1, 1};
  d.hops = 1;
  d.set(opt::kRelayAgent, std::vector<std::uint8_t>{1, 4, 'p', 'o', '1', '7'});
  RequestContext relay = at(0);
  relay.source = {10, 9, 1, 1};
  auto o = e.handle(d, relay);
  ASSERT_EQ(o.packet.message_type(), MessageType::kOffer);
  EXPECT_EQ(o.to, Reply::To::kRelay);
  EXPECT_EQ(o.packet.giaddr, (Ipv4{10, 9, 1, 1}));
  EXPECT_EQ(o.packet.yiaddr, (Ipv4{10, 9, 1, 10}));
  ASSERT_NE(o.packet.find(opt::kRelayAgent), nullptr);
  EXPECT_EQ(o.packet.find(opt::kRelayAgent)->data.size(), 6u);
  Packet lost = client(2, MessageType::kDiscover);
  lost.giaddr = {172, 16, 0, 1};  // no subnet for this relay
  relay.source = lost.giaddr;
  EXPECT_EQ(e.handle(lost, relay).to, Reply::To::kNone);
}

TEST(DhcpEngine, PxeClientsGetBootFiles) {
  Engine e(config());
  Packet bios = client(1, MessageType::kDiscover);
  bios.set(opt::kVendorClass, std::string_view("PXEClient:Arch:00000:UNDI:002001"));
  bios.set(opt::kClientArch, std::vector<std::uint8_t>{0, 0});
  auto o = e.handle(bios, at(0));
  EXPECT_EQ(o.packet.file, "undionly.kpxe");
  EXPECT_EQ(o.packet.siaddr, kServer);
  Packet ipxe = bios;
  ipxe.set(opt::kUserClass, std::string_view("iPXE"));
  auto i = e.handle(ipxe, at(1));
  EXPECT_EQ(i.packet.file, "http://10.0.0.1:8080/boot/52-54-00-00-00-01.ipxe");
  // iPXE is told not to wait for ProxyDHCP offers (175.176 = 1); a PXE ROM is not.
  ASSERT_NE(i.packet.find(opt::kIpxeEncap), nullptr);
  EXPECT_EQ(i.packet.find(opt::kIpxeEncap)->data, (std::vector<std::uint8_t>{176, 1, 1}));
  EXPECT_EQ(o.packet.find(opt::kIpxeEncap), nullptr);
  Packet http = client(2, MessageType::kDiscover);
  http.set(opt::kVendorClass, std::string_view("HTTPClient:Arch:00016:UNDI:003001"));
  http.set(opt::kClientArch, std::vector<std::uint8_t>{0, 16});
  auto h = e.handle(http, at(2));
  EXPECT_EQ(h.packet.file, "http://10.0.0.1:8080/files/ipxe.efi");
  EXPECT_EQ(h.packet.vendor_class(), "HTTPClient");
}

TEST(DhcpEngine, HttpsBootFollowsTheIpxeHttpsFeature) {
  EngineConfig cfg = config();
  cfg.boot.https_base = "https://10.0.0.1:8443";
  Engine e(cfg);
  Packet stock = client(3, MessageType::kDiscover);
  stock.set(opt::kVendorClass, std::string_view("PXEClient:Arch:00000:UNDI:002001"));
  stock.set(opt::kClientArch, std::vector<std::uint8_t>{0, 0});
  stock.set(opt::kUserClass, std::string_view("iPXE"));
  // A feature list without HTTPS (HTTP 0x13, TFTP 0x15, version 0xeb).
  stock.set(opt::kIpxeEncap, std::vector<std::uint8_t>{0x13, 1, 1, 0x15, 1, 1, 0xeb, 3, 1, 0, 0});
  auto s = e.handle(stock, at(0));
  EXPECT_EQ(s.packet.file, "kiln/ipxe-https.kpxe");
  EXPECT_EQ(s.packet.siaddr, kServer);
  ASSERT_NE(s.packet.find(opt::kTftpServer), nullptr);
  Packet https = stock;
  https.set(opt::kIpxeEncap,
            std::vector<std::uint8_t>{0x13, 1, 1, 0x14, 1, 1, 0x15, 1, 1, 0xeb, 3, 1, 0, 0});
  auto h = e.handle(https, at(1));
  EXPECT_EQ(h.packet.file, "https://10.0.0.1:8443/boot/52-54-00-00-00-03.ipxe");
  EXPECT_EQ(h.packet.find(opt::kTftpServer), nullptr);
}

TEST(DhcpEngine, ProxyModeAnswersOnlyPxeClientsWithoutAnAddress) {
  EngineConfig c = config();
  c.proxy = true;
  Engine e(c);
  EXPECT_EQ(e.handle(client(1, MessageType::kDiscover), at(0)).to, Reply::To::kNone);
  Packet pxe = client(1, MessageType::kDiscover);
  pxe.set(opt::kVendorClass, std::string_view("PXEClient:Arch:00007:UNDI:003016"));
  pxe.set(opt::kClientArch, std::vector<std::uint8_t>{0, 7});
  auto o = e.handle(pxe, at(0));
  ASSERT_EQ(o.packet.message_type(), MessageType::kOffer) << o.log;
  EXPECT_EQ(o.packet.yiaddr, Ipv4{});
  EXPECT_EQ(o.packet.file, "ipxe.efi");
  EXPECT_EQ(o.packet.vendor_class(), "PXEClient");
  EXPECT_FALSE(o.packet.lease_time());
  Packet ipxe = pxe;
  ipxe.set(opt::kUserClass, std::string_view("iPXE"));
  EXPECT_EQ(e.handle(ipxe, at(0)).packet.find(opt::kIpxeEncap), nullptr)
      << "in proxy mode iPXE must still look for our ProxyDHCP offer";
  EXPECT_EQ(e.leases().size(), 0u);
  // Its REQUEST to port 67 is the address server's business; the one to 4011 is ours.
  Packet req = pxe;
  req.set(opt::kMessageType, std::vector<std::uint8_t>{3});
  EXPECT_EQ(e.handle(req, at(1)).to, Reply::To::kNone);
  RequestContext on4011 = at(1);
  on4011.via_4011 = true;
  auto ack = e.handle(req, on4011);
  EXPECT_EQ(ack.packet.message_type(), MessageType::kAck);
  EXPECT_EQ(ack.to, Reply::To::kSource);
}

TEST(DhcpEngine, IgnoresBootpAndReplies) {
  Engine e(config());
  Packet bootp;
  bootp.op = 1;
  EXPECT_EQ(e.handle(bootp, at(0)).to, Reply::To::kNone);
  Packet reply = client(1, MessageType::kOffer);
  reply.op = 2;
  EXPECT_EQ(e.handle(reply, at(0)).to, Reply::To::kNone);
}

TEST(DhcpCidr, Parses) {
  Ipv4 n{};
  int p = 0;
  EXPECT_TRUE(parse_cidr("192.168.4.0/22", n, p));
  EXPECT_EQ(p, 22);
  EXPECT_FALSE(parse_cidr("192.168.4.0", n, p));
  EXPECT_FALSE(parse_cidr("192.168.4.0/33", n, p));
  EXPECT_FALSE(parse_cidr("192.168.4/24", n, p));
}

}  // namespace
}  // namespace kiln::dhcp
