// The agent's HTTP client's pure parts: where chunks come from, and what pin_ca_file refuses.
#include "agent/http.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/unit/test_dir.h"

namespace kiln::agent {
namespace {

HttpUrl url(const std::string& text) {
  auto u = parse_agent_url(text);
  EXPECT_TRUE(u) << u.error().message;
  return u ? *u : HttpUrl{};
}

TEST(AgentChunkSources, Table) {
  struct Case {
    const char* name;
    std::vector<std::string> mirrors;
    std::string server;
    std::optional<std::string> chunks_url;
    std::vector<std::string> bases;
    std::string path;
  };
  const Case cases[] = {
      {"no plan path: the server's default",
       {},
       "http://10.0.0.1:8080",
       std::nullopt,
       {"http://10.0.0.1:8080"},
       "/v1/chunks/"},
      {"a relative path: the server, then",
       {"http://cache:3128"},
       "http://10.0.0.1:8080",
       "/v1/chunks/",
       {"http://cache:3128", "http://10.0.0.1:8080"},
       "/v1/chunks/"},
      {"boot over TLS, chunks on plain HTTP",
       {"http://cache:3128"},
       "https://10.0.0.1:8443",
       "http://10.0.0.1:8080/v1/chunks/",
       {"http://cache:3128", "http://10.0.0.1:8080", "https://10.0.0.1:8443"},
       "/v1/chunks/"},
      {"an absolute URL under a prefix",
       {},
       "https://kiln.example",
       "http://kiln.example/k/v1/chunks",
       {"http://kiln.example", "https://kiln.example"},
       "/k/v1/chunks/"},
      {"an IPv6 origin",
       {},
       "https://[fd00::1]:8443",
       "http://[fd00::1]:8080/v1/chunks/",
       {"http://[fd00::1]:8080", "https://[fd00::1]:8443"},
       "/v1/chunks/"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto s = chunk_sources(c.mirrors, url(c.server), c.chunks_url);
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(s->bases, c.bases);
    EXPECT_EQ(s->path, c.path);
  }
  auto bad = chunk_sources({}, url("https://h"), std::string("http://h:0/v1/chunks/"));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("chunks_url"), std::string::npos) << bad.error().message;
}

TEST(AgentTls, PinCaFileRefusesWhatIsNotACa) {
  const auto dir = kiln::testing::make_test_dir("agent-tls");
  const std::string missing = (dir / "nope.pem").string();
  auto st = pin_ca_file(missing);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kNotFound);
  EXPECT_NE(st.error().message.find(missing), std::string::npos) << st.error().message;

  const std::string junk = (dir / "junk.pem").string();
  std::ofstream(junk) << "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                         "-----END CERTIFICATE-----\n";
  st = pin_ca_file(junk);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kInvalid);
  EXPECT_NE(st.error().message.find(junk), std::string::npos) << st.error().message;

  const std::string empty = (dir / "empty.pem").string();
  std::ofstream(empty) << "";
  EXPECT_FALSE(pin_ca_file(empty));
  EXPECT_EQ(pinned_ca_file(), "") << "a refused file pins nothing";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kiln::agent
