#include "agent/options.h"

#include <gtest/gtest.h>

#include <sstream>

namespace kiln::agent {
namespace {

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

// Parses `args` with `cmdline` as the kernel command line (whatever file --cmdline names).
Result<Options> parse(const std::string& args, const std::string& cmdline = "") {
  return parse_options(words(args),
                       [cmdline](const std::string&) -> Result<std::string> { return cmdline; });
}

constexpr const char* kDeploy = "--server http://10.0.0.1:8080 --ticket t --disk /dev/sda ";

// A compact view of the fields the tables check.
std::string after_name(After a) {
  switch (a) {
    case After::kNone:
      return "none";
    case After::kReboot:
      return "reboot";
    case After::kKexec:
      return "kexec";
    case After::kPoweroff:
      return "poweroff";
  }
  return "?";
}

struct Good {
  const char* name;
  std::string args, cmdline;
  std::function<void(const Options&)> check;
};

TEST(AgentOptions, GoodInputs) {
  const Good cases[] = {
      {"minimal deploy", kDeploy, "",
       [](const Options& o) {
         EXPECT_EQ(o.mode, Mode::kDeploy);
         EXPECT_EQ(o.server.host, "10.0.0.1");
         EXPECT_EQ(o.server.port, 8080);
         EXPECT_EQ(o.ticket, "t");
         EXPECT_EQ(o.disk, "/dev/sda");
         EXPECT_EQ(after_name(o.after), "none");
         EXPECT_FALSE(o.use_cmdline);
         EXPECT_TRUE(o.deploy.delta);
         EXPECT_EQ(o.deploy.workers, 0);
         EXPECT_EQ(o.deploy.retries, 8);
       }},
      {"every deploy flag",
       std::string(kDeploy) +
           "--trust-key a.pem --trust-key b.pem --allow-unsigned --mirror http://m1 --mirror "
           "http://m2:81/x --after kexec --workers 3 --memory 64 --retries 0 --timeout-ms 1500 "
           "--backoff-ms 50 --no-delta",
       "",
       [](const Options& o) {
         EXPECT_EQ(o.trust_keys, (std::vector<std::string>{"a.pem", "b.pem"}));
         EXPECT_TRUE(o.allow_unsigned);
         EXPECT_EQ(o.mirrors, (std::vector<std::string>{"http://m1", "http://m2:81/x"}));
         EXPECT_EQ(after_name(o.after), "kexec");
         EXPECT_EQ(o.deploy.workers, 3);
         EXPECT_EQ(o.deploy.memory_budget, 64ull << 20);
         EXPECT_EQ(o.deploy.retries, 0);
         EXPECT_EQ(o.deploy.timeout.count(), 1500);
         EXPECT_EQ(o.deploy.backoff.count(), 50);
         EXPECT_FALSE(o.deploy.delta);
       }},
      {"discovery with flags",
       "--discover --server http://h --mac 52:54:00:00:00:01 --after poweroff", "",
       [](const Options& o) {
         EXPECT_EQ(o.mode, Mode::kDiscover);
         EXPECT_EQ(o.server.port, 80);
         EXPECT_EQ(o.mac, "52:54:00:00:00:01");
         EXPECT_EQ(after_name(o.after), "poweroff");
       }},
      {"help wins over what follows", "-h --bogus", "",
       [](const Options& o) { EXPECT_TRUE(o.help); }},
      {"--help", "--help", "", [](const Options& o) { EXPECT_TRUE(o.help); }},
      {"deploy from the cmdline alone", "--cmdline",
       "BOOT_IMAGE=x console=ttyS0 kiln.server=http://10.0.0.1:8080/ kiln.ticket=abc "
       "kiln.disk=largest kiln.mirror=http://m1,,http://m2 kiln.retries=2 kiln.backoff_ms=100 "
       "kiln.fail_pause=2 kiln.debug=1 quiet\n",
       [](const Options& o) {
         EXPECT_TRUE(o.use_cmdline);
         EXPECT_EQ(o.server.url, "http://10.0.0.1:8080");
         EXPECT_EQ(o.ticket, "abc");
         EXPECT_EQ(o.disk, "largest");
         EXPECT_EQ(o.mirrors, (std::vector<std::string>{"http://m1", "http://m2"}));
         EXPECT_EQ(o.deploy.retries, 2);
         EXPECT_EQ(o.deploy.backoff.count(), 100);
         EXPECT_EQ(after_name(o.after), "reboot");  // the default with --cmdline
       }},
      {"discovery from the cmdline", "--cmdline /tmp/cmdline",
       "kiln.mode=discover kiln.server=http://h:8080 kiln.mac=52-54-00-00-00-01 "
       "kiln.after=poweroff",
       [](const Options& o) {
         EXPECT_EQ(o.cmdline_path, "/tmp/cmdline");
         EXPECT_EQ(o.mode, Mode::kDiscover);
         EXPECT_EQ(o.mac, "52-54-00-00-00-01");
         EXPECT_EQ(after_name(o.after), "poweroff");
       }},
      {"flags win over the cmdline for server, ticket, disk, after, mac, mirrors",
       "--cmdline --server http://flag --ticket ft --disk /dev/vda --after none --mirror http://fm",
       "kiln.server=http://cmd kiln.ticket=ct kiln.disk=/dev/sdb kiln.after=kexec "
       "kiln.mirror=http://cm",
       [](const Options& o) {
         EXPECT_EQ(o.server.host, "flag");
         EXPECT_EQ(o.ticket, "ft");
         EXPECT_EQ(o.disk, "/dev/vda");
         EXPECT_EQ(after_name(o.after), "none");
         EXPECT_EQ(o.mirrors, (std::vector<std::string>{"http://fm"}));
       }},
      {"the cmdline wins over flags for retries and backoff",
       std::string(kDeploy) + "--retries 5 --backoff-ms 7 --cmdline",
       "kiln.retries=1 kiln.backoff_ms=3",
       [](const Options& o) {
         EXPECT_EQ(o.deploy.retries, 1);
         EXPECT_EQ(o.deploy.backoff.count(), 3);
       }},
      {"the first cmdline occurrence fills, the last retries wins", "--cmdline",
       "kiln.server=http://a kiln.server=http://b kiln.ticket=t kiln.disk=d kiln.retries=4 "
       "kiln.retries=6",
       [](const Options& o) {
         EXPECT_EQ(o.server.host, "a");
         EXPECT_EQ(o.deploy.retries, 6);
       }},
      {"--discover flag with kiln.mode=deploy stays discovery", "--discover --mac m --cmdline",
       "kiln.mode=deploy kiln.server=http://h",
       [](const Options& o) { EXPECT_EQ(o.mode, Mode::kDiscover); }},
      {"--cmdline followed by a flag takes no file",
       "--cmdline --server http://h --ticket t --disk d", "",
       [](const Options& o) { EXPECT_EQ(o.cmdline_path, "/proc/cmdline"); }},
      {"only the first line of the cmdline file counts", "--cmdline",
       "kiln.server=http://h kiln.ticket=t kiln.disk=d\nkiln.mode=discover",
       [](const Options& o) { EXPECT_EQ(o.mode, Mode::kDeploy); }},
      {"bounds are inclusive",
       std::string(kDeploy) +
           "--workers 1024 --memory 1048576 --retries 1000 --timeout-ms 3600000 --backoff-ms 0",
       "",
       [](const Options& o) {
         EXPECT_EQ(o.deploy.workers, 1024);
         EXPECT_EQ(o.deploy.memory_budget, 1ull << 40);
         EXPECT_EQ(o.deploy.retries, 1000);
       }},
      {"IPv6 server", "--server http://[::1]:9000 --ticket t --disk d", "",
       [](const Options& o) {
         EXPECT_EQ(o.server.host, "::1");
         EXPECT_EQ(o.server.port, 9000);
       }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto o = parse(c.args, c.cmdline);
    ASSERT_TRUE(o) << o.error().message;
    c.check(*o);
  }
}

struct Bad {
  std::string args, cmdline;
  std::string message;  // a part of the error's message
};

TEST(AgentOptions, BadInputsAreErrorsNeverExceptions) {
  const std::string d = kDeploy;
  const Bad cases[] = {
      {"--bogus", "", "unknown argument '--bogus'"},
      {d + "extra", "", "unknown argument 'extra'"},
      {"--server", "", "--server needs a value"},
      {d + "--after", "", "--after needs a value"},
      {d + "--workers", "", "--workers needs a value"},
      {d + "--workers abc", "", "--workers needs a whole number, got 'abc'"},
      {d + "--workers 3x", "", "--workers needs a whole number, got '3x'"},
      {d + "--workers -1", "", "--workers must be between 0 and 1024, got '-1'"},
      {d + "--workers 99999999999999999999", "", "--workers must be between 0 and 1024"},
      {d + "--memory 0", "", "--memory (MiB) must be between 1 and 1048576"},
      {d + "--memory 18446744073709551615", "", "--memory (MiB) must be between"},
      {d + "--retries 1001", "", "--retries must be between 0 and 1000"},
      {d + "--retries ''", "", "--retries needs a whole number"},
      {d + "--timeout-ms 0", "", "--timeout-ms must be between 1 and 3600000"},
      {d + "--backoff-ms 1e3", "", "--backoff-ms needs a whole number, got '1e3'"},
      {d + "--backoff-ms 600001", "", "--backoff-ms must be between 0 and 600000"},
      {"--server http://h --ticket t", "", "--server, --ticket and --disk are required"},
      {"--ticket t --disk d", "", "--server, --ticket and --disk are required"},
      {d + "--after poweroff", "", "--after must be none, reboot or kexec, got 'poweroff'"},
      {"--discover --server http://h", "", "--discover needs --server and --mac"},
      {"--discover --server http://h --mac m --after kexec", "",
       "after discovery, --after must be none, reboot or poweroff, got 'kexec'"},
      {"--server http://h:99999 --ticket t --disk d", "", "bad port '99999'"},
      {"--server http://h:0 --ticket t --disk d", "", "bad port '0'"},
      {"--server h:80 --ticket t --disk d", "", "must start with http://"},
      {d + "--ca", "", "--ca needs a value"},
      {"--server ftp://h --ticket t --disk d --ca ca.pem", "", "must start with http://"},
      {"--server http:// --ticket t --disk d", "", "has no host"},
      {"--cmdline", "kiln.server=http://h kiln.ticket=t kiln.disk=d kiln.retries=two",
       "kiln.retries needs a whole number, got 'two'"},
      {"--cmdline", "kiln.server=http://h kiln.ticket=t kiln.disk=d kiln.retries=-3",
       "kiln.retries must be between 0 and 1000"},
      {"--cmdline", "kiln.server=http://h kiln.ticket=t kiln.disk=d kiln.backoff_ms=",
       "kiln.backoff_ms needs a whole number"},
      {"--cmdline", "kiln.mode=rescue kiln.server=http://h",
       "kiln.mode must be deploy or discover"},
      {"--cmdline", "kiln.server=http://h kiln.ticket=t kiln.disk=d kiln.after=halt",
       "--after must be none, reboot or kexec, got 'halt'"},
      {"--cmdline", "console=ttyS0", "--server, --ticket and --disk are required"},
      // A boot configuration can never make a machine discard its image.
      {"--cmdline", "kiln.server=http://h kiln.ticket=t kiln.disk=sink:1G:/tmp/s",
       "kiln.disk cannot be a benchmark sink"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args + " | " + c.cmdline);
    Result<Options> o = make_error(Errc::kInternal, "not parsed");
    ASSERT_NO_THROW(o = parse(c.args, c.cmdline));
    ASSERT_FALSE(o);
    EXPECT_NE(o.error().message.find(c.message), std::string::npos) << o.error().message;
  }
}

// https:// is a server the agent speaks to (its certificate checked against the pinned CA when
// the connection opens); the CA comes from --ca only, never from the unauthenticated kernel
// command line.
TEST(AgentOptions, HttpsServerAndPinnedCa) {
  auto o = parse("--server https://10.0.0.1:8443/ --ticket t --disk d --ca /etc/site/ca.pem");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_TRUE(o->server.tls);
  EXPECT_EQ(o->server.host, "10.0.0.1");
  EXPECT_EQ(o->server.port, 8443);
  EXPECT_EQ(o->server.url, "https://10.0.0.1:8443");
  EXPECT_EQ(o->ca_file, "/etc/site/ca.pem");

  o = parse("--server https://kiln.example --ticket t --disk d");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->server.port, 443);
  EXPECT_EQ(o->ca_file, "") << "no --ca: main pins kDefaultCaFile when it exists";

  o = parse("--cmdline --ca /etc/kiln/site.pem",
            "kiln.mode=deploy kiln.server=https://[fd00::1]:8443 kiln.ticket=t kiln.disk=largest "
            "kiln.ca=/tmp/attacker.pem");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_TRUE(o->server.tls);
  EXPECT_EQ(o->server.host, "fd00::1");
  EXPECT_EQ(o->ca_file, "/etc/kiln/site.pem") << "kiln.ca= on the command line is ignored";

  o = parse("--cmdline", "kiln.server=https://10.0.0.1:8443 kiln.ticket=t kiln.disk=d kiln.ca=x");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->ca_file, "");

