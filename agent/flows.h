// agent/flows.h — the agent's jobs, each from parsed options to an exit code: deploy (a .kiln
// image from its signed manifest, or an external raw/compressed image streamed from its URL),
// discovery (post the inventory), and the initramfs's module coldplug.
//
// No exception escapes a deployment: once the agent holds its deployment token, anything thrown
// (by a library, an allocation, a worker thread) is caught once, reported to kilnd as a failed
// result naming the stage it happened in, and the agent exits kExitFailed.
#pragma once

#include <string>

#include "agent/options.h"

namespace kiln::agent {

inline constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2;

// Fetches the plan and writes the image it names onto `o.disk`, reporting progress and the
// result; then reboots or kexecs as `o.after` says. kExitUsage for a trust key that cannot be
// loaded or no key without --allow-unsigned (nothing is contacted then).
int run_deploy(const Options& o);

// Posts this machine's inventory, then reboots, powers off or returns as `o.after` says.
int run_discovery(const Options& o);

// `kiln-agent --load-modules DIR`: coldplug from the initramfs's module index (agent/modules.h).
int run_load_modules(const std::string& dir);

}  // namespace kiln::agent
