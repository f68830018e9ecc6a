// The config table: the committed example file is the table's, bad files are refused with a
// message that names the key, and --print-config output reads back as the same config.
#include "daemon/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace kiln::daemon {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ConfigTest, CommittedExampleIsTheTables) {
  // On a mismatch: build/kilnd --print-example-config > deploy/kilnd.example.json
  EXPECT_EQ(read_file(KILN_SOURCE_DIR "/deploy/kilnd.example.json"), example_config());
}

TEST(ConfigTest, ExampleParses) {
  auto c = parse_config(example_config());
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->data_dir, "/var/lib/kiln");
  EXPECT_EQ(c->http.address, "0.0.0.0");
  EXPECT_EQ(c->http.port, 8080);
  EXPECT_TRUE(c->tftp_enabled);
  EXPECT_EQ(c->dhcp_mode, "authoritative");
  ASSERT_EQ(c->dhcp.subnets.size(), 1u);
  EXPECT_EQ(c->dhcp.subnets[0].lease_time_s, 3600u);
}

TEST(ConfigTest, EveryFieldIsDocumentedAndPrinted) {
  const auto printed = nlohmann::json::parse(dump_config(Config{}));
  for (const auto& f : config_fields()) {
    EXPECT_FALSE(f.doc.empty()) << f.key;
    std::string pointer = "/" + std::string(f.key);
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    EXPECT_TRUE(printed.contains(nlohmann::json::json_pointer(pointer))) << f.key;
  }
}

TEST(ConfigTest, DefaultsAreKeptForAbsentKeys) {
  auto c = parse_config(R"({"http": {"body_limit": 4096}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->http.body_limit, 4096u);
  EXPECT_EQ(c->http.address, "127.0.0.1");
  EXPECT_EQ(c->http.port, 8080);
  EXPECT_EQ(c->data_dir, "./var");
  EXPECT_FALSE(c->tftp_enabled);
}

TEST(ConfigTest, BadFilesAreRefusedNamingTheKey) {
  struct Case {
    const char* text;
    const char* message;  // a substring of the error
  };
  const Case cases[] = {
      // Unknown keys, at every depth.
      {R"({"bogus": 1})", "unknown key 'bogus'"},
      {R"({"http": {"listen": "127.0.0.1:0", "bodylimit": 5}})", "unknown key 'http.bodylimit'"},
      {R"({"dhcp": {"boot": {"bios": "x"}}})", "unknown key 'dhcp.boot.bios'"},
      {R"({"dhcp": {"subnets": [{"subnet": "10.0.0.0/24", "pool": "10.0.0.1-10.0.0.2",
           "gateway": "10.0.0.1"}]}})",
       "unknown key 'dhcp.subnets[].gateway'"},
      // Wrong types.
      {R"({"http": 5})", "http must be an object, got 5"},
      {R"({"threads": "four"})", "threads must be an integer"},
      {R"({"threads": 1.5})", "threads must be an integer"},
      {R"({"log_level": 3})", "log_level must be a string, got 3"},
      {R"({"api": {"auth": "no"}})", "api.auth must be a boolean, got \"no\""},
      {R"({"images": {"trusted_keys": "k.pem"}})", "images.trusted_keys must be a list of strings"},
      {R"({"http": {"read_timeout_ms": "30s"}})", "http.read_timeout_ms must be an integer"},
      // Bad values.
      {R"({"dhcp": {"port": 70000}})", "dhcp.port must be an integer within 0..65535, got 70000"},
      {R"({"http": {"body_limit": -1}})", "http.body_limit must be an integer within 0.."},
      {R"({"http": {"listen": "nonsense"}})", "http.listen: 'nonsense' is not host:port"},
      {R"({"http": {"listen": "127.0.0.1:99999"}})", "port must be 0-65535"},
      {R"({"tftp": {"listen": ":69"}})", "tftp.listen: ':69' is not host:port (no host)"},
      {R"({"store": {"synchronous": "sometimes"}})", "store.synchronous must be full or normal"},
      {R"({"boot": {"localboot_efi": "grub"}})", "boot.localboot_efi must be sanboot or exit"},
      {R"({"dhcp": {"mode": "on"}})", "dhcp.mode must be off, authoritative or proxy"},
      {R"({"dhcp": {"mode": "proxy"}})", "dhcp.interfaces must name the interfaces to serve"},
      {R"({"tftp": {"max_windowsize": 0}})", "tftp.max_windowsize must be within 1..65535"},
      {R"({"tftp": {"max_blksize": 100}})", "tftp.max_blksize must be within 512..65464"},
      {R"({"tftp": {"min_rto_ms": 9000}})", "tftp: need 1 <= min_rto_ms <= max_rto_ms"},
      {R"({"tftp": {"max_transfers": 0}})", "max_transfers and max_per_client must be >= 1"},
      {R"({"ra": {"prefixes": ["fd66::"]}})", "needs a /length"},
      {R"({"dhcp": {"subnets": [{"subnet": "10.0.0.0", "pool": "10.0.0.1-10.0.0.2"}]}})",
       "dhcp: bad subnet '10.0.0.0' (want a.b.c.d/n)"},
      {R"({"dhcp": {"subnets": [{"subnet": "10.0.0.0/24", "pool": "10.0.1.1-10.0.1.2"}]}})",
       "must be first-last inside 10.0.0.0/24"},
      {R"({"dhcp": {"subnets": [{"subnet": "10.0.0.0/24", "pool": "10.0.0.1-10.0.0.2",
           "lease_time_s": 10}]}})",
       "dhcp: lease_time_s must be >= 60"},
      {R"({"dhcp": {"relays": ["10.0.0.300"]}})", "dhcp.relays: bad IPv4 address '10.0.0.300'"},
      {R"({"dhcp": {"relays": "10.0.0.1"}})", "dhcp.relays must be a list of strings"},
      {R"({"dhcp": {"new_lease_burst": 0}})", "dhcp.new_lease_burst must be >= 1"},
      // Rack caches: a bad subnet or URL stops kilnd before it hands them to agents.
      {R"({"images": {"mirrors": [{"subnet": "10.1.0.0/33", "urls": []}]}})",
       "images.mirrors: subnet '10.1.0.0/33' has a prefix length that is not 0-32"},
      {R"({"images": {"mirrors": [{"subnet": "10.1.0.0", "urls": []}]}})",
       "subnet '10.1.0.0' is not address/prefix"},
      {R"({"images": {"mirrors": [{"subnet": "10.1.0.300/24", "urls": []}]}})",
       "subnet '10.1.0.300/24' is not address/prefix"},
      {R"({"images": {"mirrors": [{"subnet": "10.1.0.1/24", "urls": []}]}})",
       "subnet '10.1.0.1/24' has host bits set"},
      {R"({"images": {"mirrors": [{"subnet": "10.1.0.0/24", "urls": ["ftp://cache/"]}]}})",
       "images.mirrors: subnet 10.1.0.0/24: URL 'ftp://cache/' must start with http://"},
      {R"({"images": {"mirrors": [{"subnet": "10.1.0.0/24", "urls": "http://cache"}]}})",
       "images.mirrors[].urls must be a list of strings"},
      {R"({"images": {"mirrors": [{"subnet": "10.1.0.0/24"}]}})",
       "images.mirrors[] needs a subnet and urls"},
      {R"({"images": {"mirrors": [{"subnet": "10.1.0.0/24", "urls": [], "via": 1}]}})",
       "unknown key 'images.mirrors[].via'"},
      {R"({"images": {"mirrors": [{"subnet": "10.1.0.0/24", "urls": []},
           {"subnet": "10.1.0.0/24", "urls": []}]}})",
       "subnet 10.1.0.0/24 is listed twice"},
      {R"({"images": {"mirrors": {"subnet": "10.1.0.0/24"}}})",
       "images.mirrors must be a list of {subnet, urls}"},
      {R"({"images": {"chunks_require_token": true,
           "mirrors": [{"subnet": "10.1.0.0/24", "urls": ["http://c"]}]}})",
       "images.mirrors cannot serve private chunks"},
  };
  for (const auto& tc : cases) {
    auto c = parse_config(tc.text);
    ASSERT_FALSE(c) << tc.text;
    EXPECT_EQ(c.error().code, Errc::kInvalid) << tc.text;
    EXPECT_NE(c.error().message.find(tc.message), std::string::npos)
        << tc.text << "\n  error: " << c.error().message << "\n  want: " << tc.message;
  }
  auto not_object = parse_config("[1, 2]");
  ASSERT_FALSE(not_object);
  EXPECT_EQ(not_object.error().code, Errc::kBadRequest);
}

