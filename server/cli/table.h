// cli/table.h — plain-text rendering for the kiln CLI: aligned tables and key/value views.
//
// Both render to any std::ostream. Widths count UTF-8 code points, so names with non-ASCII
// characters still line up; control characters in cells are shown as spaces so that one row
// is always one line.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  // One cell per header: missing cells render as "-"; extra cells are a programming error
  // (std::invalid_argument).
  void add_row(std::vector<std::string> cells);
  std::size_t rows() const { return rows_.size(); }

  // Prints the header line and every row, columns left-aligned and separated by two spaces,
  // with no trailing spaces. Empty cells print as "-" so that every column is a word.
  void print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "Key:   value" lines with the values aligned; empty values print as "-".
class Details {
 public:
  void add(std::string key, std::string value);
  void print(std::ostream& out) const;

 private:
  std::vector<std::pair<std::string, std::string>> lines_;
};

// Number of UTF-8 code points in `s` (bytes that are not continuation bytes).
std::size_t display_width(std::string_view s);

// Binary-prefixed size for humans: "0 B", "512 B", "1.5 KiB", "2.0 GiB".
std::string format_bytes(std::int64_t n);

}  // namespace kiln::cli
