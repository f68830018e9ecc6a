#include "http/file_server.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace kiln::http {
namespace {

class OpenUnderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = std::filesystem::temp_directory_path() / ("kiln-files-" + std::to_string(::getpid()));
    std::filesystem::remove_all(base_);
    root_ = base_ / "root";
    std::filesystem::create_directories(root_ / "sub");
    std::ofstream(root_ / "a.bin") << "hello";
    std::ofstream(root_ / "sub" / "b.ipxe") << "#!ipxe";
    std::ofstream(base_ / "secret") << "outside";
    std::filesystem::create_symlink(base_ / "secret", root_ / "escape");
    std::filesystem::create_symlink("a.bin", root_ / "inside-link");
    std::filesystem::create_symlink("../a.bin", root_ / "sub" / "up-link");
    std::filesystem::create_symlink(root_ / "a.bin", root_ / "absolute-link");
  }
  void TearDown() override { std::filesystem::remove_all(base_); }
  std::filesystem::path base_, root_;
};

TEST_F(OpenUnderTest, OpensRegularFilesInsideRoot) {
  auto f = open_under(root_, "a.bin");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->size, 5u);
  EXPECT_TRUE(open_under(root_, "sub/b.ipxe"));
  EXPECT_TRUE(open_under(root_, "./sub//b.ipxe"));
  EXPECT_TRUE(open_under(root_, "inside-link"));
  EXPECT_TRUE(open_under(root_, "sub/up-link"));  // relative links that stay inside are fine
}

TEST_F(OpenUnderTest, RefusesTraversalAndEscapes) {
  for (const char* p : {"../secret", "sub/../../secret", "..", "sub/..", "a\\b"}) {
    auto f = open_under(root_, p);
    ASSERT_FALSE(f) << p;
    EXPECT_EQ(f.error().code, Errc::kInvalid) << p;
  }
  auto nul = open_under(root_, std::string_view("a.bin\0x", 7));
  ASSERT_FALSE(nul);
  EXPECT_EQ(nul.error().code, Errc::kInvalid);
  // A symlink that points outside the root does not exist as far as clients can tell.
  auto esc = open_under(root_, "escape");
  ASSERT_FALSE(esc);
  EXPECT_EQ(esc.error().code, Errc::kNotFound);
  // Absolute symlinks are never followed, even when they point inside.
  EXPECT_FALSE(open_under(root_, "absolute-link"));
  EXPECT_FALSE(open_under(root_, "sub"));      // directories are not files
  EXPECT_FALSE(open_under(root_, "missing"));  // nor are missing files
  EXPECT_FALSE(open_under(root_, ""));
  // An absolute-looking path is still relative to the root.
  auto abs = open_under(root_, "/a.bin");
  EXPECT_TRUE(abs);
}

TEST(Range, ParsesSingleRanges) {
  ByteRange r;
  ASSERT_EQ(parse_range("bytes=0-99", 1000, r), RangeParse::kOk);
  EXPECT_EQ(r.first, 0u);
  EXPECT_EQ(r.last, 99u);
  ASSERT_EQ(parse_range("bytes=900-", 1000, r), RangeParse::kOk);
  EXPECT_EQ(r.last, 999u);
  ASSERT_EQ(parse_range("bytes=-100", 1000, r), RangeParse::kOk);
  EXPECT_EQ(r.first, 900u);
  ASSERT_EQ(parse_range("bytes=990-5000", 1000, r), RangeParse::kOk);
  EXPECT_EQ(r.last, 999u);
  ASSERT_EQ(parse_range("bytes=-5000", 1000, r), RangeParse::kOk);
  EXPECT_EQ(r.first, 0u);
}

TEST(Range, IgnoresOrRefusesOthers) {
  ByteRange r;
  EXPECT_EQ(parse_range("bytes=1000-", 1000, r), RangeParse::kUnsatisfiable);
  EXPECT_EQ(parse_range("bytes=-0", 1000, r), RangeParse::kUnsatisfiable);
  EXPECT_EQ(parse_range("items=0-1", 1000, r), RangeParse::kNone);
  EXPECT_EQ(parse_range("bytes=0-1,5-6", 1000, r), RangeParse::kNone);
  EXPECT_EQ(parse_range("bytes=5-1", 1000, r), RangeParse::kNone);
  EXPECT_EQ(parse_range("bytes=x-1", 1000, r), RangeParse::kNone);
  EXPECT_EQ(parse_range("bytes=", 1000, r), RangeParse::kNone);
}

TEST(ContentType, ByExtension) {
  EXPECT_EQ(content_type_for("boot.ipxe"), "text/plain; charset=utf-8");
  EXPECT_EQ(content_type_for("vmlinuz"), "application/octet-stream");
}

}  // namespace
}  // namespace kiln::http
