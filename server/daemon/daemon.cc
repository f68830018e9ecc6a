#include "daemon/daemon.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "boot/artifacts.h"
#include "core/time.h"
#include "core/url.h"
#include "daemon/cluster.h"
#include "daemon/observability.h"
#include "daemon/store_adapters.h"
#include "dhcp/ra.h"
#include "dhcp/server.h"
#include "images/chunk_store.h"
#include "images/image_service.h"
#include "provision/boot_service.h"
#include "store/copy.h"
#include "store/db.h"
#include "store/store.h"
#include "tftp/server.h"

namespace kiln::daemon {

namespace net = boost::asio;

std::shared_ptr<spdlog::logger> make_logger(const std::string& level) {
  auto log = spdlog::stderr_color_mt("kilnd");
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  log->set_level(spdlog::level::from_str(level));
  log->flush_on(spdlog::level::info);
  return log;
}

namespace {

Result<std::unique_ptr<store::Store>> open_store(const Config& c, const Clock& clock) {
  std::error_code ec;
  std::filesystem::create_directories(c.data_dir, ec);
  auto db = c.effective_db_path();
  if (auto parent = std::filesystem::path(db).parent_path(); !parent.empty()) {
    std::filesystem::create_directories(parent, ec);
  }
  store::StoreOptions so;
  so.path = db;
  so.url = c.db_url;  // PostgreSQL when set
  so.synchronous_full = c.db_synchronous_full;
  so.busy_timeout_ms = c.db_busy_timeout_ms;
  return store::Store::open(so, clock);
}

// Every connection, served file and SQLite reader is a descriptor. Debian's default soft limit
// (1024) is below max_connections' default: raise it to the hard limit, and keep
// max_connections under what is left, so the 503 limit applies before accept() fails.
void raise_fd_limit(Config& c, spdlog::logger& log) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  constexpr rlim_t kReserve = 64;  // database, listeners, logs, files being served
  if (lim.rlim_cur != RLIM_INFINITY &&
      static_cast<rlim_t>(c.http.max_connections) * 2 + kReserve > lim.rlim_cur) {
    const int fit = static_cast<int>((lim.rlim_cur - std::min(lim.rlim_cur, kReserve)) / 2);
    log.warn("event=daemon.max_connections_clamped configured={} effective={} nofile={}",
             c.http.max_connections, std::max(fit, 1),
             static_cast<unsigned long long>(lim.rlim_cur));
    c.http.max_connections = std::max(fit, 1);
  }
}

// Line 1: the HTTP base URL. Then one "name=host:port" line per other listener (tftp=...).
void write_ready_file(const std::string& path, const std::string& url,
                      const std::vector<std::string>& extra) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << url << "\n";
    for (const auto& line : extra) out << line << "\n";
  }
  std::filesystem::rename(tmp, path);
}

// "http[s]://host:port" for a listen address, or "" for a wildcard one.
std::string listener_url(const std::string& address, std::uint16_t port, bool tls) {
  if (address.empty() || address == "0.0.0.0" || address == "::") return {};
  return std::string(tls ? "https://" : "http://") +
         (address.find(':') != std::string::npos ? "[" + address + "]" : address) + ":" +
         std::to_string(port);
}

}  // namespace

BootUrls boot_urls(const Config& c, std::uint16_t port, std::uint16_t tls_port, bool listener_tls) {
  BootUrls u;
  u.plain = c.boot.server_url;
  if (u.plain.empty()) u.plain = c.dhcp.boot.http_base;
  if (u.plain.empty()) u.plain = listener_url(c.http.address, port, listener_tls);
  if (!c.http.tls_listen) return u;
  u.https = c.boot_https_url;
  if (u.https.empty() && !u.plain.empty()) {
    if (auto p = parse_http_url(u.plain)) {
      const std::string host =
          p->host.find(':') != std::string::npos ? "[" + p->host + "]" : p->host;
      u.https = "https://" + host + ":" + std::to_string(tls_port) + p->path;
    }
  }
  if (u.https.empty()) u.https = listener_url(c.http.tls_listen->address, tls_port, true);
  return u;
}

