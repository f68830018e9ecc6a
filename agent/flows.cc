#include "agent/flows.h"

#include <sys/reboot.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "agent/api_client.h"
#include "agent/config_drive.h"
#include "agent/deploy.h"
#include "agent/disk.h"
#include "agent/inventory.h"
#include "agent/kexec.h"
#include "agent/log.h"
#include "agent/modules.h"
#include "agent/raw_stream.h"
#include "agent/sources.h"
#include "core/crypto.h"
#include "core/hex.h"

namespace kiln::agent {

namespace img = proto::image;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kDefaultTrustKey = "/etc/kiln/trusted.pem";

// Reports the deployment failed at `stage` (best effort: a report that cannot be delivered is
// logged) and returns the exit code for it.
// The instance block (docs/power.md): the deployed OS's credential for confirming its boot,
// left where a small hook in the image finds it without any partition of the image changing:
// 4 KiB at 64 KiB before the end of the disk, past the image (the last 64 KiB stay clear of a
// GPT backup header that an OS may move to the disk's end). Text: "KILN-INSTANCE 1\n", one line
// of JSON {"deployment_id","token","url"}, then zero bytes. Rewritten by every deployment.
constexpr std::uint64_t kInstanceBlockBack = 64 * 1024;
constexpr std::size_t kInstanceBlockSize = 4096;

Status write_instance_block(const Disk& disk, std::uint64_t image_size, const Plan& plan,
                            const std::string& base_url) {
  if (disk.size() < kInstanceBlockBack ||
      disk.size() - kInstanceBlockBack < (image_size + 4095) / 4096 * 4096) {
    return make_error(Errc::kInvalid, "no room for the instance block: the image fills " +
                                          disk.path() + " to less than 64 KiB from its end");
  }
  const std::uint64_t at = (disk.size() - kInstanceBlockBack) / 4096 * 4096;
  json j = {{"deployment_id", plan.deployment.id},
            {"token", plan.instance_token},
            {"url", plan.instance_url.empty() ? base_url : plan.instance_url}};
  std::string text = "KILN-INSTANCE 1\n" + j.dump() + "\n";
  if (text.size() > kInstanceBlockSize)
    return make_error(Errc::kInvalid, "instance block too large");
  AlignedBuffer buf(kInstanceBlockSize);
  std::memset(buf.data(), 0, kInstanceBlockSize);
  std::memcpy(buf.data(), text.data(), text.size());
  if (auto st = disk.write(at, buf.data(), kInstanceBlockSize); !st) return st;
  return disk.flush();
}

// A config drive built and placed before anything is written (agent/config_drive.h).
struct PreparedDrive {
  std::uint64_t offset = 0;
  std::string fat;
};

// The config drive's room and contents, checked in preflight: a drive that cannot be written
// fails the deployment before the image touches the disk.
Result<PreparedDrive> prepare_drive(const ConfigDrive& cd, const Disk& disk,
                                    std::uint64_t image_size, std::int64_t deployment_id) {
  auto offset = config_drive_offset(image_size, disk.size());
  if (!offset) return offset.error();
  auto fat = prepare_config_drive(cd, disk, *offset, deployment_id);
  if (!fat) return fat.error();
  return PreparedDrive{*offset, std::move(*fat)};
}

// Writes a prepared drive and its partition entry; the success report's detail for it.
Result<json> finish_drive(const Disk& disk, const PreparedDrive& drive,
                          std::int64_t deployment_id) {
  auto r = write_config_drive(disk, drive.fat, drive.offset, deployment_id);
  if (!r) return r.error();
  log_line("config drive written: " + std::to_string(r->size >> 20) + " MiB at offset " +
           std::to_string(r->offset) + ", " + r->edit.table + " partition " +
           std::to_string(r->edit.partition));
  return json{{"offset", r->offset},
              {"size", r->size},
              {"partition", r->edit.partition},
              {"table", r->edit.table}};
}

int fail_deployment(ApiClient& api, const std::string& stage, const std::string& reason,
                    const json& detail = json::object()) {
  log_line("FAILED (" + stage + "): " + reason);
  proto::AgentReport r;
  r.stage = stage;
  r.result = proto::DeploymentStatus::kFailed;
  r.reason = reason;
  r.detail = detail;
  if (auto st = api.report(r); !st) log_line("could not report the failure: " + st.error().message);
  return kExitFailed;
}

// Reboots (or powers off); returns only if the kernel refused.
int reboot_now(int how) {
  ::sync();
  ::reboot(how);
  log_line(std::string("reboot: ") + std::strerror(errno));
  return kExitFailed;
}

// Posts progress about once a second from its own thread (and its own connection) while the
// image is written; stopped and joined by stop() or the destructor, so an exception in the
// writing thread never leaves it running.
class ProgressReporter {
 public:
  using Snapshot = std::function<proto::AgentReport()>;
  ProgressReporter(const ApiClient& main, Snapshot snapshot, std::function<std::string()> log_text)
      : api_(main.servers(), main.token(), main.current()),
        snapshot_(std::move(snapshot)),
        log_text_(std::move(log_text)),
        thread_([this] { loop(); }) {}
  ~ProgressReporter() { stop(); }
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

