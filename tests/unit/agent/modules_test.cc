#include "agent/modules.h"

#include <gtest/gtest.h>

#include <fstream>

#include "agent/inventory.h"
#include "tests/unit/test_dir.h"

namespace kiln::agent {
namespace {

ModuleIndex index() {
  ModuleIndex ix;
  ix.order = {"kernel/net/core/failover.ko",
              "kernel/drivers/net/net_failover.ko",
              "kernel/drivers/virtio/virtio_pci.ko",
              "kernel/drivers/net/virtio_net.ko",
              "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
              "kernel/fs/fat/vfat.ko"};
  ix.alias = {{"pci:v00001AF4d*sv*sd*bc*sc*i*", "virtio_pci"},
              {"virtio:d00000001v*", "virtio_net"},
              {"pci:v00008086d000010D3sv*sd*bc*sc*i*", "e1000e"}};
  ix.deps = {{"virtio_net", "net_failover"}, {"net_failover", "failover"}};
  ix.always = {"vfat"};
  return ix;
}

TEST(AgentModules, Names) {
  EXPECT_EQ(module_name("kernel/drivers/net/virtio_net.ko"), "virtio_net");
  EXPECT_EQ(module_name("kernel/drivers/md/dm-mod.ko"), "dm_mod");
  EXPECT_EQ(module_name("x/y.ko.xz"), "y");
}

TEST(AgentModules, WantsWhatTheHardwareMatchesWithDependencies) {
  const auto ix = index();
  using V = std::vector<std::string>;
  // Only the PCI device is visible at first: its bus driver, and the always-wanted ones.
  EXPECT_EQ(wanted_modules(ix, {"pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"}),
            (V{"vfat", "virtio_pci"}));
  // Once virtio_pci made the virtio device appear: virtio_net and its dependency chain.
  EXPECT_EQ(wanted_modules(ix, {"pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00",
                                "virtio:d00000001v00001AF4"}),
            (V{"failover", "net_failover", "vfat", "virtio_net", "virtio_pci"}));
  // An Intel NIC the index has no pattern for loads nothing; e1000e's does.
  EXPECT_EQ(wanted_modules(ix, {"pci:v00008086d0000153Asv*"}), (V{"vfat"}));
  EXPECT_EQ(wanted_modules(ix, {"pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"}),
            (V{"e1000e", "vfat"}));
}

TEST(AgentModules, LoadNamedFindsNothingToLoadOutsideTheIndex) {
  // Names the index does not hold load nothing (and never touch the real kernel here).
  const auto r = load_named(index(), {"no_such_fs"}, "/nonexistent");
  EXPECT_TRUE(r.loaded.empty());
  EXPECT_TRUE(r.failed.empty());
}

TEST(AgentModules, ReadsTheBuildersIndex) {
  const auto dir = kiln::testing::make_test_dir("agent-modules");
  EXPECT_FALSE(read_module_index(dir));
  std::ofstream(dir / "modules.list") << "kernel/a.ko\nkernel/b.ko\n";
  std::ofstream(dir / "modules.alias") << "pci:v00001AF4d* a\n";
  std::ofstream(dir / "modules.deps") << "b a\n";
  std::ofstream(dir / "modules.always") << "b\n";
  std::ofstream(dir / "modules.kexec") << "a\n";
  auto ix = read_module_index(dir);
  ASSERT_TRUE(ix) << ix.error().message;
  EXPECT_EQ(ix->order.size(), 2u);
  EXPECT_EQ(ix->alias.at(0).second, "a");
  EXPECT_EQ(ix->kexec, (std::vector<std::string>{"a"}));
  EXPECT_EQ(wanted_modules(*ix, {}), (std::vector<std::string>{"a", "b"}));
  std::filesystem::remove_all(dir);
}

TEST(AgentInventory, ReadsAFakeMachine) {
  const auto root = kiln::testing::make_test_dir("agent-inventory");
  std::filesystem::create_directories(root / "proc");
  std::ofstream(root / "proc/cpuinfo")
      << "processor\t: 0\nmodel name\t: Test CPU\nphysical id\t: 0\n\n"
         "processor\t: 1\nmodel name\t: Test CPU\nphysical id\t: 0\n";
  std::ofstream(root / "proc/meminfo") << "MemTotal:        2048 kB\nMemFree: 1 kB\n";
  std::filesystem::create_directories(root / "sys/block/vda/queue");
  std::filesystem::create_directories(root / "sys/block/loop0");
  std::ofstream(root / "sys/block/vda/size") << "524288\n";
  std::ofstream(root / "sys/block/vda/serial") << "SER1\n";
  std::ofstream(root / "sys/block/vda/queue/logical_block_size") << "512\n";
  std::filesystem::create_directories(root / "sys/class/net/eth0/device");
  std::filesystem::create_directories(root / "sys/class/net/br0");  // no device: not a NIC
  std::ofstream(root / "sys/class/net/eth0/address") << "52:54:00:99:00:01\n";
  const auto inv = collect_inventory(root);
  EXPECT_EQ(inv["cpu"]["threads"], 2);
  EXPECT_EQ(inv["cpu"]["sockets"], 1);
  EXPECT_EQ(inv["cpu"]["model"], "Test CPU");
  EXPECT_EQ(inv["memory_bytes"], 2048u * 1024);
  ASSERT_EQ(inv["disks"].size(), 1u);
  EXPECT_EQ(inv["disks"][0]["size_bytes"], 524288u * 512);
  EXPECT_EQ(inv["disks"][0]["serial"], "SER1");
  ASSERT_EQ(inv["nics"].size(), 1u);
  EXPECT_EQ(inv["nics"][0]["mac"], "52:54:00:99:00:01");
  EXPECT_EQ(inv["firmware"], "bios");
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace kiln::agent
