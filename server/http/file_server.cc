#include "http/file_server.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <system_error>

namespace kiln::http {

namespace {

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

RangeParse parse_range(std::string_view h, std::uint64_t size, ByteRange& out) {
  constexpr std::string_view kUnit = "bytes=";
  if (h.substr(0, kUnit.size()) != kUnit) return RangeParse::kNone;
  h.remove_prefix(kUnit.size());
  if (h.find(',') != std::string_view::npos) return RangeParse::kNone;
  auto dash = h.find('-');
  if (dash == std::string_view::npos) return RangeParse::kNone;
  std::string_view a = h.substr(0, dash), b = h.substr(dash + 1);
  std::uint64_t first = 0, last = 0;
  if (a.empty()) {  // suffix range: the last n bytes
    std::uint64_t n = 0;
    if (!parse_u64(b, n)) return RangeParse::kNone;
    if (n == 0 || size == 0) return RangeParse::kUnsatisfiable;
    out.first = n >= size ? 0 : size - n;
    out.last = size - 1;
    return RangeParse::kOk;
  }
  if (!parse_u64(a, first)) return RangeParse::kNone;
  if (b.empty()) {
    last = size ? size - 1 : 0;
  } else if (!parse_u64(b, last) || last < first) {
    return RangeParse::kNone;
  }
  if (first >= size) return RangeParse::kUnsatisfiable;
  out.first = first;
  out.last = std::min(last, size - 1);
  return RangeParse::kOk;
}

std::string_view content_type_for(const std::filesystem::path& p) {
  const auto ext = p.extension().string();
  if (ext == ".ipxe" || ext == ".txt" || ext == ".cfg") return "text/plain; charset=utf-8";
  if (ext == ".json") return "application/json";
  if (ext == ".zst") return "application/zstd";
  if (ext == ".html") return "text/html; charset=utf-8";
  return "application/octet-stream";
}

}  // namespace kiln::http
