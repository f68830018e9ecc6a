#include "store/internal.h"

namespace kiln::store {

using namespace internal;  // NOLINT: the shared implementation helpers

Store::ReaderLease Store::reader() {
  {
    std::lock_guard lock(readers_mu_);
    if (!idle_readers_.empty()) {
      auto db = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return ReaderLease(*this, std::move(db));
    }
  }
  auto db = std::make_unique<Db>(options_.path, /*read_only=*/false);
  configure_connection(*db, options_, /*writer=*/false);
  return ReaderLease(*this, std::move(db));
}

Store::Store(const StoreOptions& options, const Clock& clock) : options_(options), clock_(clock) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options, const Clock& clock,
                                           std::span<const Migration> migrations) {
  std::unique_ptr<Store> s(new Store(options, clock));
  try {
    s->writer_ = std::make_unique<Db>(options.path, /*read_only=*/false);
    configure_connection(*s->writer_, options, /*writer=*/true);
    auto report = migrate(*s->writer_, migrations, clock.now_ms());
    if (!report) return report.error();
    // Only a database this binary accepts is switched to WAL (a persistent file change).
    s->writer_->exec("PRAGMA journal_mode = WAL");
  } catch (const SqliteError& e) {
    return make_error(Errc::kInternal, "cannot open database " + options.path + ": " + e.what());
  }
  return s;
}

int Store::schema_version() {
  std::lock_guard lock(write_mu_);
  return kiln::store::schema_version(*writer_);
}

std::string Store::integrity_check() {
  std::lock_guard lock(write_mu_);
  auto s = writer_->prepare("PRAGMA integrity_check");
  std::string out;
  while (s.step()) {
    if (!out.empty()) out += "\n";
    out += s.text(0);
  }
  return out;
}

}  // namespace kiln::store
