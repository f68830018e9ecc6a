// kiln-agent: images this machine's disk with the deployment kilnd assigned to it, then
// reboots or kexecs into it. See agent/README.md and proto/openapi.yaml (agent routes).
// main chooses the job; the jobs are in agent/flows.h, the options in agent/options.h.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "agent/flows.h"
#include "agent/log.h"
#include "agent/options.h"

using namespace kiln::agent;

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
    return options->mode == Mode::kDiscover ? run_discovery(*options) : run_deploy(*options);
  } catch (const std::exception& e) {
    // Only reached outside a deployment (each flow catches its own): nothing to report to.
    log_line(std::string("unexpected error: ") + e.what());
    return kExitFailed;
  }
}
