// tests/unit/pg_server.h — a PostgreSQL server for the unit tests, started once per test binary
// on first use in a temporary directory (initdb + pg_ctl, unix socket only, fsync off; never a
// system service) and stopped at exit. A watchdog process stops it and removes the directory
// when the test binary exits in any way (crash, SIGKILL included): no orphan postgres.
//
// No PostgreSQL installed (no /usr/lib/postgresql/*/bin/initdb): the tests that need one skip,
// unless KILN_REQUIRE_PG=1 (CI), where they fail.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace kiln::testing {

// A new database for the running test: migrated to the current schema (a copy of a template
// migrated once), or empty. Returns its libpq conninfo; "" when no server can run (`why` says why).
std::string pg_fresh_database(bool migrated, std::string* why);
// Runs SQL on the server's "postgres" database (CREATE/DROP DATABASE and the like).
void pg_admin_exec(const std::string& sql);
bool pg_required();

}  // namespace kiln::testing

// In a SetUp or test body: `conninfo` = a fresh database, or the test is skipped (failed when
// KILN_REQUIRE_PG=1).
#define KILN_PG_DATABASE(conninfo, migrated)                                               \
  do {                                                                                     \
    std::string kiln_pg_why_;                                                              \
    conninfo = ::kiln::testing::pg_fresh_database(migrated, &kiln_pg_why_);                \
    if (conninfo.empty()) {                                                                \
      if (::kiln::testing::pg_required()) FAIL() << "KILN_REQUIRE_PG=1: " << kiln_pg_why_; \
      GTEST_SKIP() << "no PostgreSQL: " << kiln_pg_why_;                                   \
    }                                                                                      \
  } while (0)
