#include "dhcp/packet.h"

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace kiln::dhcp {
namespace {

constexpr std::uint8_t kCookie[4] = {99, 130, 83, 99};
constexpr std::size_t kMaxOptionBytes = 1500;

Error bad(std::string msg) { return make_error(Errc::kBadRequest, std::move(msg)); }

std::uint32_t get32(std::span<const std::uint8_t> b, std::size_t at) {
  return std::uint32_t{b[at]} << 24 | std::uint32_t{b[at + 1]} << 16 |
         std::uint32_t{b[at + 2]} << 8 | b[at + 3];
}

Ipv4 get_ip(std::span<const std::uint8_t> b, std::size_t at) {
  return {b[at], b[at + 1], b[at + 2], b[at + 3]};
}

std::string c_string(std::span<const std::uint8_t> field) {
  const auto end = std::find(field.begin(), field.end(), std::uint8_t{0});
  return std::string(field.begin(), end);
}

// Reads the options in `field` into `out`, joining repeated codes (RFC 3396). Sets `overload`
// when the field carries option 52 and `allow_overload` is set.
Status read_options(std::span<const std::uint8_t> field, std::vector<Option>& out,
                    bool allow_overload, std::uint8_t& overload, const char* where) {
  std::size_t i = 0;
  while (i < field.size()) {
    const std::uint8_t code = field[i];
    if (code == opt::kPad) {
      ++i;
      continue;
    }
    if (code == opt::kEnd) return ok_status();
    if (i + 1 >= field.size()) {
      return bad(std::string("option ") + std::to_string(code) + " has no length in " + where);
    }
    const std::size_t len = field[i + 1];
    if (i + 2 + len > field.size()) {
      return bad(std::string("option ") + std::to_string(code) + " runs past the end of " + where);
    }
    const auto data = field.subspan(i + 2, len);
    if (code == opt::kOverload) {
      if (!allow_overload) return bad(std::string("option overload inside ") + where);
      if (len != 1 || data[0] < 1 || data[0] > 3) return bad("bad option overload value");
      overload = data[0];
    } else {
      auto it =
          std::find_if(out.begin(), out.end(), [&](const Option& o) { return o.code == code; });
      if (it == out.end()) {
        out.push_back({code, {data.begin(), data.end()}});
      } else {
        if (it->data.size() + len > kMaxOptionBytes) {
          return bad("option " + std::to_string(code) + " longer than 1500 bytes");
        }
        it->data.insert(it->data.end(), data.begin(), data.end());
      }
    }
    i += 2 + len;
  }
  // No END option: tolerated (several ROMs end the packet right after the last option).
  return ok_status();
}

}  // namespace

std::string to_string(const Ipv4& a) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
  return buf;
}

std::optional<Ipv4> parse_ipv4(std::string_view s) {
  Ipv4 out{};
  for (int part = 0; part < 4; ++part) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || v > 255 || p == s.data() || p - s.data() > 3) return std::nullopt;
    out[part] = static_cast<std::uint8_t>(v);
    s.remove_prefix(static_cast<std::size_t>(p - s.data()));
    if (part < 3) {
      if (s.empty() || s.front() != '.') return std::nullopt;
      s.remove_prefix(1);
    }
  }
  if (!s.empty()) return std::nullopt;
  return out;
}

const char* to_string(MessageType t) {
  switch (t) {
    case MessageType::kDiscover:
      return "DISCOVER";
    case MessageType::kOffer:
      return "OFFER";
    case MessageType::kRequest:
      return "REQUEST";
    case MessageType::kDecline:
      return "DECLINE";
    case MessageType::kAck:
      return "ACK";
    case MessageType::kNak:
      return "NAK";
    case MessageType::kRelease:
      return "RELEASE";
    case MessageType::kInform:
      return "INFORM";
  }
  return "?";
}

const Option* Packet::find(std::uint8_t code) const {
  auto it =
      std::find_if(options.begin(), options.end(), [&](const Option& o) { return o.code == code; });
  return it == options.end() ? nullptr : &*it;
}

void Packet::set(std::uint8_t code, std::vector<std::uint8_t> data) {
  auto it =
      std::find_if(options.begin(), options.end(), [&](const Option& o) { return o.code == code; });
  if (it != options.end()) {
    it->data = std::move(data);
  } else {
    options.push_back({code, std::move(data)});
  }
}
void Packet::set(std::uint8_t code, std::string_view text) {
  set(code, std::vector<std::uint8_t>(text.begin(), text.end()));
}
void Packet::set_u32(std::uint8_t code, std::uint32_t v) {
  set(code, std::vector<std::uint8_t>{
                static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
                static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)});
}
void Packet::set_ip(std::uint8_t code, const Ipv4& a) {
  set(code, std::vector<std::uint8_t>(a.begin(), a.end()));
}

