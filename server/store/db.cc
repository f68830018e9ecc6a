#include "store/db.h"

#include <algorithm>
#include <atomic>
#include <cctype>

namespace kiln::store {
namespace {
std::atomic<std::uint64_t> g_committed_writes{0};
}  // namespace

std::uint64_t committed_writes() { return g_committed_writes.load(std::memory_order_relaxed); }
void count_committed_write() { g_committed_writes.fetch_add(1, std::memory_order_relaxed); }

bool is_postgres_url(std::string_view url) {
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) return true;
  // A libpq conninfo: "key=value ..." with a known key. A SQLite path has no '=' in practice.
  for (std::string_view key : {"host=", "hostaddr=", "dbname=", "user=", "port=", "service="}) {
    if (url.starts_with(key) || url.find(" " + std::string(key)) != std::string_view::npos) {
      return true;
    }
  }
  return false;
}

std::string redact_db_url(std::string_view url) {
  std::string out(url);
  if (!is_postgres_url(url)) return out;
  constexpr std::string_view kMask = "***";
  if (const auto scheme = out.find("://"); scheme != std::string::npos) {
    // postgresql://[user[:password]@][host][:port][/db][?key=value&...]
    const auto start = scheme + 3;
    const auto query = out.find('?', start);
    const auto authority_end = std::min(out.find('/', start), query);
    const auto at = out.rfind('@', authority_end == std::string::npos ? out.size() : authority_end);
    if (at != std::string::npos && at >= start) {
      if (const auto colon = out.find(':', start); colon != std::string::npos && colon < at) {
        out.replace(colon + 1, at - colon - 1, kMask);
      }
    }
    for (auto p = out.find('?', start); p != std::string::npos; p = out.find('&', p + 1)) {
      if (out.compare(p + 1, 9, "password=") != 0) continue;
      const auto v = p + 10;
      out.replace(v, std::min(out.find('&', v), out.size()) - v, kMask);
    }
    return out;
  }
  // key = value ..., a value possibly 'single quoted' with backslash escapes.
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < out.size() && std::isspace(static_cast<unsigned char>(out[i]))) ++i;
  };
  while (i < out.size()) {
    skip_space();
    const auto key_start = i;
    while (i < out.size() && out[i] != '=' && !std::isspace(static_cast<unsigned char>(out[i]))) {
      ++i;
    }
    const std::string key = out.substr(key_start, i - key_start);
    skip_space();
    if (i >= out.size() || out[i] != '=') break;  // not a conninfo libpq would take
    ++i;
    skip_space();
    const auto value_start = i;
    if (i < out.size() && out[i] == '\'') {
      for (++i; i < out.size() && out[i] != '\''; ++i) {
        if (out[i] == '\\') ++i;
      }
      if (i < out.size()) ++i;
    } else {
      while (i < out.size() && !std::isspace(static_cast<unsigned char>(out[i]))) ++i;
    }
    if (key == "password") {
      out.replace(value_start, i - value_start, kMask);
      i = value_start + kMask.size();
    }
  }
  return out;
}

Transaction::Transaction(Db& db, TxKind kind) : db_(db) {
  db_.tx_event_id_ = 0;
  db_.begin(kind);
}

Transaction::~Transaction() {
  if (!done_) {
    db_.rollback();
    db_.tx_event_id_ = 0;
  }
}

void Transaction::commit() {
  db_.commit();
  done_ = true;
  const std::int64_t id = db_.tx_event_id_;
  db_.tx_event_id_ = 0;
  if (id > 0 && db_.on_events_committed) db_.on_events_committed(id);
}

}  // namespace kiln::store
