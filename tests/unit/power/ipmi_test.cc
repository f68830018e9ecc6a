// power/ipmi: the ipmitool driver against a scripted runner (argv without the password, strict
// parsing, boot flags read back, errors quoting stderr without the password), the real process
// runner on /bin/sh scripts (exit codes, fd 3, a minimal environment, output caps, a timeout
// that kills the whole process group), and real ipmitool against a port where no BMC answers.
#include "power/ipmi.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

namespace kiln::power {
namespace {

BmcConfig cfg(std::string driver, std::string address, std::string user, std::string password) {
  BmcConfig c;
  c.driver = std::move(driver);
  c.address = std::move(address);
  c.username = std::move(user);
  c.password = std::move(password);
  return c;
}

constexpr const char* kPassword = "ipmi-Pw_42";
constexpr std::size_t kPrefix = 15;  // ipmitool -I lanplus -H h -p p -U u -f /dev/fd/3 -N n -R r

// Answers each ipmitool command (the words after the fixed options) from a script.
struct Script {
  std::map<std::string, std::deque<CommandResult>> replies;
  std::vector<CommandSpec> specs;
  std::vector<std::string> commands;
  void add(const std::string& command, std::string out, int exit_code = 0, std::string err = {}) {
    CommandResult r;
    r.exit_code = exit_code;
    r.out = std::move(out);
    r.err = std::move(err);
    replies[command].push_back(r);
  }
};

class ScriptedRunner final : public CommandRunner {
 public:
  explicit ScriptedRunner(Script* s) : s_(s) {}
  Result<CommandResult> run(const CommandSpec& spec) override {
    s_->specs.push_back(spec);
    std::string cmd;
    for (std::size_t i = kPrefix; i < spec.argv.size(); ++i)
      cmd += (cmd.empty() ? "" : " ") + spec.argv[i];
    s_->commands.push_back(cmd);
    auto& q = s_->replies[cmd];
    if (q.empty()) {
      CommandResult r;
      r.exit_code = 1;
      r.err = "unscripted: " + cmd;
      return r;
    }
    CommandResult r = q.front();
    if (q.size() > 1) q.pop_front();  // the last reply repeats
    return r;
  }