std::optional<MessageType> Packet::message_type() const {
  const Option* o = find(opt::kMessageType);
  if (!o || o->data.size() != 1 || o->data[0] < 1 || o->data[0] > 8) return std::nullopt;
  return static_cast<MessageType>(o->data[0]);
}

namespace {
std::optional<Ipv4> ip_option(const Packet& p, std::uint8_t code) {
  const Option* o = p.find(code);
  if (!o || o->data.size() != 4) return std::nullopt;
  return Ipv4{o->data[0], o->data[1], o->data[2], o->data[3]};
}
}  // namespace

std::optional<Ipv4> Packet::requested_ip() const { return ip_option(*this, opt::kRequestedIp); }
std::optional<Ipv4> Packet::server_id() const { return ip_option(*this, opt::kServerId); }

std::optional<std::uint32_t> Packet::lease_time() const {
  const Option* o = find(opt::kLeaseTime);
  if (!o || o->data.size() != 4) return std::nullopt;
  return get32(o->data, 0);
}

std::string Packet::vendor_class() const {
  const Option* o = find(opt::kVendorClass);
  return o ? std::string(o->data.begin(), o->data.end()) : std::string();
}

std::string Packet::user_class() const {
  const Option* o = find(opt::kUserClass);
  if (!o || o->data.empty()) return {};
  // RFC 3004 framing is a length byte then the class; iPXE and others send the bare text.
  // Treat the data as framed only when the length byte covers it exactly.
  const auto& d = o->data;
  if (d[0] + 1u == d.size() && d[0] > 0) return std::string(d.begin() + 1, d.end());
  return std::string(d.begin(), d.end());
}

bool Packet::ipxe_feature(std::uint8_t feature) const {
  const Option* o = find(opt::kIpxeEncap);
  if (!o) return false;
  const auto& d = o->data;
  std::size_t i = 0;
  while (i < d.size()) {
    const std::uint8_t tag = d[i];
    if (tag == opt::kPad) {
      ++i;
      continue;
    }
    if (tag == opt::kEnd || i + 1 >= d.size()) return false;
    const std::size_t len = d[i + 1];
    if (i + 2 + len > d.size()) return false;  // runs past the option: malformed from here on
    if (tag == feature) return len >= 1 && d[i + 2] != 0;
    i += 2 + len;
  }
  return false;
}

std::optional<std::uint16_t> Packet::client_arch() const {
  const Option* o = find(opt::kClientArch);
  if (!o || o->data.size() < 2 || o->data.size() % 2 != 0) return std::nullopt;
  return static_cast<std::uint16_t>(o->data[0] << 8 | o->data[1]);
}

std::optional<std::array<std::uint8_t, 16>> Packet::client_uuid() const {
  const Option* o = find(opt::kClientUuid);
  if (!o) return std::nullopt;
  std::array<std::uint8_t, 16> u{};
  if (o->data.size() == 17 && o->data[0] == 0) {
    std::copy(o->data.begin() + 1, o->data.end(), u.begin());
  } else if (o->data.size() == 16) {
    std::copy(o->data.begin(), o->data.end(), u.begin());
  } else {
    return std::nullopt;
  }
  return u;
}

std::optional<RelayInfo> Packet::relay_info() const {
  const Option* o = find(opt::kRelayAgent);
  if (!o) return std::nullopt;
  RelayInfo r;
  r.raw = o->data;
  std::size_t i = 0;
  while (i + 1 < o->data.size()) {
    const std::uint8_t sub = o->data[i];
    const std::size_t len = o->data[i + 1];
    if (i + 2 + len > o->data.size()) break;  // a bad sub-option: keep the raw bytes only
    std::string value(o->data.begin() + static_cast<std::ptrdiff_t>(i + 2),
                      o->data.begin() + static_cast<std::ptrdiff_t>(i + 2 + len));
    if (sub == 1) r.circuit_id = std::move(value);
    if (sub == 2) r.remote_id = std::move(value);
    i += 2 + len;
  }
  return r;
}

std::vector<std::uint8_t> Packet::param_request_list() const {
  const Option* o = find(opt::kParamRequest);
  return o ? o->data : std::vector<std::uint8_t>{};
}

std::string Packet::hostname() const {
  const Option* o = find(opt::kHostname);
  return o ? std::string(o->data.begin(), o->data.end()) : std::string();
}

std::string Packet::mac() const {
  if (htype != 1 || hlen != 6) return {};
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", chaddr[0], chaddr[1], chaddr[2],
                chaddr[3], chaddr[4], chaddr[5]);
  return buf;
}

