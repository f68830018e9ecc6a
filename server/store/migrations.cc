#include "store/migrations.h"

#include "store/db.h"
#include "store/pg.h"

namespace kiln::store {

int schema_version(Db& db) {
  auto t =
      db.prepare(db.dialect() == Dialect::kPostgres
                     ? "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0 ELSE 1 END"
                     : "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                       "name = 'schema_migrations'");
  t.step();
  if (t.int64(0) == 0) return 0;
  auto s = db.prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
  s.step();
  return static_cast<int>(s.int64(0));
}

Result<MigrationReport> migrate(Db& db, std::span<const Migration> migrations,
                                std::int64_t now_ms) {
  int latest = 0;
  for (const auto& m : migrations) {
    if (m.version <= latest) {
      return make_error(Errc::kInternal,
                        "embedded migrations out of order at " + std::to_string(m.version));
    }
    latest = m.version;
  }
  // The version is read inside the write transaction, so two processes opening a new database
  // at once cannot both apply the same migrations. A refused database is not written to:
  // BEGIN IMMEDIATE takes a lock, and the transaction is rolled back untouched.
  Transaction tx(db);
  if (db.dialect() == Dialect::kPostgres) {
    // DDL is transactional on PostgreSQL too; this lock (held to the commit) makes the
    // version check and the migrations one step across every kilnd starting at once.
    db.exec("SELECT pg_advisory_xact_lock(" + std::to_string(kPgMigrateLockKey) + ")");
  }
  MigrationReport report;
  report.from_version = schema_version(db);
  if (report.from_version > latest) {
    return make_error(Errc::kConflict,
                      "database schema version " + std::to_string(report.from_version) +
                          " is newer than this kilnd supports (" + std::to_string(latest) +
                          "); upgrade kilnd or restore a backup taken before the upgrade");
  }
  report.to_version = report.from_version;
  if (latest == report.from_version) return report;
  // All pending migrations form one transaction: a failure anywhere leaves the database
  // exactly as it was (SQLite's DDL is transactional).
  db.exec(db.dialect() == Dialect::kPostgres
              ? "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
              : "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
  for (const auto& m : migrations) {
    if (m.version <= report.from_version) continue;
    try {
      db.exec(m.sql);
      db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
          .bind(1, m.version)
          .bind(2, m.name)
          .bind(3, now_ms)
          .run();
    } catch (const DbError& e) {
      return make_error(Errc::kInternal, "migration " + std::to_string(m.version) + "_" + m.name +
                                             " failed; nothing was applied: " + e.what());
    }
    report.to_version = m.version;
  }
  tx.commit();
  return report;
}

}  // namespace kiln::store
