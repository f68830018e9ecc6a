#include "agent/config_drive.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "core/bytes.h"
#include "core/crypto.h"
#include "core/hex.h"

namespace kiln::agent {

namespace {

// CRC-32 (zlib's, the one GPT uses).
std::uint32_t crc(const char* p, std::size_t n) {
  return static_cast<std::uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(p), static_cast<uInt>(n)));
}
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

// The first 16 bytes of SHA-256(text).
std::string hash16(const std::string& text) {
  return hex_decode(sha256_hex(text)).value_or(std::string(32, '\0')).substr(0, 16);
}

// --- FAT (Microsoft FAT specification: BPB, directory entries, long names) ------------------

// A date of 2020-01-01 00:00:00 for every timestamp: the same drive for the same plan.
constexpr std::uint16_t kFatDate = ((2020 - 1980) << 9) | (1 << 5) | 1;
constexpr std::uint32_t kRootEntries = 512;

bool valid_long_name_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x20 && u < 0x7f && !std::strchr("\"*/:<>?\\|", c);
}
bool valid_short_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || std::strchr("!#$%&'()-@^_`{}~", c);
}

std::string upper(std::string s) {
  for (auto& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}

// The volume label as FAT stores it: upper case, 11 characters, space padded.
Result<std::string> fat_label(const std::string& label) {
  if (label.empty() || label.size() > 11) {
    return make_error(Errc::kInvalid, "config_drive.label '" + label +
                                          "' must have 1 to 11 characters (a FAT volume label)");
  }
  std::string l = upper(label);
  for (char c : l) {
    if (!valid_short_name_char(c)) {
      return make_error(Errc::kInvalid, "config_drive.label '" + label +
                                            "' has a character a FAT volume label cannot hold");
    }
  }
  l.resize(11, ' ');
  return l;
}

// An 8.3 short name for a long name ("meta-data" -> "META-D~1"), unique among `taken`.
Result<std::string> short_name(const std::string& name, std::set<std::string>& taken) {
  std::string base, ext;
  const auto dot = name.rfind('.');
  auto clean = [](const std::string& s) {
    std::string r;
    for (char c : upper(s))
      if (valid_short_name_char(c)) r += c;
    return r;
  };
  if (dot != std::string::npos && dot > 0) {
    base = clean(name.substr(0, dot));
    ext = clean(name.substr(dot + 1)).substr(0, 3);
  } else {
    base = clean(name);
  }
  if (base.empty()) base = "FILE";
  for (int n = 1; n < 1000; ++n) {
    const std::string tail = "~" + std::to_string(n);
    std::string b = base.substr(0, 8 - tail.size()) + tail;
    b.resize(8, ' ');
    std::string e = ext;
    e.resize(3, ' ');
    if (taken.insert(b + e).second) return b + e;
  }
  return make_error(Errc::kInvalid, "config_drive: no short name left for '" + name + "'");
}

std::uint8_t lfn_checksum(const std::string& short11) {
  std::uint8_t sum = 0;
  for (char c : short11)
    sum = static_cast<std::uint8_t>(((sum & 1) ? 0x80 : 0) + (sum >> 1) +
                                    static_cast<unsigned char>(c));
  return sum;
}

std::size_t lfn_entries(const std::string& name) { return (name.size() + 12) / 13; }

// The long-name entries for `name`, in on-disk order (the last part first), then nothing: the
// caller appends the short entry.
std::string lfn_bytes(const std::string& name, std::uint8_t checksum) {
  const std::size_t n = lfn_entries(name);
  // UCS-2 units: the name, a 0x0000 terminator unless it fills the last entry, 0xFFFF padding.
  std::vector<std::uint16_t> units(n * 13, 0xffff);
  for (std::size_t i = 0; i < name.size(); ++i) units[i] = static_cast<unsigned char>(name[i]);
  if (name.size() < n * 13) units[name.size()] = 0;
  static constexpr int kPos[13] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
  std::string out;
  for (std::size_t k = n; k >= 1; --k) {
    char e[32] = {};
    e[0] = static_cast<char>(k | (k == n ? 0x40 : 0));
    e[11] = 0x0f;  // ATTR_LONG_NAME
    e[13] = static_cast<char>(checksum);
    for (int j = 0; j < 13; ++j) put_le(e + kPos[j], units[(k - 1) * 13 + j], 2);
    out.append(e, 32);
  }
  return out;
}

void put_fat_entry(std::string& fat, bool fat12, std::uint32_t n, std::uint32_t v) {
  if (!fat12) {
    put_le(fat.data() + 2 * n, v, 2);
    return;
  }
  char* p = fat.data() + n * 3 / 2;
  if (n % 2 == 0) {
    p[0] = static_cast<char>(v & 0xff);
    p[1] = static_cast<char>((static_cast<unsigned char>(p[1]) & 0xf0) | ((v >> 8) & 0x0f));
  } else {
    p[0] = static_cast<char>((static_cast<unsigned char>(p[0]) & 0x0f) | ((v & 0x0f) << 4));
    p[1] = static_cast<char>((v >> 4) & 0xff);
  }
}

// --- GPT (UEFI specification, chapter 5) ----------------------------------------------------

// Microsoft basic data, EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, as stored (mixed endian).
constexpr unsigned char kBasicDataGuid[16] = {0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44,
                                              0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99, 0xc7};
constexpr const char* kGptName = "config-drive";

struct MbrEntry {
  std::uint8_t type = 0;
  std::uint64_t start = 0, sectors = 0;
};
std::vector<MbrEntry> mbr_entries(const std::string& s0) {
  std::vector<MbrEntry> v;
  for (int i = 0; i < 4; ++i) {
    const char* e = s0.data() + 446 + 16 * i;
    v.push_back({static_cast<std::uint8_t>(e[4]), get_le(e + 8, 4), get_le(e + 12, 4)});
  }
  return v;
}
bool used(const MbrEntry& e) { return e.type != 0 || e.sectors != 0; }

Status write_bytes(const Disk& disk, std::uint64_t at, const std::string& bytes) {
  AlignedBuffer b(bytes.size());
  std::memcpy(b.data(), bytes.data(), bytes.size());
  return disk.write(at, b.data(), bytes.size());
}
Result<std::string> read_bytes(const Disk& disk, std::uint64_t at, std::size_t n) {
  std::string s(n, '\0');
  if (auto st = disk.read(at, s.data(), n); !st) return st.error();
  return s;
}

Error no_edit(const Disk& disk, const std::string& why) {
  return make_error(Errc::kInvalid,
                    "cannot add the config drive's partition to " + disk.path() + ": " + why);
}

Result<PartitionEdit> edit_gpt(const Disk& disk, std::string& s0, std::uint64_t first,
                               std::uint64_t last, std::int64_t deployment_id, bool commit) {
  const std::uint32_t ss = disk.sector_size();
  const std::uint64_t disk_sectors = disk.size() / ss;
  auto hdr = read_bytes(disk, ss, ss);
  if (!hdr) return hdr.error();
  std::string h = std::move(*hdr);
  const auto header_size = static_cast<std::uint32_t>(get_le(h.data() + 12, 4));
  if (header_size < 92 || header_size > ss) return no_edit(disk, "the GPT header size is invalid");
  {
    std::string c = h.substr(0, header_size);
    put_le(c.data() + 16, 0, 4);
    if (crc(c.data(), c.size()) != get_le(h.data() + 16, 4)) {
      return no_edit(disk, "the primary GPT header's CRC32 does not match (a corrupt table)");
    }
  }
  if (get_le(h.data() + 24, 8) != 1) return no_edit(disk, "the primary GPT header is not at LBA 1");
  const std::uint64_t first_usable = get_le(h.data() + 40, 8);
  const std::uint64_t entries_lba = get_le(h.data() + 72, 8);
  const std::uint64_t count = get_le(h.data() + 80, 4);
  const std::uint64_t esz = get_le(h.data() + 84, 4);
  if (esz < 128 || (esz & (esz - 1)) != 0 || count == 0 || count * esz > (4u << 20) ||
      entries_lba < 2) {
    return no_edit(disk, "the GPT partition-entry array is invalid");
  }
  const std::uint64_t entry_sectors = (count * esz + ss - 1) / ss;
  auto arr = read_bytes(disk, entries_lba * ss, entry_sectors * ss);
  if (!arr) return arr.error();
  std::string entries = std::move(*arr);
  const std::size_t entries_bytes = static_cast<std::size_t>(count * esz);
  if (crc(entries.data(), entries_bytes) != get_le(h.data() + 88, 4)) {
    return no_edit(disk, "the GPT partition entries' CRC32 does not match (a corrupt table)");
  }
  // The new geometry: the backup entries and header at the disk's real end.
  const std::uint64_t alt = disk_sectors - 1;
  const std::uint64_t backup_entries = alt - entry_sectors;
  const std::uint64_t last_usable = backup_entries - 1;
  if (first < first_usable || last > last_usable || entries_lba + entry_sectors > first) {
    return no_edit(disk, "the range LBA " + std::to_string(first) + "-" + std::to_string(last) +
                             " is outside the GPT's usable sectors");
  }
  std::string guid = hash16("kiln config drive partition " + std::to_string(deployment_id));
  guid[7] = static_cast<char>((guid[7] & 0x0f) | 0x50);  // version 5 (name-based)
  guid[8] = static_cast<char>((guid[8] & 0x3f) | 0x80);  // RFC 4122 variant
  int slot = -1;
  for (std::uint64_t i = 0; i < count; ++i) {
    char* e = entries.data() + i * esz;
    if (std::all_of(e, e + 16, [](char c) { return c == 0; })) {
      if (slot < 0) slot = static_cast<int>(i);
      continue;
    }
    const std::uint64_t lo = get_le(e + 32, 8), hi = get_le(e + 40, 8);
    if (lo == first && hi == last && std::memcmp(e, kBasicDataGuid, 16) == 0) {
      slot = static_cast<int>(i);  // ours already (an edit being repeated)
      break;
    }
    if (lo <= last && hi >= first) {
      return no_edit(disk, "partition " + std::to_string(i + 1) + " (LBA " + std::to_string(lo) +
                               "-" + std::to_string(hi) + ") overlaps the config drive");
    }
  }
  if (slot < 0) return no_edit(disk, "the GPT has no free partition entry");
  {
    char* e = entries.data() + static_cast<std::size_t>(slot) * esz;
    std::memset(e, 0, esz);
    std::memcpy(e, kBasicDataGuid, 16);
    std::memcpy(e + 16, guid.data(), 16);
    put_le(e + 32, first, 8);
    put_le(e + 40, last, 8);
    for (std::size_t i = 0; kGptName[i]; ++i) put_le(e + 56 + 2 * i, kGptName[i], 2);
  }
  const std::uint32_t entries_crc = crc(entries.data(), entries_bytes);
  put_le(h.data() + 32, alt, 8);
  put_le(h.data() + 48, last_usable, 8);
  put_le(h.data() + 88, entries_crc, 4);
  put_le(h.data() + 16, 0, 4);
  put_le(h.data() + 16, crc(h.data(), header_size), 4);
  std::string b = h;
  put_le(b.data() + 24, alt, 8);
  put_le(b.data() + 32, 1, 8);
  put_le(b.data() + 72, backup_entries, 8);
  put_le(b.data() + 16, 0, 4);
  put_le(b.data() + 16, crc(b.data(), header_size), 4);
  // The protective MBR covers the whole disk (capped at 2^32-1 sectors).
  for (int i = 0; i < 4; ++i) {
    char* e = s0.data() + 446 + 16 * i;
    if (static_cast<unsigned char>(e[4]) == 0xee) {
      put_le(e + 12, std::min<std::uint64_t>(disk_sectors - 1, 0xffffffffu), 4);
    }
  }
  if (!commit) return PartitionEdit{"gpt", slot + 1};
  // Backup first: until the primary changes, readers use the old, valid primary.
  if (auto st = write_bytes(disk, backup_entries * ss, entries + b); !st) return st.error();
  if (auto st = disk.flush(); !st) return st.error();
  if (auto st = write_bytes(disk, entries_lba * ss, entries); !st) return st.error();
  if (auto st = write_bytes(disk, ss, h); !st) return st.error();
  if (auto st = write_bytes(disk, 0, s0); !st) return st.error();
  if (auto st = disk.flush(); !st) return st.error();
  return PartitionEdit{"gpt", slot + 1};
}

Result<PartitionEdit> edit_mbr(const Disk& disk, std::string& s0, std::uint64_t first,
                               std::uint64_t last, bool commit) {
  if (last >= 0xffffffffull) {
    return no_edit(disk, "the range ends beyond what an MBR can address (2^32 sectors)");
  }
  int slot = -1;
  const auto entries = mbr_entries(s0);
  for (int i = 0; i < 4; ++i) {
    const auto& e = entries[static_cast<std::size_t>(i)];
    if (!used(e)) {
      if (slot < 0) slot = i;
      continue;
    }
    if (e.type == 0x05 || e.type == 0x0f || e.type == 0x85) {
      return no_edit(disk, "partition " + std::to_string(i + 1) +
                               " is an extended partition (logical partitions are not edited)");
    }
    if (e.start == first && e.sectors == last - first + 1) {
      slot = i;  // ours already
      break;
    }
    if (e.start <= last && e.start + e.sectors > first) {
      return no_edit(disk, "partition " + std::to_string(i + 1) + " (LBA " +
                               std::to_string(e.start) + "+" + std::to_string(e.sectors) +
                               ") overlaps the config drive");
    }
  }
  if (slot < 0) return no_edit(disk, "the MBR has no free primary partition slot");
  char* e = s0.data() + 446 + 16 * slot;
  std::memset(e, 0, 16);
  // CHS fields: the "beyond CHS" marker 1023/254/63 (LBA addressing only).
  const char chs[3] = {static_cast<char>(0xfe), static_cast<char>(0xff), static_cast<char>(0xff)};
  std::memcpy(e + 1, chs, 3);
  e[4] = 0x0e;  // FAT16, LBA
  std::memcpy(e + 5, chs, 3);
  put_le(e + 8, first, 4);
  put_le(e + 12, last - first + 1, 4);
  if (!commit) return PartitionEdit{"mbr", slot + 1};
  if (auto st = write_bytes(disk, 0, s0); !st) return st.error();
  if (auto st = disk.flush(); !st) return st.error();
  return PartitionEdit{"mbr", slot + 1};
}

}  // namespace

