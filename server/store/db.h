// store/db.h — the backend-neutral connection layer under Store: a connection (`Db`), its
// statements (`Stmt`), transactions and errors. Two backends implement it: SQLite
// (store/sqlite.h, the embedded default) and PostgreSQL (store/pg.h, over libpq). The store's
// SQL is written once for both: `?` placeholders (1-based), `INSERT ... RETURNING id`,
// `IS NOT DISTINCT FROM`, `CAST(? AS BIGINT)`, integer 0/1 booleans.
//
// Ownership: a `Stmt` must not outlive the `Db` that prepared it. Neither is thread-safe: a
// connection is used by one thread at a time (the Store hands them out). Unexpected database
// failures throw `DbError`; constraint violations are flagged so callers can turn the expected
// ones into results.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace kiln::store {

class DbError : public std::runtime_error {
 public:
  enum class Kind { kOther, kConstraint, kBusy, kConnection };
  DbError(int code, const std::string& what, Kind kind = Kind::kOther)
      : std::runtime_error(what), code_(code), kind_(kind) {}
  int code() const { return code_; }  // SQLite's extended result code; 0 on PostgreSQL
  bool is_constraint() const { return kind_ == Kind::kConstraint; }  // unique, check, FK ...
  // The database is locked / a serialization failure / lock timeout: retry later.
  bool is_busy() const { return kind_ == Kind::kBusy; }
  // Busy, or the connection to the server was lost (reconnected before the next transaction).
  bool is_transient() const { return kind_ == Kind::kBusy || kind_ == Kind::kConnection; }
  Kind kind() const { return kind_; }

 private:
  int code_;
  Kind kind_;
};
// The name api/ catches since before PostgreSQL.
using SqliteError = DbError;

enum class Dialect { kSqlite, kPostgres };

// One prepared statement of a backend. Stmt is its owner-agnostic façade.
class StmtImpl {
 public:
  virtual ~StmtImpl() = default;
  virtual void bind_int(int i, std::int64_t v) = 0;
  virtual void bind_text(int i, std::string_view v) = 0;
  virtual void bind_null(int i) = 0;
  virtual bool step() = 0;
  virtual void reset() = 0;
  virtual bool is_null(int col) const = 0;
  virtual std::int64_t int64(int col) const = 0;
  virtual std::string text(int col) const = 0;
  // Done with it: a cached statement is reset and returned to its connection's cache, an
  // uncached one deletes itself.
  virtual void release() noexcept = 0;
};

class Stmt {
 public:
  explicit Stmt(StmtImpl* impl) : s_(impl) {}
  ~Stmt() {
    if (s_) s_->release();
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt(Stmt&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }

  // Parameters are 1-based. Strings are copied.
  Stmt& bind(int i, std::int64_t v) {
    s_->bind_int(i, v);
    return *this;
  }
  Stmt& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
  Stmt& bind(int i, std::string_view v) {
    s_->bind_text(i, v);
    return *this;
  }
  Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Stmt& bind_null(int i) {
    s_->bind_null(i);
    return *this;
  }
  template <typename T>
  Stmt& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : bind_null(i);
  }

  // Advances; true while a row is available, false when done. Throws on error.
  bool step() { return s_->step(); }
  // Runs a statement that returns no rows.
  void run() {
    while (step()) {
    }
  }
  void reset() { s_->reset(); }

  bool is_null(int col) const { return s_->is_null(col); }
  // Integer columns; a PostgreSQL boolean reads as 1/0.
  std::int64_t int64(int col) const { return s_->int64(col); }
  std::string text(int col) const { return s_->text(col); }
  std::optional<std::int64_t> opt_int64(int col) const {
    if (is_null(col)) return std::nullopt;
    return int64(col);
  }
  std::optional<std::string> opt_text(int col) const {
    if (is_null(col)) return std::nullopt;
    return text(col);
  }

 private:
  StmtImpl* s_;
};

// kRead: a consistent snapshot, no writes (SQLite BEGIN; PG REPEATABLE READ READ ONLY).
// kWrite: the one-writer lock up front (SQLite BEGIN IMMEDIATE; PG BEGIN plus a transaction
//   advisory lock shared by every kilnd on the database), so check-then-write is atomic and
//   event ids commit in id order.
// kLeases: DHCP lease batches; on PG no global lock (rows are claimed by conditional upserts).
enum class TxKind { kRead, kWrite, kLeases };

class Db {
 public:
  virtual ~Db() = default;
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  virtual Dialect dialect() const = 0;
  virtual void exec(std::string_view sql) = 0;  // one or more statements, no results
  // A statement for `sql`, from the connection's cache when it is not already in use (the
  // same SQL may be active twice, e.g. in nested lookups; the second one is prepared anew).
  virtual Stmt prepare(std::string_view sql) = 0;
  // Rows changed by the last statement run.
  virtual int changes() const = 0;

  virtual void begin(TxKind kind) = 0;
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;

  // Events appended in the current transaction (append_event records them); after a commit the
  // connection's commit hook gets the highest id. PG also notifies other processes (NOTIFY).
  void note_event(std::int64_t id) {
    if (id > tx_event_id_) tx_event_id_ = id;
  }
  std::function<void(std::int64_t)> on_events_committed;

 protected:
  Db() = default;
  std::int64_t tx_event_id_ = 0;
  friend class Transaction;
};

// begin(kind) on construction; rollback in the destructor unless commit() was called.
class Transaction {
 public:
  explicit Transaction(Db& db, TxKind kind = TxKind::kWrite);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Db& db_;
  bool done_ = false;
};

// Write transactions committed with at least one change, by every Store in this process (for
// /metrics: kiln_store_commits_total).
std::uint64_t committed_writes();
void count_committed_write();

// The backend for a database URL: a libpq URI (postgresql://, postgres://) or conninfo
// ("host=... dbname=...") is PostgreSQL; anything else is a SQLite file path.
bool is_postgres_url(std::string_view url);

// `url` fit for a log line or --print-config: every password in it (a URI's user:password@ and
// ?password= / &password=, a conninfo's password=..., quoted or not) replaced by "***". A SQLite
// path is returned as it is.
std::string redact_db_url(std::string_view url);

}  // namespace kiln::store
