#include "store/copy.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/crypto.h"
#include "store/pg.h"
#include "store/sqlite.h"
#include "store/store.h"

namespace kiln::store {

namespace {

// Every table but schema_migrations, parents before the tables whose foreign keys name them.
constexpr const char* kTables[] = {
    "image_versions",  "machines", "machine_macs",     "machine_labels", "deployments",
    "api_tokens",      "events",   "dhcp_leases",      "machine_bmcs",   "config_profiles",
    "machine_configs", "rollouts", "rollout_machines",
};
constexpr std::size_t kBatchRows = 200;  // rows per INSERT

struct Column {
  std::string name;
  bool integer = false;  // BIGINT in PostgreSQL; else TEXT
};

struct Cell {
  bool null = false;
  std::int64_t i = 0;
  std::string s;
};
using Row = std::vector<Cell>;

// An order-independent digest of a table: the row count and the sum of each row's hash.
struct Digest {
  std::int64_t rows = 0;
  std::uint64_t sum = 0;
  void add(const Row& row, const std::vector<Column>& cols) {
    Sha256 h;
    for (std::size_t c = 0; c < row.size(); ++c) {
      const auto& v = row[c];
      if (v.null) {
        h.update("n", 1);
      } else if (cols[c].integer) {
        h.update("i" + std::to_string(v.i) + ";");
      } else {
        h.update("t" + std::to_string(v.s.size()) + ":");
        h.update(v.s);
      }
    }
    const std::string d = h.digest();
    std::uint64_t x = 0;
    std::memcpy(&x, d.data(), sizeof x);
    sum += x;
    ++rows;
  }
  bool operator==(const Digest&) const = default;
};

std::string quoted(const std::string& ident) { return "\"" + ident + "\""; }

// The table's columns as PostgreSQL has them, in order; checked against SQLite's.
std::vector<Column> columns(Db& pg, Db& lite, const std::string& table) {
  std::vector<Column> cols;
  auto q = pg.prepare(
      "SELECT column_name, data_type FROM information_schema.columns "
      "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position");
  q.bind(1, table);
  while (q.step()) {
    const std::string type = q.text(1);
    if (type != "bigint" && type != "integer" && type != "text") {
      throw std::invalid_argument("column " + table + "." + q.text(0) + " has type " + type +
                                  ", which db-copy does not know");
    }
    cols.push_back({q.text(0), type != "text"});
  }
  std::set<std::string> lite_cols;
  auto p = lite.prepare("SELECT name FROM pragma_table_info(?)");
  p.bind(1, table);
  while (p.step()) lite_cols.insert(p.text(0));
  std::set<std::string> pg_cols;
  for (const auto& c : cols) pg_cols.insert(c.name);
  if (cols.empty() || lite_cols != pg_cols) {
    std::string only_pg, only_lite;
    for (const auto& c : pg_cols)
      if (!lite_cols.count(c)) only_pg += " " + c;
    for (const auto& c : lite_cols)
      if (!pg_cols.count(c)) only_lite += " " + c;
    throw std::invalid_argument(
        "table " + table + " differs: only in PostgreSQL:" + (only_pg.empty() ? " -" : only_pg) +
        "; only in SQLite:" + (only_lite.empty() ? " -" : only_lite));
  }
  return cols;
}

// SELECT of the columns; with `types`, each followed by SQLite's typeof() of it.
std::string select_sql(const std::string& table, const std::vector<Column>& cols, bool types) {
  std::string sql = "SELECT ";
  for (std::size_t c = 0; c < cols.size(); ++c) {
    sql += (c ? ", " : "") + quoted(cols[c].name);
    if (types) sql += ", typeof(" + quoted(cols[c].name) + ")";
  }
  return sql + " FROM " + quoted(table);
}

// One row; with `types` (SQLite), a value whose storage class is not its column's type is
// refused: reading it as the column's type would change it (SQLite converts 'abc' to 0).
Row read_row(Stmt& s, const std::vector<Column>& cols, bool types, const std::string& table) {
  Row row(cols.size());
  const int stride = types ? 2 : 1;
  for (std::size_t c = 0; c < cols.size(); ++c) {
    const int at = static_cast<int>(c) * stride;
    if (s.is_null(at)) {
      row[c].null = true;
      continue;
    }
    if (types) {
      const std::string type = s.text(at + 1);
      if (type != (cols[c].integer ? "integer" : "text")) {
        throw std::invalid_argument("table " + table + ", column " + cols[c].name + " holds a " +
                                    type + " value where PostgreSQL wants " +
                                    (cols[c].integer ? "an integer" : "text"));
      }
    }
    if (cols[c].integer) {
      row[c].i = s.int64(at);
    } else {
      row[c].s = s.text(at);
    }
  }
  return row;
}

// Writes `rows` into `table` with one multi-row INSERT.
void insert(Db& pg, const std::string& table, const std::vector<Column>& cols,
            const std::vector<Row>& rows) {
  if (rows.empty()) return;
  std::string sql = "INSERT INTO " + quoted(table) + " (";
  for (std::size_t c = 0; c < cols.size(); ++c) sql += (c ? ", " : "") + quoted(cols[c].name);
  sql += ") VALUES ";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    sql += r ? ", (" : "(";
    for (std::size_t c = 0; c < cols.size(); ++c) {
      sql += c ? ", " : "";
      sql += cols[c].integer ? "CAST(? AS BIGINT)" : "?";
    }
    sql += ")";
  }
  auto ins = pg.prepare(sql);
  int i = 1;
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < cols.size(); ++c, ++i) {
      if (row[c].null) {
        ins.bind_null(i);
      } else if (cols[c].integer) {
        ins.bind(i, row[c].i);
      } else {
        ins.bind(i, row[c].s);
      }
    }
  }
  ins.run();
}

}  // namespace

