#include "dhcp/packet.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kiln::dhcp {
namespace {

// Builds a BOOTREQUEST with the given option bytes after the cookie.
std::vector<std::uint8_t> request(std::vector<std::uint8_t> options,
                                  std::vector<std::uint8_t> file = {},
                                  std::vector<std::uint8_t> sname = {}) {
  std::vector<std::uint8_t> b(236, 0);
  b[0] = 1;
  b[1] = 1;
  b[2] = 6;
  b[4] = 0xde, b[5] = 0xad, b[6] = 0xbe, b[7] = 0xef;
  b[10] = 0x80;  // broadcast
  const std::uint8_t mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  std::copy(mac, mac + 6, b.begin() + 28);
  std::copy(sname.begin(), sname.end(), b.begin() + 44);
  std::copy(file.begin(), file.end(), b.begin() + 108);
  b.insert(b.end(), {99, 130, 83, 99});
  b.insert(b.end(), options.begin(), options.end());
  return b;
}

TEST(DhcpPacket, ParsesAPxeRomDiscover) {
  // Options as a BIOS PXE ROM (iPXE's UNDI ROM identity) sends them in its DISCOVER.
  std::vector<std::uint8_t> o = {53, 1, 1, 57, 2, 0x05, 0xc0, 93, 2, 0, 0, 94, 3, 1, 2, 1};
  o.insert(o.end(), {97, 17, 0});
  for (int i = 0; i < 16; ++i) o.push_back(static_cast<std::uint8_t>(0xa0 + i));
  const std::string vc = "PXEClient:Arch:00000:UNDI:002001";
  o.push_back(60);
  o.push_back(static_cast<std::uint8_t>(vc.size()));
  o.insert(o.end(), vc.begin(), vc.end());
  o.insert(o.end(), {77, 4, 'i', 'P', 'X', 'E'});
  o.insert(o.end(), {55, 6, 1, 3, 6, 43, 66, 67, 255});
  auto p = parse(request(o));
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->op, 1);
  EXPECT_EQ(p->xid, 0xdeadbeefu);
  EXPECT_TRUE(p->broadcast());
  EXPECT_EQ(p->mac(), "52:54:00:12:34:56");
  EXPECT_EQ(p->message_type(), MessageType::kDiscover);
  EXPECT_EQ(p->vendor_class(), vc);
  EXPECT_EQ(p->user_class(), "iPXE");
  EXPECT_EQ(p->client_arch(), 0);
  ASSERT_TRUE(p->client_uuid());
  EXPECT_EQ((*p->client_uuid())[0], 0xa0);
  EXPECT_EQ((*p->client_uuid())[15], 0xaf);
  EXPECT_EQ(p->param_request_list(), (std::vector<std::uint8_t>{1, 3, 6, 43, 66, 67}));
}

TEST(DhcpPacket, UuidToleratesSixteenBytesAndIgnoresOtherLengths) {
  std::vector<std::uint8_t> o = {53, 1, 1, 97, 16};
  for (int i = 0; i < 16; ++i) o.push_back(static_cast<std::uint8_t>(i));
  o.push_back(255);
  auto p = parse(request(o));
  ASSERT_TRUE(p);
  ASSERT_TRUE(p->client_uuid());
  EXPECT_EQ((*p->client_uuid())[15], 15);
  auto q = parse(request({53, 1, 1, 97, 3, 0, 1, 2, 255}));
  ASSERT_TRUE(q);
  EXPECT_FALSE(q->client_uuid());
  auto r = parse(request({53, 1, 1, 255}));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->client_uuid());
}

TEST(DhcpPacket, UserClassWithRfc3004Framing) {
  auto p = parse(request({53, 1, 1, 77, 5, 4, 'i', 'P', 'X', 'E', 255}));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->user_class(), "iPXE");
}

// Option 175 as iPXE sends it: the version sub-option 0xeb, then one sub-option per feature it
// was built with (tag = feature, one version byte). Real tables: kHttps175 from the
// undionly.kpxe deploy/build-ipxe.sh builds (HTTPS 0x14 among them), kStock175 from Debian 12's
// /usr/lib/ipxe/qemu/efi-virtio.rom (the ROM the lab's QEMU boots first: no HTTPS).
const std::vector<std::uint8_t> kHttps175 = {
    0xeb, 0x03, 0x01, 0x00, 0x00, 0x17, 0x01, 0x01, 0x22, 0x01, 0x01, 0x13, 0x01, 0x01,
    0x14, 0x01, 0x01, 0x11, 0x01, 0x01, 0x27, 0x01, 0x01, 0x19, 0x01, 0x01, 0x10, 0x01,
    0x02, 0x21, 0x01, 0x01, 0x15, 0x01, 0x01, 0x18, 0x01, 0x01, 0x12, 0x01, 0x01};
