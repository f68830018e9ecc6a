// store/copy.h — moving a kiln from SQLite to PostgreSQL: every row of a SQLite database
// copied into an empty PostgreSQL database (`kilnd db-copy`), so a site that grows from one
// kilnd to several keeps its machines, images, deployments, history, tokens, leases, BMC
// credentials (still sealed: the instances share secrets.key) and rollouts.
//
// Both databases are first brought to this binary's schema (Store::open: migrations), then the
// rows are read from one SQLite snapshot and written in ONE PostgreSQL transaction holding the
// writers' lock: a failure leaves the target as empty as it was. Ids are kept (event ids too,
// so `events?since=` cursors stay valid) and the identity sequences continue after them. Before
// the commit every table is read back from PostgreSQL and compared with what was read from
// SQLite (row count and an order-independent digest of every value): a difference aborts.
//
// The target must be empty (no row in any table but schema_migrations); a table this code
// does not know, or columns that differ between the two schemas, stop it before any write.
// Stop kilnd before copying: writes after the snapshot would not be copied.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/result.h"

namespace kiln::store {

struct CopyReport {
  struct Table {
    std::string name;
    std::int64_t rows = 0;
  };
  std::vector<Table> tables;  // in copy order
  int schema_version = 0;
};

// Copies the SQLite database at `sqlite_path` (it must exist) into the empty PostgreSQL
// database at `pg_url`. kNotFound: no SQLite file; kConflict: the target holds rows;
// kInvalid: the schemas differ; kInternal: a database error (the target unchanged).
Result<CopyReport> copy_sqlite_to_postgres(const std::string& sqlite_path,
                                           const std::string& pg_url, const Clock& clock);

}  // namespace kiln::store
