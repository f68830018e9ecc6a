#include "store/pg.h"

#include <libpq-fe.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <optional>
#include <vector>

namespace kiln::store {
namespace {

void quiet_notices(void*, const char*) {}

// The password a libpq URL or conninfo carries ("" when none). Throws DbError when libpq cannot
// parse it at all: its own message would quote the offending piece, which may be the password.
std::string conninfo_password(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (!opts) {
    if (err) PQfreemem(err);
    throw DbError(0,
                  "cannot connect to PostgreSQL: libpq cannot parse the database URL or conninfo "
                  "(its message is not shown: it may quote the password)",
                  DbError::Kind::kConnection);
  }
  std::string password;
  for (auto* o = opts; o->keyword; ++o) {
    if (std::string_view(o->keyword) == "password" && o->val) password = o->val;
  }
  PQconninfoFree(opts);
  return password;
}

PGconn* connect(const std::string& conninfo) {
  const std::string password = conninfo_password(conninfo);
  // Defaults the operator's URL or conninfo may override (it comes last): an unreachable
  // server fails a connect in 5 s, and a peer that vanished without closing the connection
  // (host down, network cut) is noticed by TCP keepalive in about 25 s instead of minutes.
  const char* keys[] = {
      "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
      "keepalives_count", "tcp_user_timeout", "dbname",          nullptr};
  const char* values[] = {"5", "1", "10", "5", "3", "30000", conninfo.c_str(), nullptr};
  PGconn* c = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (!c || PQstatus(c) != CONNECTION_OK) {
    std::string msg = c ? PQerrorMessage(c) : "out of memory";
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    for (auto p = password.empty() ? std::string::npos : msg.find(password); p != std::string::npos;
         p = msg.find(password, p + 3)) {
      msg.replace(p, password.size(), "***");
    }
    if (c) PQfinish(c);
    throw DbError(0, "cannot connect to PostgreSQL: " + msg, DbError::Kind::kConnection);
  }
  PQsetNoticeProcessor(c, quiet_notices, nullptr);
  return c;
}

DbError::Kind kind_of_sqlstate(const char* state) {
  if (!state) return DbError::Kind::kOther;
  std::string_view s(state);
  if (s.starts_with("23")) return DbError::Kind::kConstraint;
  if (s == "40001" || s == "40P01" || s == "55P03") return DbError::Kind::kBusy;
  if (s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03") {
    return DbError::Kind::kConnection;
  }
  return DbError::Kind::kOther;
}

bool ok_status(const PGresult* r) {
  const auto st = PQresultStatus(r);
  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

std::string sql_literal_int(std::int64_t v) { return std::to_string(v); }

class PgStmt : public StmtImpl {
 public:
  // Cached: `name` is the prepared statement's name. Uncached (name empty): `sql` is sent with
  // PQexecParams each run.
  PgStmt(PgDb& db, std::string name, std::string sql, int params, bool* in_use)
      : db_(db),
        name_(std::move(name)),
        sql_(std::move(sql)),
        params_(params),
        in_use_(in_use),
        generation_(db.generation()) {}
  ~PgStmt() override { clear(); }

  void bind_int(int i, std::int64_t v) override { slot(i) = std::to_string(v); }
  void bind_text(int i, std::string_view v) override { slot(i) = std::string(v); }
  void bind_null(int i) override { slot(i).reset(); }

  bool step() override {
    if (!res_) execute();
    ++row_;
    return row_ < PQntuples(res_);
  }
  void reset() override {
    clear();
    for (auto& v : values_) v.reset();
  }
  bool is_null(int col) const override { return PQgetisnull(res_, row_, col) != 0; }
  std::int64_t int64(int col) const override {
    const char* p = PQgetvalue(res_, row_, col);
    const int n = PQgetlength(res_, row_, col);
    if (n == 1 && p[0] == 't') return 1;
    if (n == 1 && p[0] == 'f') return 0;
    std::int64_t v = 0;
    std::from_chars(p, p + n, v);
    return v;
  }
  std::string text(int col) const override {
    return std::string(PQgetvalue(res_, row_, col),
                       static_cast<std::size_t>(PQgetlength(res_, row_, col)));
  }
  void release() noexcept override {
    if (in_use_) {
      reset();
      *in_use_ = false;
    } else {
      delete this;
    }
  }

 private:
  std::optional<std::string>& slot(int i) {
    if (i < 1 || i > params_) {
      throw DbError(0, "bind: parameter " + std::to_string(i) + " out of range");
    }
    if (values_.size() < static_cast<std::size_t>(params_)) values_.resize(params_);
    return values_[i - 1];
  }
  void clear() {
    if (res_) PQclear(res_);
    res_ = nullptr;
    row_ = -1;
  }
  void execute() {
    if (values_.size() < static_cast<std::size_t>(params_)) values_.resize(params_);
    std::vector<const char*> vals(values_.size());
    for (std::size_t i = 0; i < values_.size(); ++i) {
      vals[i] = values_[i] ? values_[i]->c_str() : nullptr;
    }
    // Outside a transaction (autocommit) a statement that failed because the connection was
    // lost runs again once on a new connection: nothing of it was applied.
    const auto ts = PQtransactionStatus(db_.raw());
    const bool autocommit = ts == PQTRANS_IDLE || ts == PQTRANS_UNKNOWN;
    PGresult* r = nullptr;
    for (int attempt = 0;; ++attempt) {
      if (!name_.empty() && generation_ != db_.generation()) {
        // Prepared on a connection since lost: prepare again under the same name.
        PGresult* p = PQprepare(db_.raw(), name_.c_str(), sql_.c_str(), 0, nullptr);
        if (!ok_status(p)) db_.fail(p, "prepare");
        PQclear(p);
        generation_ = db_.generation();
      }
      r = name_.empty()
              ? PQexecParams(db_.raw(), sql_.c_str(), params_, nullptr, vals.data(), nullptr,
                             nullptr, 0)
              : PQexecPrepared(db_.raw(), name_.c_str(), params_, vals.data(), nullptr, nullptr, 0);
      if (ok_status(r)) break;
      if (attempt == 0 && autocommit && PQstatus(db_.raw()) != CONNECTION_OK) {
        PQclear(r);
        db_.reconnect();
        continue;
      }
      db_.fail(r, "step");
    }
    res_ = r;
    row_ = -1;
    const char* tuples = PQcmdTuples(r);
    int n = 0;
    if (tuples && *tuples)
      std::from_chars(tuples, tuples + std::char_traits<char>::length(tuples), n);
    const std::string_view cmd = PQcmdStatus(r);
    const bool wrote = n > 0 && (cmd.starts_with("INSERT") || cmd.starts_with("UPDATE") ||
                                 cmd.starts_with("DELETE"));
    db_.note_result(n, wrote);
  }

  PgDb& db_;
  std::string name_;
  std::string sql_;
  int params_;
  bool* in_use_;
  int generation_;
  std::vector<std::optional<std::string>> values_;
  PGresult* res_ = nullptr;
  int row_ = -1;
};

}  // namespace

std::int64_t pg_lead_key(std::string_view name) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (char c : std::string("kiln.lead.") + std::string(name)) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return static_cast<std::int64_t>(h);
}

std::string pg_rewrite_placeholders(std::string_view sql, int* params) {
  std::string out;
  out.reserve(sql.size() + 16);
  int n = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (c == '\'' || c == '"') {  // a literal or quoted identifier, copied whole
      std::size_t j = i + 1;
      while (j < sql.size() && sql[j] != c) ++j;
      out.append(sql.substr(i, j - i + 1));
      i = j;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      std::size_t j = sql.find('\n', i);
      if (j == std::string_view::npos) j = sql.size();
      out.append(sql.substr(i, j - i));
      i = j - 1;
    } else if (c == '?') {
      out += '$';
      out += std::to_string(++n);
    } else {
      out += c;
    }
  }
  if (params) *params = n;
  return out;
}