Result<CopyReport> copy_sqlite_to_postgres(const std::string& sqlite_path,
                                           const std::string& pg_url, const Clock& clock) {
  std::error_code ec;
  if (sqlite_path.empty() || !std::filesystem::is_regular_file(sqlite_path, ec)) {
    return make_error(Errc::kNotFound, "no SQLite database at '" + sqlite_path + "'");
  }
  if (!is_postgres_url(pg_url)) {
    return make_error(Errc::kInvalid, "the target is not a PostgreSQL URL or conninfo");
  }
  CopyReport report;
  // Both at this binary's schema (the migrations of each backend).
  {
    StoreOptions so;
    so.path = sqlite_path;
    auto lite = Store::open(so, clock);
    if (!lite) return lite.error();
    so.url = pg_url;
    auto pg = Store::open(so, clock);
    if (!pg) return pg.error();
    report.schema_version = (*lite)->schema_version();
    if ((*pg)->schema_version() != report.schema_version) {
      return make_error(Errc::kInvalid, "schema versions differ after migrating: SQLite " +
                                            std::to_string(report.schema_version) +
                                            ", PostgreSQL " +
                                            std::to_string((*pg)->schema_version()));
    }
  }
  try {
    SqliteDb lite(sqlite_path, /*read_only=*/true);
    lite.exec("PRAGMA busy_timeout = 5000");
    PgDb pg(pg_url);
    // Every table of the target is one db-copy knows.
    {
      std::set<std::string> known(std::begin(kTables), std::end(kTables));
      auto t = pg.prepare(
          "SELECT table_name FROM information_schema.tables WHERE table_schema = "
          "current_schema() AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations'");
      while (t.step()) {
        if (!known.count(t.text(0))) {
          return make_error(Errc::kInvalid,
                            "table " + t.text(0) + " is not one db-copy knows: nothing copied");
        }
      }
    }
    Transaction read(lite, TxKind::kRead);  // one snapshot of the source
    Transaction write(pg, TxKind::kWrite);  // one transaction: all or nothing
    for (const char* table : kTables) {
      auto any = pg.prepare(std::string("SELECT 1 FROM ") + quoted(table) + " LIMIT 1");
      if (any.step()) {
        return make_error(Errc::kConflict, std::string("the target database is not empty (table ") +
                                               table + " has rows): nothing copied");
      }
    }
    for (const char* table : kTables) {
      const auto cols = columns(pg, lite, table);
      Digest from, to;
      std::vector<Row> batch;
      auto src = lite.prepare(select_sql(table, cols, /*types=*/true));
      while (src.step()) {
        batch.push_back(read_row(src, cols, /*types=*/true, table));
        from.add(batch.back(), cols);
        if (batch.size() == kBatchRows) {
          insert(pg, table, cols, batch);
          batch.clear();
        }
      }
      insert(pg, table, cols, batch);
      // Read back what PostgreSQL now holds, through a cursor: a page at a time, not the whole
      // table in one result.
      pg.exec("DECLARE kiln_copy_back NO SCROLL CURSOR FOR " +
              select_sql(table, cols, /*types=*/false));
      for (bool more = true; more;) {
        more = false;
        auto page = pg.prepare("FETCH 1000 FROM kiln_copy_back");
        while (page.step()) {
          to.add(read_row(page, cols, /*types=*/false, table), cols);
          more = true;
        }
      }
      pg.exec("CLOSE kiln_copy_back");
      if (!(from == to)) {
        return make_error(Errc::kInternal,
                          std::string("table ") + table + ": PostgreSQL does not hold what was " +
                              "read from SQLite (" + std::to_string(to.rows) + " rows against " +
                              std::to_string(from.rows) + ", or different values): nothing copied");
      }
      if (std::any_of(cols.begin(), cols.end(), [](const Column& c) { return c.name == "id"; })) {
        // The identity continues after the copied ids.
        pg.exec(std::string("SELECT setval(pg_get_serial_sequence('") + table +
                "', 'id'), (SELECT COALESCE(MAX(id), 0) + 1 FROM " + quoted(table) + "), false)");
      }
      report.tables.push_back({table, from.rows});
    }
    write.commit();
  } catch (const DbError& e) {
    return make_error(Errc::kInternal, std::string("copy failed, nothing copied: ") + e.what());
  } catch (const std::invalid_argument& e) {
    return make_error(Errc::kInvalid, std::string(e.what()) + ": nothing copied");
  } catch (const std::exception& e) {
    return make_error(Errc::kInternal, std::string("copy failed, nothing copied: ") + e.what());
  }
  return report;
}

}  // namespace kiln::store