  void stop() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void loop() {
    try {
      std::unique_lock lock(mu_);
      while (!cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_; })) {
        lock.unlock();
        if (auto st = api_.report(snapshot_()); !st) {
          log_line("progress report failed: " + st.error().message);
        }
        log_line(log_text_());
        lock.lock();
      }
    } catch (const std::exception& e) {
      log_line(std::string("progress reporting stopped: ") + e.what());
    }
  }

  ApiClient api_;
  Snapshot snapshot_;
  std::function<std::string()> log_text_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once everything above is in place
};

// Progress reporting around a write function, and the result with its proof (`proof` names
// what was verified; the byte counts are filled in here). Shared by both image paths.
// `drive`, when set, runs after the image is written: its failure fails the deployment at
// stage "config-drive", its success goes into the report's detail as "config_drive".
template <typename Fn>
int write_and_report(ApiClient& api, std::uint64_t total, Clock::time_point started,
                     DeployCounters& counters, proto::SuccessProof proof, Fn&& fn,
                     const bool* instance_block, const std::function<Result<json>()>& drive) {
  const auto write_start = Clock::now();
  auto progress = [&](const std::string& stage) {
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
    proto::AgentReport r;
    r.stage = stage;
    r.bytes_done = static_cast<std::int64_t>(done);
    r.bytes_total = static_cast<std::int64_t>(total);
    r.detail = std::move(detail);
    return r;
  };
  (void)api.report(progress("writing"));
  Result<DeployResult> res = make_error(Errc::kInternal, "not run");
  {
    ProgressReporter reporter(
        api, [&] { return progress("writing"); },
        [&] {
          return "writing: " + std::to_string(counters.done >> 20) + " of " +
                 std::to_string(total >> 20) + " MiB, fetched " +
                 std::to_string(counters.fetched >> 20) + " MiB, skipped " +
                 std::to_string(counters.skipped >> 20) + " MiB";
        });
    res = fn();
  }
  proto::AgentReport final = progress(res ? "done" : "writing");
  if (!res) return fail_deployment(api, "writing", res.error().message, final.detail);
  if (drive) {
    auto d = drive();
    if (!d) {
      return fail_deployment(api, "config-drive",
                             d.error().message + " (the machine would boot without its identity)",
                             final.detail);
    }
    final.detail["config_drive"] = std::move(*d);
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - started).count();
  final.detail["timings_s"] = {{"invalidate", res->invalidate_s},
                               {"write", res->write_s},
                               {"commit", res->commit_s},
                               {"total", total_s}};
  final.detail["workers"] = res->workers;
  final.detail["direct_io"] = res->direct;
  // Whether the OS will find its instance credential: kilnd watches the boot deadline only then.
  if (instance_block) final.detail["instance_block"] = *instance_block;
  char line[320];
  std::snprintf(line, sizeof line,
                "done: %.1f MiB in %.2f s (%.0f MB/s); fetched %.1f MiB, skipped %.1f MiB, "
                "copied %.1f MiB, zeroed %.1f MiB (%.1f MiB already zero), read back %.1f MiB, "
                "%llu retries, %d workers%s",
                static_cast<double>(total) / 1048576.0, res->write_s,
                res->write_s > 0 ? static_cast<double>(total) / res->write_s / 1e6 : 0.0,
                static_cast<double>(counters.fetched) / 1048576.0,
                static_cast<double>(counters.skipped) / 1048576.0,
                static_cast<double>(counters.copied) / 1048576.0,
                static_cast<double>(counters.zeroed) / 1048576.0,
                static_cast<double>(counters.zero_kept) / 1048576.0,
                static_cast<double>(counters.hashed) / 1048576.0,
                static_cast<unsigned long long>(counters.retries.load()), res->workers,
                res->direct ? ", O_DIRECT" : "");
  log_line(line);
  final.result = proto::DeploymentStatus::kSucceeded;
  auto as_int = [](std::uint64_t v) { return static_cast<std::int64_t>(v); };
  proof.image_bytes = as_int(total);
  proof.written_bytes = as_int(counters.written);
  proof.skipped_bytes = as_int(counters.skipped);
  proof.zeroed_bytes = as_int(counters.zeroed);
  proof.unmapped_bytes = as_int(counters.unmapped);
  final.proof = std::move(proof);
  if (auto st = api.report(final); !st) {
    log_line("could not report the result: " + st.error().message);
    return kExitFailed;
  }
  return kExitOk;
}

