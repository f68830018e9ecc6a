// Which rack caches an agent is told to use, by the address its plan request came from.
#include "api/mirrors.h"

#include <gtest/gtest.h>

namespace kiln::api {
namespace {

MirrorRule rule(std::string subnet, std::vector<std::string> urls) {
  auto r = make_mirror_rule(std::move(subnet), std::move(urls));
  EXPECT_TRUE(r) << r.error().message;
  return r ? *r : MirrorRule{};
}

TEST(Mirrors, TheMostSpecificSubnetWins) {
  const std::vector<MirrorRule> rules = {
      rule("10.0.0.0/8", {"http://site-cache"}),
      rule("10.1.2.0/24", {"http://rack12-a:8080", "http://rack12-b:8080"}),
      rule("10.1.0.0/16", {"http://row1"}),
      rule("10.1.3.0/24", {}),  // this rack: straight to kilnd
      rule("fd00:12::/64", {"http://[fd00:12::2]:8080"}),
  };
  struct Case {
    const char* peer;
    std::vector<std::string> want;
  };
  const Case cases[] = {
      {"10.1.2.77", {"http://rack12-a:8080", "http://rack12-b:8080"}},
      {"::ffff:10.1.2.77", {"http://rack12-a:8080", "http://rack12-b:8080"}},
      {"10.1.9.1", {"http://row1"}},
      {"10.200.0.1", {"http://site-cache"}},
      {"10.1.3.5", {}},
      {"192.168.1.1", {}},
      {"fd00:12::abcd", {"http://[fd00:12::2]:8080"}},
      {"fd00:12::abcd%eth0", {"http://[fd00:12::2]:8080"}},
      {"fd00:13::1", {}},
      {"", {}},
      {"not-an-address", {}},
  };
  for (const auto& c : cases) EXPECT_EQ(mirrors_for(rules, c.peer), c.want) << c.peer;
}

TEST(Mirrors, EdgesOfPrefixes) {
  const std::vector<MirrorRule> rules = {rule("0.0.0.0/0", {"http://any4"}),
                                         rule("10.1.2.3/32", {"http://one"}),
                                         rule("10.1.2.0/23", {"http://odd"})};
  EXPECT_EQ(mirrors_for(rules, "10.1.2.3"), std::vector<std::string>{"http://one"});
  EXPECT_EQ(mirrors_for(rules, "10.1.3.255"), std::vector<std::string>{"http://odd"});
  EXPECT_EQ(mirrors_for(rules, "10.1.4.0"), std::vector<std::string>{"http://any4"});
  // An IPv4 /0 holds every IPv4 address, not IPv6 ones.
  EXPECT_TRUE(mirrors_for(rules, "2001:db8::1").empty());
  EXPECT_EQ(mirrors_for({rule("::/0", {"http://any"})}, "2001:db8::1"),
            std::vector<std::string>{"http://any"});
}

TEST(Mirrors, BadRulesAreRefusedNamingThePart) {
  struct Case {
    const char* subnet;
    std::vector<std::string> urls;
    const char* message;
  };
  const Case cases[] = {
      {"10.1.0.0", {}, "is not address/prefix"},
      {"10.1.0.0/", {}, "prefix length that is not 0-32"},
      {"10.1.0.0/x", {}, "prefix length that is not 0-32"},
      {"10.1.0.0/24/1", {}, "prefix length"},
      {"fd00::/129", {}, "prefix length that is not 0-128"},
      {"fe80::%eth0/64", {}, "is not address/prefix"},
      {"cache.example/24", {}, "is not address/prefix"},
      {"10.1.0.128/24", {}, "has host bits set"},
      {"fd00::1/64", {}, "has host bits set"},
      {"10.1.0.0/24", {"cache:8080"}, "must start with http:// or https://"},
      {"10.1.0.0/24", {"http://"}, "has no host"},
      {"10.1.0.0/24", {"http://c/?x"}, "query"},
  };
  for (const auto& c : cases) {
    auto r = make_mirror_rule(c.subnet, c.urls);
    ASSERT_FALSE(r) << c.subnet;
    EXPECT_EQ(r.error().code, Errc::kInvalid);
    EXPECT_NE(r.error().message.find(c.message), std::string::npos)
        << c.subnet << ": " << r.error().message;
  }
}

}  // namespace
}  // namespace kiln::api
