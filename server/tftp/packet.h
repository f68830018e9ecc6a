// tftp/packet.h — the TFTP wire format (RFC 1350) with option extension (RFC 2347), and the
// server's option negotiation (RFC 2348 blksize, RFC 2349 timeout/tsize, RFC 7440 windowsize).
// Pure: bytes in, values out. Every parse is bounds-checked; malformed input is an error value.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"

namespace kiln::tftp {

enum class Opcode : std::uint16_t {
  kRrq = 1,
  kWrq = 2,
  kData = 3,
  kAck = 4,
  kError = 5,
  kOack = 6,
};

enum class ErrorCode : std::uint16_t {
  kUndefined = 0,
  kFileNotFound = 1,
  kAccessViolation = 2,
  kDiskFull = 3,
  kIllegalOperation = 4,
  kUnknownTid = 5,
  kFileExists = 6,
  kNoSuchUser = 7,
  kOptionRefused = 8,  // RFC 2347
};

inline constexpr std::size_t kDefaultBlksize = 512;
inline constexpr std::size_t kMinBlksize = 8;
inline constexpr std::size_t kMaxBlksize = 65464;
// The largest datagram a well-behaved peer sends: a DATA packet of the largest block size.
inline constexpr std::size_t kMaxPacket = kMaxBlksize + 4;
// RFC 2347: a request with its options "must not exceed 512 octets". The server's default
// bound for RRQ/WRQ (Limits::max_request_bytes); PXE ROMs and iPXE send well under 100.
inline constexpr std::size_t kMaxRequestSize = 512;
// Options (duplicates included) accepted in one RRQ, WRQ or OACK. The server knows four;
// the bound keeps parsing linear in the packet and the duplicate check constant per option.
inline constexpr std::size_t kMaxOptions = 32;

enum class Mode { kOctet, kNetascii };

using Options = std::vector<std::pair<std::string, std::string>>;

// RRQ or WRQ. Option names are lower-cased; values are as sent; the first occurrence of a
// name wins (later duplicates are dropped). At most kMaxOptions options, duplicates counted.
struct Request {
  Opcode op = Opcode::kRrq;
  std::string filename;
  Mode mode = Mode::kOctet;
  Options options;
};

struct Packet {
  Opcode op = Opcode::kAck;
  std::uint16_t block = 0;                  // DATA, ACK
  std::span<const std::uint8_t> data;       // DATA payload (points into the parsed buffer)
  ErrorCode error = ErrorCode::kUndefined;  // ERROR
  std::string message;                      // ERROR
  Options options;                          // OACK
  Request request;                          // RRQ, WRQ
};

// Parses any TFTP packet. kBadRequest with a reason for everything malformed: too short,
// unknown opcode, missing NUL terminators, an unknown transfer mode ("mail" included), an
// empty file name, an option without a value, bytes after the last option (trailing NUL
// padding, which some PXE ROMs send, is tolerated). kTooLarge for more than kMaxOptions
// options (parsing stops at the first one too many): the server answers it with ERROR 8.
Result<Packet> parse(std::span<const std::uint8_t> bytes);

// Encoders append to `out` (which is cleared first) and return its size.
std::size_t encode_data(std::vector<std::uint8_t>& out, std::uint16_t block,
                        std::span<const std::uint8_t> payload);
std::size_t encode_ack(std::vector<std::uint8_t>& out, std::uint16_t block);
std::size_t encode_error(std::vector<std::uint8_t>& out, ErrorCode code, std::string_view msg);
std::size_t encode_oack(std::vector<std::uint8_t>& out, const Options& options);
std::size_t encode_request(std::vector<std::uint8_t>& out, const Request& r);

// What the server is willing to do.
struct Limits {
  std::size_t max_request_bytes = kMaxRequestSize;  // larger RRQ/WRQ: ERROR 4, not parsed
  std::size_t max_blksize = kMaxBlksize;
  std::uint16_t max_window = 64;
  std::uint32_t default_timeout_ms = 1000;
};

// The outcome of negotiating a read request's options.
struct Negotiated {
  std::size_t blksize = kDefaultBlksize;
  std::uint16_t window = 1;
  std::optional<std::uint32_t> timeout_ms;  // set: the client's timeout (caps retransmission)
  Options oack;  // what to acknowledge, in the client's order; empty: no OACK, DATA 1 first
};

// RFC 2347: options the server does not know or cannot honour are left out of the OACK.
// blksize below 8 or not a number is ignored; above the server's maximum it is answered with
// the maximum (RFC 2348 allows a smaller value). timeout outside 1..255 s is ignored. tsize is
// answered with `file_size`. windowsize outside 1..65535 is ignored; above the server's maximum
// it is answered with the maximum.
Negotiated negotiate(const Options& requested, std::uint64_t file_size, const Limits& limits);

// RFC 1350 netascii: LF -> CR LF, CR -> CR NUL.
std::string to_netascii(std::string_view in);

const char* opcode_name(Opcode op);

}  // namespace kiln::tftp