  o = parse("--discover --server https://10.0.0.1:8443 --mac 52:54:00:00:00:01 --ca c.pem");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->mode, Mode::kDiscover);
  EXPECT_TRUE(o->server.tls);
  EXPECT_EQ(o->ca_file, "c.pem");
  EXPECT_STREQ(kDefaultCaFile, "/etc/kiln/ca.pem");
}

TEST(AgentOptions, UnreadableCmdlineIsAnError) {
  std::string asked;
  auto o = parse_options({"--cmdline", "/nonexistent/cmdline"},
                         [&](const std::string& path) -> Result<std::string> {
                           asked = path;
                           return read_cmdline_file(path);
                         });
  EXPECT_EQ(asked, "/nonexistent/cmdline");
  ASSERT_FALSE(o);
  EXPECT_NE(o.error().message.find("cannot read /nonexistent/cmdline"), std::string::npos)
      << o.error().message;
}

TEST(AgentOptions, CmdlineIsReadOnlyWithTheFlag) {
  bool read = false;
  auto o = parse_options(words(kDeploy), [&](const std::string&) -> Result<std::string> {
    read = true;
    return std::string("kiln.retries=bad");
  });
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_FALSE(read);
}

TEST(AgentOptions, FallbackServersFromRepeatedFlagsAndACommaList) {
  auto o = parse(
      "--server http://10.0.0.1:8080 --server http://10.0.0.2:8080 --ticket t --disk "
      "/dev/sda");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->server.url, "http://10.0.0.1:8080");
  ASSERT_EQ(o->fallback_servers.size(), 1u);
  EXPECT_EQ(o->fallback_servers[0].url, "http://10.0.0.2:8080");
  EXPECT_EQ(o->fallback_servers[0].port, 8080);

  o = parse("--cmdline",
            "kiln.server=http://10.0.0.1:8080,http://10.0.0.2:8080,http://10.0.0.3 "
            "kiln.ticket=t kiln.disk=/dev/sda");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->server.url, "http://10.0.0.1:8080");
  ASSERT_EQ(o->fallback_servers.size(), 2u);
  EXPECT_EQ(o->fallback_servers[1].url, "http://10.0.0.3");

  o = parse("--cmdline", "kiln.server=http://10.0.0.1:8080,ftp://x kiln.ticket=t kiln.disk=/d");
  ASSERT_FALSE(o);
  EXPECT_NE(o.error().message.find("--server"), std::string::npos) << o.error().message;

  // After an https server, a plain http fallback would carry the session token in the clear.
  o = parse("--cmdline",
            "kiln.server=https://10.0.0.1:8443,http://10.0.0.2:8080 kiln.ticket=t kiln.disk=/d");
  ASSERT_FALSE(o);
  EXPECT_NE(o.error().message.find("plain http"), std::string::npos) << o.error().message;
}

}  // namespace
}  // namespace kiln::agent
