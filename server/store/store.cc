#include <set>

#include "store/internal.h"
#include "store/pg.h"
#include "store/sqlite.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

std::unique_ptr<Db> Store::connect(bool writer) {
  std::unique_ptr<Db> db;
  if (postgres_) {
    auto pg = std::make_unique<PgDb>(url_);
    const StoreOptions o = options_;
    pg->on_reconnect = [o, writer](PgDb& d) { configure_connection(d, o, writer); };
    db = std::move(pg);
  } else {
    db = std::make_unique<SqliteDb>(url_, /*read_only=*/false);
  }
  configure_connection(*db, options_, writer);
  return db;
}

Store::ReaderLease Store::reader() {
  {
    std::lock_guard lock(readers_mu_);
    if (!idle_readers_.empty()) {
      auto db = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return ReaderLease(*this, std::move(db));
    }
  }
  return ReaderLease(*this, connect(/*writer=*/false));
}

Store::Store(const StoreOptions& options, const Clock& clock)
    : options_(options),
      clock_(clock),
      url_(options.url.empty() ? options.path : options.url),
      postgres_(is_postgres_url(url_)) {}

Store::~Store() {
  listener_.reset();  // joins the listener thread before anything it uses goes away
}

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options, const Clock& clock,
                                           std::span<const Migration> migrations) {
  std::unique_ptr<Store> s(new Store(options, clock));
  if (migrations.empty()) {
    migrations = s->postgres_ ? std::span<const Migration>(embedded_pg_migrations())
                              : std::span<const Migration>(embedded_migrations());
  }
  try {
    s->writer_ = s->connect(/*writer=*/true);
    Store* self = s.get();
    s->writer_->on_events_committed = [self](std::int64_t id) { self->deliver_events(id); };
    auto report = migrate(*s->writer_, migrations, clock.now_ms());
    if (!report) return report.error();
    // Only a database this binary accepts is switched to WAL (a persistent file change).
    if (!s->postgres_) s->writer_->exec("PRAGMA journal_mode = WAL");
  } catch (const DbError& e) {
    return make_error(Errc::kInternal,
                      "cannot open database " + redact_db_url(s->url_) + ": " + e.what());
  }
  return s;
}

int Store::schema_version() {
  std::lock_guard lock(write_mu_);
  return kiln::store::schema_version(*writer_);
}

std::string Store::integrity_check() {
  if (postgres_) return "ok";  // the server's business (amcheck is not worth it here)
  std::lock_guard lock(write_mu_);
  auto s = writer_->prepare("PRAGMA integrity_check");
  std::string out;
  while (s.step()) {
    if (!out.empty()) out += "\n";
    out += s.text(0);
  }
  return out;
}

// --- events across instances ---

void Store::deliver_events(std::int64_t id) {
  std::lock_guard lock(subs_mu_);
  if (id <= delivered_id_) return;
  delivered_id_ = id;
  for (auto* sub : subs_) sub->fn_(id);
}

std::unique_ptr<Store::Subscription> Store::subscribe_events(std::function<void(std::int64_t)> fn) {
  std::unique_ptr<Subscription> sub(new Subscription(*this, std::move(fn)));
  bool start_listener = false;
  {
    std::lock_guard lock(subs_mu_);
    subs_.push_back(sub.get());
    start_listener = postgres_ && !listener_;
    if (start_listener) {
      listener_ = std::make_unique<PgListener>(
          url_, "kiln_events", [this](std::int64_t id) { deliver_events(id); },
          [this] { return last_event_id(); });
    }
  }
  return sub;
}

Store::Subscription::~Subscription() {
  std::lock_guard lock(store_.subs_mu_);
  std::erase(store_.subs_, this);
}

// --- leadership ---

namespace {

class PgLeadership final : public Store::Leadership {
 public:
  PgLeadership(const std::string& url, std::string_view name) : lock_(url, pg_lead_key(name)) {}
  bool held() override {
    std::lock_guard lock(mu_);
    return lock_.held();
  }

 private:
  std::mutex mu_;
  PgSessionLock lock_;
};

// SQLite: one database file serves one kilnd; the lease only keeps one holder per process.
std::mutex g_local_leads_mu;
std::set<std::string> g_local_leads;

class LocalLeadership final : public Store::Leadership {
 public:
  explicit LocalLeadership(std::string key) : key_(std::move(key)) {}
  ~LocalLeadership() override {
    std::lock_guard lock(g_local_leads_mu);
    if (held_) g_local_leads.erase(key_);
  }
  bool held() override {
    std::lock_guard lock(g_local_leads_mu);
    if (!held_) held_ = g_local_leads.insert(key_).second;
    return held_;
  }

 private:
  const std::string key_;
  bool held_ = false;
};

}  // namespace

std::unique_ptr<Store::Leadership> Store::try_lead(std::string_view name) {
  if (postgres_) return std::make_unique<PgLeadership>(url_, name);
  return std::make_unique<LocalLeadership>(url_ + '\n' + std::string(name));
}

}  // namespace kiln::store
