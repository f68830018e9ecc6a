// store/migrations.h — forward-only schema migrations (db-migrations/NNNN_name.sql).
//
// Migrations are embedded in the binary at build time and applied in order at start-up, each
// in its own transaction together with its row in `schema_migrations`. A database whose schema
// is newer than the binary is refused; a migration that fails is rolled back and reported,
// leaving the database exactly as it was before that migration.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"

namespace kiln::store {

class Db;

struct Migration {
  int version = 0;   // NNNN, strictly increasing, starting at 1
  std::string name;  // the file name's _name part
  std::string sql;
};

// db-migrations/*.sql (SQLite) and db-migrations/postgres/*.sql: the same version numbers.
const std::vector<Migration>& embedded_migrations();
const std::vector<Migration>& embedded_pg_migrations();

struct MigrationReport {
  int from_version = 0;
  int to_version = 0;
};

// Applies every migration newer than the database's schema version. On PostgreSQL under an
// advisory lock, so several kilnd starting at once apply them once.
Result<MigrationReport> migrate(Db& db, std::span<const Migration> migrations, std::int64_t now_ms);
// The schema version recorded in `db` (0 for a new database).
int schema_version(Db& db);

}  // namespace kiln::store
