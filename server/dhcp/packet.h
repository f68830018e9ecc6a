// dhcp/packet.h — the DHCPv4 wire format (RFC 2131/2132) as values: BOOTP header, options in
// order, option overload (52) on input, concatenation of split options (RFC 3396), and the
// options PXE provisioning reads (60, 77, 82, 93, 94, 97). Pure: bytes in, values out. Every
// read is bounds-checked; anything malformed is an error value naming what is wrong.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace kiln::dhcp {

using Ipv4 = std::array<std::uint8_t, 4>;
std::string to_string(const Ipv4& a);
std::optional<Ipv4> parse_ipv4(std::string_view s);
inline std::uint32_t to_u32(const Ipv4& a) {
  return std::uint32_t{a[0]} << 24 | std::uint32_t{a[1]} << 16 | std::uint32_t{a[2]} << 8 | a[3];
}
inline Ipv4 from_u32(std::uint32_t v) {
  return {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
          static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
}

enum class MessageType : std::uint8_t {
  kDiscover = 1,
  kOffer = 2,
  kRequest = 3,
  kDecline = 4,
  kAck = 5,
  kNak = 6,
  kRelease = 7,
  kInform = 8,
};
const char* to_string(MessageType t);

namespace opt {
inline constexpr std::uint8_t kPad = 0, kSubnetMask = 1, kRouter = 3, kDns = 6, kHostname = 12,
                              kDomainName = 15, kBroadcast = 28, kVendorSpecific = 43,
                              kRequestedIp = 50, kLeaseTime = 51, kOverload = 52, kMessageType = 53,
                              kServerId = 54, kParamRequest = 55, kMessage = 56,
                              kMaxMessageSize = 57, kRenewalTime = 58, kRebindingTime = 59,
                              kVendorClass = 60, kClientId = 61, kTftpServer = 66, kBootfile = 67,
                              kUserClass = 77, kRelayAgent = 82, kClientArch = 93, kClientNdi = 94,
                              kClientUuid = 97, kIpxeEncap = 175, kEnd = 255;
// iPXE's encapsulated option 175, sub-option 176 ("no-pxedhcp"): do not wait for ProxyDHCP.
inline constexpr std::uint8_t kIpxeNoPxeDhcp = 176;
// iPXE announces each feature it was built with as a sub-option of 175 (tag = feature code,
// one byte = its version; include/ipxe/features.h DHCP_EB_FEATURE_*). 0x14: HTTPS.
inline constexpr std::uint8_t kIpxeFeatureHttps = 0x14;
}  // namespace opt

struct Option {
  std::uint8_t code = 0;
  std::vector<std::uint8_t> data;
};

// RFC 3046 relay agent information: the sub-options policy may use, and the raw bytes that are
// echoed back unchanged.
struct RelayInfo {
  std::string circuit_id;  // sub-option 1 (often the switch port)
  std::string remote_id;   // sub-option 2 (often the switch)
  std::vector<std::uint8_t> raw;
};

struct Packet {
  static constexpr std::size_t kHeaderSize = 236;  // BOOTP fixed part, before the cookie
  std::uint8_t op = 1;                             // 1 BOOTREQUEST, 2 BOOTREPLY
  std::uint8_t htype = 1;
  std::uint8_t hlen = 6;
  std::uint8_t hops = 0;
  std::uint32_t xid = 0;
  std::uint16_t secs = 0;
  std::uint16_t flags = 0;  // bit 15: broadcast
  Ipv4 ciaddr{}, yiaddr{}, siaddr{}, giaddr{};
  std::array<std::uint8_t, 16> chaddr{};
  std::string sname;            // up to 63 bytes (NUL-terminated on the wire)
  std::string file;             // up to 127 bytes
  std::vector<Option> options;  // in order; a code appears once (split options are joined)

  bool broadcast() const { return flags & 0x8000; }
  const Option* find(std::uint8_t code) const;
  void set(std::uint8_t code, std::vector<std::uint8_t> data);  // replaces or appends
  void set(std::uint8_t code, std::string_view text);
  void set_u32(std::uint8_t code, std::uint32_t v);
  void set_ip(std::uint8_t code, const Ipv4& a);

  // Accessors for the options kiln reads. Absent or malformed: nullopt / empty.
  std::optional<MessageType> message_type() const;
  std::optional<Ipv4> requested_ip() const;
  std::optional<Ipv4> server_id() const;
  std::optional<std::uint32_t> lease_time() const;
  std::string vendor_class() const;  // 60, e.g. "PXEClient:Arch:00000:UNDI:002001"
  std::string user_class() const;    // 77 as text ("iPXE"), RFC 3004 framing removed
  std::optional<std::uint16_t> client_arch() const;  // 93: the first architecture listed
  // 175: iPXE announces `feature` (a sub-option with a nonzero version byte). The sub-options
  // are read up to END or the first one running past the option; none after it count.
  bool ipxe_feature(std::uint8_t feature) const;
  // 97: the 16-byte UUID. Accepted as 17 bytes with a leading type 0 (RFC 4578), or 16 bytes
  // without it (some ROMs); anything else is treated as absent.
  std::optional<std::array<std::uint8_t, 16>> client_uuid() const;
  std::optional<RelayInfo> relay_info() const;
  std::vector<std::uint8_t> param_request_list() const;
  std::string hostname() const;
  std::string mac() const;  // "aa:bb:cc:dd:ee:ff" for Ethernet (htype 1, hlen 6), else ""
};

// Parses a DHCP message. Refused (kBadRequest, with the reason): shorter than 240 bytes, no
// DHCP magic cookie, hlen > 16, an option running past its field, an option overload value
// other than 1..3, an overload inside an overloaded field (a loop), more than 1,500 bytes of
// options for one code. A message without option 53 parses (BOOTP); the server decides.
Result<Packet> parse(std::span<const std::uint8_t> bytes);

// Encodes with the options in order, an END option, and zero padding to at least 300 bytes
// (the BOOTP minimum that some relays and ROMs expect). Options longer than 255 bytes are
// split (RFC 3396). If the result would exceed `max_size` (the client's option 57, at least
// 576), options are dropped from the end (never 53 or 54) and the result is marked truncated.
struct Encoded {
  std::vector<std::uint8_t> bytes;
  bool truncated = false;
};
Encoded encode(const Packet& p, std::size_t max_size = 1500);

}  // namespace kiln::dhcp
