// agent/options.h — what the agent was asked to do: its command line and, with --cmdline, the
// kernel command line's kiln.* keys, parsed into one value. Parsing never throws and never
// exits: a missing value, an unknown flag, a number that is not one or is out of range, or a
// combination that cannot run is an Error whose message names the flag or key (main prints it
// with the usage and exits 2).
//
// Precedence (unchanged from the agent before options had a file of their own):
//   - kiln.server, kiln.ticket, kiln.disk, kiln.after and kiln.mac fill only what the flags left
//     empty; kiln.mirror only when no --mirror was given (the first occurrence of a key wins);
//   - kiln.retries and kiln.backoff_ms override --retries and --backoff-ms (the last one wins);
//   - kiln.mode=discover switches to discovery; kiln.mode=deploy changes nothing;
//   - other kiln.* keys (kiln.fail_pause, kiln.debug, read by the initramfs's /init) and every
//     other word are ignored; there is deliberately no kiln.ca: the command line travels
//     unauthenticated, the CA comes only from --ca or the initramfs (kDefaultCaFile);
//   - --after defaults to reboot with --cmdline, to none without.
// Numeric ranges: --workers 0-1024 (0: from the cores and the memory budget), --memory 1-1048576
// MiB, --retries and kiln.retries 0-1000, --timeout-ms 1-3600000, --backoff-ms and
// kiln.backoff_ms 0-600000.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "agent/deploy.h"
#include "core/result.h"
#include "core/url.h"

namespace kiln::agent {

enum class Mode { kDeploy, kDiscover };

// The CA pinned for https:// when --ca is not given and this file exists (baked into the
// initramfs by deploy/build-initramfs.sh --ca).
inline constexpr const char* kDefaultCaFile = "/etc/kiln/ca.pem";
// What the agent does once its work is done.
enum class After { kNone, kReboot, kKexec, kPoweroff };

struct Options {
  bool help = false;  // -h/--help: print the usage, nothing else is parsed
  Mode mode = Mode::kDeploy;
  HttpUrl server;  // --server / kiln.server, http:// or https://
  // Further kilnd instances of a cluster, tried in order when `server` does not answer: a
  // repeated --server, or kiln.server=URL1,URL2,... (the first is `server`).
  std::vector<HttpUrl> fallback_servers;
  std::string ca_file;                  // --ca: the CA https:// servers must chain to ("": the
                                        // default file, when it exists)
  std::string ticket;                   // --ticket / kiln.ticket (deploy): opens the session
  std::string disk;                     // --disk / kiln.disk: a path, smallest, largest, serial=S
  std::string mac;                      // --mac / kiln.mac (discovery)
  After after = After::kNone;           // --after / kiln.after
  std::vector<std::string> trust_keys;  // --trust-key PEM paths, in order
  std::vector<std::string> mirrors;     // --mirror / kiln.mirror=a,b: chunk URLs tried first
  bool allow_unsigned = false;
  bool use_cmdline = false;                    // --cmdline [FILE]
  std::string cmdline_path = "/proc/cmdline";  // FILE, when given
  DeployOptions deploy;  // workers, memory_budget, retries, timeout, backoff, delta
};

// Reads the kernel command line from `path` (main passes a reader of the file; tests pass
// text). Called at most once, and only when --cmdline is given.
using CmdlineReader = std::function<Result<std::string>(const std::string& path)>;

// Parses `args` (argv without the program name) and, with --cmdline, the first line of what
// `read_cmdline` returns. `args` never contains --load-modules (main handles that first).
Result<Options> parse_options(const std::vector<std::string>& args,
                              const CmdlineReader& read_cmdline);

// The reader main uses: the whole file (an error names the path and errno's text).
Result<std::string> read_cmdline_file(const std::string& path);

// The usage text printed with -h and after a usage error.
const char* usage_text();

}  // namespace kiln::agent
