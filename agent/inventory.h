// agent/inventory.h — what the discovery agent reports about the machine it runs on: CPU,
// memory, disks, NICs and the DMI identity, read from /proc and /sys (no external tools).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>

namespace kiln::agent {

// `root` is "/" on a machine; tests point it at a fake tree holding proc/ and sys/.
nlohmann::json collect_inventory(const std::filesystem::path& root = "/");

}  // namespace kiln::agent