const std::vector<std::uint8_t> kStock175 = {
    0xeb, 0x03, 0x01, 0x00, 0x00, 0x17, 0x01, 0x01, 0x24, 0x01, 0x01, 0x13, 0x01, 0x01, 0x11,
    0x01, 0x01, 0x27, 0x01, 0x01, 0x29, 0x01, 0x01, 0x15, 0x01, 0x01, 0x12, 0x01, 0x01};

TEST(DhcpPacket, IpxeFeaturesFromOption175) {
  std::vector<std::uint8_t> o = {53, 1, 1, 77, 4, 'i', 'P', 'X', 'E', 175};
  const std::vector<std::uint8_t>& with_https = kHttps175;
  o.push_back(static_cast<std::uint8_t>(with_https.size()));
  o.insert(o.end(), with_https.begin(), with_https.end());
  o.push_back(255);
  auto p = parse(request(o));
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_TRUE(p->ipxe_feature(opt::kIpxeFeatureHttps));
  EXPECT_TRUE(p->ipxe_feature(0x13));   // HTTP
  EXPECT_TRUE(p->ipxe_feature(0x11));   // iSCSI
  EXPECT_FALSE(p->ipxe_feature(0x24));  // EFI format: not in a BIOS build

  std::vector<std::uint8_t> q = {53, 1, 1, 77, 4, 'i', 'P', 'X', 'E', 175};
  const std::vector<std::uint8_t>& stock = kStock175;
  q.push_back(static_cast<std::uint8_t>(stock.size()));
  q.insert(q.end(), stock.begin(), stock.end());
  q.push_back(255);
  auto r = parse(request(q));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ipxe_feature(opt::kIpxeFeatureHttps)) << "Debian's ROM has no HTTPS";
  EXPECT_TRUE(r->ipxe_feature(0x13));
  EXPECT_TRUE(r->ipxe_feature(0x24));
}

TEST(DhcpPacket, IpxeFeaturesToleratePadAndStopAtMalformedSubOptions) {
  auto feature = [](std::vector<std::uint8_t> sub) {
    std::vector<std::uint8_t> o = {53, 1, 1, 175, static_cast<std::uint8_t>(sub.size())};
    o.insert(o.end(), sub.begin(), sub.end());
    o.push_back(255);
    auto p = parse(request(o));
    EXPECT_TRUE(p);
    return p && p->ipxe_feature(opt::kIpxeFeatureHttps);
  };
  EXPECT_TRUE(feature({0, 0, 0x14, 1, 1}));              // pad before it
  EXPECT_FALSE(feature({0x14, 1, 0}));                   // version 0: not announced
  EXPECT_FALSE(feature({0x14, 0}));                      // no version byte
  EXPECT_FALSE(feature({0x13, 1, 1, 255, 0x14, 1, 1}));  // after END
  EXPECT_FALSE(feature({0x13, 9, 1, 0x14, 1, 1}));       // 0x13 runs past: nothing after counts
  EXPECT_FALSE(feature({0x13}));                         // a tag without a length
  EXPECT_FALSE(feature({}));                             // empty
  auto none = parse(request({53, 1, 1, 255}));
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->ipxe_feature(opt::kIpxeFeatureHttps));
}

TEST(DhcpPacket, RelayAgentInformationSubOptions) {
  auto p =
      parse(request({53, 1, 3, 82, 12, 1, 4, 'p', 'o', '1', '7', 2, 4, 's', 'w', '0', '2', 255}));
  ASSERT_TRUE(p);
  auto r = p->relay_info();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->circuit_id, "po17");
  EXPECT_EQ(r->remote_id, "sw02");
  EXPECT_EQ(r->raw.size(), 12u);
}

TEST(DhcpPacket, OptionOverloadReadsFileAndSnameFields) {
  // Option 52 = 3: options continue in the file field, then in sname.
  auto p = parse(request({53, 1, 1, 52, 1, 3, 255},
                         {60, 9, 'P', 'X', 'E', 'C', 'l', 'i', 'e', 'n', 't', 255},
                         {12, 3, 'p', 'c', '1', 255}));
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->vendor_class(), "PXEClient");
  EXPECT_EQ(p->hostname(), "pc1");
  EXPECT_TRUE(p->file.empty());
  EXPECT_TRUE(p->sname.empty());
}

TEST(DhcpPacket, SplitOptionsAreJoined_Rfc3396) {
  auto p =
      parse(request({53, 1, 1, 60, 3, 'P', 'X', 'E', 60, 6, 'C', 'l', 'i', 'e', 'n', 't', 255}));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->vendor_class(), "PXEClient");
}

