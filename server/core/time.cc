#include "core/time.h"

#include <cstdio>
#include <ctime>

namespace kiln {

namespace {

// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days).
void civil_from_days(std::int64_t z, int& y, unsigned& m, unsigned& d) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<int>(static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2));
}

void put(char* p, unsigned v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

}  // namespace

// Formatting sits on hot paths (every machine in a list has two timestamps), so it avoids
// gmtime_r/snprintf and their locale and time-zone work.
std::string format_rfc3339_ms(std::int64_t epoch_ms) {
  std::int64_t days = epoch_ms / 86'400'000;
  std::int64_t rem = epoch_ms % 86'400'000;
  if (rem < 0) {
    rem += 86'400'000;
    days -= 1;
  }
  int y;
  unsigned mo, d;
  civil_from_days(days, y, mo, d);
  if (y < 0 || y > 9999) y = y < 0 ? 0 : 9999;  // outside RFC 3339's four-digit years
  const auto ms_of_day = static_cast<unsigned>(rem);
  std::string out = "0000-00-00T00:00:00.000Z";
  put(&out[0], static_cast<unsigned>(y), 4);
  put(&out[5], mo, 2);
  put(&out[8], d, 2);
  put(&out[11], ms_of_day / 3'600'000, 2);
  put(&out[14], ms_of_day / 60'000 % 60, 2);
  put(&out[17], ms_of_day / 1000 % 60, 2);
  put(&out[20], ms_of_day % 1000, 3);
  return out;
}

std::optional<std::int64_t> parse_rfc3339_ms(std::string_view s) {
  std::tm tm{};
  int ms = 0;
  char z = 0;
  std::string str(s);
  if (std::sscanf(str.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z) != 8 ||
      z != 'Z' || str.size() != 24) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  std::time_t t = timegm(&tm);
  return static_cast<std::int64_t>(t) * 1000 + ms;
}

}  // namespace kiln