struct PgDb::Cached {
  bool in_use = false;
  PgStmt stmt;
  Cached(PgDb& db, std::string name, std::string sql, int params)
      : stmt(db, std::move(name), std::move(sql), params, &in_use) {}
};

PgDb::PgDb(const std::string& conninfo) : conninfo_(conninfo) { conn_ = connect(conninfo); }

PgDb::~PgDb() {
  cache_.clear();
  if (conn_) PQfinish(conn_);
}

void PgDb::fail(void* result, std::string_view what) {
  auto* r = static_cast<PGresult*>(result);
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  std::string msg(what);
  msg += ": ";
  msg += r ? PQresultErrorMessage(r) : PQerrorMessage(conn_);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  DbError::Kind kind = kind_of_sqlstate(state);
  if (PQstatus(conn_) != CONNECTION_OK) kind = DbError::Kind::kConnection;
  if (r) PQclear(r);
  throw DbError(0, msg, kind);
}

void PgDb::ensure_connected() {
  if (PQstatus(conn_) != CONNECTION_OK) reconnect();
}

void PgDb::reconnect() {
  // The server restarted or the network dropped. The statements prepared on the old
  // connection are prepared again on first use (generation).
  PQreset(conn_);
  ++generation_;
  if (PQstatus(conn_) != CONNECTION_OK) {
    throw DbError(0, std::string("PostgreSQL connection lost: ") + PQerrorMessage(conn_),
                  DbError::Kind::kConnection);
  }
  PQsetNoticeProcessor(conn_, quiet_notices, nullptr);
  if (on_reconnect) on_reconnect(*this);
}