 private:
  Script* s_;
};

class PowerIpmi : public ::testing::Test {
 protected:
  std::unique_ptr<IpmiDriver> driver() {
    BmcConfig c = cfg("ipmi", "10.9.8.7:6230", "admin", kPassword);
    c.timeout = std::chrono::milliseconds(2000);
    c.retries = 1;
    IpmiOptions o;
    o.poll_interval = std::chrono::milliseconds(0);
    o.poll_attempts = 3;
    return std::make_unique<IpmiDriver>(c, "10.9.8.7", 6230, std::make_unique<ScriptedRunner>(&s_),
                                        o);
  }
  Script s_;
};

TEST_F(PowerIpmi, ThePasswordGoesThroughFd3NeverTheCommandLine) {
  s_.add("power status", "Chassis Power is on\n");
  ASSERT_TRUE(driver()->status());
  ASSERT_EQ(s_.specs.size(), 1u);
  const auto& a = s_.specs[0].argv;
  const std::vector<std::string> want = {
      "/usr/bin/ipmitool", "-I", "lanplus", "-H", "10.9.8.7", "-p",    "6230",  "-U", "admin", "-f",
      "/dev/fd/3",         "-N", "2",       "-R", "2",        "power", "status"};
  EXPECT_EQ(a, want);
  for (const auto& arg : a) EXPECT_EQ(arg.find(kPassword), std::string::npos);
  EXPECT_EQ(s_.specs[0].fd3_data, kPassword);
}

TEST_F(PowerIpmi, PowerStatusIsParsedStrictly) {
  s_.add("power status", "Chassis Power is off\n");
  EXPECT_EQ(*driver()->status(), PowerState::kOff);
  for (const char* odd :
       {"Chassis Power is unknown", "chassis power is on", "", "Chassis Power is on!"}) {
    s_ = Script{};
    s_.add("power status", odd);
    auto r = driver()->status();
    ASSERT_FALSE(r) << odd;
    EXPECT_EQ(r.error().code, Errc::kInternal);
    EXPECT_NE(r.error().message.find("unexpected answer"), std::string::npos);
  }
}

TEST_F(PowerIpmi, CycleWhenOnCyclesAndWhenOffPowersOn) {
  s_.add("power status", "Chassis Power is on\n");
  s_.add("power cycle", "Chassis Power Control: Cycle\n");
  auto steps = driver()->power(PowerAction::kCycle);
  ASSERT_TRUE(steps) << steps.error().message;
  EXPECT_EQ(s_.commands, (std::vector<std::string>{"power status", "power cycle", "power status"}));

  s_ = Script{};
  s_.add("power status", "Chassis Power is off\n");
  s_.replies["power status"].push_back(
      CommandResult{0, 0, false, false, "Chassis Power is on\n", ""});
  s_.add("power on", "Chassis Power Control: Up/On\n");
  steps = driver()->power(PowerAction::kCycle);
  ASSERT_TRUE(steps) << steps.error().message;
  EXPECT_EQ(s_.commands, (std::vector<std::string>{"power status", "power on", "power status"}));
  EXPECT_EQ(steps->back().name, "ipmi.wait_power");
}

TEST_F(PowerIpmi, OffThatDoesNotTakeIsAConflictAndOnWhenOnIsANoOp) {
  s_.add("power status", "Chassis Power is on\n");
  s_.add("power off", "Chassis Power Control: Down/Off\n");
  auto r = driver()->power(PowerAction::kOff);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kConflict);
  s_ = Script{};
  s_.add("power status", "Chassis Power is on\n");
  ASSERT_TRUE(driver()->power(PowerAction::kOn));
  EXPECT_EQ(s_.commands, std::vector<std::string>{"power status"});
  s_.add("power soft", "Chassis Power Control: Soft\n");
  ASSERT_TRUE(driver()->power(PowerAction::kSoftOff));
  s_.add("power on", "Chassis Power Control: Up/Off\n");  // not the documented line
  s_.replies["power status"] = {CommandResult{0, 0, false, false, "Chassis Power is off\n", ""}};
  auto odd = driver()->power(PowerAction::kOn);
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.error().code, Errc::kInternal);
}

std::string bootparam(const std::string& hex) {
  return "Boot parameter version: 1\nBoot parameter 5 is valid/unlocked\nBoot parameter data: " +
         hex + "\n Boot Flags :\n   - Boot Flag Valid\n";
}

TEST_F(PowerIpmi, BootOnceNetworkSetsAndVerifiesTheBootFlags) {
  s_.add("chassis bootdev pxe options=efiboot", "Set Boot Device to pxe\n");
  s_.add("chassis bootparam get 5", bootparam("a004000000"));
  auto steps = driver()->boot_once_network(BootMode::kUefi);
  ASSERT_TRUE(steps) << steps.error().message;
  EXPECT_EQ(steps->at(1).detail, "boot flags a004000000 (PXE, next boot only, EFI)");

  s_ = Script{};
  s_.add("chassis bootdev pxe", "Set Boot Device to pxe\n");
  s_.add("chassis bootparam get 5", bootparam("8004000000"));
  ASSERT_TRUE(driver()->boot_once_network(BootMode::kLegacy));
}

TEST_F(PowerIpmi, BootFlagsThatReadBackDifferentAreAConflict) {
  // not valid; persistent; disk instead of PXE; legacy when UEFI was asked
  for (const char* hex : {"2004000000", "e004000000", "a008000000", "8004000000"}) {
    s_ = Script{};
    s_.add("chassis bootdev pxe options=efiboot", "Set Boot Device to pxe\n");
    s_.add("chassis bootparam get 5", bootparam(hex));
    auto r = driver()->boot_once_network(BootMode::kUefi);
    ASSERT_FALSE(r) << hex;
    EXPECT_EQ(r.error().code, Errc::kConflict) << hex;
    EXPECT_NE(r.error().message.find("did not apply it"), std::string::npos);
  }
  s_ = Script{};
  s_.add("chassis bootdev pxe options=efiboot", "Set Boot Device to pxe\n");
  s_.add("chassis bootparam get 5", "Boot parameter version: 1\n");
  auto r = driver()->boot_once_network(BootMode::kUefi);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kInternal);
}

