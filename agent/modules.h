// agent/modules.h — loads the kernel modules this machine's hardware needs, as udev's coldplug
// would, from what deploy/build-initramfs.sh packed: every device's modalias under /sys/bus is
// matched (fnmatch) against the packed modules' alias patterns, and the matching modules, their
// dependencies and the always-wanted ones (filesystems for kexec) are loaded in dependency
// order with finit_module(2). Filesystems wait until kexec needs them. Bus drivers reveal new
// devices (virtio_pci makes virtio devices appear), so matching repeats until nothing new is
// wanted.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/result.h"

namespace kiln::agent {

struct ModuleIndex {
  std::vector<std::string> order;                          // paths, dependencies first
  std::vector<std::pair<std::string, std::string>> alias;  // pattern, module name
  std::vector<std::pair<std::string, std::string>> deps;   // module name, one dependency
  std::vector<std::string> always;                         // module names loaded regardless
  std::vector<std::string> kexec;  // filesystems loaded only before kexec mounts the new root
};

// Reads <dir>/modules.list, modules.alias ("pattern name"), modules.deps ("name dep"),
// modules.always and modules.kexec (names) as written by the builder.
Result<ModuleIndex> read_module_index(const std::filesystem::path& dir);

// The module name of a path: "kernel/drivers/net/virtio_net.ko" -> "virtio_net" ('-' -> '_').
std::string module_name(const std::string& path);

// The names `index` wants for these modaliases (with dependencies, closed), in no order.
std::vector<std::string> wanted_modules(const ModuleIndex& index,
                                        const std::vector<std::string>& modaliases);

struct LoadReport {
  std::vector<std::string> loaded;
  std::vector<std::string> failed;  // "name: error"
  int rounds = 0;
};

// Coldplug: scans `sys`/bus/*/devices/*/modalias, loads what is wanted from `modules_dir`,
// repeats (at most 5 rounds) while new modules are wanted.
LoadReport coldplug(const ModuleIndex& index, const std::filesystem::path& modules_dir,
                    const std::filesystem::path& sys = "/sys");

// Loads the named modules and their dependencies (e.g. filesystems, only when kexec needs to
// read the new root).
LoadReport load_named(const ModuleIndex& index, const std::vector<std::string>& names,
                      const std::filesystem::path& modules_dir);

}  // namespace kiln::agent
