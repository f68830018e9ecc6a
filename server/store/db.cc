#include "store/db.h"

#include <atomic>

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
