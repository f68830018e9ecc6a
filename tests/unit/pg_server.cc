#include "tests/unit/pg_server.h"

#include <fcntl.h>
#include <glob.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

#include "core/clock.h"
#include "store/store.h"

namespace kiln::testing {
namespace {

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class PgServer {
 public:
  static PgServer& get() {
    static PgServer s;
    return s;
  }

  // Starts the server on first call. "" on success, else why not.
  std::string ensure_started() {
    std::lock_guard lock(mu_);
    if (started_) return "";
    if (!error_.empty()) return error_;
    error_ = start();
    if (error_.empty()) started_ = true;
    return error_;
  }

  std::string conninfo(const std::string& db) const {
    return "host=" + dir_ + " user=kiln dbname=" + db;
  }

  void admin_exec(const std::string& sql) {
    PGconn* c = PQconnectdb(conninfo("postgres").c_str());
    PGresult* r = PQexec(c, sql.c_str());
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    std::string err = ok ? "" : PQerrorMessage(c);
    PQclear(r);
    PQfinish(c);
    if (!ok) throw std::runtime_error("postgres: " + sql + ": " + err);
  }

  std::string new_database(bool migrated) {
    std::lock_guard lock(mu_);
    if (migrated && !template_ready_) {
      admin_exec("CREATE DATABASE kiln_tpl");
      FakeClockless clock;
      store::StoreOptions o;
      o.url = conninfo("kiln_tpl");
      auto s = store::Store::open(o, clock);
      if (!s) throw std::runtime_error("migrating the template: " + s.error().message);
      s->reset();
      template_ready_ = true;
    }
    const std::string name = "t" + std::to_string(++next_db_);
    // The template's last connection may still be closing on the server side: retry briefly.
    for (int attempt = 0;; ++attempt) {
      try {
        admin_exec("CREATE DATABASE " + name + " TEMPLATE " +
                   (migrated ? "kiln_tpl" : "template0"));
        break;
      } catch (const std::runtime_error& e) {
        if (attempt >= 100 || std::string(e.what()).find("being accessed") == std::string::npos) {
          throw;
        }
        ::usleep(20'000);
      }
    }
    return conninfo(name);
  }

  // Stops the server (the watchdog does it) and waits for it.
  void stop() {
    std::lock_guard lock(mu_);
    if (watchdog_ > 0) {
      ::close(watch_fd_);
      int st = 0;
      ::waitpid(watchdog_, &st, 0);
      watchdog_ = -1;
    }
    started_ = false;
  }

 private:
  struct FakeClockless : Clock {
    std::int64_t now_ms() const override { return 1'700'000'000'000; }
  };

  std::string start() {
    glob_t g{};
    std::vector<std::string> bins;
    if (::glob("/usr/lib/postgresql/*/bin/initdb", 0, nullptr, &g) == 0) {
      for (std::size_t i = 0; i < g.gl_pathc; ++i) bins.emplace_back(g.gl_pathv[i]);
    }
    ::globfree(&g);
    if (bins.empty()) return "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)";
    std::sort(bins.begin(), bins.end());  // the newest major version last
    const std::string bin = std::filesystem::path(bins.back()).parent_path().string();

    char tmpl[] = "/tmp/kiln-pg-XXXXXX";
    if (!::mkdtemp(tmpl)) return "mkdtemp failed";
    dir_ = tmpl;
    std::string as;  // initdb refuses root: run the server as postgres
    if (::geteuid() == 0) {
      if (!::getpwnam("postgres")) return "running as root and no postgres user";
      if (std::system(("chown postgres " + shell_quote(dir_)).c_str()) != 0) return "chown failed";
      as = "runuser -u postgres -- ";
    }
    const std::string data = dir_ + "/data";
    const std::string log = dir_ + "/log";
    // The watchdog: stops the server and removes the directory once this process is gone (its
    // stdin, the pipe's read end, reaches EOF when the last write end closes, i.e. at exit).
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return "pipe failed";
    const std::string stop_script =
        "cat >/dev/null; " + as + bin + "/pg_ctl -D " + shell_quote(data) +
        " -m immediate stop >/dev/null 2>&1; rm -rf " + shell_quote(dir_);
    const pid_t pid = ::fork();
    if (pid < 0) return "fork failed";
    if (pid == 0) {
      ::dup2(fds[0], 0);
      ::setpgid(0, 0);  // not killed with the test's process group by a Ctrl-C before cleanup
      ::execl("/bin/sh", "sh", "-c", stop_script.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[0]);
    watch_fd_ = fds[1];
    watchdog_ = pid;

    const std::string init = as + bin + "/initdb -D " + shell_quote(data) +
                             " -A trust -U kiln -E UTF8 --no-sync >" +
                             shell_quote(dir_ + "/initdb.log") + " 2>&1";
    if (std::system(init.c_str()) != 0) return "initdb failed (see " + dir_ + "/initdb.log)";
    const std::string opts = "-k " + dir_ +
                             " -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                             "-c full_page_writes=off -c max_connections=300";
    const std::string start = as + bin + "/pg_ctl -D " + shell_quote(data) + " -l " +
                              shell_quote(log) + " -w -o " + shell_quote(opts) +
                              " start >/dev/null 2>&1";
    if (std::system(start.c_str()) != 0) return "pg_ctl start failed (see " + log + ")";
    return "";
  }

  std::mutex mu_;
  bool started_ = false;
  bool template_ready_ = false;
  std::string error_;
  std::string dir_;
  int next_db_ = 0;
  int watch_fd_ = -1;
  pid_t watchdog_ = -1;
};

class PgEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { PgServer::get().stop(); }
};

[[maybe_unused]] const auto* g_env =
    ::testing::AddGlobalTestEnvironment(new PgEnvironment);  // gtest owns it

}  // namespace

bool pg_required() {
  const char* v = std::getenv("KILN_REQUIRE_PG");
  return v && std::string(v) == "1";
}

std::string pg_fresh_database(bool migrated, std::string* why) {
  auto& s = PgServer::get();
  if (auto err = s.ensure_started(); !err.empty()) {
    if (why) *why = err;
    return "";
  }
  try {
    return s.new_database(migrated);
  } catch (const std::exception& e) {
    if (why) *why = e.what();
    return "";
  }
}

void pg_admin_exec(const std::string& sql) { PgServer::get().admin_exec(sql); }

}  // namespace kiln::testing