int serve(const Config& config, std::shared_ptr<spdlog::logger> log) {
  // A peer that closes mid-transfer must cost an EPIPE on that connection, not the process:
  // sendfile(2) has no MSG_NOSIGNAL.
  std::signal(SIGPIPE, SIG_IGN);
  // The secrets key and opened BMC passwords live in this process: no core dumps of it, and
  // no ptrace by other users.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  Config cfg = config;
  raise_fd_limit(cfg, *log);
  SystemClock clock;
  auto opened = open_store(cfg, clock);
  if (!opened) {
    log->critical("event=daemon.store_failed err=\"{}\"", opened.error().message);
    return 2;
  }
  auto& store = **opened;
  log->info("event=daemon.store_opened backend={} path=\"{}\" schema_version={}",
            cfg.db_url.empty() ? "sqlite" : "postgresql",
            cfg.db_url.empty() ? cfg.effective_db_path() : std::string("(db_url)"),
            store.schema_version());

  const int threads =
      cfg.threads > 0 ? cfg.threads : std::max(1u, std::thread::hardware_concurrency());
  net::io_context ioc(threads);
  Metrics metrics;
  api::ApiOptions api_options = cfg.api;  // the session route applies the boot's lease rules
  api_options.bind_to_lease = cfg.boot.bind_to_lease;
  api_options.require_lease = cfg.boot.require_lease;
  api_options.attach_reported_macs = cfg.boot.discovery != "approve";
  api_options.servers = agent_servers(cfg, "");  // cluster.peers: the agents' fallbacks
  api::Api api(store, metrics, clock, ioc, api_options, log);
  // Once-only work (the rollout engine, deadlines) runs on the one kilnd holding this lease;
  // another takes it over when the holder dies. SQLite: always this one.
  StoreLeadership engine_lead(store, "engine");
  DeployStageMetrics stage_metrics(store, metrics, clock);
  add_image_store_collector(metrics, cfg.effective_images_dir());
  add_rollout_collector(metrics, store);
  if (cfg.dhcp_mode != "off" && !cfg.dhcp.subnets.empty()) {
    add_dhcp_pool_collector(metrics, store, clock, cfg.dhcp.subnets);
  }

  auto chunks = images::ChunkStore::open(cfg.effective_images_dir());
  if (!chunks) {
    log->critical("event=daemon.images_failed err=\"{}\"", chunks.error().message);
    return 2;
  }
  std::vector<proto::image::Key> trusted;
  for (const auto& path : cfg.trusted_keys) {
    auto key = proto::image::Key::load_public(path);
    if (!key) {
      log->critical("event=daemon.trusted_key_failed path=\"{}\" err=\"{}\"", path,
                    key.error().message);
      return 2;
    }
    trusted.push_back(std::move(*key));
  }
  log->info("event=daemon.images dir=\"{}\" trusted_keys={}", cfg.effective_images_dir(),
            trusted.size());
  if (trusted.empty()) {
    log->warn("event=daemon.unsigned_images_accepted msg=\"no images.trusted_keys configured\"");
  }
  // Declared after the Api: its executor's last callbacks answer through the Api.
  images::ImageService image_service(**chunks, std::move(trusted), log, cfg.image_limits);
  api.attach_images(image_service);

  // BMCs: credentials sealed at rest under the key file; power actions, reimage-on-assign and
  // deadlines (docs/power.md).
  const std::string key_file = cfg.effective_secrets_key_file();
  std::error_code key_ec;
  const bool key_existed = std::filesystem::exists(key_file, key_ec);
  auto secrets = SecretBox::open_or_create(key_file);
  if (!secrets) {
    log->critical("event=daemon.secrets_failed err=\"{}\"", secrets.error().message);
    return 2;
  }
  if (!key_existed) {
    if (const auto sealed = store.count_bmcs(); sealed > 0) {
      // A new key cannot open what the database holds: the key file is missing (a wrong path,
      // a data directory restored without it). Starting would fail every BMC later instead.
      std::filesystem::remove(key_file, key_ec);
      log->critical(
          "event=daemon.secrets_failed err=\"{} did not exist but the database holds {} sealed "
          "BMC credential(s): restore the key file (or delete the BMCs and set them again)\"",
          key_file, sealed);
      return 2;
    }
    log->info("event=daemon.secrets_key_created path=\"{}\"", key_file);
  }
  StoreBmcBook bmc_book(store, *secrets, cfg.bmc_timeout, cfg.bmc_retries);
  StorePowerLedger power_ledger(store);
  RealDriverFactory drivers;
  provision::PowerService power_service(cfg.power, bmc_book, drivers, power_ledger, clock, log,
                                        &engine_lead);
  power_service.start();
  api.attach_power(power_service, *secrets);
  add_bmc_collector(metrics, store, power_service);
  // Rollouts: the engine starts after the power service, stops before it (declared after).
  StoreRolloutLedger rollout_ledger(store, api.config_snapshotter());
  provision::RolloutOptions rollout_options = cfg.rollouts;
  rollout_options.startup_grace = cfg.power.startup_grace;
  provision::RolloutPower rollout_power{
      [&power_service](std::int64_t machine, std::int64_t deployment, const std::string& why) {
        return power_service.reimage(machine, deployment, why,
                                     provision::PowerService::Origin::kEngine);
      },
      [&power_service](std::int64_t now) { return power_service.written_deadline(now); }};
  provision::RolloutService rollout_service(rollout_options, rollout_ledger, rollout_power, metrics,
                                            clock, log, &engine_lead);
  rollout_service.start();
  api.attach_rollouts(rollout_service);

  // Boot artifacts: one resolver for HTTP /files/ and TFTP, so a name is the same bytes on both.
  std::error_code ec;
  std::filesystem::create_directories(cfg.effective_files_dir(), ec);
  boot::Artifacts artifacts;
  for (const auto& dir : std::vector<std::string>{cfg.effective_files_dir()}) {
    if (auto st = artifacts.add_root(dir); !st) {
      log->critical("event=daemon.boot_root_failed dir=\"{}\" err=\"{}\"", dir, st.error().message);
      return 2;
    }
  }
  for (const auto& dir : cfg.boot_roots) {
    // Optional extra roots (e.g. a distribution's iPXE directory) may be absent on this host.
    if (auto st = artifacts.add_root(dir); !st) {
      log->warn("event=daemon.boot_root_missing dir=\"{}\" err=\"{}\"", dir, st.error().message);
    }
  }

  // iPXE scripts per machine: HTTP /boot/<mac>.ipxe and TFTP boot/<mac>.ipxe, one generator.
  // The boot service and the DHCP server see the store through the interfaces they declare.
  StoreMachineDirectory machine_directory(store);
  StoreDeploymentLedger deployment_ledger(store);
  StoreLeaseBook lease_book(store);
  StoreDhcpBackend dhcp_backend(store);
  provision::BootService boot_service(cfg.boot, machine_directory, deployment_ledger, lease_book,
                                      metrics, clock, log);
  if (auto st = boot_service.init(); !st) {
    log->critical("event=daemon.boot_config_failed err=\"{}\"", st.error().message);
    return 2;
  }
  artifacts.add_generator("boot/",
                          [&boot_service](std::string_view rel, const boot::Requester& who) {
                            return boot_service.generate(rel, who);
                          });

  http::ServerOptions hopts = cfg.http;
  http::FileMount boot_mount;
  boot_mount.prefix = "/boot/";
  boot_mount.artifacts = &artifacts;
  boot_mount.artifact_prefix = "boot/";
  boot_mount.root = cfg.effective_files_dir();  // unused: every name resolves through artifacts
  hopts.mounts.push_back(std::move(boot_mount));
  http::FileMount files_mount;
  files_mount.prefix = "/files/";
  files_mount.root = cfg.effective_files_dir();
  files_mount.artifacts = &artifacts;
  hopts.mounts.push_back(std::move(files_mount));
  // Chunks by content hash: /v1/chunks/<sha256> is the .zst (DATA) or .raw (RAW) payload.
  http::FileMount chunk_mount;
  chunk_mount.prefix = "/v1/chunks/";
  chunk_mount.root = std::filesystem::path(cfg.effective_images_dir()) / "chunks";
  chunk_mount.immutable = true;
  chunk_mount.resolve = [](std::string_view rel) -> std::vector<std::string> {
    if (rel.size() != 64 || rel.find_first_not_of("0123456789abcdef") != std::string_view::npos) {
      return {};
    }
    const std::string dir = std::string(rel.substr(0, 2)) + "/";
    return {dir + std::string(rel) + ".zst", dir + std::string(rel) + ".raw"};
  };
  if (cfg.api.chunks_require_token) {
    // Private chunks: only an agent session (from its own address) may read them, and they
    // are served over the listener the agent talks to, never advertised on plain HTTP.
    chunk_mount.authorize = [&store](const std::string& token, const std::string& peer) {
      std::string p = peer;
      if (p.rfind("::ffff:", 0) == 0 && p.find('.') != std::string::npos) p.erase(0, 7);
      return !token.empty() && store.authenticate_agent(token, p).ok();
    };
  }
  hopts.mounts.push_back(std::move(chunk_mount));
  if (cfg.ui_enabled) {
    // The web dashboard: static files from memory, public (the API calls they make carry the
    // operator's token), under a strict Content-Security-Policy (http/embedded.h).
    http::FileMount ui_mount;
    ui_mount.prefix = "/ui/";
    ui_mount.root = cfg.effective_files_dir();  // unused: every name is embedded
    ui_mount.embedded = &http::ui_site();
    hopts.mounts.push_back(std::move(ui_mount));
  }
  // Several instances (cluster.*): chunk and manifest misses come from the peers, verified.
  auto cluster = wire_cluster(cfg, **chunks, image_service, store, metrics, hopts, log);
  if (!cluster) {
    log->critical("event=daemon.cluster_failed err=\"{}\"", cluster.error().message);
    return 2;
  }
  // Image uploads stream to disk beside the chunks they become (same filesystem).
  hopts.upload.dir = std::filesystem::path(cfg.effective_images_dir()) / "tmp";
  hopts.upload.classify = [&api](const http::RequestHeader& h) {
    auto a = api.admit_upload(h);
    http::UploadVerdict v;
    if (!a.is_upload) return v;
    v.kind = a.refusal ? http::UploadVerdict::kRefuse : http::UploadVerdict::kAccept;
    if (a.refusal) v.refusal = std::move(*a.refusal);
    v.hold = std::move(a.hold);
    return v;
  };
  static_assert(http::kUploadFileHeader == api::kUploadFileHeader);
  http::Server server(
      ioc, hopts,
      [&api, ui = cfg.ui_enabled](http::Request&& req, http::Respond respond) {
        // The dashboard's relative URLs need the slash (a query string is dropped: the
        // dashboard's state is in the fragment).
        const auto target = std::string_view(req.target());
        if (ui && target.substr(0, target.find('?')) == "/ui") {
          http::Response res{boost::beast::http::status::moved_permanently, req.version()};
          res.set(boost::beast::http::field::location, "/ui/");
          return respond(std::move(res));
        }
        api.handle(std::move(req), std::move(respond));
      },
      metrics, log);
  if (auto st = server.start(); !st) {
    log->critical("event=daemon.listen_failed err=\"{}\"", st.error().message);
    return 2;
  }
  const auto bracketed = [](const std::string& a) {
    return a.find(':') != std::string::npos ? "[" + a + "]" : a;
  };
  const std::string url = std::string(server.tls() ? "https://" : "http://") +
                          bracketed(hopts.address) + ":" + std::to_string(server.port());
  log->info("event=daemon.listening url={} threads={} tls={} auth={}", url, threads, server.tls(),
            cfg.api.auth_required);
  std::vector<std::string> ready_extra;
  if (hopts.tls_listen) {
    const std::string tls_url =
        "https://" + bracketed(hopts.tls_listen->address) + ":" + std::to_string(server.tls_port());
    log->info("event=daemon.listening_tls url={} cert=\"{}\"", tls_url, hopts.tls_cert_file);
    ready_extra.push_back("https=" + tls_url);
  }
  // Where machines reach us. With a TLS listener the boot path (script, kernel, initrd, the
  // agent's kiln.server and so its API calls) goes over it; chunks stay on plain HTTP
  // (content-addressed and verified by hash: any HTTP cache may serve them).
  const BootUrls urls = boot_urls(cfg, server.port(), server.tls_port(), server.tls());
  {
    std::string boot_url = urls.plain;
    if (hopts.tls_listen) {
      if (urls.https.empty()) {
        log->warn(
            "event=daemon.boot_https_url_unset msg=\"set boot.https_url: machines are booted "
            "over plain http\"");
      } else {
        boot_url = urls.https;
        if (urls.plain.rfind("http://", 0) == 0 && !cfg.api.chunks_require_token) {
          api.set_chunks_url(urls.plain + "/v1/chunks/");
        }
      }
    }
    boot_service.set_server_url(boot_url);
    // An agent booted here falls back to the other instances (cluster.peers) from the start.
    boot_service.set_fallback_servers(cfg.cluster.peers);
    if (boot_url.empty()) {
      log->warn(
          "event=daemon.boot_url_unset msg=\"set boot.server_url: /boot/ scripts cannot "
          "be rendered\"");
    } else {
      log->info("event=daemon.boot url={} chunks={} kernel={} initrd={}", boot_url,
                urls.plain.empty() ? boot_url : urls.plain, cfg.boot.kernel, cfg.boot.initrd);
    }
  }
  if (!cfg.api.auth_required) {
    log->warn("event=daemon.auth_disabled msg=\"every caller is an anonymous admin\"");
  }
  std::unique_ptr<tftp::Server> tftp_server;
  if (cfg.tftp_enabled) {
    tftp_server = std::make_unique<tftp::Server>(cfg.tftp, artifacts, metrics, log);
    if (auto st = tftp_server->start(); !st) {
      log->critical("event=daemon.tftp_listen_failed err=\"{}\"", st.error().message);
      return 2;
    }
    const std::string addr = cfg.tftp.address.find(':') != std::string::npos
                                 ? "[" + cfg.tftp.address + "]"
                                 : cfg.tftp.address;
    log->info("event=daemon.tftp_listening address={}:{} max_blksize={} max_windowsize={}", addr,
              tftp_server->port(), cfg.tftp.limits.max_blksize, cfg.tftp.limits.max_window);
    ready_extra.push_back("tftp=" + addr + ":" + std::to_string(tftp_server->port()));
  }
  std::unique_ptr<dhcp::Server> dhcp_server;
  if (cfg.dhcp_mode != "off") {
    dhcp::ServerOptions dopts = cfg.dhcp;
    dopts.http_port = server.port();
    // One answer to "where is kilnd's HTTP": the boot scripts' base URL, when configured.
    if (dopts.boot.http_base.empty()) dopts.boot.http_base = cfg.boot.server_url;
    dhcp_server = std::make_unique<dhcp::Server>(dopts, dhcp_backend, metrics, log);
    if (auto st = dhcp_server->start(); !st) {
      log->critical("event=daemon.dhcp_failed err=\"{}\"", st.error().message);
      return 2;
    }
  }
  std::unique_ptr<dhcp::RaResponder> ra;
  if (!cfg.ra.interfaces.empty()) {
    ra = std::make_unique<dhcp::RaResponder>(cfg.ra, metrics, log);
    if (auto st = ra->start(); !st) {
      log->critical("event=daemon.ra_failed err=\"{}\"", st.error().message);
      return 2;
    }
  }
  if (!cfg.ready_file.empty()) write_ready_file(cfg.ready_file, url, ready_extra);

  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& sec, int sig) {
    if (sec) return;
    log->info("event=daemon.stopping signal={} connections={}", sig, server.active_connections());
    api.shutdown();
    image_service.shutdown();      // an upload waiting for its import would hold the drain
    power_service.request_stop();  // queued BMC operations drop; running ones end (joined later)
    if (dhcp_server) dhcp_server->stop();  // pending lease writes are committed first
    if (ra) ra->stop();
    // Stop once both the HTTP server and TFTP have drained (or their grace ran out).
    // The io_context must not run out of work (and return) while TFTP still drains on its own
    // threads: hold it until both are done.
    auto work = std::make_shared<net::executor_work_guard<net::io_context::executor_type>>(
        net::make_work_guard(ioc));
    auto pending = std::make_shared<std::atomic<int>>(tftp_server ? 2 : 1);
    auto one_done = [&ioc, pending, work] {
      if (pending->fetch_sub(1) == 1) {
        work->reset();
        ioc.stop();
      }
    };
    const auto grace = std::chrono::milliseconds(cfg.shutdown_grace_ms);
    if (tftp_server) tftp_server->shutdown(grace, one_done);
    server.shutdown(grace, one_done);
  });

  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : pool) t.join();
  log->info("event=daemon.stopped");
  return 0;
}

