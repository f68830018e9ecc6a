// Several kilnd instances share one lease table: the backend refuses a lease another instance
// holds. The engine must then forget its own record of that address (take the stored one) so
// the client's next DISCOVER/REQUEST gets a different address.
#include <gtest/gtest.h>

#include "dhcp/backend.h"
#include "dhcp/engine.h"
#include "tests/unit/dhcp/fakes.h"

namespace kiln::dhcp {
namespace {

using namespace test_support;  // NOLINT: the shared packets and backend

EngineConfig config() {
  EngineConfig c;
  c.server_id = kServer;
  Subnet s;
  EXPECT_TRUE(parse_cidr("10.0.0.0/24", s.network, s.prefix));
  s.pool_first = {10, 0, 0, 100};
  s.pool_last = {10, 0, 0, 103};
  s.lease_time_s = 600;
  c.subnets.push_back(s);
  return c;
}

TEST(DhcpRefusedLease, ARefusedAddressIsNotAckedAndTheClientGetsAnotherOne) {
  SharedBackend backend;
  // Instance 2 bound 10.0.0.100 to another client after this engine started.
  backend.rows["10.0.0.100"] = {
      "10.0.0.100", "52:54:00:00:00:63", "52:54:00:00:00:63", "", "bound", 1'000'000, 5};
  Engine e(config());
  auto offer = e.handle(client(1, MessageType::kDiscover), at(10));
  ASSERT_EQ(offer.packet.message_type(), MessageType::kOffer);
  const Ipv4 first = offer.packet.yiaddr;
  ASSERT_EQ(first, (Ipv4{10, 0, 0, 100}));  // this engine does not know instance 2's lease
  auto ack = e.handle(request_for(1, first), at(20));
  ASSERT_EQ(ack.packet.message_type(), MessageType::kAck);
  ASSERT_TRUE(ack.persist);

  // The writer's commit: the backend refuses it, so the ACK is not sent (the server drops the
  // replies of refused addresses) and the engine reloads the stored lease.
  auto refused = backend.save_leases({to_row(*ack.persist)});
  ASSERT_EQ(refused, std::vector<std::string>{"10.0.0.100"});
  EXPECT_EQ(backend.rows["10.0.0.100"].client, "52:54:00:00:00:63");  // nothing overwritten
  auto stored = backend.load_lease("10.0.0.100");
  ASSERT_TRUE(stored);
  e.reload_lease(first, from_row(*stored));

  // The client starts over (no ACK came): DISCOVER gets another address...
  auto again = e.handle(client(1, MessageType::kDiscover), at(4000));
  ASSERT_EQ(again.packet.message_type(), MessageType::kOffer) << again.log;
  EXPECT_NE(again.packet.yiaddr, first);
  // ... and a REQUEST for the refused one (INIT-REBOOT style, no server id) is not ACKed.
  Packet reboot = client(1, MessageType::kRequest);
  reboot.set_ip(opt::kRequestedIp, first);
  auto r = e.handle(reboot, at(4100));
  EXPECT_NE(r.packet.message_type(), MessageType::kAck) << r.log;
  // The new address commits.
  auto ack2 = e.handle(request_for(1, again.packet.yiaddr), at(4200));
  ASSERT_EQ(ack2.packet.message_type(), MessageType::kAck) << ack2.log;
  EXPECT_TRUE(backend.save_leases({to_row(*ack2.persist)}).empty());
}

TEST(DhcpRefusedLease, ReloadWithNothingStoredFreesTheAddress) {
  Engine e(config());
  auto offer = e.handle(client(1, MessageType::kDiscover), at(10));
  const Ipv4 ip = offer.packet.yiaddr;
  ASSERT_NE(e.leases().by_ip(ip), nullptr);
  e.reload_lease(ip, std::nullopt);
  EXPECT_EQ(e.leases().by_ip(ip), nullptr);
  EXPECT_EQ(e.leases().by_client("52:54:00:00:00:01"), nullptr);
}

TEST(DhcpRefusedLease, DefaultLoadLeaseFindsOneRow) {
  SharedBackend b;
  b.rows["10.0.0.7"] = {"10.0.0.7", "c", "m", "", "bound", 10, 1};
  EXPECT_TRUE(b.load_lease("10.0.0.7"));
  EXPECT_FALSE(b.load_lease("10.0.0.8"));
}

}  // namespace
}  // namespace kiln::dhcp
