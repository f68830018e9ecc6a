#include "tftp/packet.h"

#include <algorithm>
#include <charconv>

#include "core/hex.h"

namespace kiln::tftp {
namespace {

std::uint16_t get16(std::span<const std::uint8_t> b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}

void put16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v & 0xff));
}

void put_str(std::vector<std::uint8_t>& out, std::string_view s) {
  out.insert(out.end(), s.begin(), s.end());
  out.push_back(0);
}

// Reads NUL-terminated strings from `b` starting at `pos`.
class Strings {
 public:
  Strings(std::span<const std::uint8_t> b, std::size_t pos) : b_(b), pos_(pos) {}
  std::optional<std::string_view> next() {
    if (pos_ >= b_.size()) return std::nullopt;
    const auto* begin = b_.data() + pos_;
    const auto* end = std::find(begin, b_.data() + b_.size(), std::uint8_t{0});
    if (end == b_.data() + b_.size()) return std::nullopt;  // unterminated
    std::string_view s(reinterpret_cast<const char*>(begin), static_cast<std::size_t>(end - begin));
    pos_ += s.size() + 1;
    return s;
  }
  bool at_end() const { return pos_ >= b_.size(); }
  bool at_nul() const { return pos_ < b_.size() && b_[pos_] == 0; }
  // True when everything left is NUL padding.
  bool only_padding() const {
    return std::all_of(b_.begin() + static_cast<std::ptrdiff_t>(pos_), b_.end(),
                       [](std::uint8_t c) { return c == 0; });
  }

 private:
  std::span<const std::uint8_t> b_;
  std::size_t pos_;
};

Error bad(std::string msg) { return make_error(Errc::kBadRequest, std::move(msg)); }

Result<Options> parse_options(Strings& s) {
  Options opts;
  std::size_t count = 0;
  while (!s.at_end()) {
    // Only an empty name starts with NUL: scan for padding then, not before every option.
    if (s.at_nul() && s.only_padding()) break;
    auto name = s.next();
    if (!name) return bad("unterminated option name");
    if (name->empty()) return bad("empty option name");
    auto value = s.next();
    if (!value) return bad("option '" + std::string(*name) + "' has no value");
    if (++count > kMaxOptions) {
      return make_error(Errc::kTooLarge, "more than " + std::to_string(kMaxOptions) + " options");
    }
    std::string key = ascii_lower(*name);
    // At most kMaxOptions entries to compare: constant per option.
    const bool dup =
        std::any_of(opts.begin(), opts.end(), [&](const auto& kv) { return kv.first == key; });
    if (!dup) opts.emplace_back(std::move(key), std::string(*value));
  }
  return opts;
}

