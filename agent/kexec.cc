#include "agent/kexec.h"

#include <fcntl.h>
#include <linux/reboot.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "agent/log.h"
#include "agent/modules.h"
#include "core/unique_fd.h"

namespace kiln::agent {

std::string partition_path(const std::string& disk, int n) {
  const bool digit = !disk.empty() && std::isdigit(static_cast<unsigned char>(disk.back()));
  return disk + (digit ? "p" : "") + std::to_string(n);
}

Status kexec_into(const proto::image::Manifest& m, const std::string& disk) {
  if (!m.boot || m.boot->partition <= 0 || m.boot->kernel.empty()) {
    return make_error(Errc::kInvalid, "the image has no boot hints (partition, kernel) for kexec");
  }
  const std::string part = partition_path(disk, m.boot->partition);
  const std::string dir = "/run/kiln-newroot";
  ::mkdir("/run", 0755);
  ::mkdir(dir.c_str(), 0755);
  // The initramfs loads filesystem drivers only now (agent/modules.h), where they are needed.
  if (auto index = read_module_index("/etc/kiln")) {
    for (const auto& f : load_named(*index, index->kexec, "/lib/modules").failed) {
      log_line("module failed: " + f);
    }
  }
  bool mounted = false;
  for (const char* fs : {"ext4", "xfs", "btrfs", "vfat"}) {
    if (::mount(part.c_str(), dir.c_str(), fs, MS_RDONLY, nullptr) == 0) {
      mounted = true;
      break;
    }
  }
  if (!mounted) return make_error(Errc::kInternal, "cannot mount " + part + " read-only");
  long rc = -1;
  int err = 0;
  {
    const UniqueFd kernel(::open((dir + "/" + m.boot->kernel).c_str(), O_RDONLY | O_CLOEXEC));
    const UniqueFd initrd(m.boot->initrd.empty()
                              ? -1
                              : ::open((dir + "/" + m.boot->initrd).c_str(), O_RDONLY | O_CLOEXEC));
    const std::string& cmd = m.boot->cmdline;
    if (kernel) {
      rc = ::syscall(SYS_kexec_file_load, kernel.get(), initrd.get(), cmd.size() + 1, cmd.c_str(),
                     initrd ? 0UL : 0x4UL /* KEXEC_FILE_NO_INITRAMFS */);
    }
    err = errno;
  }  // both files closed before the unmount
  ::umount(dir.c_str());
  if (rc != 0)
    return make_error(Errc::kInternal, std::string("kexec_file_load: ") + std::strerror(err));
  ::sync();
  ::reboot(LINUX_REBOOT_CMD_KEXEC);
  return make_error(Errc::kInternal, std::string("reboot(KEXEC): ") + std::strerror(errno));
}

}  // namespace kiln::agent
