// The DHCP server (real sockets on loopback, relayed requests) with a backend that refuses a
// lease another kilnd instance holds: the ACK is not sent, and the client's next DISCOVER is
// offered another address.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "dhcp/server.h"
#include "tests/unit/dhcp/fakes.h"

namespace kiln::dhcp {
namespace {

using test_support::SharedBackend;

int port_base() { return 20000 + static_cast<int>(::getpid() % 20000); }

class DhcpServerRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "SO_BINDTODEVICE needs CAP_NET_RAW";
    port_ = static_cast<std::uint16_t>(port_base());
    // The "relay": 127.0.0.2 at the server port, bound to lo like the server (more specific).
    relay_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const int on = 1;
    ::setsockopt(relay_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    ::setsockopt(relay_, SOL_SOCKET, SO_BINDTODEVICE, "lo", 2);
    ServerOptions o;
    o.interfaces = {"lo"};
    o.server_port = port_;
    o.client_port = static_cast<std::uint16_t>(port_ + 1);
    o.server_address = "127.0.0.1";
    o.relays = {"127.0.0.2"};
    o.new_lease_rate = 0;
    o.new_lease_rate_per_mac = 0;
    Subnet s;
    ASSERT_TRUE(parse_cidr("127.0.0.0/24", s.network, s.prefix));
    s.pool_first = {127, 0, 0, 100};
    s.pool_last = {127, 0, 0, 103};
    s.lease_time_s = 600;
    o.subnets.push_back(s);
    log_ = std::make_shared<spdlog::logger>("t", std::make_shared<spdlog::sinks::null_sink_mt>());
    server_ = std::make_unique<Server>(o, backend_, metrics_, log_);
    auto st = server_->start();
    ASSERT_TRUE(st) << st.error().message;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(0x7f000002);
    ASSERT_EQ(::bind(relay_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  }
  void TearDown() override {
    if (server_) server_->stop();
    if (relay_ >= 0) ::close(relay_);
  }

  Packet client(MessageType t, std::uint32_t xid) {
    Packet p;
    p.op = 1;
    p.hops = 1;
    p.xid = xid;
    p.chaddr = {0x52, 0x54, 0, 0, 0, 0x11};
    p.giaddr = {127, 0, 0, 2};
    p.set(opt::kMessageType, std::vector<std::uint8_t>{static_cast<std::uint8_t>(t)});
    return p;
  }
  void send(const Packet& p) {
    auto e = encode(p);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port_);
    to.sin_addr.s_addr = htonl(0x7f000001);
    ASSERT_EQ(::sendto(relay_, e.bytes.data(), e.bytes.size(), 0, reinterpret_cast<sockaddr*>(&to),
                       sizeof to),
              static_cast<ssize_t>(e.bytes.size()));
  }
  // The next reply the relay gets, within 5 s (nullopt: none).
  std::optional<Packet> receive() {
    pollfd pfd{relay_, POLLIN, 0};
    if (::poll(&pfd, 1, 5000) <= 0) return std::nullopt;
    std::vector<std::uint8_t> buf(2048);
    const auto n = ::recv(relay_, buf.data(), buf.size(), 0);
    if (n <= 0) return std::nullopt;
    auto p = parse(std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)));
    if (!p) return std::nullopt;
    return *p;
  }

  std::uint16_t port_ = 0;
  int relay_ = -1;
  SharedBackend backend_;
  Metrics metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<Server> server_;
};

TEST_F(DhcpServerRefusal, ARefusedLeaseGetsNoAckAndTheNextDiscoverAnotherAddress) {
  // Another instance binds 127.0.0.100 to another client after this server loaded its leases.
  {
    std::lock_guard l(backend_.mu);
    backend_.rows["127.0.0.100"] = {"127.0.0.100",
                                    "52:54:00:00:00:99",
                                    "52:54:00:00:00:99",
                                    "",
                                    "bound",
                                    std::int64_t{1} << 50,
                                    1};
  }
  send(client(MessageType::kDiscover, 1));
  auto offer = receive();
  ASSERT_TRUE(offer);
  ASSERT_EQ(offer->message_type(), MessageType::kOffer);
  const Ipv4 first = offer->yiaddr;
  ASSERT_EQ(first, (Ipv4{127, 0, 0, 100}));  // this server does not know the other's lease

  Packet req = client(MessageType::kRequest, 2);
  req.set_ip(opt::kRequestedIp, first);
  req.set_ip(opt::kServerId, Ipv4{127, 0, 0, 1});
  send(req);
  // The writer committed the batch, and the backend refused the address.
  for (int i = 0; i < 500 && metrics_.value("kiln_dhcp_lease_refused_total", {}) < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(metrics_.value("kiln_dhcp_lease_refused_total", {}), 1);
  EXPECT_EQ(metrics_.value("kiln_dhcp_dropped_total", {{"reason", "lease_refused"}}), 1);
  {
    std::lock_guard l(backend_.mu);
    EXPECT_EQ(backend_.rows["127.0.0.100"].client, "52:54:00:00:00:99");  // not overwritten
  }

  // The client, without an ACK, starts over: the next thing the relay gets is an OFFER of
  // another address (an ACK sent for the refused lease would arrive first).
  send(client(MessageType::kDiscover, 3));
  auto next = receive();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->message_type(), MessageType::kOffer) << "xid " << next->xid;
  EXPECT_EQ(next->xid, 3u);
  EXPECT_NE(next->yiaddr, first);

  // That one commits and is ACKed.
  Packet req2 = client(MessageType::kRequest, 4);
  req2.set_ip(opt::kRequestedIp, next->yiaddr);
  req2.set_ip(opt::kServerId, Ipv4{127, 0, 0, 1});
  send(req2);
  auto ack = receive();
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->message_type(), MessageType::kAck);
  EXPECT_EQ(ack->yiaddr, next->yiaddr);
}

}  // namespace
}  // namespace kiln::dhcp
