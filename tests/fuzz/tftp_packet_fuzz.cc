// libFuzzer target: arbitrary bytes as a TFTP datagram, then as a sequence of events driving a
// transfer.
//
// Invariants: parsing never crashes; a request that parses re-encodes to bytes that parse to
// the same request; negotiation stays within the RFC ranges and its OACK parses back; the name
// resolver never yields a ".." segment or an absolute path; the transfer state machine only
// ever sends blocks that exist, never acknowledges past the end, and never sends once finished.
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "boot/artifacts.h"
#include "tftp/packet.h"
#include "tftp/transfer.h"

namespace {

void check_request(const kiln::tftp::Request& r) {
  using namespace kiln::tftp;
  std::vector<std::uint8_t> out;
  encode_request(out, r);
  auto again = parse(out);
  if (!again || again->request.filename != r.filename || again->request.mode != r.mode ||
      again->request.options != r.options) {
    std::abort();
  }
  const Negotiated n = negotiate(r.options, 123456789, {});
  if (n.blksize < kMinBlksize || n.blksize > kMaxBlksize || n.window < 1) std::abort();
  if (n.timeout_ms && (*n.timeout_ms < 1000 || *n.timeout_ms > 255000)) std::abort();
  encode_oack(out, n.oack);
  if (!n.oack.empty()) {
    auto oack = parse(out);
    if (!oack || oack->options != n.oack) std::abort();
  }
  if (auto name = kiln::boot::normalize_name(r.filename)) {
    const std::string& s = *name;
    if (s.empty() || s.front() == '/' || s == ".." || s.rfind("../", 0) == 0 ||
        s.find("/../") != std::string::npos ||
        (s.size() >= 3 && s.compare(s.size() - 3, 3, "/..") == 0)) {
      std::abort();
    }
  }
}

void drive_transfer(const std::uint8_t* data, std::size_t size) {
  using namespace kiln::tftp;
  if (size < 4) return;
  TransferConfig c;
  c.size = (std::uint64_t{data[0]} << 8 | data[1]) * 37;
  c.blksize = 8 + data[2] % 600;
  c.window = static_cast<std::uint16_t>(1 + data[3] % 16);
  c.oack = data[3] & 0x80;
  c.max_retries = 3;
  Transfer t(c);
  Transfer::Sends out;
  std::int64_t now = 0;
  t.start(now, out);
  for (std::size_t i = 4; i + 1 < size; i += 2) {
    for (const auto b : out) {
      if (b > t.total_blocks()) std::abort();
      if (b == 0 && !c.oack) std::abort();
    }
    out.clear();
    const bool finished = t.finished();
    const std::uint16_t v = static_cast<std::uint16_t>(data[i] << 8 | data[i + 1]);
    now += v & 0x3ff;
    if (v & 0x8000) {
      t.on_timeout(now, out);
    } else {
      t.on_ack(static_cast<std::uint16_t>(v & 0x7fff), now, out);
    }
    if (finished && !out.empty()) std::abort();
    if (t.acked() > t.total_blocks()) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto p = kiln::tftp::parse(std::span<const std::uint8_t>(data, size));
  if (p && (p->op == kiln::tftp::Opcode::kRrq || p->op == kiln::tftp::Opcode::kWrq)) {
    check_request(p->request);
  }
  drive_transfer(data, size);
  return 0;
}
