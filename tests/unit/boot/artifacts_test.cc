#include "boot/artifacts.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "../test_dir.h"

namespace kiln::boot {
namespace {

std::string read_all(const Artifact& a) {
  if (a.generated()) return *a.content;
  std::string s(a.size, '\0');
  EXPECT_EQ(::pread(a.file.fd.get(), s.data(), s.size(), 0), static_cast<ssize_t>(s.size()));
  return s;
}

class ArtifactsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = kiln::testing::make_test_dir("kiln-artifacts");
    std::filesystem::create_directories(base_ / "files" / "efi");
    std::filesystem::create_directories(base_ / "ipxe");
    std::ofstream(base_ / "files" / "undionly.kpxe") << "local build";
    std::ofstream(base_ / "files" / "efi" / "boot.efi") << "efi";
    std::ofstream(base_ / "ipxe" / "undionly.kpxe") << "distribution";
    std::ofstream(base_ / "ipxe" / "ipxe.efi") << "distribution efi";
    std::ofstream(base_ / "secret") << "outside";
    std::filesystem::create_symlink(base_ / "secret", base_ / "files" / "escape");
    ASSERT_TRUE(a_.add_root(base_ / "files"));
    ASSERT_TRUE(a_.add_root(base_ / "ipxe"));
  }
  void TearDown() override { std::filesystem::remove_all(base_); }
  std::filesystem::path base_;
  Artifacts a_;
  Requester who_{"tftp", "10.0.0.5"};
};

TEST_F(ArtifactsTest, RootsAreSearchedInOrder) {
  auto first = a_.resolve("undionly.kpxe", who_);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(read_all(*first), "local build");
  auto second = a_.resolve("ipxe.efi", who_);
  ASSERT_TRUE(second);
  EXPECT_EQ(read_all(*second), "distribution efi");
  EXPECT_FALSE(second->generated());
  EXPECT_EQ(second->size, 16u);
}

TEST_F(ArtifactsTest, LeadingSlashesAndDotSegmentsNameTheSameArtifact) {
  for (const char* name :
       {"/efi/boot.efi", "efi//boot.efi", "./efi/./boot.efi", "//efi/boot.efi"}) {
    auto r = a_.resolve(name, who_);
    ASSERT_TRUE(r) << name;
    EXPECT_EQ(r->name, "efi/boot.efi");
    EXPECT_EQ(read_all(*r), "efi");
  }
}

TEST_F(ArtifactsTest, RefusesTraversalAndControlCharacters) {
  using namespace std::string_literals;
  for (const std::string& name : {"../secret"s, "efi/../../secret"s, "a\0b"s, "efi\\boot.efi"s,
                                  "a\nb"s, std::string(2000, 'a')}) {
    auto r = a_.resolve(name, who_);
    ASSERT_FALSE(r) << ::testing::PrintToString(name);
    EXPECT_EQ(r.error().code, Errc::kInvalid);
  }
}

TEST_F(ArtifactsTest, AbsolutePathsAndEscapingSymlinksAreNotFound) {
  // "/etc/passwd" means <root>/etc/passwd: nothing outside the roots is reachable.
  for (const char* name : {"/etc/passwd", "escape", "efi", "missing", "/", ""}) {
    auto r = a_.resolve(name, who_);
    ASSERT_FALSE(r) << name;
    EXPECT_EQ(r.error().code, Errc::kNotFound) << name;
  }
}

TEST_F(ArtifactsTest, GeneratorsComeFirstAndSeeTheRequester) {
  a_.add_generator("kiln/", [](std::string_view rel, const Requester& who) -> Result<std::string> {
    if (rel != "boot.ipxe") return make_error(Errc::kNotFound, "no such script");
    return "#!ipxe\necho " + who.protocol + " " + who.address + "\n";
  });
  a_.add_generator("kiln/special/",
                   [](std::string_view rel, const Requester&) -> Result<std::string> {
                     return std::string("special ") + std::string(rel);
                   });
  auto r = a_.resolve("/kiln/boot.ipxe", who_);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->generated());
  EXPECT_EQ(read_all(*r), "#!ipxe\necho tftp 10.0.0.5\n");
  EXPECT_EQ(r->size, r->content->size());
  auto h = a_.resolve("kiln/boot.ipxe", {"http", "::1"});
  ASSERT_TRUE(h);
  EXPECT_EQ(read_all(*h), "#!ipxe\necho http ::1\n");
  auto longest = a_.resolve("kiln/special/x", who_);
  ASSERT_TRUE(longest);
  EXPECT_EQ(read_all(*longest), "special x");
  auto missing = a_.resolve("kiln/other", who_);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
  // Traversal is refused before any generator runs.
  EXPECT_EQ(a_.resolve("kiln/../secret", who_).error().code, Errc::kInvalid);
}

TEST(ArtifactsRoot, MissingRootIsAnError) {
  Artifacts a;
  EXPECT_FALSE(a.add_root("/nonexistent/kiln/root"));
}

}  // namespace
}  // namespace kiln::boot
