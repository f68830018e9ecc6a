// kiln-agent: images this machine's disk with the deployment kilnd assigned to it, then
// reboots or kexecs into it. See agent/README.md and proto/openapi.yaml (agent routes).
// main chooses the job; the jobs are in agent/flows.h, the options in agent/options.h.
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "agent/flows.h"
#include "agent/http.h"
#include "agent/log.h"
#include "agent/options.h"

using namespace kiln::agent;

namespace {

// Pins the CA for https:// (--ca, else the initramfs's default file when present), before any
// connection or thread. An https server without a CA is refused here, before anything runs.
kiln::Status pin_ca(const Options& o) {
  const bool given = !o.ca_file.empty();
  const std::string path = given ? o.ca_file : kDefaultCaFile;
  if (given || ::access(path.c_str(), F_OK) == 0) {
    if (auto st = pin_ca_file(path); !st) return st;
    log_line("TLS: pinned CA " + path);
  }
  if (o.server.tls && pinned_ca_file().empty()) {
    return kiln::make_error(kiln::Errc::kInvalid,
                            "the server " + o.server.url + " is https but no CA is pinned: " +
                                "give --ca FILE, or bake one into the initramfs at " +
                                kDefaultCaFile + " (deploy/build-initramfs.sh --ca FILE)");
  }
  return kiln::ok_status();
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 2 && args[0] == "--load-modules") return run_load_modules(args[1]);
  try {
    auto options = parse_options(args, read_cmdline_file);
    if (!options) {
      log_line(options.error().message);
      std::fputs(usage_text(), stderr);
      return kExitUsage;
    }
    if (options->help) {
      std::fputs(usage_text(), stderr);
      return kExitOk;
    }
    if (auto st = pin_ca(*options); !st) {
      log_line(st.error().message);
      return kExitUsage;
    }
    return options->mode == Mode::kDiscover ? run_discovery(*options) : run_deploy(*options);
  } catch (const std::exception& e) {
    // Only reached outside a deployment (each flow catches its own): nothing to report to.
    log_line(std::string("unexpected error: ") + e.what());
    return kExitFailed;
  }
}
