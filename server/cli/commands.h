// cli/commands.h — the `kiln` command line: parses arguments, calls kilnd's REST API through a
// Client, and prints the result as a table or summary (or the raw JSON with --json).
//
// Exit codes are part of the contract (scripts rely on them):
//   0  success
//   1  the API refused the request; stderr has "kiln: <message> (HTTP <status> <code>)"
//   2  usage error (bad flags, bad label or selector syntax, bad config) or the server could
//      not be reached (the message names the URL)
#pragma once

#include <ostream>

#include "cli/config.h"

namespace kiln::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitApiError = 1;
inline constexpr int kExitUsage = 2;

// Runs one `kiln` invocation. Results go to `out`, diagnostics to `err`; returns the exit code.
// Blocks for the duration of the command (with --follow, until the process is interrupted).
int run(int argc, const char* const* argv, const Environment& env, std::ostream& out,
        std::ostream& err);

}  // namespace kiln::cli
