// libFuzzer target: arbitrary bytes as a DHCPv4 message, and the PXE boot decision for it;
// its iPXE feature list (option 175); the same bytes as an ICMPv6 router solicitation (dhcp/ra.h),
// which must never read past them.
//
// Invariants: parsing never crashes or reads out of bounds; a message that parses re-encodes
// (options joined, split again past 255 bytes) to bytes that parse to the same header fields
// and options; the option accessors and the boot policy accept whatever the parser accepted.
#include <cstdlib>
#include <span>
#include <vector>

#include "boot/pxe.h"
#include "dhcp/packet.h"
#include "dhcp/ra.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kiln::dhcp;
  // An exact-size heap copy, so ASan sees any read past the message.
  {
    std::vector<std::uint8_t> rs(data, data + size);
    (void)is_router_solicitation(rs.data(), rs.size());
  }
  auto p = parse(std::span<const std::uint8_t>(data, size));
  if (!p) return 0;
  (void)p->message_type();
  (void)p->requested_ip();
  (void)p->server_id();
  (void)p->lease_time();
  (void)p->client_uuid();
  (void)p->relay_info();
  (void)p->hostname();
  kiln::boot::BootClient c{p->mac(), p->client_arch(), p->vendor_class(), p->user_class(), true};
  // iPXE's encapsulated feature list (option 175), e.g. HTTPS (0x14): never reads past it.
  for (int f = 0; f < 256; ++f) (void)p->ipxe_feature(static_cast<std::uint8_t>(f));
  c.ipxe_https = p->ipxe_feature(0x14);
  kiln::boot::BootPolicy policy;
  policy.http_base = "http://10.0.0.1:8080";
  (void)kiln::boot::decide(c, policy);
  policy.https_base = "https://10.0.0.1:8443";  // the HTTPS boot policy too
  (void)kiln::boot::decide(c, policy);

  // Re-encoding keeps everything when there is room (no truncation at 64 KiB).
  auto e = encode(*p, 65535);
  if (e.truncated) std::abort();
  auto q = parse(e.bytes);
  if (!q) std::abort();
  if (q->xid != p->xid || q->flags != p->flags || q->chaddr != p->chaddr ||
      q->giaddr != p->giaddr || q->ciaddr != p->ciaddr) {
    std::abort();
  }
  // sname/file are C strings on the wire: compare up to the first NUL, within the field size.
  auto cstr = [](const std::string& s, std::size_t n) {
    return s.substr(0, std::min(s.find('\0'), n - 1));
  };
  if (cstr(q->file, 128) != cstr(p->file, 128) || cstr(q->sname, 64) != cstr(p->sname, 64)) {
    std::abort();
  }
  std::size_t kept = 0;
  for (const auto& o : p->options) {
    if (o.code == opt::kPad || o.code == opt::kEnd) continue;
    const Option* r = q->find(o.code);
    if (!r || r->data != o.data) std::abort();
    ++kept;
  }
  if (kept != q->options.size()) std::abort();
  return 0;
}
