// store/sqlite.h — the SQLite backend of the connection layer (store/db.h): one sqlite3*
// per SqliteDb, closed in its destructor, with a per-connection statement cache.
#pragma once

#include <string>
#include <unordered_map>

#include "store/db.h"

struct sqlite3;
struct sqlite3_stmt;

namespace kiln::store {

class SqliteDb final : public Db {
 public:
  // Opens (creating if needed) the database at `path`. Throws DbError on failure.
  SqliteDb(const std::string& path, bool read_only);
  ~SqliteDb() override;

  Dialect dialect() const override { return Dialect::kSqlite; }
  void exec(std::string_view sql) override;
  Stmt prepare(std::string_view sql) override;
  int changes() const override;
  void begin(TxKind kind) override;
  void commit() override;
  void rollback() noexcept override;
  sqlite3* raw() { return db_; }

 private:
  struct Cached;
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, std::unique_ptr<Cached>> cache_;
  std::int64_t changes_at_begin_ = -1;  // write transactions: sqlite3_total_changes then
};

}  // namespace kiln::store