Status validate_config_drive(const ConfigDrive& cd) {
  if (auto l = fat_label(cd.label); !l) return l.error();
  if (!cd.files.count("meta-data")) {
    return make_error(Errc::kInvalid, "config_drive.files has no 'meta-data'");
  }
  std::uint64_t total = 0;
  std::set<std::string> seen;
  for (const auto& [name, content] : cd.files) {
    if (name.empty() || name.size() > 255 || name == "." || name == ".." ||
        !std::all_of(name.begin(), name.end(), valid_long_name_char) || name.front() == ' ' ||
        name.back() == ' ' || name.back() == '.') {
      return make_error(Errc::kInvalid, "config_drive.files: '" + name +
                                            "' is not a valid file name (printable ASCII, no "
                                            "path separators or \"*:<>?|, at most 255)");
    }
    if (!seen.insert(upper(name)).second) {
      return make_error(Errc::kInvalid, "config_drive.files: '" + name +
                                            "' differs from another file only in case");
    }
    total += content.size();
  }
  if (total > kConfigDriveMaxContent) {
    return make_error(Errc::kInvalid, "config_drive.files hold " + std::to_string(total) +
                                          " bytes; the config drive takes at most " +
                                          std::to_string(kConfigDriveMaxContent));
  }
  return ok_status();
}

