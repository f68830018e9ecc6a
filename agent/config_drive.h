// agent/config_drive.h — the config drive: a small VFAT filesystem (NoCloud "CIDATA", or any
// label the plan names) holding the deployment's cloud-init files, written after the image's
// last byte, and the partition-table entry that makes it visible (GPT or MBR).
//
// Layout on the disk (bytes; `image_size` is the manifest's size, the image starts at LBA 0):
//   [0, image_size)                         the image
//   [align_up(image_size, 1 MiB), +4 MiB)   the config drive (kConfigDriveSize)
//   ...                                     free
//   disk_size - 64 KiB                      the instance block (agent/flows.cc)
//   the last sectors                        the GPT backup entries and header (GPT disks)
// The filesystem is FAT16 with 512-byte sectors (FAT12 on 4 KiB-sector disks: fewer clusters),
// one FAT pair, files in the root directory with VFAT long names; its bytes depend only on the
// plan's files and the deployment id (fixed timestamps, volume id from a hash), so the same
// deployment always writes the same drive. The drive is not encrypted: whoever can read the disk
// can read user-data.
//
// Pure functions over byte buffers and a Disk (a block device or a regular file); no threads.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "agent/disk.h"
#include "core/result.h"

namespace kiln::agent {

// The partition's size: 4 MiB, enough for the files' cap below plus FAT overhead.
inline constexpr std::uint64_t kConfigDriveSize = 4ull << 20;
// The drive starts at the image's end rounded up to this.
inline constexpr std::uint64_t kConfigDriveAlign = 1ull << 20;
// The plan's files together (contents) may hold at most this many bytes.
inline constexpr std::uint64_t kConfigDriveMaxContent = 1ull << 20;
// Bytes at the disk's end that the drive never touches (the instance block, a GPT backup).
inline constexpr std::uint64_t kConfigDriveTailReserve = 64ull << 10;

// The plan's "config_drive": a filesystem label and files (name -> contents) for its root.
struct ConfigDrive {
  std::string label = "cidata";
  std::map<std::string, std::string> files;
};

// Checks the drive's label and files (names valid as VFAT long names, meta-data present, total
// size within kConfigDriveMaxContent). Errors name the offending label or file.
Status validate_config_drive(const ConfigDrive& cd);

// The FAT filesystem image: exactly kConfigDriveSize bytes, `sector_size` 512 or 4096.
// `hidden_sectors` is the partition's first LBA (recorded in the boot sector);
// `volume_id` the FAT serial number. Errors: an invalid drive (validate_config_drive), files
// that do not fit the root directory or the data area.
Result<std::string> build_fat_image(const ConfigDrive& cd, std::uint32_t sector_size,
                                    std::uint64_t hidden_sectors, std::uint32_t volume_id);

// Where the drive goes for an image of `image_size` bytes on a disk of `disk_size` bytes:
// its byte offset. kInvalid when it does not fit between the image and the disk's last
// kConfigDriveTailReserve bytes (the message says how much disk would be needed).
Result<std::uint64_t> config_drive_offset(std::uint64_t image_size, std::uint64_t disk_size);

// What add_config_drive_partition did.
struct PartitionEdit {
  std::string table;  // "gpt" or "mbr"
  int partition = 0;  // the new partition's number (1-based, as the kernel names it)
};

// Adds a partition for [offset, offset + size) to the table at the start of `disk`:
//  - GPT: a Microsoft basic data entry named "config-drive" with a unique GUID derived from
//    `deployment_id`, in the first free slot; the backup entries and header moved to the disk's
//    end; primary header updated (alternate LBA, last usable LBA); every CRC32 recomputed; the
//    protective MBR's 0xEE entry resized. The backup is written and flushed before the primary.
//  - MBR: a primary entry of type 0x0e (FAT16 LBA) in the first free slot.
// An entry for exactly this range already present (a retry) is reused. Errors (kInvalid),
// with nothing written: no partition table, a corrupt GPT (CRC), a hybrid MBR, an extended
// partition, no free slot, an existing partition overlapping the range, a range beyond what
// the table can address. With `commit` false, only checks (nothing is written).
Result<PartitionEdit> add_config_drive_partition(const Disk& disk, std::uint64_t offset,
                                                 std::uint64_t size, std::int64_t deployment_id,
                                                 bool commit = true);

// Where a written drive is, for the success report.
struct ConfigDriveResult {
  std::uint64_t offset = 0, size = 0;
  PartitionEdit edit;
};

// The FAT image for the drive (volume id from the deployment id and the files), ready to
// write at `offset` (from config_drive_offset). Used in preflight so that a drive that cannot
// be built fails the deployment before the image is written.
Result<std::string> prepare_config_drive(const ConfigDrive& cd, const Disk& disk,
                                         std::uint64_t offset, std::int64_t deployment_id);

// Checks the table can take the entry (else an error, nothing written), writes `fat`
// (prepare_config_drive's) at `offset`, flushes, adds the partition, flushes, and asks the
// kernel to re-read the table.
Result<ConfigDriveResult> write_config_drive(const Disk& disk, const std::string& fat,
                                             std::uint64_t offset, std::int64_t deployment_id);

}  // namespace kiln::agent