// The step that writes `drive` (none without one).
std::function<Result<json>()> drive_step(const Disk& disk,
                                         const std::optional<PreparedDrive>& drive,
                                         const Plan& plan) {
  if (!drive) return {};
  return [&disk, &drive, &plan] { return finish_drive(disk, *drive, plan.deployment.id); };
}

DeployOptions deploy_options(const Options& o) {
  DeployOptions d = o.deploy;
  d.on_retry = [](const std::string& why) { log_line("retrying " + why); };
  d.on_source = [](const std::string& what) { log_line(what); };
  return d;
}

// The compatibility path: an external raw image streamed from its URL.
int deploy_external(const Options& o, ApiClient& api, const Plan& plan,
                    const std::vector<img::Key>& trusted, std::string& stage,
                    Clock::time_point started) {
  const proto::ImageVersion& image = plan.image;
  // Signed-only: with a trusted key, the plan's URL, hash, size and format must carry a
  // signature by it (the plan itself comes from a server we may not trust that far).
  if (!trusted.empty()) {
    const auto sig = hex_decode(image.signature.value_or(""));
    const std::string message =
        img::external_signing_message(image.name, image.version, image.source_url.value_or(""),
                                      image.sha256, image.size_bytes, image.format);
    bool ok = false;
    for (const auto& k : trusted) ok = ok || (sig && !sig->empty() && k.verify(message, *sig));
    if (!ok) {
      return fail_deployment(api, stage,
                             image.signature ? "the external image's signature does not verify "
                                               "against any trusted key"
                                             : "the external image is unsigned and a trusted key "
                                               "is configured (kiln image register --sign)");
    }
  }
  RawSource src;
  src.format = image.format;
  src.url = image.source_url.value_or("");
  src.sha256 = image.sha256;
  src.size = static_cast<std::uint64_t>(std::max<std::int64_t>(image.size_bytes, 0));
  if (src.url.rfind("http://", 0) != 0) {
    return fail_deployment(api, stage,
                           "external image URL '" + src.url +
                               "' is not http:// (https is not supported by the agent)");
  }
  stage = "preflight";
  auto disk_path = resolve_disk(o.disk);
  if (!disk_path) return fail_deployment(api, stage, disk_path.error().message);
  auto disk = Disk::open(*disk_path);
  if (!disk) return fail_deployment(api, stage, disk.error().message);
  if (disk->size() < src.size) {
    return fail_deployment(api, stage,
                           disk->path() + " holds " + std::to_string(disk->size()) +
                               " bytes; the image needs " + std::to_string(src.size));
  }
  std::optional<PreparedDrive> drive;
  if (plan.config_drive) {
    auto p = prepare_drive(*plan.config_drive, *disk, src.size, plan.deployment.id);
    if (!p)
      return fail_deployment(api, "config-drive", p.error().message + "; nothing was written");
    drive = std::move(*p);
  }
  stage = "writing";
  log_line("streaming " + src.url + " (" + src.format + ", " + std::to_string(src.size) +
           " bytes)");
  const DeployOptions d = deploy_options(o);
  DeployCounters counters;
  proto::SuccessProof proof;
  proof.image_sha256 = src.sha256;  // deploy_raw fails unless the stream hashes to it
  bool instance_written = false;
  const int rc = write_and_report(
      api, src.size, started, counters, std::move(proof),
      [&] {
        auto res = deploy_raw(src, *disk, d, counters);
        if (res && !plan.instance_token.empty()) {
          auto st = write_instance_block(*disk, src.size, plan, api.base().url);
          instance_written = st.ok();
          if (!st) log_line("WARNING: " + st.error().message);
        }
        return res;
      },
      &instance_written, drive_step(*disk, drive, plan));
  if (rc != kExitOk || o.after == After::kNone) return rc;
  if (o.after == After::kKexec)
    log_line("kexec needs boot hints, which external images do not carry; rebooting");
  return reboot_now(RB_AUTOBOOT);
}

