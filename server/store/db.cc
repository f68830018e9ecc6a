#include "store/db.h"

#include <algorithm>
#include <atomic>
#include <cctype>

#include "core/url.h"

namespace kiln::store {
namespace {
std::atomic<std::uint64_t> g_committed_writes{0};
}  // namespace

std::uint64_t committed_writes() { return g_committed_writes.load(std::memory_order_relaxed); }
void count_committed_write() { g_committed_writes.fetch_add(1, std::memory_order_relaxed); }

namespace {

bool space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// A key naming a secret: password, sslpassword, ... (compared without case).
bool secret_key(std::string key) {
  for (auto& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return key.find("pass") != std::string::npos;
}

// Everything from the first "pass" (any case) on, masked: for what cannot be parsed.
std::string mask_from_pass(std::string out) {
  std::string lower = out;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (auto p = lower.find("pass"); p != std::string::npos) out.replace(p, out.size() - p, "***");
  return out;
}

}  // namespace

bool is_postgres_url(std::string_view url) {
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) return true;
  for (std::string_view key :
       {" host=", " hostaddr=", " dbname=", " user=", " port=", " service="}) {
    if (url.find(key) != std::string_view::npos) return true;
  }
  // A libpq conninfo: "key=value ..." (spaces allowed around '=') starting with a known key. A
  // SQLite path does not start so.
  std::size_t i = 0;
  while (i < url.size() && space(url[i])) ++i;
  const auto key_start = i;
  while (i < url.size() && (std::isalpha(static_cast<unsigned char>(url[i])) || url[i] == '_')) {
    ++i;
  }
  const std::string_view key = url.substr(key_start, i - key_start);
  while (i < url.size() && space(url[i])) ++i;
  if (i >= url.size() || url[i] != '=') return false;
  for (std::string_view k :
       {"host", "hostaddr", "dbname", "user", "port", "service", "password", "passfile", "sslmode",
        "connect_timeout", "application_name", "options", "target_session_attrs"}) {
    if (key == k) return true;
  }
  return false;
}

std::string redact_db_url(std::string_view url) {
  std::string out(url);
  if (!is_postgres_url(url)) return out;
  constexpr std::string_view kMask = "***";
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
    const auto scheme = out.find("://");
    // postgresql://[user[:password]@][host][:port][/db][?key=value&...]. The user info ends at
    // the last '@' before the path ('?' and '@' may appear in a password unencoded).
    const auto start = scheme + 3;
    const auto slash = out.find('/', start);
    const auto at = out.rfind('@', slash == std::string::npos ? out.size() : slash);
    std::size_t query_from = start;
    if (at != std::string::npos && at >= start) {
      if (const auto colon = out.find(':', start); colon != std::string::npos && colon < at) {
        out.replace(colon + 1, at - colon - 1, kMask);
      }
      query_from = out.find('@', start) + 1;
    }
    const auto q = out.find('?', query_from);
    if (q == std::string::npos) return out;
    // key=value&...: a key is percent-decoded before it is judged (pass%77ord is password).
    std::string rebuilt = out.substr(0, q + 1);
    std::size_t p = q + 1;
    while (p <= out.size()) {
      auto amp = out.find('&', p);
      if (amp == std::string::npos) amp = out.size();
      const std::string pair = out.substr(p, amp - p);
      const auto eq = pair.find('=');
      const std::string raw_key = pair.substr(0, eq);
      const auto key = percent_decode(raw_key);
      if (eq != std::string::npos && (!key || secret_key(*key))) {
        rebuilt += raw_key + "=" + std::string(kMask);
      } else {
        rebuilt += pair;
      }
      if (amp >= out.size()) break;
      rebuilt += "&";
      p = amp + 1;
    }
    return rebuilt;
  }
  // key = value ..., a value 'single quoted' or not, with backslash escapes either way.
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < out.size() && space(out[i])) ++i;
  };
  while (i < out.size()) {
    skip_space();
    if (i >= out.size()) break;
    const auto key_start = i;
    while (i < out.size() && out[i] != '=' && !space(out[i])) ++i;
    const std::string key = out.substr(key_start, i - key_start);
    skip_space();
    if (i >= out.size() || out[i] != '=') {
      // Not a conninfo libpq would take: mask whatever might be a password.
      return mask_from_pass(std::move(out));
    }
    ++i;
    skip_space();
    const auto value_start = i;
    if (i < out.size() && out[i] == '\'') {
      for (++i; i < out.size() && out[i] != '\''; ++i) {
        if (out[i] == '\\') ++i;
      }
      if (i >= out.size()) return mask_from_pass(std::move(out));  // unterminated quote
      ++i;
    } else {
      for (; i < out.size() && !space(out[i]); ++i) {
        if (out[i] == '\\') ++i;
      }
      i = std::min(i, out.size());
    }
    if (secret_key(key)) {
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