Result<std::string> build_fat_image(const ConfigDrive& cd, std::uint32_t ss,
                                    std::uint64_t hidden_sectors, std::uint32_t volume_id) {
  if (auto st = validate_config_drive(cd); !st) return st.error();
  if (ss != 512 && ss != 4096) {
    return make_error(Errc::kInvalid,
                      "config drive: unsupported sector size " + std::to_string(ss));
  }
  auto label = fat_label(cd.label);
  if (!label) return label.error();
  // Geometry: one sector per cluster, one reserved sector, two FATs, a 512-entry root.
  const std::uint32_t total = static_cast<std::uint32_t>(kConfigDriveSize / ss);
  const std::uint32_t rsvd = 1, nfats = 2, spc = 1;
  const std::uint32_t root_sectors = kRootEntries * 32 / ss;
  auto clusters_for = [&](std::uint32_t fat_sectors) {
    return (total - rsvd - root_sectors - nfats * fat_sectors) / spc;
  };
  // FAT16 when the data area has at least 4085 clusters (the specification's rule), else FAT12.
  std::uint32_t fat_sectors = 1;
  while (static_cast<std::uint64_t>(fat_sectors) * ss / 2 < clusters_for(fat_sectors) + 2)
    ++fat_sectors;
  bool fat12 = clusters_for(fat_sectors) < 4085;
  if (fat12) {
    fat_sectors = 1;
    while (static_cast<std::uint64_t>(fat_sectors) * ss * 2 / 3 < clusters_for(fat_sectors) + 2)
      ++fat_sectors;
  }
  const std::uint32_t clusters = clusters_for(fat_sectors);
  const std::uint32_t root_start = rsvd + nfats * fat_sectors;
  const std::uint32_t data_start = root_start + root_sectors;
  const std::uint32_t cluster_bytes = ss * spc;

  std::string img(kConfigDriveSize, '\0');
  // Boot sector and BPB.
  char* bs = img.data();
  const unsigned char jump[3] = {0xeb, 0x3c, 0x90};
  std::memcpy(bs, jump, 3);
  std::memcpy(bs + 3, "KILN    ", 8);
  put_le(bs + 11, ss, 2);
  bs[13] = static_cast<char>(spc);
  put_le(bs + 14, rsvd, 2);
  bs[16] = static_cast<char>(nfats);
  put_le(bs + 17, kRootEntries, 2);
  if (total < 0x10000) {
    put_le(bs + 19, total, 2);
  } else {
    put_le(bs + 32, total, 4);
  }
  bs[21] = static_cast<char>(0xf8);
  put_le(bs + 22, fat_sectors, 2);
  put_le(bs + 24, 32, 2);  // sectors per track, heads: informative only
  put_le(bs + 26, 64, 2);
  put_le(bs + 28, std::min<std::uint64_t>(hidden_sectors, 0xffffffffu), 4);
  bs[36] = static_cast<char>(0x80);
  bs[38] = 0x29;
  put_le(bs + 39, volume_id, 4);
  std::memcpy(bs + 43, label->data(), 11);
  std::memcpy(bs + 54, fat12 ? "FAT12   " : "FAT16   ", 8);
  bs[510] = 0x55;
  bs[511] = static_cast<char>(0xaa);

  std::string fat(static_cast<std::size_t>(fat_sectors) * ss, '\0');
  const std::uint32_t eoc = fat12 ? 0xfff : 0xffff;
  put_fat_entry(fat, fat12, 0, fat12 ? 0xff8 : 0xfff8);
  put_fat_entry(fat, fat12, 1, eoc);

  // The root directory: the volume label, then each file's long-name entries and short entry.
  std::string root;
  {
    char e[32] = {};
    std::memcpy(e, label->data(), 11);
    e[11] = 0x08;  // ATTR_VOLUME_ID
    put_le(e + 22, 0, 2);
    put_le(e + 24, kFatDate, 2);
    root.append(e, 32);
  }
  std::set<std::string> taken;
  std::uint32_t next_cluster = 2;
  for (const auto& [name, content] : cd.files) {
    auto sn = short_name(name, taken);
    if (!sn) return sn.error();
    const auto n_clusters =
        static_cast<std::uint32_t>((content.size() + cluster_bytes - 1) / cluster_bytes);
    if (next_cluster - 2 + n_clusters > clusters) {
      return make_error(Errc::kInvalid, "config drive: the files do not fit in " +
                                            std::to_string(kConfigDriveSize) + " bytes");
    }
    root += lfn_bytes(name, lfn_checksum(*sn));
    char e[32] = {};
    std::memcpy(e, sn->data(), 11);
    e[11] = 0x20;                 // ATTR_ARCHIVE
    put_le(e + 16, kFatDate, 2);  // creation date
    put_le(e + 18, kFatDate, 2);  // last access date
    put_le(e + 24, kFatDate, 2);  // write date
    const std::uint32_t first = n_clusters ? next_cluster : 0;
    put_le(e + 26, first, 2);
    put_le(e + 28, content.size(), 4);
    root.append(e, 32);
    for (std::uint32_t k = 0; k < n_clusters; ++k) {
      const std::uint32_t c = next_cluster + k;
      put_fat_entry(fat, fat12, c, k + 1 == n_clusters ? eoc : c + 1);
    }
    std::memcpy(
        img.data() + (static_cast<std::uint64_t>(data_start) + (next_cluster - 2) * spc) * ss,
        content.data(), content.size());
    next_cluster += n_clusters;
  }
  if (root.size() > kRootEntries * 32) {
    return make_error(Errc::kInvalid,
                      "config drive: too many files or names too long for the "
                      "root directory (" +
                          std::to_string(kRootEntries) + " entries)");
  }
  for (std::uint32_t f = 0; f < nfats; ++f) {
    std::memcpy(img.data() + static_cast<std::uint64_t>(rsvd + f * fat_sectors) * ss, fat.data(),
                fat.size());
  }
  std::memcpy(img.data() + static_cast<std::uint64_t>(root_start) * ss, root.data(), root.size());
  return img;
}

