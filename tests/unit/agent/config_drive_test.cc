#include "agent/config_drive.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "agent/api_client.h"
#include "tests/unit/test_dir.h"

namespace kiln::agent {
namespace {

constexpr std::uint64_t kSs = 512;

std::uint64_t le(const std::string& s, std::size_t at, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}
void put(std::string& s, std::size_t at, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
std::uint32_t crc(const std::string& s, std::size_t at, std::size_t n) {
  return static_cast<std::uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(s.data() + at), static_cast<uInt>(n)));
}

ConfigDrive sample() {
  ConfigDrive cd;
  cd.files["meta-data"] = "instance-id: kiln-42\nlocal-hostname: web-01\n";
  cd.files["user-data"] = "#cloud-config\nruncmd:\n  - echo KILN-MARK\n" + std::string(3000, 'x');
  cd.files["network-config"] = "version: 2\n";
  cd.files["vendor-data"] = "";
  return cd;
}

// A minimal FAT reader (root directory only), written from the specification for the test.
struct FatFile {
  std::string name, content;
};
std::vector<FatFile> read_fat(const std::string& img, std::string* label = nullptr) {
  const std::uint64_t ss = le(img, 11, 2), rsvd = le(img, 14, 2), nfats = img[16];
  const std::uint64_t root_entries = le(img, 17, 2), fatsz = le(img, 22, 2);
  const std::uint64_t total = le(img, 19, 2) ? le(img, 19, 2) : le(img, 32, 4);
  const std::uint64_t root_at = (rsvd + nfats * fatsz) * ss;
  const std::uint64_t data_at = root_at + root_entries * 32;
  const std::uint64_t clusters = (total * ss - data_at) / ss;
  const bool fat12 = clusters < 4085;
  auto next = [&](std::uint64_t c) -> std::uint64_t {
    const std::uint64_t fat = rsvd * ss;
    if (!fat12) return le(img, fat + 2 * c, 2);
    const std::uint64_t v = le(img, fat + c * 3 / 2, 2);
    return c % 2 ? v >> 4 : v & 0xfff;
  };
  std::vector<FatFile> out;
  std::string lfn;
  for (std::uint64_t i = 0; i < root_entries; ++i) {
    const std::uint64_t e = root_at + i * 32;
    if (img[e] == 0) break;
    const auto attr = static_cast<unsigned char>(img[e + 11]);
    if (attr == 0x0f) {
      static constexpr int kPos[13] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
      std::string part;
      for (int p : kPos) {
        const auto u = le(img, e + p, 2);
        if (u == 0 || u == 0xffff) break;
        part += static_cast<char>(u);
      }
      lfn = part + lfn;
      continue;
    }
    if (attr & 0x08) {
      if (label) *label = img.substr(e, 11);
      continue;
    }
    FatFile f{lfn, ""};
    lfn.clear();
    const std::uint64_t size = le(img, e + 28, 4);
    std::uint64_t c = le(img, e + 26, 2);
    while (f.content.size() < size) {
      f.content += img.substr(data_at + (c - 2) * ss, std::min(ss, size - f.content.size()));
      c = next(c);
    }
    out.push_back(f);
  }
  return out;
}

TEST(ConfigDriveFat, HoldsTheFilesUnderTheirLongNames) {
  const ConfigDrive cd = sample();
  auto img = build_fat_image(cd, 512, 2048, 0x12345678);
  ASSERT_TRUE(img) << img.error().message;
  ASSERT_EQ(img->size(), kConfigDriveSize);
  EXPECT_EQ(img->substr(54, 8), "FAT16   ");
  EXPECT_EQ(le(*img, 39, 4), 0x12345678u);
  EXPECT_EQ(le(*img, 28, 4), 2048u);
  EXPECT_EQ(img->substr(43, 11), "CIDATA     ");
  std::string label;
  auto files = read_fat(*img, &label);
  EXPECT_EQ(label, "CIDATA     ");
  ASSERT_EQ(files.size(), cd.files.size());
  for (const auto& f : files) {
    ASSERT_TRUE(cd.files.count(f.name)) << f.name;
    EXPECT_EQ(f.content, cd.files.at(f.name)) << f.name;
  }
}

TEST(ConfigDriveFat, FourKiBSectorsMakeFat12) {
  const ConfigDrive cd = sample();
  auto img = build_fat_image(cd, 4096, 256, 1);
  ASSERT_TRUE(img) << img.error().message;
  EXPECT_EQ(img->substr(54, 8), "FAT12   ");
  auto files = read_fat(*img);
  ASSERT_EQ(files.size(), cd.files.size());
  for (const auto& f : files) EXPECT_EQ(f.content, cd.files.at(f.name)) << f.name;
}

TEST(ConfigDriveFat, SameInputSameBytes) {
  auto dir = testing::make_test_dir("cd");
  {
    std::ofstream(dir / "d", std::ios::binary).put('\0');
    std::filesystem::resize_file(dir / "d", 64 << 20);
  }
  auto disk = Disk::open((dir / "d").string());
  ASSERT_TRUE(disk);
  auto a = prepare_config_drive(sample(), *disk, 8 << 20, 7);
  auto b = prepare_config_drive(sample(), *disk, 8 << 20, 7);
  auto c = prepare_config_drive(sample(), *disk, 8 << 20, 8);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(*a, *b);
  EXPECT_NE(le(*a, 39, 4), le(*c, 39, 4)) << "another deployment, another volume id";
  std::filesystem::remove_all(dir);
}

TEST(ConfigDriveFat, BadInputIsAnErrorNamingIt) {
  const struct {
    const char* what;
    std::function<void(ConfigDrive&)> change;
    const char* message;
  } cases[] = {
      {"no meta-data", [](ConfigDrive& c) { c.files.erase("meta-data"); }, "meta-data"},
      {"too much", [](ConfigDrive& c) { c.files["user-data"] = std::string(1 << 20, 'u'); },
       "at most"},
      {"slash", [](ConfigDrive& c) { c.files["a/b"] = ""; }, "'a/b'"},
      {"non-ASCII", [](ConfigDrive& c) { c.files["caf\xc3\xa9"] = ""; }, "not a valid file name"},
      {"case twin", [](ConfigDrive& c) { c.files["META-DATA"] = ""; }, "case"},
      {"long label", [](ConfigDrive& c) { c.label = "waytoolonglabel"; }, "label"},
      {"label char", [](ConfigDrive& c) { c.label = "a b"; }, "label"},
  };
  for (const auto& t : cases) {
    ConfigDrive cd = sample();
    t.change(cd);
    auto img = build_fat_image(cd, 512, 0, 0);
    ASSERT_FALSE(img) << t.what;
    EXPECT_NE(img.error().message.find(t.message), std::string::npos)
        << t.what << ": " << img.error().message;
  }
}

TEST(ConfigDriveFat, ManyFilesOverflowTheRootDirectory) {
  ConfigDrive cd = sample();
  for (int i = 0; i < 200; ++i) cd.files["extra-file-with-a-long-name-" + std::to_string(i)] = "x";
  auto img = build_fat_image(cd, 512, 0, 0);
  ASSERT_FALSE(img);
  EXPECT_NE(img.error().message.find("root directory"), std::string::npos);
}

TEST(ConfigDriveOffset, AfterTheImageAlignedAndBeforeTheTail) {
  auto at = config_drive_offset((8 << 20) + 1, 64 << 20);
  ASSERT_TRUE(at);
  EXPECT_EQ(*at, 9u << 20);
  EXPECT_TRUE(config_drive_offset(8 << 20, (12 << 20) + (64 << 10)));
  auto no = config_drive_offset(8 << 20, (12 << 20) + (64 << 10) - 1);
  ASSERT_FALSE(no);
  EXPECT_NE(no.error().message.find("no room for the config drive"), std::string::npos);
}

// A disk file: `disk_mib` MiB holding an image of `image_mib` MiB whose partition table
// `table` writes.
class ConfigDriveTable : public ::testing::Test {
 public:
  void SetUp() override { dir_ = testing::make_test_dir("cdt"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path() const { return (dir_ / "disk").string(); }
  void make_disk(std::uint64_t bytes) {
    std::ofstream(path(), std::ios::binary).put('\0');
    std::filesystem::resize_file(path(), bytes);
  }
  std::string read(std::uint64_t at, std::size_t n) {
    std::ifstream f(path(), std::ios::binary);
    f.seekg(static_cast<std::streamoff>(at));
    std::string s(n, '\0');
    f.read(s.data(), static_cast<std::streamsize>(n));
    return s;
  }
  void write(std::uint64_t at, const std::string& s) {
    std::fstream f(path(), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(at));
    f.write(s.data(), static_cast<std::streamsize>(s.size()));
  }
  // An MBR with `parts` (type, start, sectors).
  void make_mbr(const std::vector<std::tuple<int, std::uint64_t, std::uint64_t>>& parts) {
    std::string s0(512, '\0');
    for (std::size_t i = 0; i < parts.size(); ++i) {
      s0[446 + 16 * i + 4] = static_cast<char>(std::get<0>(parts[i]));
      put(s0, 446 + 16 * i + 8, std::get<1>(parts[i]), 4);
      put(s0, 446 + 16 * i + 12, std::get<2>(parts[i]), 4);
    }
    s0[510] = 0x55;
    s0[511] = static_cast<char>(0xaa);
    write(0, s0);
  }
  // A GPT for an image of `image_sectors`, `count` entries, the given (first, last) partitions,
  // its backup at the image's end (as an image file carries it).
  void make_gpt(std::uint64_t image_sectors, std::uint32_t count,
                const std::vector<std::pair<std::uint64_t, std::uint64_t>>& parts) {
    const std::uint64_t entry_sectors = (count * 128 + kSs - 1) / kSs;
    std::string entries(entry_sectors * kSs, '\0');
    for (std::size_t i = 0; i < parts.size(); ++i) {
      std::memset(entries.data() + i * 128, 0x11, 16);  // some type
      std::memset(entries.data() + i * 128 + 16, static_cast<int>(0x20 + i), 16);
      put(entries, i * 128 + 32, parts[i].first, 8);
      put(entries, i * 128 + 40, parts[i].second, 8);
    }
    const std::uint64_t alt = image_sectors - 1;
    std::string h(kSs, '\0');
    std::memcpy(h.data(), "EFI PART", 8);
    put(h, 8, 0x00010000, 4);
    put(h, 12, 92, 4);
    put(h, 24, 1, 8);
    put(h, 32, alt, 8);
    put(h, 40, 2 + entry_sectors, 8);
    put(h, 48, alt - entry_sectors - 1, 8);
    std::memset(h.data() + 56, 0x42, 16);
    put(h, 72, 2, 8);
    put(h, 80, count, 4);
    put(h, 84, 128, 4);
    put(h, 88, crc(entries, 0, count * 128), 4);
    put(h, 16, crc(h, 0, 92), 4);
    std::string b = h;
    put(b, 16, 0, 4);
    put(b, 24, alt, 8);
    put(b, 32, 1, 8);
    put(b, 72, alt - entry_sectors, 8);
    put(b, 16, crc(b, 0, 92), 4);
    make_mbr({{0xee, 1, image_sectors - 1}});
    write(kSs, h);
    write(2 * kSs, entries);
    write((alt - entry_sectors) * kSs, entries + b);
  }
  // Checks one GPT header (at `lba`) and its entries; returns the header.
  std::string check_gpt_header(std::uint64_t lba, std::uint64_t disk_sectors) {
    std::string h = read(lba * kSs, kSs);
    EXPECT_EQ(h.substr(0, 8), "EFI PART");
    std::string c = h.substr(0, 92);
    put(c, 16, 0, 4);
    EXPECT_EQ(crc(c, 0, 92), le(h, 16, 4)) << "header CRC at LBA " << lba;
    EXPECT_EQ(le(h, 24, 8), lba);
    EXPECT_EQ(le(h, 32, 8), lba == 1 ? disk_sectors - 1 : 1);
    const std::uint64_t n = le(h, 80, 4) * le(h, 84, 4);
    std::string e = read(le(h, 72, 8) * kSs, n);
    EXPECT_EQ(crc(e, 0, n), le(h, 88, 4)) << "entries CRC for the header at LBA " << lba;
    return h;
  }

  std::filesystem::path dir_;
};

TEST_F(ConfigDriveTable, GptGetsAnEntryAndBothCopiesStayValid) {
  const std::uint64_t disk_bytes = 64 << 20, image = 16 << 20;
  make_disk(disk_bytes);
  make_gpt(image / kSs, 128, {{2048, image / kSs - 34}});
  auto disk = Disk::open(path());
  ASSERT_TRUE(disk);
  auto at = config_drive_offset(image, disk_bytes);
  ASSERT_TRUE(at);
  auto fat = prepare_config_drive(sample(), *disk, *at, 42);
  ASSERT_TRUE(fat);
  auto r = write_config_drive(*disk, *fat, *at, 42);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->edit.table, "gpt");
  EXPECT_EQ(r->edit.partition, 2);
  const std::uint64_t sectors = disk_bytes / kSs;
  const std::string p = check_gpt_header(1, sectors);
  const std::string b = check_gpt_header(sectors - 1, sectors);
  EXPECT_EQ(le(p, 48, 8), sectors - 34) << "last usable LBA reaches the disk's end";
  EXPECT_EQ(le(b, 72, 8), sectors - 33);
  const std::string e = read(2 * kSs + 128, 128);
  EXPECT_EQ(le(e, 32, 8), *at / kSs);
  EXPECT_EQ(le(e, 40, 8), (*at + kConfigDriveSize) / kSs - 1);
  EXPECT_EQ(static_cast<unsigned char>(e[0]), 0xa2);  // basic data
  EXPECT_EQ(static_cast<unsigned char>(e[23]) >> 4, 5) << "a version-5 unique GUID";
  EXPECT_EQ(read(2 * kSs, 4 * kSs), read((sectors - 33) * kSs, 4 * kSs)) << "same entries";
  EXPECT_EQ(le(read(0, 512), 446 + 12, 4), sectors - 1) << "protective MBR covers the disk";
  EXPECT_EQ(read(*at, fat->size()), *fat);
  // Again (a retry or a redeploy): the same entry, not a second one.
  auto again = write_config_drive(*disk, *fat, *at, 42);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->edit.partition, 2);
  EXPECT_EQ(le(read(2 * kSs + 256, 128), 32, 8), 0u);
}

TEST_F(ConfigDriveTable, GptDeterministicUniqueGuidPerDeployment) {
  make_disk(64 << 20);
  make_gpt(32768, 128, {{2048, 30000}});
  auto disk = Disk::open(path());
  ASSERT_TRUE(add_config_drive_partition(*disk, 20 << 20, kConfigDriveSize, 1));
  const std::string g1 = read(2 * kSs + 128 + 16, 16);
  make_gpt(32768, 128, {{2048, 30000}});
  ASSERT_TRUE(add_config_drive_partition(*disk, 20 << 20, kConfigDriveSize, 1));
  EXPECT_EQ(read(2 * kSs + 128 + 16, 16), g1);
  make_gpt(32768, 128, {{2048, 30000}});
  ASSERT_TRUE(add_config_drive_partition(*disk, 20 << 20, kConfigDriveSize, 2));
  EXPECT_NE(read(2 * kSs + 128 + 16, 16), g1);
}

TEST_F(ConfigDriveTable, MbrGetsAPrimaryEntry) {
  make_disk(64 << 20);
  make_mbr({{0x83, 2048, 30000}});
  auto disk = Disk::open(path());
  auto r = add_config_drive_partition(*disk, 17 << 20, kConfigDriveSize, 1);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->table, "mbr");
  EXPECT_EQ(r->partition, 2);
  const std::string s0 = read(0, 512);
  EXPECT_EQ(static_cast<unsigned char>(s0[446 + 16 + 4]), 0x0e);
  EXPECT_EQ(le(s0, 446 + 16 + 8, 4), (17u << 20) / kSs);
  EXPECT_EQ(le(s0, 446 + 16 + 12, 4), kConfigDriveSize / kSs);
  EXPECT_EQ(le(s0, 446 + 8, 4), 2048u) << "the image's partition is untouched";
}

