// agent/kexec.h — booting the image just written without going through firmware: the kernel
// and initrd named by the manifest's boot hints are read from the new root filesystem (mounted
// read-only), loaded with kexec_file_load(2), and the machine reboots into them.
#pragma once

#include <string>

#include "core/result.h"
#include "proto/image_format.h"

namespace kiln::agent {

// The device of partition `n` on `disk`: /dev/sda + 1 -> /dev/sda1, /dev/nvme0n1 + 1 ->
// /dev/nvme0n1p1 (a 'p' when the disk's name ends in a digit).
std::string partition_path(const std::string& disk, int n);

// Mounts the boot hints' partition of `disk` read-only at /run/kiln-newroot (loading the
// filesystem modules listed in /etc/kiln/modules.kexec first), loads the kernel, initrd and
// cmdline, unmounts, syncs and reboots into the new kernel. Returns only on failure (the
// caller then reboots the ordinary way).
Status kexec_into(const proto::image::Manifest& m, const std::string& disk);

}  // namespace kiln::agent
