// kiln-agent: images this machine's disk with the deployment kilnd assigned to it, then
// reboots or kexecs into it. See agent/README.md and proto/openapi.yaml (agent routes).
#include <fcntl.h>
#include <linux/reboot.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "agent/deploy.h"
#include "agent/disk.h"
#include "agent/http.h"
#include "agent/inventory.h"
#include "agent/modules.h"
#include "agent/raw_stream.h"

using namespace kiln;
using namespace kiln::agent;
namespace img = kiln::proto::image;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2;

struct Options {
  std::string server, token, disk, after;
  bool discover = false;  // discovery mode: report the inventory, write nothing
  std::string mac;        // the MAC the machine PXE-booted with (discovery)
  std::vector<std::string> keys, mirrors;
  bool allow_unsigned = false;
  bool use_cmdline = false;
  std::string cmdline_path = "/proc/cmdline";
  DeployOptions deploy;
};

void log(const std::string& s) {
  std::fprintf(stderr, "kiln-agent: %s\n", s.c_str());
  std::fflush(stderr);
}

void usage() {
  std::fprintf(
      stderr,
      "usage: kiln-agent --server URL --token TOKEN --disk PATH|smallest|largest|serial=S\n"
      "                  [--trust-key PEM]... [--allow-unsigned] [--mirror URL]...\n"
      "                  [--after none|reboot|kexec] [--workers N] [--memory MiB]\n"
      "                  [--retries N] [--timeout-ms N] [--no-delta] [--cmdline [FILE]]\n"
      "       kiln-agent --discover --server URL --mac MAC [--after none|reboot|poweroff]\n"
      "       kiln-agent --load-modules DIR   (the initramfs's coldplug)\n"
      "With --cmdline the kernel command line supplies kiln.mode=deploy|discover,\n"
      "kiln.server=, kiln.token=, kiln.disk=, kiln.after=, kiln.mac=, kiln.mirror=\n"
      "(comma-separated), kiln.retries= and kiln.backoff_ms=. --discover posts this\n"
      "machine's inventory (CPU, memory, disks, NICs, DMI): a discovered machine becomes ready.\n");
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

bool parse_args(int argc, char** argv, Options& o) {
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw std::invalid_argument(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--server")
      o.server = need(i);
    else if (a == "--token")
      o.token = need(i);
    else if (a == "--disk")
      o.disk = need(i);
    else if (a == "--after")
      o.after = need(i);
    else if (a == "--discover")
      o.discover = true;
    else if (a == "--mac")
      o.mac = need(i);
    else if (a == "--trust-key")
      o.keys.push_back(need(i));
    else if (a == "--mirror")
      o.mirrors.push_back(need(i));
    else if (a == "--allow-unsigned")
      o.allow_unsigned = true;
    else if (a == "--workers")
      o.deploy.workers = std::stoi(need(i));
    else if (a == "--memory")
      o.deploy.memory_budget = std::stoull(need(i)) << 20;
    else if (a == "--retries")
      o.deploy.retries = std::stoi(need(i));
    else if (a == "--timeout-ms")
      o.deploy.timeout = std::chrono::milliseconds(std::stoi(need(i)));
    else if (a == "--backoff-ms")
      o.deploy.backoff = std::chrono::milliseconds(std::stoi(need(i)));
    else if (a == "--no-delta")
      o.deploy.delta = false;
    else if (a == "--cmdline") {
      o.use_cmdline = true;
      if (i + 1 < argc && argv[i + 1][0] != '-') o.cmdline_path = argv[++i];
    } else if (a == "-h" || a == "--help") {
      usage();
      std::exit(kExitOk);
    } else {
      throw std::invalid_argument("unknown argument '" + a + "'");
    }
  }
  if (o.use_cmdline) {
    std::ifstream in(o.cmdline_path);
    std::string line;
    std::getline(in, line);
    for (const auto& word : split(line, ' ')) {
      auto eq = word.find('=');
      if (eq == std::string::npos) continue;
      const auto k = word.substr(0, eq), v = word.substr(eq + 1);
      if (k == "kiln.server" && o.server.empty()) o.server = v;
      if (k == "kiln.token" && o.token.empty()) o.token = v;
      if (k == "kiln.disk" && o.disk.empty()) o.disk = v;
      if (k == "kiln.after" && o.after.empty()) o.after = v;
      if (k == "kiln.mirror" && o.mirrors.empty()) o.mirrors = split(v, ',');
      if (k == "kiln.mac" && o.mac.empty()) o.mac = v;
      if (k == "kiln.retries") o.deploy.retries = std::stoi(v);
      if (k == "kiln.backoff_ms") o.deploy.backoff = std::chrono::milliseconds(std::stoi(v));
      if (k == "kiln.mode" && v == "discover") o.discover = true;
    }
    if (o.after.empty()) o.after = "reboot";
  }
  if (o.after.empty()) o.after = "none";
  if (o.keys.empty() && ::access("/etc/kiln/trusted.pem", R_OK) == 0) {
    o.keys.push_back("/etc/kiln/trusted.pem");
  }
  if (o.discover) {
    if (o.server.empty() || o.mac.empty()) {
      throw std::invalid_argument("--discover needs --server and --mac");
    }
    if (o.after != "none" && o.after != "reboot" && o.after != "poweroff") {
      throw std::invalid_argument("after discovery, --after must be none, reboot or poweroff");
    }
    return true;
  }
  if (o.server.empty() || o.token.empty() || o.disk.empty()) {
    throw std::invalid_argument("--server, --token and --disk are required");
  }
  if (o.after != "none" && o.after != "reboot" && o.after != "kexec") {
    throw std::invalid_argument("--after must be none, reboot or kexec");
  }
  return true;
}

std::string unhex(const std::string& h) {
  std::string out;
  if (h.size() % 2) return out;
  for (std::size_t i = 0; i < h.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// The agent's calls to kilnd (plan, manifest, progress, result), retried across short outages.
class Server {
 public:
  Server(HttpUrl base, std::string token)
      : conn_(std::move(base), std::chrono::seconds(30)), token_(std::move(token)) {}

  Result<Reply> call(const std::string& method, const std::string& target,
                     const std::string& body = {}, int attempts = 10) {
    std::string last;
    for (int a = 0; a < attempts; ++a) {
      if (a) std::this_thread::sleep_for(std::chrono::milliseconds(std::min(200 << a, 5000)));
      auto r = conn_.request(method, target, token_, body);
      if (!r) {
        last = r.error().message;
        continue;
      }
      if (r->status >= 500) {
        last = target + ": HTTP " + std::to_string(r->status);
        continue;
      }
      return r;
    }
    return make_error(Errc::kUnavailable, last);
  }

  Status report(const json& body, bool final) {
    auto r = call("POST", final ? "/api/v1/agent/result" : "/api/v1/agent/progress", body.dump(),
                  final ? 10 : 1);
    if (!r) return r.error();
    if (r->status != 200)
      return make_error(Errc::kInvalid, "HTTP " + std::to_string(r->status) + ": " + r->body);
    return ok_status();
  }

 private:
  HttpConnection conn_;
  std::string token_;
};

int fail_deployment(Server& server, const std::string& stage, const std::string& reason,
                    const json& detail = json::object()) {
  log("FAILED (" + stage + "): " + reason);
  json body = {{"status", "failed"}, {"reason", reason}, {"stage", stage}};
  if (!detail.empty()) body["detail"] = detail;
  if (auto st = server.report(body, true); !st)
    log("could not report the failure: " + st.error().message);
  return kExitFailed;
}

std::string partition_path(const std::string& disk, int n) {
  const bool digit = !disk.empty() && std::isdigit(static_cast<unsigned char>(disk.back()));
  return disk + (digit ? "p" : "") + std::to_string(n);
}

// Loads the kernel named in the manifest's boot hints from the new root (mounted read-only)
// and reboots into it.
Status kexec_into(const img::Manifest& m, const std::string& disk) {
  if (!m.boot || m.boot->partition <= 0 || m.boot->kernel.empty()) {
    return make_error(Errc::kInvalid, "the image has no boot hints (partition, kernel) for kexec");
  }
  const std::string part = partition_path(disk, m.boot->partition);
  const std::string dir = "/run/kiln-newroot";
  ::mkdir("/run", 0755);
  ::mkdir(dir.c_str(), 0755);
  // The initramfs loads filesystem drivers only now (agent/modules.h), where they are needed.
  if (auto index = read_module_index("/etc/kiln")) {
    for (const auto& f : load_named(*index, index->kexec, "/lib/modules").failed) {
      log("module failed: " + f);
    }
  }
  bool mounted = false;
  for (const char* fs : {"ext4", "xfs", "btrfs", "vfat"}) {
    if (::mount(part.c_str(), dir.c_str(), fs, MS_RDONLY, nullptr) == 0) {
      mounted = true;
      break;
    }
  }
  if (!mounted) return make_error(Errc::kInternal, "cannot mount " + part + " read-only");
  const int kfd = ::open((dir + "/" + m.boot->kernel).c_str(), O_RDONLY | O_CLOEXEC);
  const int ifd = m.boot->initrd.empty()
                      ? -1
                      : ::open((dir + "/" + m.boot->initrd).c_str(), O_RDONLY | O_CLOEXEC);
  const std::string& cmd = m.boot->cmdline;
  long rc = -1;
  if (kfd >= 0) {
    rc = ::syscall(SYS_kexec_file_load, kfd, ifd, cmd.size() + 1, cmd.c_str(),
                   ifd < 0 ? 0x4UL /* KEXEC_FILE_NO_INITRAMFS */ : 0UL);
  }
  const int err = errno;
  if (kfd >= 0) ::close(kfd);
  if (ifd >= 0) ::close(ifd);
  ::umount(dir.c_str());
  if (rc != 0)
    return make_error(Errc::kInternal, std::string("kexec_file_load: ") + std::strerror(err));
  ::sync();
  ::reboot(LINUX_REBOOT_CMD_KEXEC);
  return make_error(Errc::kInternal, std::string("reboot(KEXEC): ") + std::strerror(errno));
}

// Progress reporting around a deploy function, and the result. Shared by both paths.
template <typename Fn>
int run_deploy(const Options& o, Server& server, const HttpUrl& base, std::uint64_t total,
               Clock::time_point started, DeployCounters& counters, Fn&& fn) {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  const auto write_start = Clock::now();
  auto progress_json = [&](const std::string& stage) {
    const double secs = std::chrono::duration<double>(Clock::now() - write_start).count();
    const double rate = secs > 0 ? static_cast<double>(counters.done) / secs : 0;
    json detail = {{"fetched_bytes", counters.fetched.load()},
                   {"written_bytes", counters.written.load()},
                   {"skipped_bytes", counters.skipped.load()},
                   {"zeroed_bytes", counters.zeroed.load()},
                   {"unmapped_bytes", counters.unmapped.load()},
                   {"hashed_bytes", counters.hashed.load()},
                   {"copied_bytes", counters.copied.load()},
                   {"retries", counters.retries.load()},
                   {"rate_bytes_per_s", static_cast<std::uint64_t>(rate)}};
    const std::uint64_t done = std::min<std::uint64_t>(counters.done, total);
    if (rate > 0)
      detail["eta_s"] = static_cast<std::uint64_t>(static_cast<double>(total - done) / rate);
    return json{{"stage", stage}, {"bytes_done", done}, {"bytes_total", total}, {"detail", detail}};
  };
  (void)server.report(progress_json("writing"), false);
  Server reporter_conn(base, o.token);
  std::thread reporter([&] {
    std::unique_lock lock(mu);
    while (!cv.wait_for(lock, std::chrono::seconds(1), [&] { return stop; })) {
      lock.unlock();
      auto body = progress_json("writing");
      if (auto st = reporter_conn.report(body, false); !st) {
        log("progress report failed: " + st.error().message);
      }
      log("writing: " + std::to_string(counters.done >> 20) + " of " + std::to_string(total >> 20) +
          " MiB, fetched " + std::to_string(counters.fetched >> 20) + " MiB, skipped " +
          std::to_string(counters.skipped >> 20) + " MiB");
      lock.lock();
    }
  });
  Result<DeployResult> res = fn();
  {
    std::lock_guard lock(mu);
    stop = true;
  }
  cv.notify_all();
  reporter.join();
  json final = progress_json(res ? "done" : "writing");
  if (!res) return fail_deployment(server, "writing", res.error().message, final["detail"]);
  const double total_s = std::chrono::duration<double>(Clock::now() - started).count();
  final["detail"]["timings_s"] = {{"invalidate", res->invalidate_s},
                                  {"write", res->write_s},
                                  {"commit", res->commit_s},
                                  {"total", total_s}};
  final["detail"]["workers"] = res->workers;
  final["detail"]["direct_io"] = res->direct;
  char line[256];
  std::snprintf(line, sizeof line,
                "done: %.1f MiB in %.2f s (%.0f MB/s); fetched %.1f MiB, skipped %.1f MiB, "
                "copied %.1f MiB, zeroed %.1f MiB, %llu retries, %d workers%s",
                static_cast<double>(total) / 1048576.0, res->write_s,
                res->write_s > 0 ? static_cast<double>(total) / res->write_s / 1e6 : 0.0,
                static_cast<double>(counters.fetched) / 1048576.0,
                static_cast<double>(counters.skipped) / 1048576.0,
                static_cast<double>(counters.copied) / 1048576.0,
                static_cast<double>(counters.zeroed) / 1048576.0,
                static_cast<unsigned long long>(counters.retries.load()), res->workers,
                res->direct ? ", O_DIRECT" : "");
  log(line);
  final["status"] = "succeeded";
  if (auto st = server.report(final, true); !st) {
    log("could not report the result: " + st.error().message);
    return kExitFailed;
  }
  return kExitOk;
}

// The compatibility path: an external raw image streamed from its URL.
int deploy_external(Options& o, Server& server, const json& image, const HttpUrl& base) {
  const auto started = Clock::now();
  RawSource src;
  src.format = image.value("format", "");
  src.url = image["source_url"].is_string() ? image["source_url"].get<std::string>() : "";
  src.sha256 = image.value("sha256", "");
  src.size = image.value("size_bytes", std::uint64_t{0});
  if (src.url.rfind("http://", 0) != 0) {
    return fail_deployment(server, "plan",
                           "external image URL '" + src.url +
                               "' is not http:// (https is not supported by the agent)");
  }
  auto disk_path = resolve_disk(o.disk);
  if (!disk_path) return fail_deployment(server, "preflight", disk_path.error().message);
  auto disk = Disk::open(*disk_path);
  if (!disk) return fail_deployment(server, "preflight", disk.error().message);
  if (disk->size() < src.size) {
    return fail_deployment(server, "preflight",
                           disk->path() + " holds " + std::to_string(disk->size()) +
                               " bytes; the image needs " + std::to_string(src.size));
  }
  log("streaming " + src.url + " (" + src.format + ", " + std::to_string(src.size) + " bytes)");
  o.deploy.on_retry = [](const std::string& why) { log("retrying " + why); };
  DeployCounters counters;
  int rc = run_deploy(o, server, base, src.size, started, counters,
                      [&] { return deploy_raw(src, *disk, o.deploy, counters); });
  if (rc != kExitOk || o.after == "none") return rc;
  if (o.after == "kexec")
    log("kexec needs boot hints, which external images do not carry; rebooting");
  ::sync();
  ::reboot(RB_AUTOBOOT);
  log(std::string("reboot: ") + std::strerror(errno));
  return kExitFailed;
}

// Discovery: post this machine's inventory, then reboot (its next PXE boot waits for an
// assignment) or power off.
int discover(const Options& o, const HttpUrl& base) {
  json inv = collect_inventory();
  log("discovery: " + std::to_string(inv["cpu"].value("threads", 0)) + " CPU threads, " +
      std::to_string(inv.value("memory_bytes", std::uint64_t{0}) >> 20) + " MiB, " +
      std::to_string(inv["disks"].size()) + " disks, " + std::to_string(inv["nics"].size()) +
      " NICs");
  Server server(base, "");
  auto r = server.call("POST", "/api/v1/agent/inventory",
                       json{{"mac", o.mac}, {"inventory", inv}}.dump());
  if (!r) {
    log("cannot post the inventory: " + r.error().message);
    return kExitFailed;
  }
  if (r->status != 200) {
    log("inventory refused: HTTP " + std::to_string(r->status) + " " + r->body);
    return kExitFailed;
  }
  log("DISCOVERED: inventory accepted for " + o.mac);
  if (o.after == "none") return kExitOk;
  ::sync();
  ::reboot(o.after == "poweroff" ? RB_POWER_OFF : RB_AUTOBOOT);
  log(std::string("reboot: ") + std::strerror(errno));
  return kExitFailed;
}

// `kiln-agent --load-modules DIR`: coldplug from the initramfs's module index (agent/modules.h).
int load_modules(const std::string& dir) {
  const auto started = Clock::now();
  auto index = read_module_index(dir);
  if (!index) {
    log(index.error().message);
    return kExitFailed;
  }
  const auto r = coldplug(*index, "/lib/modules");
  std::string names;
  for (const auto& n : r.loaded) names += (names.empty() ? "" : " ") + n;
  char took[32];
  std::snprintf(took, sizeof took, "%.2f",
                std::chrono::duration<double>(Clock::now() - started).count());
  log("modules: loaded " + std::to_string(r.loaded.size()) + " of " +
      std::to_string(index->order.size()) + " in " + took + " s (" + names + ")");
  for (const auto& f : r.failed) log("module failed: " + f);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--load-modules") return load_modules(argv[2]);
  Options o;
  try {
    parse_args(argc, argv, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-agent: %s\n", e.what());
    usage();
    return kExitUsage;
  }
  auto base = parse_agent_url(o.server);
  if (!base) {
    log(base.error().message);
    return kExitUsage;
  }
  if (o.discover) return discover(o, *base);
  std::vector<img::Key> trusted;
  for (const auto& k : o.keys) {
    auto key = img::Key::load_public(k);
    if (!key) {
      log(key.error().message);
      return kExitUsage;
    }
    trusted.push_back(std::move(*key));
  }
  if (trusted.empty() && !o.allow_unsigned) {
    log("no trusted key (--trust-key or /etc/kiln/trusted.pem); refusing to write unverifiable "
        "images (--allow-unsigned to accept them)");
    return kExitUsage;
  }
  Server server(*base, o.token);
  const auto started = Clock::now();

  // The plan.
  auto plan_reply = server.call("GET", "/api/v1/agent/deployment");
  if (!plan_reply) {
    log("cannot fetch the deployment plan: " + plan_reply.error().message);
    return kExitFailed;
  }
  if (plan_reply->status != 200) {
    log("deployment plan refused: HTTP " + std::to_string(plan_reply->status) + " " +
        plan_reply->body);
    return kExitFailed;
  }
  json plan = json::parse(plan_reply->body, nullptr, false);
  if (plan.is_discarded() || !plan.contains("image") || !plan["image"].is_object()) {
    return fail_deployment(server, "plan", "the deployment plan has no image");
  }
  const json& image = plan["image"];
  log("deployment " + std::to_string(plan.value("id", 0)) + ": " + image.value("name", "") + ":" +
      image.value("version", "") + " onto " + o.disk);
  if (image.value("format", "") != "kiln") return deploy_external(o, server, image, *base);
  if (!plan["manifest_url"].is_string()) {
    return fail_deployment(server, "plan", "the deployment plan has no manifest_url");
  }

  // The manifest, verified before anything is written.
  auto mreply = server.call("GET", plan["manifest_url"].get<std::string>());
  if (!mreply || mreply->status != 200) {
    return fail_deployment(
        server, "manifest",
        "cannot fetch the manifest: " +
            (mreply ? "HTTP " + std::to_string(mreply->status) : mreply.error().message));
  }
  const std::string sig = unhex(mreply->header("Kiln-Signature"));
  if (auto st = img::verify_signature(mreply->body, sig, trusted); !st) {
    return fail_deployment(server, "manifest", st.error().message);
  }
  auto manifest = img::parse_manifest(mreply->body);
  if (!manifest) return fail_deployment(server, "manifest", manifest.error().message);
  const auto& m = *manifest;
  if (m.name != image.value("name", "") || m.version != image.value("version", "") ||
      m.sha256 != image.value("sha256", "")) {
    return fail_deployment(server, "manifest",
                           "the manifest is not the deployment's image version");
  }

  // The previous version's manifest, if the server knows it: only a hint for local copies
  // (whatever is copied is checked against the new manifest's hashes).
  std::optional<img::Manifest> previous;
  if (plan.contains("previous_manifest_url") && plan["previous_manifest_url"].is_string()) {
    auto prev = server.call("GET", plan["previous_manifest_url"].get<std::string>(), {}, 2);
    if (prev && prev->status == 200) {
      if (auto pm = img::parse_manifest(prev->body)) previous = std::move(*pm);
    }
    if (!previous) log("previous manifest unavailable; deploying without local copies");
  }

  // The disk.
  auto disk_path = resolve_disk(o.disk);
  if (!disk_path) return fail_deployment(server, "preflight", disk_path.error().message);
  auto disk = Disk::open(*disk_path);
  if (!disk) return fail_deployment(server, "preflight", disk.error().message);
  if (auto st = preflight(m, *disk); !st)
    return fail_deployment(server, "preflight", st.error().message);

  // Deploy, reporting about once a second.
  o.deploy.on_retry = [](const std::string& why) { log("retrying " + why); };
  o.deploy.previous = previous ? &*previous : nullptr;
  o.deploy.chunk_bases = o.mirrors;
  o.deploy.chunk_bases.push_back(base->url);
  if (plan["chunks_url"].is_string()) o.deploy.chunks_path = plan["chunks_url"].get<std::string>();
  DeployCounters counters;
  const int rc = run_deploy(o, server, *base, m.size, started, counters,
                            [&] { return deploy(m, *disk, o.deploy, counters); });
  if (rc != kExitOk) return rc;
  if (o.after == "reboot") {
    ::sync();
    ::reboot(RB_AUTOBOOT);
    log(std::string("reboot: ") + std::strerror(errno));
    return kExitFailed;
  }
  if (o.after == "kexec") {
    auto st = kexec_into(m, *disk_path);
    log("kexec failed: " + st.error().message + "; rebooting instead");
    ::sync();
    ::reboot(RB_AUTOBOOT);
    return kExitFailed;
  }
  return kExitOk;
}
