#include "agent/inventory.h"

#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace kiln::agent {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string read_trimmed(const fs::path& p) {
  std::ifstream in(p);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

json cpu(const fs::path& root) {
  std::ifstream in(root / "proc/cpuinfo");
  std::string line, model;
  int threads = 0;
  std::set<std::string> packages;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == '\t' || key.back() == ' ')) key.pop_back();
    std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "processor") ++threads;
    if (key == "model name" && model.empty()) model = value;
    if (key == "physical id") packages.insert(value);
  }
  return {{"model", model},
          {"threads", threads},
          {"sockets", std::max<std::size_t>(packages.size(), threads ? 1 : 0)}};
}

std::uint64_t mem_total(const fs::path& root) {
  std::ifstream in(root / "proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemTotal:") return kib * 1024;
  }
  return 0;
}

json disks(const fs::path& root) {
  json out = json::array();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root / "sys/block", ec)) {
    const std::string name = e.path().filename().string();
    bool skip = false;
    for (const char* p : {"loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"}) {
      if (name.rfind(p, 0) == 0) skip = true;
    }
    if (skip) continue;
    const auto sectors = read_trimmed(e.path() / "size");
    std::uint64_t bytes = 0;
    try {
      bytes = std::stoull(sectors) * 512;
    } catch (...) {
    }
    std::string serial = read_trimmed(e.path() / "device/serial");
    if (serial.empty()) serial = read_trimmed(e.path() / "serial");
    out.push_back({{"name", name},
                   {"path", "/dev/" + name},
                   {"size_bytes", bytes},
                   {"model", read_trimmed(e.path() / "device/model")},
                   {"serial", serial},
                   {"rotational", read_trimmed(e.path() / "queue/rotational") == "1"},
                   {"removable", read_trimmed(e.path() / "removable") == "1"},
                   {"logical_sector_bytes",
                    std::atoi(read_trimmed(e.path() / "queue/logical_block_size").c_str())}});
  }
  std::sort(out.begin(), out.end(),
            [](const json& a, const json& b) { return a["name"] < b["name"]; });
  return out;
}

json nics(const fs::path& root) {
  json out = json::array();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root / "sys/class/net", ec)) {
    const std::string name = e.path().filename().string();
    if (name == "lo") continue;
    // Physical NICs have a device/ link; bridges, tunnels and the like do not.
    if (!fs::exists(e.path() / "device", ec)) continue;
    std::string driver;
    auto link = fs::read_symlink(e.path() / "device/driver", ec);
    if (!ec) driver = link.filename().string();
    const std::string speed = read_trimmed(e.path() / "speed");
    out.push_back({{"name", name},
                   {"mac", read_trimmed(e.path() / "address")},
                   {"driver", driver},
                   {"operstate", read_trimmed(e.path() / "operstate")},
                   {"speed_mbps", std::atoi(speed.c_str())}});
  }
  std::sort(out.begin(), out.end(),
            [](const json& a, const json& b) { return a["name"] < b["name"]; });
  return out;
}

json dmi(const fs::path& root) {
  json out = json::object();
  for (const char* f : {"sys_vendor", "product_name", "product_serial", "product_uuid",
                        "board_vendor", "board_name", "bios_vendor", "bios_version"}) {
    auto v = read_trimmed(root / "sys/class/dmi/id" / f);
    if (!v.empty()) out[f] = v;
  }
  return out;
}

}  // namespace

json collect_inventory(const fs::path& root) {
  return {{"cpu", cpu(root)},
          {"memory_bytes", mem_total(root)},
          {"disks", disks(root)},
          {"nics", nics(root)},
          {"dmi", dmi(root)},
          {"firmware", fs::exists(root / "sys/firmware/efi") ? "uefi" : "bios"},
          {"kernel", read_trimmed(root / "proc/sys/kernel/osrelease")}};
}

}  // namespace kiln::agent
