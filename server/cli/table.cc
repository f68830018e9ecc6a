#include "cli/table.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace kiln::cli {

namespace {

std::string clean(std::string s) {
  if (s.empty()) return "-";
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return s;
}

void pad(std::ostream& out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out.put(' ');
}

}  // namespace

std::size_t display_width(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

std::string format_bytes(std::int64_t n) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (n < 1024) return std::to_string(n) + " B";
  double v = static_cast<double>(n) / 1024;
  std::size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  return buf;
}

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::add_row(std::vector<std::string> cells) {
  if (cells.size() > headers_.size()) throw std::invalid_argument("table row has too many cells");
  cells.resize(headers_.size());
  for (auto& c : cells) c = clean(std::move(c));
  rows_.push_back(std::move(cells));
}

void Table::print(std::ostream& out) const {
  std::vector<std::size_t> widths;
  for (const auto& h : headers_) widths.push_back(display_width(h));
  for (const auto& row : rows_) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], display_width(row[i]));
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      out << cells[i];
      if (i + 1 < cells.size()) pad(out, widths[i] - display_width(cells[i]) + 2);
    }
    out << '\n';
  };
  line(headers_);
  for (const auto& row : rows_) line(row);
}

void Details::add(std::string key, std::string value) {
  lines_.emplace_back(std::move(key), clean(std::move(value)));
}

void Details::print(std::ostream& out) const {
  std::size_t width = 0;
  for (const auto& [k, _] : lines_) width = std::max(width, display_width(k));
  for (const auto& [k, v] : lines_) {
    out << k << ':';
    pad(out, width - display_width(k) + 2);
    out << v << '\n';
  }
}

}  // namespace kiln::cli