int token_create(const Config& config, const std::string& name, const std::string& scope_name) {
  SystemClock clock;
  auto scope = proto::parse_scope(scope_name);
  if (!scope) {
    std::cerr << "kilnd: scope must be 'read' or 'admin'\n";
    return 2;
  }
  auto store = open_store(config, clock);
  if (!store) {
    std::cerr << "kilnd: " << store.error().message << "\n";
    return 2;
  }
  auto t = (*store)->create_token(name, *scope);
  if (!t) {
    std::cerr << "kilnd: " << t.error().message << "\n";
    return 2;
  }
  std::cout << t->second << "\n";
  std::cerr << "token " << t->first.id << " '" << name << "' (" << scope_name
            << ") created; it is shown only once\n";
  return 0;
}

int token_list(const Config& config) {
  SystemClock clock;
  auto store = open_store(config, clock);
  if (!store) {
    std::cerr << "kilnd: " << store.error().message << "\n";
    return 2;
  }
  std::printf("%-5s %-24s %-6s %-25s %s\n", "ID", "NAME", "SCOPE", "CREATED", "REVOKED");
  for (const auto& t : (*store)->list_tokens()) {
    std::printf("%-5lld %-24s %-6s %-25s %s\n", static_cast<long long>(t.id), t.name.c_str(),
                proto::to_string(t.scope), format_rfc3339_ms(t.created_at).c_str(),
                t.revoked_at ? format_rfc3339_ms(*t.revoked_at).c_str() : "-");
  }
  return 0;
}

