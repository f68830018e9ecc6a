// Where machines reach kilnd (daemon::boot_urls): the plain base and, with a TLS listener, the
// https one the boot path uses; and the config keys behind them.
#include <gtest/gtest.h>

#include "daemon/config.h"
#include "daemon/daemon.h"

namespace kiln::daemon {
namespace {

Config config(const std::string& json) {
  auto c = parse_config(json);
  EXPECT_TRUE(c) << c.error().message;
  return c ? *c : Config{};
}

TEST(BootUrls, Table) {
  struct Case {
    const char* name;
    std::string json;
    std::uint16_t port, tls_port;
    bool listener_tls;
    std::string plain, https;
  };
  const Case cases[] = {
      {"no TLS listener: plain only", R"({"boot":{"server_url":"http://10.0.0.1:8080"}})", 8080, 0,
       false, "http://10.0.0.1:8080", ""},
      {"the one listener speaks TLS", R"({"http":{"listen":"10.0.0.1:8443"}})", 8443, 0, true,
       "https://10.0.0.1:8443", ""},
      {"derived from the listen addresses",
       R"({"http":{"listen":"10.0.0.1:8080","tls_listen":"10.0.0.1:0"}})", 8080, 40123, false,
       "http://10.0.0.1:8080", "https://10.0.0.1:40123"},
      {"server_url's host with the TLS port",
       R"({"http":{"listen":"0.0.0.0:8080","tls_listen":"0.0.0.0:8443"},
           "boot":{"server_url":"http://kiln.example:8080/k"}})",
       8080, 8443, false, "http://kiln.example:8080/k", "https://kiln.example:8443/k"},
      {"dhcp's boot base when server_url is unset",
       R"({"http":{"listen":"0.0.0.0:8080","tls_listen":"0.0.0.0:8443"},
           "dhcp":{"boot":{"http_base":"http://[fd00::1]:8080"}}})",
       8080, 8443, false, "http://[fd00::1]:8080", "https://[fd00::1]:8443"},
      {"boot.https_url wins",
       R"({"http":{"listen":"0.0.0.0:8080","tls_listen":"0.0.0.0:8443"},
           "boot":{"server_url":"http://10.0.0.1:8080","https_url":"https://kiln.lab:443/"}})",
       8080, 8443, false, "http://10.0.0.1:8080", "https://kiln.lab:443"},
      {"a specific TLS address, a wildcard plain one",
       R"({"http":{"listen":"0.0.0.0:8080","tls_listen":"10.0.0.1:8443"}})", 8080, 8443, false, "",
       "https://10.0.0.1:8443"},
      {"wildcards everywhere: nothing to put in a script",
       R"({"http":{"listen":"0.0.0.0:8080","tls_listen":"[::]:8443"}})", 8080, 8443, false, "", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto u = boot_urls(config(c.json), c.port, c.tls_port, c.listener_tls);
    EXPECT_EQ(u.plain, c.plain);
    EXPECT_EQ(u.https, c.https);
  }
}

TEST(BootUrls, ConfigKeys) {
  auto c = parse_config(R"({"http":{"tls_listen":"[::1]:8443"}})");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->http.tls_listen);
  EXPECT_EQ(c->http.tls_listen->address, "::1");
  EXPECT_EQ(c->http.tls_listen->port, 8443);
  c = parse_config(R"({"http":{"tls_listen":""}})");
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->http.tls_listen);

  auto bad = parse_config(R"({"http":{"tls_listen":"nowhere"}})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("http.tls_listen"), std::string::npos) << bad.error().message;
  bad = parse_config(R"({"boot":{"https_url":"http://10.0.0.1:8443"}})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("boot.https_url must start with https://"), std::string::npos)
      << bad.error().message;
}

}  // namespace
}  // namespace kiln::daemon