void PgDb::exec(std::string_view sql) {
  // UNKNOWN: the connection broke (outside a transaction, or in one that is gone with it).
  const auto ts = PQtransactionStatus(conn_);
  const bool idle = ts == PQTRANS_IDLE || ts == PQTRANS_UNKNOWN;
  if (idle) ensure_connected();
  const std::string text(sql);
  PGresult* r = PQexec(conn_, text.c_str());
  if (!ok_status(r) && idle && PQstatus(conn_) != CONNECTION_OK) {
    // Lost before anything ran (BEGIN, SET, or one implicit transaction): run it again once.
    PQclear(r);
    reconnect();
    r = PQexec(conn_, text.c_str());
  }
  if (!ok_status(r)) fail(r, "exec");
  PQclear(r);
}

Stmt PgDb::prepare(std::string_view sql) {
  if (const auto ts = PQtransactionStatus(conn_); ts == PQTRANS_IDLE || ts == PQTRANS_UNKNOWN) {
    ensure_connected();
  }
  auto it = cache_.find(std::string(sql));
  if (it == cache_.end()) {
    int params = 0;
    std::string rewritten = pg_rewrite_placeholders(sql, &params);
    std::string name = "s" + std::to_string(++next_name_);
    PGresult* r = PQprepare(conn_, name.c_str(), rewritten.c_str(), 0, nullptr);
    if (!ok_status(r)) fail(r, "prepare");
    PQclear(r);
    it = cache_.emplace(std::string(sql), std::make_unique<Cached>(*this, name, rewritten, params))
             .first;
  }
  if (it->second->in_use) {
    int params = 0;
    std::string rewritten = pg_rewrite_placeholders(sql, &params);
    return Stmt(new PgStmt(*this, "", std::move(rewritten), params, nullptr));
  }
  it->second->in_use = true;
  return Stmt(&it->second->stmt);
}

void PgDb::begin(TxKind kind) {
  ensure_connected();
  wrote_ = false;
  switch (kind) {
    case TxKind::kRead:
      exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      break;
    case TxKind::kWrite:
      // One writer across every kilnd on this database, as SQLite's BEGIN IMMEDIATE: keeps
      // check-then-write atomic and event ids committing in id order. Waits up to lock_timeout.
      exec("BEGIN; SELECT pg_advisory_xact_lock(" + sql_literal_int(kPgWriterLockKey) + ")");
      break;
    case TxKind::kLeases:
      exec("BEGIN");
      break;
  }
}

void PgDb::commit() {
  if (tx_event_id_ > 0) {
    // Delivered to every LISTENer when (and only if) the transaction commits.
    exec("SELECT pg_notify('kiln_events', '" + std::to_string(tx_event_id_) + "'); COMMIT");
  } else {
    exec("COMMIT");
  }
  if (wrote_) count_committed_write();
  wrote_ = false;
}