// A .kiln image: its manifest verified before anything is written, then chunk by chunk.
int deploy_kiln(const Options& o, ApiClient& api, const Plan& plan,
                const std::vector<img::Key>& trusted, std::string& stage,
                Clock::time_point started) {
  const proto::ImageVersion& image = plan.image;
  if (!plan.manifest_url) {
    return fail_deployment(api, stage, "the deployment plan has no manifest_url");
  }
  stage = "manifest";
  auto signed_manifest = api.manifest(*plan.manifest_url);
  if (!signed_manifest) return fail_deployment(api, stage, signed_manifest.error().message);
  if (auto st = img::verify_signature(signed_manifest->body, signed_manifest->signature, trusted);
      !st) {
    return fail_deployment(api, stage, st.error().message);
  }
  auto manifest = img::parse_manifest(signed_manifest->body);
  if (!manifest) return fail_deployment(api, stage, manifest.error().message);
  const auto& m = *manifest;
  if (m.name != image.name || m.version != image.version || m.sha256 != image.sha256) {
    return fail_deployment(api, stage, "the manifest is not the deployment's image version");
  }

  // The previous version's manifest, if the server knows it: only a hint for local copies
  // (whatever is copied is checked against the new manifest's hashes).
  std::optional<img::Manifest> previous;
  if (plan.previous_manifest_url) {
    if (auto body = api.previous_manifest(*plan.previous_manifest_url)) {
      if (auto pm = img::parse_manifest(*body)) previous = std::move(*pm);
    }
    if (!previous) log_line("previous manifest unavailable; deploying without local copies");
  }

  stage = "preflight";
  auto disk_path = resolve_disk(o.disk);
  if (!disk_path) return fail_deployment(api, stage, disk_path.error().message);
  auto disk = Disk::open(*disk_path);
  if (!disk) return fail_deployment(api, stage, disk.error().message);
  if (auto st = preflight(m, *disk); !st) return fail_deployment(api, stage, st.error().message);
  std::optional<PreparedDrive> drive;
  if (plan.config_drive) {
    auto p = prepare_drive(*plan.config_drive, *disk, m.size, plan.deployment.id);
    if (!p)
      return fail_deployment(api, "config-drive", p.error().message + "; nothing was written");
    drive = std::move(*p);
  }

  // Deploy, reporting about once a second.
  stage = "writing";
  DeployOptions d = deploy_options(o);
  d.previous = previous ? &*previous : nullptr;
  std::vector<std::string> dropped;
  const auto mirrors = merge_mirrors(o.mirrors, plan.mirrors, dropped);
  for (const auto& m : dropped) log_line("the plan's mirror '" + m + "' is not a URL; not used");
  if (!plan.mirrors.empty() && !plan.chunks_require_token) {
    std::string list;
    for (const auto& m : mirrors) list += " " + m;
    log_line("chunk mirrors (then the server):" + list);
  }
  auto sources = chunk_sources(mirrors, api.base(), plan.chunks_url);
  if (!sources) return fail_deployment(api, stage, sources.error().message);
  d.chunk_bases = std::move(sources->bases);
  d.chunks_path = std::move(sources->path);
  if (plan.chunks_require_token) {
    // Private chunks: the session token goes to kilnd only, never to a mirror.
    if (!mirrors.empty()) log_line("private chunks: mirrors are not used");
    d.chunk_bases = {api.base().url};
    d.chunk_token = api.token();
  }
  // A cluster: the other kilnd instances serve the same chunks (fetched from each other).
  for (const auto& s : api.servers()) {
    if (std::find(d.chunk_bases.begin(), d.chunk_bases.end(), s.url) == d.chunk_bases.end()) {
      d.chunk_bases.push_back(s.url);
    }
  }
  DeployCounters counters;
  proto::SuccessProof proof;
  proof.manifest_sha256 = sha256_hex(signed_manifest->body);
  // The instance block is on the disk before the success is reported.
  bool instance_written = false;
  const int rc = write_and_report(
      api, m.size, started, counters, std::move(proof),
      [&] {
        auto res = deploy(m, *disk, d, counters);
        if (res && !plan.instance_token.empty()) {
          auto st = write_instance_block(*disk, m.size, plan, api.base().url);
          instance_written = st.ok();
          log_line(st ? "instance block written (the OS confirms its boot with it)"
                      : "WARNING: " + st.error().message + ": the OS cannot confirm its boot");
        }
        return res;
      },
      &instance_written, drive_step(*disk, drive, plan));
  if (rc != kExitOk) return rc;
  stage = "done";
  if (o.after == After::kReboot) return reboot_now(RB_AUTOBOOT);
  if (o.after == After::kKexec) {
    auto st = kexec_into(m, *disk_path);
    log_line("kexec failed: " + st.error().message + "; rebooting instead");
    return reboot_now(RB_AUTOBOOT);
  }
  return kExitOk;
}