int token_revoke(const Config& config, std::int64_t id) {
  SystemClock clock;
  auto store = open_store(config, clock);
  if (!store) {
    std::cerr << "kilnd: " << store.error().message << "\n";
    return 2;
  }
  if (auto st = (*store)->revoke_token(id, "kilnd-cli"); !st) {
    std::cerr << "kilnd: " << st.error().message << "\n";
    return 1;
  }
  return 0;
}

int db_check(const Config& config) {
  SystemClock clock;
  auto store = open_store(config, clock);
  if (!store) {
    std::cerr << "kilnd: " << store.error().message << "\n";
    return 2;
  }
  auto result = (*store)->integrity_check();
  std::cout << "schema_version " << (*store)->schema_version() << "\nintegrity " << result << "\n";
  return result == "ok" ? 0 : 1;
}

int db_copy(const Config& config, const std::string& to) {
  const std::string target = to.empty() ? config.db_url : to;
  if (target.empty()) {
    std::cerr << "kilnd: db-copy needs the PostgreSQL database: --to URL, or db_url in the "
                 "config\n";
    return 2;
  }
  SystemClock clock;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string source = config.effective_db_path();
  auto report = store::copy_sqlite_to_postgres(source, target, clock);
  if (!report) {
    std::cerr << "kilnd: db-copy: " << report.error().message << "\n";
    return report.error().code == Errc::kConflict ? 1 : 2;
  }
  std::int64_t rows = 0;
  for (const auto& t : report->tables) {
    std::cout << t.name << " " << t.rows << "\n";
    rows += t.rows;
  }
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::cout << "copied " << rows << " rows from " << source << " to "
            << store::redact_db_url(target) << " (schema " << report->schema_version << ") in "
            << ms << " ms, every table read back and verified\n";
  return 0;
}

int print_routes() {
  // The route table is static: no database, no server.
  for (const auto& r : api::Api::routes()) {
    std::cout << boost::beast::http::to_string(r.method) << " " << r.pattern << "\n";
  }
  return 0;
}

}  // namespace kiln::daemon