TEST(ConfigTest, PrintedConfigReadsBackTheSame) {
  Config rich;
  {
    auto c = parse_config(example_config());
    ASSERT_TRUE(c) << c.error().message;
    rich = *c;
  }
  auto v6 = parse_config(R"({"http": {"listen": "[::1]:0"}, "tftp": {"listen": "[::]:6969"},
      "ra": {"prefixes": ["fd00:0:0:12::/64"]}, "boot": {"server_url": "http://x:1/"},
      "dhcp": {"subnets": [{"subnet": "10.1.0.0/16", "pool": "10.1.0.10-10.1.0.20"}]}})");
  ASSERT_TRUE(v6) << v6.error().message;
  for (const Config& c : {Config{}, rich, *v6}) {
    const std::string printed = dump_config(c);
    auto back = parse_config(printed);
    ASSERT_TRUE(back) << back.error().message << "\n" << printed;
    EXPECT_EQ(dump_config(*back), printed);
  }
  EXPECT_EQ(v6->http.address, "::1");
  EXPECT_EQ(v6->boot.server_url, "http://x:1");
}

TEST(ConfigTest, FlagsUseTheFieldsParsers) {
  auto field = [](std::string_view key) {
    for (const auto& f : config_fields()) {
      if (f.key == key) return &f;
    }
    ADD_FAILURE() << key;
    return &config_fields().front();
  };
  Config c;
  ASSERT_TRUE(apply_flag(*field("http.listen"), "127.0.0.1:9", c));
  EXPECT_EQ(c.http.port, 9);
  ASSERT_TRUE(apply_flag(*field("tftp.listen"), "127.0.0.1:6969", c));
  EXPECT_TRUE(c.tftp_enabled);
  ASSERT_TRUE(apply_flag(*field("threads"), "4", c));
  EXPECT_EQ(c.threads, 4);
  ASSERT_TRUE(apply_flag(*field("api.auth"), "", c));
  EXPECT_FALSE(c.api.auth_required);
  EXPECT_FALSE(apply_flag(*field("http.listen"), "nonsense", c));
  EXPECT_FALSE(apply_flag(*field("threads"), "four", c));
  EXPECT_EQ(field("http.listen")->flag, "-l,--listen");
}

}  // namespace
}  // namespace kiln::daemon