TEST_F(PowerIpmi, FailuresQuoteStderrWithoutThePassword) {
  s_.add(
      "power status", "", 1,
      std::string("> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session ") +
          kPassword + "\n");
  auto r = driver()->status();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kUnauthorized);
  EXPECT_NE(r.error().message.find("RAKP 2 HMAC is invalid; Error: Unable to establish"),
            std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("BMC 10.9.8.7:6230"), std::string::npos);
  EXPECT_NE(r.error().message.find("(exit 1)"), std::string::npos);
  EXPECT_EQ(r.error().message.find(kPassword), std::string::npos) << r.error().message;

  s_ = Script{};
  s_.add("power status", "", 1, "Error: Unable to establish IPMI v2 / RMCP+ session\n");
  EXPECT_EQ(driver()->status().error().code, Errc::kUnavailable);
  s_ = Script{};
  CommandResult slow;
  slow.timed_out = true;
  s_.replies["power status"].push_back(slow);
  auto t = driver()->status();
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, Errc::kUnavailable);
  EXPECT_NE(t.error().message.find("ipmitool killed"), std::string::npos);
}

TEST(PowerIpmiConfig, AddressesAndLimits) {
  auto a = parse_ipmi_address("10.0.0.9");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->second, 623);
  EXPECT_EQ(*parse_ipmi_address("bmc1.example:6230"),
            std::pair(std::string("bmc1.example"), std::uint16_t{6230}));
  EXPECT_EQ(parse_ipmi_address("[fd00::5]:700")->first, "fd00::5");
  EXPECT_EQ(parse_ipmi_address("fd00::5")->second, 623);
  for (const char* bad : {"", "-oProxyCommand", "a b", "host:99999", "host:0", ":623"}) {
    EXPECT_FALSE(parse_ipmi_address(bad)) << bad;
  }
  EXPECT_TRUE(check_config(cfg("ipmi", "10.0.0.9", "admin", std::string(20, 'p'))));
  EXPECT_FALSE(check_config(cfg("ipmi", "10.0.0.9", "admin", std::string(21, 'p'))));
  EXPECT_FALSE(check_config(cfg("ipmi", "10.0.0.9", std::string(17, 'u'), "p")));
  EXPECT_FALSE(check_config(cfg("ipmi", "10.0.0.9", "admin", "pw\nsecond")));
  EXPECT_TRUE(make_driver(cfg("ipmi", "10.0.0.9", "admin", "p")));
}

// --- the real process runner ----------------------------------------------------------------

CommandSpec sh(const std::string& script,
               std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  CommandSpec s;
  s.argv = {"/bin/sh", "-c", script};
  s.timeout = timeout;
  return s;
}