Result<std::uint64_t> config_drive_offset(std::uint64_t image_size, std::uint64_t disk_size) {
  const std::uint64_t at = align_up(image_size, kConfigDriveAlign);
  const std::uint64_t need = at + kConfigDriveSize + kConfigDriveTailReserve;
  if (disk_size < need) {
    return make_error(Errc::kInvalid, "no room for the config drive: the image takes " +
                                          std::to_string(image_size) + " bytes, the drive " +
                                          std::to_string(kConfigDriveSize) +
                                          " more after it (1 MiB aligned), " +
                                          "and the last 64 KiB are reserved; the disk holds " +
                                          std::to_string(disk_size) + " bytes, " +
                                          std::to_string(need) + " are needed");
  }
  return at;
}

Result<PartitionEdit> add_config_drive_partition(const Disk& disk, std::uint64_t offset,
                                                 std::uint64_t size, std::int64_t deployment_id,
                                                 bool commit) {
  const std::uint32_t ss = disk.sector_size();
  if (offset % ss || size % ss || size == 0 || offset + size > disk.size()) {
    return no_edit(disk, "the range is not whole sectors within the disk");
  }
  const std::uint64_t first = offset / ss, last = (offset + size) / ss - 1;
  auto sector0 = read_bytes(disk, 0, ss);
  if (!sector0) return sector0.error();
  std::string s0 = std::move(*sector0);
  if (static_cast<unsigned char>(s0[510]) != 0x55 || static_cast<unsigned char>(s0[511]) != 0xaa) {
    return no_edit(disk, "the image has no partition table (no MBR signature)");
  }
  const auto entries = mbr_entries(s0);
  const auto n_used = std::count_if(entries.begin(), entries.end(), used);
  const bool has_ee =
      std::any_of(entries.begin(), entries.end(), [](const MbrEntry& e) { return e.type == 0xee; });
  if (has_ee) {
    if (n_used != 1) {
      return no_edit(disk, "a hybrid MBR (a GPT protective entry beside other MBR partitions)");
    }
    auto sig = read_bytes(disk, ss, 8);
    if (!sig) return sig.error();
    if (*sig != "EFI PART") {
      return no_edit(disk, "a protective MBR without a GPT header at LBA 1");
    }
    return edit_gpt(disk, s0, first, last, deployment_id, commit);
  }
  if (n_used == 0) return no_edit(disk, "the image has no partition table (an empty MBR)");
  auto sig = read_bytes(disk, ss, 8);
  if (!sig) return sig.error();
  if (*sig == "EFI PART") {
    return no_edit(disk, "a GPT header at LBA 1 without a protective MBR entry (0xEE)");
  }
  return edit_mbr(disk, s0, first, last, commit);
}