// The plan, then the path its image takes. `stage` follows the work, for the failure report
// of whatever might be thrown.
int deploy_flow(const Options& o, ApiClient& api, const std::vector<img::Key>& trusted,
                std::string& stage) {
  const auto started = Clock::now();
  auto plan = api.plan();
  if (!plan) {
    // Nothing to report against when kilnd is unreachable or refuses the token.
    if (plan.error().code != Errc::kInvalid) {
      log_line(plan.error().message);
      return kExitFailed;
    }
    return fail_deployment(api, stage, plan.error().message);
  }
  if (!plan->servers.empty()) {
    for (const auto& bad : api.add_servers(plan->servers)) {
      log_line("the plan's server '" + bad + "' is not usable; not used");
    }
    if (api.servers().size() > 1) {
      std::string list;
      for (const auto& s : api.servers()) list += " " + s.url;
      log_line("kilnd servers (in order of fallback):" + list);
    }
  }
  const proto::ImageVersion& image = plan->image;
  log_line("deployment " + std::to_string(plan->deployment.id) + ": " + image.name + ":" +
           image.version + " onto " + o.disk);
  if (image.format != "kiln") return deploy_external(o, api, *plan, trusted, stage, started);
  return deploy_kiln(o, api, *plan, trusted, stage, started);
}

}  // namespace

