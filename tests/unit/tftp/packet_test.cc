#include "tftp/packet.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kiln::tftp {
namespace {

std::vector<std::uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }
using namespace std::string_literals;

TEST(TftpPacket, ParsesAReadRequestWithOptions) {
  // As sent by `curl --tftp-blksize 1468 tftp://host/a.bin`.
  const auto raw = bytes(
      "\x00\x01"
      "a.bin\0"
      "octet\0"
      "tsize\0"
      "0\0"
      "blksize\0"
      "1468\0"s);
  auto p = parse(raw);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->op, Opcode::kRrq);
  EXPECT_EQ(p->request.filename, "a.bin");
  EXPECT_EQ(p->request.mode, Mode::kOctet);
  ASSERT_EQ(p->request.options.size(), 2u);
  EXPECT_EQ(p->request.options[0], (std::pair<std::string, std::string>{"tsize", "0"}));
  EXPECT_EQ(p->request.options[1], (std::pair<std::string, std::string>{"blksize", "1468"}));
}

TEST(TftpPacket, OptionNamesAndModeAreCaseInsensitiveAndFirstDuplicateWins) {
  const auto raw = bytes(
      "\x00\x01"
      "pxelinux.0\0"
      "NetASCII\0"
      "BLKSIZE\0"
      "1024\0"
      "blksize\0"
      "8\0"s);
  auto p = parse(raw);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->request.mode, Mode::kNetascii);
  ASSERT_EQ(p->request.options.size(), 1u);
  EXPECT_EQ(p->request.options[0].first, "blksize");
  EXPECT_EQ(p->request.options[0].second, "1024");
}

// An RRQ for "f" with `n` options, all named `same` if given, else o0, o1, ...
std::vector<std::uint8_t> request_with_options(int n, std::string same = "") {
  std::string s(
      "\x00\x01"
      "f\0octet\0"s);
  for (int i = 0; i < n; ++i) {
    s += same.empty() ? "o" + std::to_string(i) : same;
    s += '\0';
    s += "512";
    s += '\0';
  }
  return bytes(s);
}

TEST(TftpPacket, AcceptsUpToKMaxOptionsDuplicatesCounted) {
  auto p = parse(request_with_options(static_cast<int>(kMaxOptions)));
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->request.options.size(), kMaxOptions);
  auto dup = parse(request_with_options(static_cast<int>(kMaxOptions), "blksize"));
  ASSERT_TRUE(dup) << dup.error().message;
  EXPECT_EQ(dup->request.options.size(), 1u);
}

TEST(TftpPacket, RefusesMoreThanKMaxOptionsAsTooLarge) {
  for (const auto& raw : {request_with_options(static_cast<int>(kMaxOptions) + 1),
                          request_with_options(10'800, "blksize"), request_with_options(10'800)}) {
    auto p = parse(raw);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, Errc::kTooLarge);
    EXPECT_EQ(p.error().message, "more than 32 options");
  }
}

TEST(TftpPacket, ToleratesTrailingNulPaddingFromPxeRoms) {
  const auto raw = bytes(
      "\x00\x01"
      "undionly.kpxe\0"
      "octet\0"
      "tsize\0"
      "0\0\0\0\0\0"s);
  auto p = parse(raw);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->request.options.size(), 1u);
}

TEST(TftpPacket, RefusesMalformedPackets) {
  const std::vector<std::string> bad = {
      ""s,
      "\x00"s,
      "\x00\x04\x00"s,      // short ACK
      "\x00\x09\x00\x01"s,  // unknown opcode
      "\x00\x01"
      "file"s,  // unterminated name
      "\x00\x01"
      "file\0"
      "octet"s,  // unterminated mode
      "\x00\x01\0"
      "octet\0"s,  // empty name
      "\x00\x01"
      "file\0"
      "mail\0"s,  // mail mode is obsolete
      "\x00\x01"
      "file\0"
      "octet\0"
      "blksize\0"s,  // option without value
      "\x00\x01"
      "file\0"
      "octet\0"
      "blksize\0"
      "512\0"
      "x"s,  // trailing garbage
      "\x00\x06"
      "blksize\0"s,  // OACK option without value
  };
  for (const auto& b : bad) {
    auto p = parse(bytes(b));
    EXPECT_FALSE(p) << "accepted: " << testing::PrintToString(b);
    if (!p) {
      EXPECT_EQ(p.error().code, Errc::kBadRequest);
      EXPECT_FALSE(p.error().message.empty());
    }
  }
}

