// The shared helpers of core/: hex, streaming SHA-256, host:port and URL parsing, whole reads
// and writes. Each is the one copy in the tree, so each edge case is pinned here.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "core/bytes.h"
#include "core/crypto.h"
#include "core/hex.h"
#include "core/io.h"
#include "core/unique_fd.h"
#include "core/url.h"

namespace kiln {
namespace {

TEST(Base64, MatchesRfc4648VectorsAndDecodesOnlyStrictPaddedText) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    if (*plain) {
      EXPECT_EQ(base64_decode(encoded), std::optional<std::string>(plain));
    }
  }
  EXPECT_EQ(base64_encode("admin:fleet-sim-pw"), "YWRtaW46ZmxlZXQtc2ltLXB3");  // Basic auth
  EXPECT_EQ(base64_decode("Zm9v!"), std::nullopt);
  EXPECT_EQ(base64_decode("Zg="), std::nullopt);
  EXPECT_EQ(base64_decode("Z=g="), std::nullopt);
}

TEST(Hex, EncodesEveryByteLowerCase) {
  EXPECT_EQ(hex_encode(std::string("\x00\x0f\xa0\xff", 4)), "000fa0ff");
  EXPECT_EQ(hex_encode(""), "");
}

TEST(Hex, DecodesEitherCaseAndRejectsTheRest) {
  EXPECT_EQ(hex_decode("000fA0ff"), std::string("\x00\x0f\xa0\xff", 4));
  EXPECT_EQ(hex_decode(""), std::string());
  for (std::string_view bad : {"0", "abc", "zz", "0g", "12 3", "\x80\x80", "-1"}) {
    EXPECT_FALSE(hex_decode(bad)) << bad;
  }
}

TEST(Hex, Sha256ShapeIsExactlySixtyFourLowerHexDigits) {
  const std::string good(64, 'a');
  EXPECT_TRUE(is_sha256_hex(good));
  EXPECT_TRUE(is_sha256_hex(sha256_hex("x")));
  EXPECT_FALSE(is_sha256_hex(std::string(63, 'a')));
  EXPECT_FALSE(is_sha256_hex(std::string(65, 'a')));
  EXPECT_FALSE(is_sha256_hex(std::string(64, 'A')));
  EXPECT_FALSE(is_sha256_hex(std::string(63, 'a') + "g"));
}

TEST(Hex, AsciiLowerLeavesHighBytesAlone) {
  EXPECT_EQ(ascii_lower("Application/JSON"), "application/json");
  EXPECT_EQ(ascii_lower("\xc3\x89T\xff"), "\xc3\x89t\xff");
}

TEST(Bytes, AllZero) {
  EXPECT_TRUE(is_all_zero(""));
  EXPECT_TRUE(is_all_zero(std::string(1, '\0')));
  EXPECT_TRUE(is_all_zero(std::string(4 << 20, '\0')));
  for (std::size_t at :
       {std::size_t{0}, std::size_t{1}, std::size_t{15}, std::size_t{16}, std::size_t{4095}}) {
    std::string d(4096, '\0');
    d[at] = '\x80';
    EXPECT_FALSE(is_all_zero(d)) << at;
  }
}

TEST(Sha256, StreamingEqualsOneShotAndRestarts) {
  Sha256 h;
  h.update("hello ");
  h.update("world");
  EXPECT_EQ(h.hex_digest(), sha256_hex("hello world"));
  // Restarted after a digest.
  h.update("abc");
  EXPECT_EQ(h.hex_digest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  h.update_zeros(3 << 20 | 5);
  EXPECT_EQ(h.hex_digest(), sha256_hex(std::string(3 << 20 | 5, '\0')));
  Sha256 moved(std::move(h));
  moved.update("abc");
  EXPECT_EQ(hex_encode(moved.digest()), sha256_hex("abc"));
}

TEST(HostPort, ParsesTheForms) {
  struct Case {
    std::string_view in;
    bool ok;
    std::string host;
    int port;
  } cases[] = {
      {"127.0.0.1:8080", true, "127.0.0.1", 8080},
      {"0.0.0.0:0", true, "0.0.0.0", 0},
      {"[::1]:69", true, "::1", 69},
      {"::1:69", true, "::1", 69},
      {"host:65535", true, "host", 65535},
      {"host:65536", false, "", 0},
      {"host:99999", false, "", 0},
      {"host:-1", false, "", 0},
      {"host:+80", false, "", 0},
      {"host:8o", false, "", 0},
      {"host:", false, "", 0},
      {"host", false, "", 0},
      {":80", false, "", 0},
      {"[::1]", false, "", 0},
      {"[::1:80", false, "", 0},
  };
  for (const auto& c : cases) {
    auto r = parse_host_port(c.in);
    ASSERT_EQ(r.ok(), c.ok) << c.in;
    if (c.ok) {
      EXPECT_EQ(r->host, c.host) << c.in;
      EXPECT_EQ(r->port, c.port) << c.in;
    }
  }
  EXPECT_TRUE(parse_host_port(":80", /*allow_empty_host=*/true));
}

TEST(HttpUrl, ParsesBaseUrls) {
  auto u = parse_http_url("http://10.0.0.1:8080/prefix//");
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "10.0.0.1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->path, "/prefix");
  EXPECT_EQ(u->url, "http://10.0.0.1:8080/prefix");
  EXPECT_EQ(u->host_header(), "10.0.0.1:8080");
  auto v6 = parse_http_url("https://[fd00::1]");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->tls);
  EXPECT_EQ(v6->host, "fd00::1");
  EXPECT_EQ(v6->port, 443);
  EXPECT_EQ(v6->host_header(), "[fd00::1]");
  for (std::string_view bad :
       {"ftp://x", "http://", "http://:80", "http://x:0", "http://x:99999", "http://x:8o",
        "http://u@x", "http://x/?q", "http://x#f", "http://[::1", "http://[::1]x"}) {
    EXPECT_FALSE(parse_http_url(bad)) << bad;
  }
}

TEST(Io, WholeWritesAndReadsOverAPipeAndAFile) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  UniqueFd a(fds[0]), b(fds[1]);
  const std::string msg(100'000, 'k');
  std::thread writer([&] {
    EXPECT_TRUE(write_full(a.get(), msg));
    a.reset();
  });
  std::string got(200'000, '\0');
  auto n = read_full(b.get(), got.data(), got.size());
  writer.join();
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, msg.size());  // short only because the stream ended
  got.resize(*n);
  EXPECT_EQ(got, msg);

  char path[] = "/tmp/kiln-io-XXXXXX";
  UniqueFd f(::mkstemp(path));
  ASSERT_TRUE(f);
  ::unlink(path);
  ASSERT_TRUE(pwrite_full(f.get(), "world", 6));
  ASSERT_TRUE(pwrite_full(f.get(), "hello ", 0));
  char buf[16] = {};
  auto r = pread_full(f.get(), buf, sizeof buf, 0);
  ASSERT_TRUE(r);
  EXPECT_EQ(std::string(buf, *r), "hello world");
  EXPECT_FALSE(write_full(-1, "x"));
  EXPECT_FALSE(read_full(-1, buf, 1));
}

}  // namespace
}  // namespace kiln