int run_deploy(const Options& o) {
  std::vector<std::string> key_paths = o.trust_keys;
  if (key_paths.empty() && ::access(kDefaultTrustKey, R_OK) == 0) {
    key_paths.push_back(kDefaultTrustKey);
  }
  std::vector<img::Key> trusted;
  for (const auto& k : key_paths) {
    auto key = img::Key::load_public(k);
    if (!key) {
      log_line(key.error().message);
      return kExitUsage;
    }
    trusted.push_back(std::move(*key));
  }
  if (trusted.empty() && !o.allow_unsigned) {
    log_line(
        "no trusted key (--trust-key or /etc/kiln/trusted.pem); refusing to write unverifiable "
        "images (--allow-unsigned to accept them)");
    return kExitUsage;
  }
  std::vector<HttpUrl> servers{o.server};
  servers.insert(servers.end(), o.fallback_servers.begin(), o.fallback_servers.end());
  ApiClient api(std::move(servers), "");
  if (auto st = api.open_session(o.ticket); !st) {
    // Nothing to report against without a session: kilnd recorded the refusal itself.
    log_line(st.error().message);
    return kExitFailed;
  }
  std::string stage = "plan";
  // The one catch of a deployment: whatever was thrown becomes its failed result.
  try {
    return deploy_flow(o, api, trusted, stage);
  } catch (const std::exception& e) {
    return fail_deployment(api, stage, std::string("unexpected error: ") + e.what());
  } catch (...) {
    return fail_deployment(api, stage, "unexpected error (not a std::exception)");
  }
}

int run_discovery(const Options& o) {
  try {
    json inv = collect_inventory();
    log_line("discovery: " + std::to_string(inv["cpu"].value("threads", 0)) + " CPU threads, " +
             std::to_string(inv.value("memory_bytes", std::uint64_t{0}) >> 20) + " MiB, " +
             std::to_string(inv["disks"].size()) + " disks, " + std::to_string(inv["nics"].size()) +
             " NICs");
    std::vector<HttpUrl> servers{o.server};
    servers.insert(servers.end(), o.fallback_servers.begin(), o.fallback_servers.end());
    ApiClient api(std::move(servers), "");
    if (auto st = api.post_inventory(o.mac, inv); !st) {
      log_line(st.error().message);
      return kExitFailed;
    }
  } catch (const std::exception& e) {
    log_line(std::string("discovery failed: ") + e.what());
    return kExitFailed;
  }
  log_line("DISCOVERED: inventory accepted for " + o.mac);
  if (o.after == After::kNone) return kExitOk;
  return reboot_now(o.after == After::kPoweroff ? RB_POWER_OFF : RB_AUTOBOOT);
}

int run_load_modules(const std::string& dir) {
  const auto started = Clock::now();
  auto index = read_module_index(dir);
  if (!index) {
    log_line(index.error().message);
    return kExitFailed;
  }
  const auto r = coldplug(*index, "/lib/modules");
  std::string names;
  for (const auto& n : r.loaded) names += (names.empty() ? "" : " ") + n;
  char took[32];
  std::snprintf(took, sizeof took, "%.2f",
                std::chrono::duration<double>(Clock::now() - started).count());
  log_line("modules: loaded " + std::to_string(r.loaded.size()) + " of " +
           std::to_string(index->order.size()) + " in " + took + " s (" + names + ")");
  for (const auto& f : r.failed) log_line("module failed: " + f);
  return kExitOk;
}

}  // namespace kiln::agent