TEST_F(ConfigDriveTable, TablesThatCannotBeEditedAreErrorsAndStayUntouched) {
  const struct {
    const char* what;
    std::function<void(ConfigDriveTable&)> make;
    const char* message;
  } cases[] = {
      {"no table", [](ConfigDriveTable&) {}, "no partition table"},
      {"empty MBR", [](ConfigDriveTable& t) { t.make_mbr({}); }, "no partition table"},
      {"MBR full",
       [](ConfigDriveTable& t) {
         t.make_mbr({{0x83, 2048, 100}, {0x83, 4096, 100}, {0x83, 8192, 100}, {0x83, 9000, 100}});
       },
       "no free primary"},
      {"extended",
       [](ConfigDriveTable& t) {
         t.make_mbr({{0x83, 2048, 100}, {0x05, 4096, 10000}});
       },
       "extended"},
      {"MBR overlap",
       [](ConfigDriveTable& t) {
         t.make_mbr({{0x83, 2048, 40000}});
       },
       "overlaps"},
      {"hybrid",
       [](ConfigDriveTable& t) {
         t.make_mbr({{0xee, 1, 100}, {0x83, 2048, 100}});
       },
       "hybrid"},
      {"0xEE without GPT",
       [](ConfigDriveTable& t) {
         t.make_mbr({{0xee, 1, 32767}});
       },
       "without a GPT header"},
      {"GPT full",
       [](ConfigDriveTable& t) {
         t.make_gpt(32768, 4, {{34, 100}, {200, 300}, {400, 500}, {600, 700}});
       },
       "no free partition entry"},
      {"GPT overlap",
       [](ConfigDriveTable& t) {
         t.make_gpt(32768, 128, {{2048, 40000}});
       },
       "overlaps"},
      {"GPT header CRC",
       [](ConfigDriveTable& t) {
         t.make_gpt(32768, 128, {{2048, 30000}});
         t.write(kSs + 56, "X");
       },
       "header's CRC32"},
      {"GPT entries CRC",
       [](ConfigDriveTable& t) {
         t.make_gpt(32768, 128, {{2048, 30000}});
         t.write(2 * kSs + 100, "X");
       },
       "entries' CRC32"},
  };
  for (const auto& c : cases) {
    make_disk(64 << 20);
    c.make(*this);
    const std::string before = read(0, 1 << 20);
    auto disk = Disk::open(path());
    ASSERT_TRUE(disk);
    auto r = add_config_drive_partition(*disk, 17 << 20, kConfigDriveSize, 1);
    ASSERT_FALSE(r) << c.what;
    EXPECT_NE(r.error().message.find(c.message), std::string::npos)
        << c.what << ": " << r.error().message;
    EXPECT_EQ(read(0, 1 << 20), before) << c.what << ": nothing written";
    // Nor does writing the whole drive touch the disk: the table is checked first.
    auto w = write_config_drive(*disk, std::string(kConfigDriveSize, 'F'), 17 << 20, 1);
    ASSERT_FALSE(w) << c.what;
    EXPECT_EQ(read(0, 1 << 20), before) << c.what << ": table untouched";
    EXPECT_EQ(read(17 << 20, kConfigDriveSize).find('F'), std::string::npos)
        << c.what << ": no drive bytes written";
  }
}

TEST(ConfigDrivePlan, ParsedStrictly) {
  using nlohmann::json;
  auto none = parse_config_drive(json(nullptr));
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  auto cd = parse_config_drive(
      json{{"label", "cidata"}, {"files", {{"meta-data", "a"}, {"user-data", "b"}}}});
  ASSERT_TRUE(cd);
  ASSERT_TRUE(cd->has_value());
  EXPECT_EQ((*cd)->label, "cidata");
  EXPECT_EQ((*cd)->files.at("user-data"), "b");
  const struct {
    json j;
    const char* names;
  } bad[] = {
      {json("x"), "config_drive "},
      {json{{"label", 3}, {"files", json::object()}}, "config_drive.label"},
      {json{{"label", "cidata"}}, "config_drive.files"},
      {json{{"files", json::array()}}, "config_drive.files"},
      {json{{"files", {{"meta-data", 1}}}}, "config_drive.files.meta-data"},
  };
  for (const auto& b : bad) {
    auto r = parse_config_drive(b.j);
    ASSERT_FALSE(r) << b.j.dump();
    EXPECT_NE(r.error().message.find(b.names), std::string::npos) << r.error().message;
  }
}

}  // namespace
}  // namespace kiln::agent