TEST(TftpPacket, ParsesDataAckErrorOack) {
  const auto data = bytes(
      "\x00\x03\xff\xfe"
      "hi"s);  // DATA points into this buffer
  auto d = parse(data);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->op, Opcode::kData);
  EXPECT_EQ(d->block, 65534);
  EXPECT_EQ(std::string(d->data.begin(), d->data.end()), "hi");

  auto a = parse(bytes("\x00\x04\x01\x00"s));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->op, Opcode::kAck);
  EXPECT_EQ(a->block, 256);

  auto e =
      parse(bytes("\x00\x05\x00\x08"
                  "option refused\0"s));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, ErrorCode::kOptionRefused);
  EXPECT_EQ(e->message, "option refused");
  auto e2 =
      parse(bytes("\x00\x05\x00\x00"
                  "no terminator"s));  // tolerated
  ASSERT_TRUE(e2);
  EXPECT_EQ(e2->message, "no terminator");

  auto o =
      parse(bytes("\x00\x06"
                  "blksize\0"
                  "1468\0"s));
  ASSERT_TRUE(o);
  EXPECT_EQ(o->op, Opcode::kOack);
  ASSERT_EQ(o->options.size(), 1u);
}

TEST(TftpPacket, EncodesGoldenBytes) {
  std::vector<std::uint8_t> out;
  const std::uint8_t payload[] = {'h', 'i'};
  encode_data(out, 1, payload);
  EXPECT_EQ(out, bytes("\x00\x03\x00\x01hi"s));
  encode_ack(out, 65535);
  EXPECT_EQ(out, bytes("\x00\x04\xff\xff"s));
  encode_error(out, ErrorCode::kFileNotFound, "file not found");
  EXPECT_EQ(out, bytes("\x00\x05\x00\x01"
                       "file not found\0"s));
  encode_error(out, ErrorCode::kUndefined, "cut\0here"s);
  EXPECT_EQ(out, bytes("\x00\x05\x00\x00"
                       "cut\0"s));
  encode_oack(out, {{"blksize", "1468"}, {"tsize", "42"}});
  EXPECT_EQ(out, bytes("\x00\x06"
                       "blksize\0"
                       "1468\0"
                       "tsize\0"
                       "42\0"s));
  Request r;
  r.filename = "ipxe.efi";
  r.options = {{"windowsize", "16"}};
  encode_request(out, r);
  EXPECT_EQ(out, bytes("\x00\x01"
                       "ipxe.efi\0"
                       "octet\0"
                       "windowsize\0"
                       "16\0"s));
  auto back = parse(out);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->request.filename, "ipxe.efi");
}

TEST(TftpNegotiate, NoOptionsMeansNoOack) {
  auto n = negotiate({}, 1000, {});
  EXPECT_TRUE(n.oack.empty());
  EXPECT_EQ(n.blksize, 512u);
  EXPECT_EQ(n.window, 1);
  EXPECT_FALSE(n.timeout_ms);
}

TEST(TftpNegotiate, HonoursWhatItCanAndLeavesOutTheRest) {
  Limits lim;
  lim.max_blksize = 1468;
  lim.max_window = 64;
  auto n = negotiate({{"multicast", ""},
                      {"blksize", "65464"},
                      {"tsize", "0"},
                      {"timeout", "3"},
                      {"windowsize", "100"},
                      {"utimeout", "5000"}},
                     123456, lim);
  EXPECT_EQ(n.blksize, 1468u);
  EXPECT_EQ(n.window, 64);
  EXPECT_EQ(n.timeout_ms, 3000u);
  const Options want = {
      {"blksize", "1468"}, {"tsize", "123456"}, {"timeout", "3"}, {"windowsize", "64"}};
  EXPECT_EQ(n.oack, want);
}

TEST(TftpNegotiate, IgnoresOutOfRangeValues) {
  auto n = negotiate(
      {{"blksize", "7"}, {"timeout", "0"}, {"windowsize", "0"}, {"tsize", "x"}, {"blksize2", "1"}},
      10, {});
  EXPECT_TRUE(n.oack.empty());
  EXPECT_EQ(n.blksize, 512u);
  auto m = negotiate({{"timeout", "256"}, {"windowsize", "65536"}, {"blksize", "-1"}}, 10, {});
  EXPECT_TRUE(m.oack.empty());
  auto big = negotiate({{"blksize", "99999999999999999999999"}}, 10, {});
  EXPECT_TRUE(big.oack.empty());
  auto max = negotiate({{"blksize", "70000"}}, 10, {});
  ASSERT_EQ(max.oack.size(), 1u);
  EXPECT_EQ(max.blksize, kMaxBlksize);
}

TEST(TftpNetascii, ConvertsLineEndings) {
  EXPECT_EQ(to_netascii("a\nb\rc\r\n"), "a\r\nb\r\0c\r\0\r\n"s);
  EXPECT_EQ(to_netascii(""), "");
}

}  // namespace
}  // namespace kiln::tftp
