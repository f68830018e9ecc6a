#include "store/sqlite.h"

#include <sqlite3.h>

#include <atomic>
#include <mutex>

namespace kiln::store {
namespace {

DbError::Kind kind_of(int code) {
  switch (code & 0xff) {
    case SQLITE_CONSTRAINT:
      return DbError::Kind::kConstraint;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return DbError::Kind::kBusy;
    default:
      return DbError::Kind::kOther;
  }
}

[[noreturn]] void fail(sqlite3* db, int rc, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const int code = db ? sqlite3_extended_errcode(db) : rc;
  throw DbError(code, msg, kind_of(code));
}

class SqliteStmt : public StmtImpl {
 public:
  SqliteStmt(sqlite3* db, sqlite3_stmt* s, bool* in_use) : db_(db), s_(s), in_use_(in_use) {}
  ~SqliteStmt() override {
    if (!in_use_) sqlite3_finalize(s_);
  }
  void bind_int(int i, std::int64_t v) override {
    if (int rc = sqlite3_bind_int64(s_, i, v); rc != SQLITE_OK) fail(db_, rc, "bind");
  }
  void bind_text(int i, std::string_view v) override {
    if (int rc = sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
        rc != SQLITE_OK) {
      fail(db_, rc, "bind");
    }
  }
  void bind_null(int i) override {
    if (int rc = sqlite3_bind_null(s_, i); rc != SQLITE_OK) fail(db_, rc, "bind");
  }
  bool step() override {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    sqlite3_reset(s_);
    fail(db_, rc, "step");
  }
  void reset() override {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  bool is_null(int col) const override { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  std::int64_t int64(int col) const override { return sqlite3_column_int64(s_, col); }
  std::string text(int col) const override {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col)))
             : std::string();
  }
  void release() noexcept override {
    if (in_use_) {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
      *in_use_ = false;
    } else {
      delete this;
    }
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_;
  bool* in_use_;  // set for statements of the connection's cache
};

// Process-wide SQLite settings, applied once before the library initializes: without memory
// statistics, every allocation no longer takes a global mutex shared by all connections.
void configure_sqlite_once() {
  static std::once_flag once;
  std::call_once(once, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
}

}  // namespace

struct SqliteDb::Cached {
  bool in_use = false;
  SqliteStmt stmt;
  Cached(sqlite3* db, sqlite3_stmt* s) : stmt(db, s, &in_use) {}
  ~Cached() { stmt.reset(); }
};

SqliteDb::SqliteDb(const std::string& path, bool read_only) {
  configure_sqlite_once();
  int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  flags |= SQLITE_OPEN_NOMUTEX;  // one thread at a time per connection (see header)
  int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = "open " + path + ": " + (db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
    throw DbError(rc, msg, kind_of(rc));
  }
  sqlite3_extended_result_codes(db_, 1);
}

SqliteDb::~SqliteDb() {
  cache_.clear();  // SqliteStmt of the cache: in_use_ set, so finalize here
  if (db_) {
    sqlite3_stmt* s = nullptr;
    while ((s = sqlite3_next_stmt(db_, nullptr)) != nullptr) sqlite3_finalize(s);
    sqlite3_close_v2(db_);
  }
}

Stmt SqliteDb::prepare(std::string_view sql) {
  auto it = cache_.find(std::string(sql));
  if (it == cache_.end()) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) fail(db_, rc, "prepare");
    it = cache_.emplace(std::string(sql), std::make_unique<Cached>(db_, s)).first;
  }
  if (it->second->in_use) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &s, nullptr);
    if (rc != SQLITE_OK) fail(db_, rc, "prepare");
    return Stmt(new SqliteStmt(db_, s, nullptr));
  }
  it->second->in_use = true;
  return Stmt(&it->second->stmt);
}

void SqliteDb::exec(std::string_view sql) {
  std::string s(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    const int code = sqlite3_extended_errcode(db_);
    throw DbError(code, msg, kind_of(code));
  }
}

int SqliteDb::changes() const { return sqlite3_changes(db_); }

void SqliteDb::begin(TxKind kind) {
  // Write transactions take the write lock up front (BEGIN IMMEDIATE), so a transaction never
  // fails half-way on lock upgrade. SQLite has one writer: lease batches are writes too.
  const bool write = kind != TxKind::kRead;
  exec(write ? "BEGIN IMMEDIATE" : "BEGIN");
  changes_at_begin_ = write ? sqlite3_total_changes64(db_) : -1;
}

void SqliteDb::commit() {
  const bool wrote = changes_at_begin_ >= 0 && sqlite3_total_changes64(db_) != changes_at_begin_;
  exec("COMMIT");
  changes_at_begin_ = -1;
  if (wrote) count_committed_write();
}

void SqliteDb::rollback() noexcept {
  changes_at_begin_ = -1;
  try {
    exec("ROLLBACK");
  } catch (...) {
    // The transaction may already have been rolled back by SQLite itself.
  }
}

}  // namespace kiln::store
