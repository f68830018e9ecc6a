// agent/log.h — the agent's one log sink: "kiln-agent: <line>" on stderr, flushed at once (the
// initramfs's console and the tests read it as it happens; the QEMU lab greps its lines).
// Thread-safe as stdio is: one line per call.
#pragma once

#include <cstdio>
#include <string_view>

namespace kiln::agent {

inline void log_line(std::string_view line) {
  std::fprintf(stderr, "kiln-agent: %.*s\n", static_cast<int>(line.size()), line.data());
  std::fflush(stderr);
}

}  // namespace kiln::agent