std::optional<std::uint64_t> number(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

Result<Packet> parse(std::span<const std::uint8_t> b) {
  if (b.size() < 4) return bad("packet shorter than 4 bytes");
  Packet p;
  const std::uint16_t op = get16(b, 0);
  switch (op) {
    case 1:
    case 2: {
      p.op = static_cast<Opcode>(op);
      p.request.op = p.op;
      Strings s(b, 2);
      auto file = s.next();
      if (!file) return bad("unterminated file name");
      if (file->empty()) return bad("empty file name");
      auto mode = s.next();
      if (!mode) return bad("unterminated transfer mode");
      const std::string m = ascii_lower(*mode);
      if (m == "octet") {
        p.request.mode = Mode::kOctet;
      } else if (m == "netascii") {
        p.request.mode = Mode::kNetascii;
      } else {
        return bad("unsupported transfer mode '" + std::string(*mode) + "'");
      }
      p.request.filename = std::string(*file);
      auto opts = parse_options(s);
      if (!opts) return opts.error();
      p.request.options = std::move(*opts);
      return p;
    }
    case 3:
      p.op = Opcode::kData;
      p.block = get16(b, 2);
      p.data = b.subspan(4);
      if (p.data.size() > kMaxBlksize) return bad("DATA payload larger than 65464 bytes");
      return p;
    case 4:
      p.op = Opcode::kAck;
      p.block = get16(b, 2);
      return p;
    case 5: {
      p.op = Opcode::kError;
      p.error = static_cast<ErrorCode>(get16(b, 2));
      Strings s(b, 4);
      // Some clients omit the terminator; accept the message either way.
      if (auto msg = s.next()) {
        p.message = std::string(*msg);
      } else {
        p.message.assign(reinterpret_cast<const char*>(b.data() + 4), b.size() - 4);
      }
      return p;
    }
    case 6: {
      p.op = Opcode::kOack;
      Strings s(b, 2);
      auto opts = parse_options(s);
      if (!opts) return opts.error();
      p.options = std::move(*opts);
      return p;
    }
    default:
      return bad("unknown opcode " + std::to_string(op));
  }
}

std::size_t encode_data(std::vector<std::uint8_t>& out, std::uint16_t block,
                        std::span<const std::uint8_t> payload) {
  out.clear();
  put16(out, 3);
  put16(out, block);
  out.insert(out.end(), payload.begin(), payload.end());
  return out.size();
}

std::size_t encode_ack(std::vector<std::uint8_t>& out, std::uint16_t block) {
  out.clear();
  put16(out, 4);
  put16(out, block);
  return out.size();
}

std::size_t encode_error(std::vector<std::uint8_t>& out, ErrorCode code, std::string_view msg) {
  out.clear();
  put16(out, 5);
  put16(out, static_cast<std::uint16_t>(code));
  // The message is NUL-terminated; an embedded NUL would end it early, so cut it there.
  put_str(out, msg.substr(0, std::min(msg.find('\0'), std::size_t{255})));
  return out.size();
}

std::size_t encode_oack(std::vector<std::uint8_t>& out, const Options& options) {
  out.clear();
  put16(out, 6);
  for (const auto& [k, v] : options) {
    put_str(out, k);
    put_str(out, v);
  }
  return out.size();
}

std::size_t encode_request(std::vector<std::uint8_t>& out, const Request& r) {
  out.clear();
  put16(out, static_cast<std::uint16_t>(r.op));
  put_str(out, r.filename);
  put_str(out, r.mode == Mode::kNetascii ? "netascii" : "octet");
  for (const auto& [k, v] : r.options) {
    put_str(out, k);
    put_str(out, v);
  }
  return out.size();
}

Negotiated negotiate(const Options& requested, std::uint64_t file_size, const Limits& limits) {
  Negotiated n;
  for (const auto& [name, value] : requested) {
    const auto v = number(value);
    if (name == "blksize") {
      if (!v || *v < kMinBlksize) continue;
      const std::size_t cap = std::clamp(limits.max_blksize, kMinBlksize, kMaxBlksize);
      n.blksize = static_cast<std::size_t>(std::min<std::uint64_t>(*v, cap));
      n.oack.emplace_back(name, std::to_string(n.blksize));
    } else if (name == "timeout") {
      if (!v || *v < 1 || *v > 255) continue;
      n.timeout_ms = static_cast<std::uint32_t>(*v * 1000);
      n.oack.emplace_back(name, std::to_string(*v));
    } else if (name == "tsize") {
      // A read request carries tsize 0 (RFC 2349); any number asks for the size.
      if (!v) continue;
      n.oack.emplace_back(name, std::to_string(file_size));
    } else if (name == "windowsize") {
      if (!v || *v < 1 || *v > 65535) continue;
      n.window = static_cast<std::uint16_t>(
          std::min<std::uint64_t>(*v, std::max<std::uint16_t>(limits.max_window, 1)));
      n.oack.emplace_back(name, std::to_string(n.window));
    }
    // Unknown options (multicast, utimeout, rollover, ...) are ignored: not acknowledged.
  }
  return n;
}

std::string to_netascii(std::string_view in) {
  std::string out;
  out.reserve(in.size() + in.size() / 16);
  for (const char c : in) {
    if (c == '\n') {
      out += "\r\n";
    } else if (c == '\r') {
      out.push_back('\r');
      out.push_back('\0');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

const char* opcode_name(Opcode op) {
  switch (op) {
    case Opcode::kRrq:
      return "RRQ";
    case Opcode::kWrq:
      return "WRQ";
    case Opcode::kData:
      return "DATA";
    case Opcode::kAck:
      return "ACK";
    case Opcode::kError:
      return "ERROR";
    case Opcode::kOack:
      return "OACK";
  }
  return "?";
}

}  // namespace kiln::tftp