Result<std::string> prepare_config_drive(const ConfigDrive& cd, const Disk& disk,
                                         std::uint64_t offset, std::int64_t deployment_id) {
  std::string seed = "kiln config drive " + std::to_string(deployment_id) + "\n" + cd.label;
  for (const auto& [name, content] : cd.files) {
    seed += "\n" + std::to_string(name.size()) + ":" + name + std::to_string(content.size()) + ":" +
            content;
  }
  const std::string h = hash16(seed);
  const auto volume_id = static_cast<std::uint32_t>(get_le(h.data(), 4));
  return build_fat_image(cd, disk.sector_size(), offset / disk.sector_size(), volume_id);
}

Result<ConfigDriveResult> write_config_drive(const Disk& disk, const std::string& fat,
                                             std::uint64_t offset, std::int64_t deployment_id) {
  if (offset + fat.size() > disk.size()) {
    return make_error(Errc::kInvalid, "the config drive does not fit on " + disk.path());
  }
  // The table is checked first: a table that cannot take the entry leaves the disk untouched.
  if (auto dry = add_config_drive_partition(disk, offset, fat.size(), deployment_id, false); !dry) {
    return dry.error();
  }
  if (auto st = write_bytes(disk, offset, fat); !st) return st.error();
  if (auto st = disk.flush(); !st) return st.error();
  auto edit = add_config_drive_partition(disk, offset, fat.size(), deployment_id);
  if (!edit) return edit.error();
  (void)disk.reread_partitions();
  return ConfigDriveResult{offset, fat.size(), *edit};
}

}  // namespace kiln::agent