void PgDb::rollback() noexcept {
  wrote_ = false;
  if (PQstatus(conn_) != CONNECTION_OK) return;
  PGresult* r = PQexec(conn_, "ROLLBACK");
  if (r) PQclear(r);
}

// --- LISTEN ---

PgListener::PgListener(std::string conninfo, std::string channel,
                       std::function<void(std::int64_t)> on_id,
                       std::function<std::int64_t()> current_id)
    : conninfo_(std::move(conninfo)),
      channel_(std::move(channel)),
      on_id_(std::move(on_id)),
      current_id_(std::move(current_id)) {
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) throw DbError(0, "eventfd failed");
  thread_ = std::thread([this] { run(); });
}

PgListener::~PgListener() {
  const std::uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  ::close(stop_fd_);
}

void PgListener::run() {
  PGconn* c = nullptr;
  bool first = true;
  auto wait_stop = [&](int ms) {
    pollfd p{stop_fd_, POLLIN, 0};
    return ::poll(&p, 1, ms) > 0;
  };
  for (;;) {
    if (!c) {
      try {
        c = connect(conninfo_);
        PGresult* r = PQexec(c, ("LISTEN " + channel_).c_str());
        const bool ok = ok_status(r);
        PQclear(r);
        if (!ok) throw DbError(0, "LISTEN failed", DbError::Kind::kConnection);
        // Whatever committed while no one listened (not on the first connect: nothing missed).
        if (!first && current_id_) {
          if (std::int64_t id = current_id_(); id > 0) on_id_(id);
        }
        first = false;
      } catch (const std::exception&) {
        if (c) PQfinish(c);
        c = nullptr;
        first = false;  // a later connect must report what was missed meanwhile
        if (wait_stop(1000)) return;
        continue;
      }
    }
    pollfd fds[2] = {{stop_fd_, POLLIN, 0}, {PQsocket(c), POLLIN, 0}};
    if (::poll(fds, 2, 5000) < 0) continue;
    if (fds[0].revents) break;
    if (fds[1].revents == 0) continue;
    if (!PQconsumeInput(c) || PQstatus(c) != CONNECTION_OK) {
      PQfinish(c);
      c = nullptr;
      if (wait_stop(200)) return;
      continue;
    }
    std::int64_t best = 0;
    while (PGnotify* n = PQnotifies(c)) {
      std::int64_t id = 0;
      const std::string_view payload(n->extra ? n->extra : "");
      std::from_chars(payload.data(), payload.data() + payload.size(), id);
      if (id > best) best = id;
      PQfreemem(n);
    }
    if (best > 0) on_id_(best);
  }
  if (c) PQfinish(c);
}

// --- session locks ---

PgSessionLock::PgSessionLock(std::string conninfo, std::int64_t key)
    : conninfo_(std::move(conninfo)), key_(key) {}

PgSessionLock::~PgSessionLock() {
  if (!conn_) return;
  if (held_ && PQstatus(conn_) == CONNECTION_OK) {
    // Released now, not when the server gets round to ending the session: a successor's next
    // held() takes it.
    PGresult* r =
        PQexec(conn_, ("SELECT pg_advisory_unlock(" + sql_literal_int(key_) + ")").c_str());
    PQclear(r);
  }
  PQfinish(conn_);  // closing the session releases the lock in any case
}

bool PgSessionLock::held() {
  if (conn_ && PQstatus(conn_) != CONNECTION_OK) {
    PQfinish(conn_);
    conn_ = nullptr;
    held_ = false;
  }
  if (!conn_) {
    try {
      conn_ = connect(conninfo_);
    } catch (const DbError&) {
      return false;
    }
  }
  // Held: a round trip proves the session (and so the lock) is still alive. Not held: try.
  const std::string sql =
      held_ ? "SELECT true" : "SELECT pg_try_advisory_lock(" + sql_literal_int(key_) + ")";
  PGresult* r = PQexec(conn_, sql.c_str());
  bool got = false;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
    got = PQgetvalue(r, 0, 0)[0] == 't';
  }
  PQclear(r);
  if (PQstatus(conn_) != CONNECTION_OK) {
    PQfinish(conn_);
    conn_ = nullptr;
    got = false;
  }
  held_ = got;
  return held_;
}

}  // namespace kiln::store