TEST(DhcpPacket, RefusesMalformedMessages) {
  std::vector<std::vector<std::uint8_t>> bad;
  bad.push_back(std::vector<std::uint8_t>(100, 0));  // short
  auto no_cookie = request({53, 1, 1, 255});
  no_cookie[236] = 0;
  bad.push_back(no_cookie);                                            // BOOTP without cookie
  bad.push_back(request({53, 1}));                                     // option past the end
  bad.push_back(request({53}));                                        // no length byte
  bad.push_back(request({53, 1, 1, 52, 1, 7, 255}));                   // overload value 7
  bad.push_back(request({53, 1, 1, 52, 1, 1, 255}, {52, 1, 1, 255}));  // overload loop
  auto long_hlen = request({53, 1, 1, 255});
  long_hlen[2] = 17;
  bad.push_back(long_hlen);
  auto bad_op = request({53, 1, 1, 255});
  bad_op[0] = 9;
  bad.push_back(bad_op);
  std::vector<std::uint8_t> huge = {53, 1, 1};
  for (int i = 0; i < 7; ++i) {  // 7 x 255 bytes of option 43: over the 1500-byte bound
    huge.push_back(43);
    huge.push_back(255);
    huge.insert(huge.end(), 255, 'x');
  }
  bad.push_back(request(huge));
  for (std::size_t i = 0; i < bad.size(); ++i) {
    auto p = parse(bad[i]);
    EXPECT_FALSE(p) << "case " << i;
    if (!p) {
      EXPECT_EQ(p.error().code, Errc::kBadRequest);
    }
  }
}

TEST(DhcpPacket, ToleratesAMissingEndOptionAndPadding) {
  auto p = parse(request({0, 0, 53, 1, 1, 0, 61, 7, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56}));
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->message_type(), MessageType::kDiscover);
  ASSERT_NE(p->find(opt::kClientId), nullptr);
}

TEST(DhcpPacket, EncodesGoldenBytes) {
  Packet p;
  p.op = 2;
  p.xid = 0x01020304;
  p.flags = 0x8000;
  p.yiaddr = {10, 0, 0, 50};
  p.siaddr = {10, 0, 0, 1};
  p.chaddr[0] = 0x52;
  p.file = "undionly.kpxe";
  p.set_ip(opt::kServerId, {10, 0, 0, 1});
  p.set(opt::kMessageType, std::vector<std::uint8_t>{2});  // set after 54: still encoded first
  p.set_u32(opt::kLeaseTime, 3600);
  auto e = encode(p);
  ASSERT_EQ(e.bytes.size(), 300u);  // padded to the BOOTP minimum
  EXPECT_FALSE(e.truncated);
  EXPECT_EQ(e.bytes[0], 2);
  EXPECT_EQ(e.bytes[4], 1);
  EXPECT_EQ(e.bytes[7], 4);
  EXPECT_EQ(e.bytes[10], 0x80);
  EXPECT_EQ(std::vector<std::uint8_t>(e.bytes.begin() + 16, e.bytes.begin() + 24),
            (std::vector<std::uint8_t>{10, 0, 0, 50, 10, 0, 0, 1}));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&e.bytes[108])), "undionly.kpxe");
  const std::vector<std::uint8_t> options = {99, 130, 83, 99, 53, 1, 2, 54,   4,    10,
                                             0,  0,   1,  51, 4,  0, 0, 0x0e, 0x10, 255};
  EXPECT_EQ(std::vector<std::uint8_t>(e.bytes.begin() + 236, e.bytes.begin() + 256), options);
  auto back = parse(e.bytes);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->message_type(), MessageType::kOffer);
  EXPECT_EQ(back->lease_time(), 3600u);
  EXPECT_EQ(back->file, "undionly.kpxe");
}

TEST(DhcpPacket, LongOptionsAreSplitAndTruncationKeepsEssentials) {
  Packet p;
  p.op = 2;
  p.set(opt::kMessageType, std::vector<std::uint8_t>{5});
  p.set(opt::kVendorSpecific, std::vector<std::uint8_t>(300, 7));
  auto e = encode(p);
  auto back = parse(e.bytes);
  ASSERT_TRUE(back);
  ASSERT_NE(back->find(opt::kVendorSpecific), nullptr);
  EXPECT_EQ(back->find(opt::kVendorSpecific)->data.size(), 300u);

  p.set(opt::kBootfile, std::string(250, 'f'));
  p.set_ip(opt::kServerId, {10, 0, 0, 1});
  auto small = encode(p, 576);
  EXPECT_TRUE(small.truncated);
  EXPECT_LE(small.bytes.size(), 576u);
  auto s = parse(small.bytes);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->message_type(), MessageType::kAck);
  EXPECT_TRUE(s->server_id());
}

TEST(DhcpIpv4, ParseAndFormat) {
  EXPECT_EQ(to_string(Ipv4{192, 168, 0, 254}), "192.168.0.254");
  EXPECT_EQ(parse_ipv4("10.1.2.3"), (Ipv4{10, 1, 2, 3}));
  for (const char* bad :
       {"", "10.1.2", "10.1.2.3.4", "256.1.1.1", "1..2.3", "a.b.c.d", "1.2.3.4 "}) {
    EXPECT_FALSE(parse_ipv4(bad)) << bad;
  }
  EXPECT_EQ(to_u32(Ipv4{10, 0, 0, 1}), 0x0a000001u);
  EXPECT_EQ(from_u32(0x0a000001u), (Ipv4{10, 0, 0, 1}));
}

}  // namespace
}  // namespace kiln::dhcp