Result<Packet> parse(std::span<const std::uint8_t> b) {
  if (b.size() < Packet::kHeaderSize + 4) return bad("shorter than a DHCP message (240 bytes)");
  if (!std::equal(std::begin(kCookie), std::end(kCookie), b.begin() + Packet::kHeaderSize)) {
    return bad("no DHCP magic cookie");
  }
  Packet p;
  p.op = b[0];
  p.htype = b[1];
  p.hlen = b[2];
  p.hops = b[3];
  if (p.op != 1 && p.op != 2) return bad("bad op " + std::to_string(p.op));
  if (p.hlen > 16) return bad("hardware address longer than 16 bytes");
  p.xid = get32(b, 4);
  p.secs = static_cast<std::uint16_t>(b[8] << 8 | b[9]);
  p.flags = static_cast<std::uint16_t>(b[10] << 8 | b[11]);
  p.ciaddr = get_ip(b, 12);
  p.yiaddr = get_ip(b, 16);
  p.siaddr = get_ip(b, 20);
  p.giaddr = get_ip(b, 24);
  std::copy(b.begin() + 28, b.begin() + 44, p.chaddr.begin());
  const auto sname = b.subspan(44, 64);
  const auto file = b.subspan(108, 128);
  std::uint8_t overload = 0;
  if (auto st = read_options(b.subspan(240), p.options, true, overload, "the options field"); !st) {
    return st.error();
  }
  std::uint8_t ignored = 0;
  if (overload & 1) {
    if (auto st = read_options(file, p.options, false, ignored, "the file field"); !st) {
      return st.error();
    }
  } else {
    p.file = c_string(file);
  }
  if (overload & 2) {
    if (auto st = read_options(sname, p.options, false, ignored, "the sname field"); !st) {
      return st.error();
    }
  } else {
    p.sname = c_string(sname);
  }
  return p;
}

Encoded encode(const Packet& p, std::size_t max_size) {
  max_size = std::max<std::size_t>(max_size, 576 - 28);  // 576 IP datagram minus IP/UDP headers
  Encoded e;
  auto& out = e.bytes;
  out.reserve(576);
  out.push_back(p.op);
  out.push_back(p.htype);
  out.push_back(p.hlen);
  out.push_back(p.hops);
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(p.xid >> s));
  out.push_back(static_cast<std::uint8_t>(p.secs >> 8));
  out.push_back(static_cast<std::uint8_t>(p.secs));
  out.push_back(static_cast<std::uint8_t>(p.flags >> 8));
  out.push_back(static_cast<std::uint8_t>(p.flags));
  for (const auto* a : {&p.ciaddr, &p.yiaddr, &p.siaddr, &p.giaddr}) {
    out.insert(out.end(), a->begin(), a->end());
  }
  out.insert(out.end(), p.chaddr.begin(), p.chaddr.end());
  auto field = [&](const std::string& s, std::size_t n) {
    const std::size_t len = std::min(s.size(), n - 1);
    out.insert(out.end(), s.begin(), s.begin() + static_cast<std::ptrdiff_t>(len));
    out.insert(out.end(), n - len, 0);
  };
  field(p.sname, 64);
  field(p.file, 128);
  out.insert(out.end(), std::begin(kCookie), std::end(kCookie));
  // 53 first (RFC 2131 recommends it; some clients need it), then the rest in order.
  std::vector<const Option*> order;
  if (const Option* mt = p.find(opt::kMessageType)) order.push_back(mt);
  for (const auto& o : p.options) {
    if (o.code != opt::kMessageType && o.code != opt::kPad && o.code != opt::kEnd) {
      order.push_back(&o);
    }
  }
  for (const Option* o : order) {
    std::vector<std::uint8_t> enc;
    std::size_t at = 0;
    do {  // RFC 3396: long options are split into consecutive instances
      const std::size_t n = std::min<std::size_t>(255, o->data.size() - at);
      enc.push_back(o->code);
      enc.push_back(static_cast<std::uint8_t>(n));
      enc.insert(enc.end(), o->data.begin() + static_cast<std::ptrdiff_t>(at),
                 o->data.begin() + static_cast<std::ptrdiff_t>(at + n));
      at += n;
    } while (at < o->data.size());
    const bool essential = o->code == opt::kMessageType || o->code == opt::kServerId;
    if (out.size() + enc.size() + 1 > max_size && !essential) {
      e.truncated = true;
      continue;
    }
    out.insert(out.end(), enc.begin(), enc.end());
  }
  out.push_back(opt::kEnd);
  if (out.size() < 300) out.resize(300, 0);
  return e;
}

}  // namespace kiln::dhcp
