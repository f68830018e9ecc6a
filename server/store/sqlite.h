// store/sqlite.h — RAII wrappers over sqlite3 connections, statements and transactions.
//
// Ownership: `Db` owns one sqlite3* and closes it in its destructor; `Stmt` owns one
// sqlite3_stmt* and must not outlive the `Db` that prepared it. Neither is thread-safe: a
// connection is used by one thread at a time (the Store hands them out). Unexpected SQLite
// failures throw `SqliteError`; constraint violations carry their extended code so callers
// can turn the expected ones into results.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

struct sqlite3;
struct sqlite3_stmt;

namespace kiln::store {

class SqliteError : public std::runtime_error {
 public:
  SqliteError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }  // extended result code
  bool is_constraint() const;         // SQLITE_CONSTRAINT_*
  bool is_busy() const;               // SQLITE_BUSY / SQLITE_LOCKED
 private:
  int code_;
};

class Stmt {
 public:
  // Prepares a statement owned by this Stmt (finalized on destruction).
  Stmt(sqlite3* db, std::string_view sql);
  // Borrows a cached statement; on destruction it is reset and marked free (`in_use`).
  Stmt(sqlite3* db, sqlite3_stmt* cached, bool* in_use) : db_(db), s_(cached), in_use_(in_use) {}
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt(Stmt&& o) noexcept : db_(o.db_), s_(o.s_), in_use_(o.in_use_) {
    o.s_ = nullptr;
    o.in_use_ = nullptr;
  }

  // Parameters are 1-based, as in SQLite. Strings are copied (SQLITE_TRANSIENT).
  Stmt& bind(int i, std::int64_t v);
  Stmt& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
  Stmt& bind(int i, std::string_view v);
  Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Stmt& bind_null(int i);
  template <typename T>
  Stmt& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : bind_null(i);
  }

  // Advances; true while a row is available, false when done. Throws on error.
  bool step();
  // Runs a statement that returns no rows.
  void run() {
    while (step()) {
    }
  }
  void reset();

  bool is_null(int col) const;
  std::int64_t int64(int col) const;
  std::string text(int col) const;
  std::optional<std::int64_t> opt_int64(int col) const;
  std::optional<std::string> opt_text(int col) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  bool* in_use_ = nullptr;  // set for statements borrowed from Db's cache
};

class Db {
 public:
  // Opens (creating if needed) the database at `path`. Throws SqliteError on failure.
  Db(const std::string& path, bool read_only);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(std::string_view sql);  // one or more statements, no results
  // A statement for `sql`, from the connection's cache when it is not already in use (the
  // same SQL may be active twice, e.g. in nested lookups; the second one is prepared anew).
  Stmt prepare(std::string_view sql);
  std::int64_t last_insert_rowid() const;
  int changes() const;
  sqlite3* raw() { return db_; }

 private:
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, Cached> cache_;  // node-based: entries never move
};

// BEGIN IMMEDIATE on construction (take the write lock up front, so a transaction never
// fails half-way on lock upgrade); ROLLBACK in the destructor unless commit() was called.
class Transaction {
 public:
  explicit Transaction(Db& db, bool immediate = true);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Db& db_;
  bool done_ = false;
  std::int64_t changes_at_begin_ = -1;  // immediate transactions: sqlite3_total_changes then
};

// Write transactions committed with at least one change, by every Store in this process (for
// /metrics: kiln_store_commits_total).
std::uint64_t committed_writes();

}  // namespace kiln::store
