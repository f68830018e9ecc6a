// store/pg.h — the PostgreSQL backend of the connection layer (store/db.h), over libpq.
//
// `?` placeholders are rewritten to $1..$n; each connection prepares a statement once (named
// s<N>) and keeps it; parameters go out as text with no type (the server infers it); results
// are buffered, so nested statements on one connection just work. A lost connection is reset
// before the next transaction (DbError::is_transient() for the failed one).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>

#include "store/db.h"

struct pg_conn;

namespace kiln::store {

// Advisory lock keys (one 64-bit space per database): the writer lock of TxKind::kWrite, the
// migration lock, and try_lead's names (hashed).
inline constexpr std::int64_t kPgWriterLockKey = 0x6b696c6e'00000001;  // "kiln", 1
inline constexpr std::int64_t kPgMigrateLockKey = 0x6b696c6e'00000002;
std::int64_t pg_lead_key(std::string_view name);

class PgDb final : public Db {
 public:
  // Connects with a libpq URI or conninfo. Throws DbError (kConnection) on failure.
  explicit PgDb(const std::string& conninfo);
  ~PgDb() override;

  Dialect dialect() const override { return Dialect::kPostgres; }
  void exec(std::string_view sql) override;
  Stmt prepare(std::string_view sql) override;
  int changes() const override { return changes_; }
  void begin(TxKind kind) override;
  void commit() override;
  void rollback() noexcept override;

  // For the statements: the last statement's row count, whether the transaction wrote.
  void note_result(int changes, bool wrote) {
    changes_ = changes;
    wrote_ = wrote_ || wrote;
  }
  pg_conn* raw() { return conn_; }
  // Reconnects (PQreset) and re-applies the settings; throws DbError (kConnection) on failure.
  void reconnect();
  // Bumped by every reconnect: statements prepared before are prepared again.
  int generation() const { return generation_; }
  // Re-applies the connection's settings after a reconnect.
  std::function<void(PgDb&)> on_reconnect;
  // Raises the DbError for a failed result (and clears it); marks the connection broken.
  [[noreturn]] void fail(void* result, std::string_view what);

 private:
  struct Cached;
  void ensure_connected();
  pg_conn* conn_ = nullptr;
  std::string conninfo_;
  std::unordered_map<std::string, std::unique_ptr<Cached>> cache_;
  int next_name_ = 0;
  int generation_ = 0;
  int changes_ = 0;
  bool wrote_ = false;
};

// The `?` -> `$n` rewrite (quoted strings, identifiers and comments left alone); `params` gets
// the number of placeholders.
std::string pg_rewrite_placeholders(std::string_view sql, int* params);

// A LISTEN connection with its thread: calls `on_id` with the payload of every `channel`
// notification (an event id), and after a reconnect with `current_id()` (notifications missed
// while disconnected). Stopped and joined by the destructor.
class PgListener {
 public:
  PgListener(std::string conninfo, std::string channel, std::function<void(std::int64_t)> on_id,
             std::function<std::int64_t()> current_id);
  ~PgListener();
  PgListener(const PgListener&) = delete;
  PgListener& operator=(const PgListener&) = delete;

 private:
  void run();
  const std::string conninfo_;
  const std::string channel_;
  const std::function<void(std::int64_t)> on_id_;
  const std::function<std::int64_t()> current_id_;
  int stop_fd_ = -1;  // eventfd: wakes the thread's poll() to stop
  std::thread thread_;
};

// A session advisory lock on a dedicated connection: held while this process's connection
// lives (the server releases it when the connection dies, e.g. when the process is killed).
class PgSessionLock {
 public:
  PgSessionLock(std::string conninfo, std::int64_t key);
  ~PgSessionLock();
  PgSessionLock(const PgSessionLock&) = delete;
  PgSessionLock& operator=(const PgSessionLock&) = delete;
  // Re-checks a held lock (the connection still alive) or tries to take it; never blocks on
  // the lock (one round trip, plus a connect after a failure).
  bool held();

 private:
  const std::string conninfo_;
  const std::int64_t key_;
  pg_conn* conn_ = nullptr;
  bool held_ = false;
};

}  // namespace kiln::store