TEST(PowerProcessRunner, CapturesOutputAndExitCodes) {
  auto runner = process_runner();
  auto r = runner->run(sh("echo out; echo err >&2; exit 3"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_FALSE(r->timed_out);
  r = runner->run(sh("kill -TERM $$"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->exit_code, -1);
  EXPECT_EQ(r->signal, SIGTERM);
  r = runner->run(sh("cat"));  // stdin is /dev/null: returns at once
  ASSERT_TRUE(r);
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->out, "");
}

TEST(PowerProcessRunner, Fd3CarriesTheSecretAndTheEnvironmentIsMinimal) {
  ::setenv("KILN_TEST_PARENT_SECRET", "leak", 1);
  auto spec = sh("cat /dev/fd/3; echo; env");
  spec.fd3_data = kPassword;
  auto r = process_runner()->run(spec);
  ::unsetenv("KILN_TEST_PARENT_SECRET");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->out.starts_with(std::string(kPassword) + "\n")) << r->out;
  EXPECT_EQ(r->out.find("KILN_TEST_PARENT_SECRET"), std::string::npos);
  EXPECT_NE(r->out.find("LC_ALL=C"), std::string::npos);
  EXPECT_EQ(r->out.find(kPassword, 1), std::string::npos) << "the secret is in the environment";
  // Without fd3_data the child has no fd 3 (nothing of the parent's leaks).
  r = process_runner()->run(sh("ls /proc/self/fd"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "0\n1\n2\n3\n") << "ls itself opens one directory fd";
}

TEST(PowerProcessRunner, OutputIsCappedButFullyDrained) {
  auto spec = sh("head -c 5000000 /dev/zero; echo done >&2");
  spec.output_cap = 64 << 10;
  auto r = process_runner()->run(spec);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->exit_code, 0);  // the child was never blocked on a full pipe
  EXPECT_EQ(r->out.size(), 64u << 10);
  EXPECT_TRUE(r->truncated);
  EXPECT_EQ(r->err, "done\n");
}

bool gone_or_zombie(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string all((std::istreambuf_iterator<char>(stat)), {});
  auto close = all.rfind(')');
  return close != std::string::npos && close + 2 < all.size() && all[close + 2] == 'Z';
}

TEST(PowerProcessRunner, TimeoutKillsTheWholeProcessGroup) {
  auto r =
      process_runner()->run(sh("sleep 60 & echo $!; sleep 60", std::chrono::milliseconds(300)));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->signal, SIGKILL);
  const pid_t grandchild = std::stoi(r->out);
  bool dead = false;
  for (int i = 0; i < 500 && !dead; ++i) {  // bounded: reaping by init is asynchronous
    dead = gone_or_zombie(grandchild);
    if (!dead) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(dead) << "the background sleep survived";
}

TEST(PowerProcessRunner, AMissingProgramIsUnavailable) {
  CommandSpec s;
  s.argv = {"/nonexistent/ipmitool", "power", "status"};
  auto r = process_runner()->run(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kUnavailable);
  EXPECT_NE(r.error().message.find("/nonexistent/ipmitool"), std::string::npos);
}

TEST(PowerIpmiReal, IpmitoolWithNoBmcIsUnavailableAndKeepsThePasswordOffItsCommandLine) {
  if (!std::filesystem::exists("/usr/bin/ipmitool")) GTEST_SKIP() << "ipmitool is not installed";
  // A UDP port on loopback where nothing answers.
  BmcConfig c = cfg("ipmi", "127.0.0.1:9", "admin", kPassword);
  c.timeout = std::chrono::milliseconds(1000);
  c.retries = 0;
  auto d = make_driver(c);
  ASSERT_TRUE(d);
  // While it runs, the command lines of ipmitool processes must not hold the password.
  std::atomic<bool> done{false};
  std::atomic<int> seen{0}, leaked{0};
  std::thread watch([&] {
    while (!done) {
      // Processes come and go while /proc is read: the non-throwing iterator (an exception on
      // this thread would abort the whole test binary).
      std::error_code ec;
      for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end;
           it.increment(ec)) {
        std::ifstream in(it->path() / "cmdline");
        std::string cmd((std::istreambuf_iterator<char>(in)), {});
        if (cmd.find("127.0.0.1") == std::string::npos || cmd.find("ipmitool") == std::string::npos)
          continue;
        ++seen;
        if (cmd.find(kPassword) != std::string::npos) ++leaked;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  auto s = (*d)->status();
  done = true;
  watch.join();
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::kUnavailable) << s.error().message;
  EXPECT_NE(s.error().message.find("Unable to establish"), std::string::npos) << s.error().message;
  EXPECT_GT(seen.load(), 0);
  EXPECT_EQ(leaked.load(), 0);
}

}  // namespace
}  // namespace kiln::power
