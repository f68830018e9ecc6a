#include "agent/modules.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "core/unique_fd.h"

namespace kiln::agent {

namespace fs = std::filesystem;

namespace {

std::vector<std::pair<std::string, std::string>> read_pairs(const fs::path& p) {
  std::vector<std::pair<std::string, std::string>> out;
  std::ifstream in(p);
  std::string a, b;
  while (in >> a >> b) out.emplace_back(a, b);
  return out;
}

std::vector<std::string> read_words(const fs::path& p) {
  std::vector<std::string> out;
  std::ifstream in(p);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::vector<std::string> scan_modaliases(const fs::path& sys) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& bus : fs::directory_iterator(sys / "bus", ec)) {
    std::error_code ec2;
    for (const auto& dev : fs::directory_iterator(bus.path() / "devices", ec2)) {
      std::ifstream in(dev.path() / "modalias");
      std::string line;
      if (std::getline(in, line) && !line.empty()) out.insert(line);
    }
  }
  return {out.begin(), out.end()};
}

}  // namespace

std::string module_name(const std::string& path) {
  std::string n = fs::path(path).filename().string();
  if (auto dot = n.find(".ko"); dot != std::string::npos) n.resize(dot);
  std::replace(n.begin(), n.end(), '-', '_');
  return n;
}

Result<ModuleIndex> read_module_index(const fs::path& dir) {
  ModuleIndex ix;
  ix.order = read_words(dir / "modules.list");
  if (ix.order.empty()) {
    return make_error(Errc::kNotFound, "no module list in " + (dir / "modules.list").string());
  }
  ix.alias = read_pairs(dir / "modules.alias");
  ix.deps = read_pairs(dir / "modules.deps");
  ix.always = read_words(dir / "modules.always");
  ix.kexec = read_words(dir / "modules.kexec");
  return ix;
}

std::vector<std::string> wanted_modules(const ModuleIndex& index,
                                        const std::vector<std::string>& modaliases) {
  std::set<std::string> want(index.always.begin(), index.always.end());
  for (const auto& [pattern, name] : index.alias) {
    if (want.count(name)) continue;
    for (const auto& a : modaliases) {
      if (::fnmatch(pattern.c_str(), a.c_str(), 0) == 0) {
        want.insert(name);
        break;
      }
    }
  }
  // Close over the dependencies.
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [name, dep] : index.deps) {
      if (want.count(name) && !want.count(dep)) grew = want.insert(dep).second || grew;
    }
  }
  return {want.begin(), want.end()};
}

namespace {

// Loads, in index order, the modules of `want` not in `done`; returns whether any loaded.
bool load_set(const ModuleIndex& index, const std::set<std::string>& want,
              const fs::path& modules_dir, std::set<std::string>& done, LoadReport& report) {
  bool loaded_any = false;
  for (const auto& path : index.order) {
    const auto name = module_name(path);
    if (!want.count(name) || done.count(name)) continue;
    done.insert(name);
    UniqueFd fd(::open((modules_dir / path).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      report.failed.push_back(name + ": " + std::strerror(errno));
      continue;
    }
    if (::syscall(SYS_finit_module, fd.get(), "", 0) != 0 && errno != EEXIST) {
      report.failed.push_back(name + ": " + std::strerror(errno));
      continue;
    }
    report.loaded.push_back(name);
    loaded_any = true;
  }
  return loaded_any;
}

}  // namespace

LoadReport coldplug(const ModuleIndex& index, const fs::path& modules_dir, const fs::path& sys) {
  LoadReport report;
  std::set<std::string> done;
  for (report.rounds = 1; report.rounds <= 5; ++report.rounds) {
    const auto want = wanted_modules(index, scan_modaliases(sys));
    if (!load_set(index, {want.begin(), want.end()}, modules_dir, done, report)) break;
  }
  return report;
}

LoadReport load_named(const ModuleIndex& index, const std::vector<std::string>& names,
                      const fs::path& modules_dir) {
  ModuleIndex just = index;
  just.alias.clear();
  just.always = names;
  LoadReport report;
  std::set<std::string> done;
  const auto want = wanted_modules(just, {});
  load_set(index, {want.begin(), want.end()}, modules_dir, done, report);
  report.rounds = 1;
  return report;
}

}  // namespace kiln::agent
