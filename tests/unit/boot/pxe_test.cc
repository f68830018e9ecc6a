#include "boot/pxe.h"

#include <gtest/gtest.h>

namespace kiln::boot {
namespace {

using Kind = BootDecision::Kind;

BootPolicy policy() {
  BootPolicy p;
  p.http_base = "http://10.0.0.1:8080";
  p.efi_arm64_file = "ipxe-arm64.efi";
  return p;
}

struct Row {
  const char* name;
  std::optional<std::uint16_t> arch;
  const char* vendor_class;
  const char* user_class;
  bool known;
  Kind kind;
  const char* file;
  bool http_client;
  const char* reason;
};

TEST(PxePolicy, DecisionTable) {
  const char* pxe = "PXEClient:Arch:00000:UNDI:002001";
  const char* pxe_efi = "PXEClient:Arch:00007:UNDI:003016";
  const char* http = "HTTPClient:Arch:00016:UNDI:003001";
  const Row rows[] = {
      {"bios rom", arch::kBios, pxe, "", true, Kind::kTftp, "undionly.kpxe", false, "bios-pxe"},
      {"bios rom, no option 93", std::nullopt, "PXEClient", "", true, Kind::kTftp, "undionly.kpxe",
       false, "bios-pxe"},
      {"uefi x64 (7)", arch::kEfiBc, pxe_efi, "", true, Kind::kTftp, "ipxe.efi", false,
       "uefi-x64-pxe"},
      {"uefi x64 (9)", arch::kEfiX64, pxe_efi, "", true, Kind::kTftp, "ipxe.efi", false,
       "uefi-x64-pxe"},
      {"uefi arm64", arch::kEfiArm64, pxe_efi, "", true, Kind::kTftp, "ipxe-arm64.efi", false,
       "uefi-arm64-pxe"},
      {"uefi ia32 unconfigured", arch::kEfiIa32, pxe_efi, "", true, Kind::kNone, "", false,
       "arch-unsupported"},
      {"uefi arm32", arch::kEfiArm32, pxe_efi, "", true, Kind::kNone, "", false,
       "arch-unsupported"},
      {"uefi http x64", arch::kEfiX64Http, http, "", true, Kind::kHttp,
       "http://10.0.0.1:8080/files/ipxe.efi", true, "uefi-http"},
      {"uefi http arm64", arch::kEfiArm64Http, http, "", true, Kind::kHttp,
       "http://10.0.0.1:8080/files/ipxe-arm64.efi", true, "uefi-http"},
      {"uefi http, bios arch", arch::kBios, http, "", true, Kind::kNone, "", false,
       "http-arch-unsupported"},
      {"http client without arch", std::nullopt, "HTTPClient", "", true, Kind::kNone, "", false,
       "http-client-without-arch"},
      {"ipxe chainloaded (bios)", arch::kBios, pxe, "iPXE", true, Kind::kHttp,
       "http://10.0.0.1:8080/boot/52-54-00-12-34-56.ipxe", false, "ipxe-script"},
      {"ipxe chainloaded (efi)", arch::kEfiX64, pxe_efi, "iPXE", true, Kind::kHttp,
       "http://10.0.0.1:8080/boot/52-54-00-12-34-56.ipxe", false, "ipxe-script"},
      {"kiln user class", std::nullopt, "", "kiln", true, Kind::kHttp,
       "http://10.0.0.1:8080/boot/52-54-00-12-34-56.ipxe", false, "ipxe-script"},
      {"ordinary client", std::nullopt, "", "", true, Kind::kNone, "", false, "not-a-boot-client"},
      {"ordinary client with a vendor class", std::nullopt, "MSFT 5.0", "", true, Kind::kNone, "",
       false, "not-a-boot-client"},
      {"unknown machine boots (discovery)", arch::kBios, pxe, "", false, Kind::kTftp,
       "undionly.kpxe", false, "bios-pxe"},
  };
  for (const auto& r : rows) {
    BootClient c{"52:54:00:12:34:56", r.arch, r.vendor_class, r.user_class, r.known};
    auto d = decide(c, policy());
    EXPECT_EQ(d.kind, r.kind) << r.name;
    EXPECT_EQ(d.file, r.file) << r.name;
    EXPECT_EQ(d.http_client, r.http_client) << r.name;
    EXPECT_EQ(d.reason, r.reason) << r.name;
  }
}

TEST(PxePolicy, UnknownMachinesCanBeIgnored) {
  BootPolicy p = policy();
  p.boot_unknown = false;
  BootClient c{"52:54:00:00:00:01", arch::kBios, "PXEClient", "", false};
  auto d = decide(c, p);
  EXPECT_EQ(d.kind, Kind::kNone);
  EXPECT_EQ(d.reason, "unknown-machine-ignored");
  c.known = true;
  EXPECT_EQ(decide(c, p).kind, Kind::kTftp);
}

TEST(PxePolicy, SnponlyAndNoHttpBase) {
  BootPolicy p = policy();
  p.efi_x64_file = "snponly.efi";
  BootClient c{"52:54:00:00:00:01", arch::kEfiX64, "PXEClient", "", true};
  EXPECT_EQ(decide(c, p).file, "snponly.efi");
  p.http_base.clear();
  c.user_class = "iPXE";
  auto d = decide(c, p);
  EXPECT_EQ(d.kind, Kind::kNone);
  EXPECT_EQ(d.reason, "no-http-base");
}

BootPolicy https_policy() {
  BootPolicy p = policy();
  p.https_base = "https://10.0.0.1:8443";
  return p;
}

TEST(PxePolicy, HttpsBootChainloadsTheHttpsBuildThenHandsOutTheHttpsScript) {
  const char* pxe = "PXEClient:Arch:00000:UNDI:002001";
  const char* pxe_efi = "PXEClient:Arch:00007:UNDI:003016";
  struct HttpsRow {
    const char* name;
    std::optional<std::uint16_t> arch;
    const char* vendor_class;
    const char* user_class;
    bool ipxe_https;
    Kind kind;
    const char* file;
    const char* reason;
  };
  const HttpsRow rows[] = {
      {"stock ipxe rom (bios)", arch::kBios, pxe, "iPXE", false, Kind::kTftp,
       "kiln/ipxe-https.kpxe", "ipxe-chainload-https"},
      {"stock ipxe rom (efi 7)", arch::kEfiBc, pxe_efi, "iPXE", false, Kind::kTftp,
       "kiln/ipxe-https.efi", "ipxe-chainload-https"},
      {"stock ipxe rom (efi 9)", arch::kEfiX64, pxe_efi, "iPXE", false, Kind::kTftp,
       "kiln/ipxe-https.efi", "ipxe-chainload-https"},
      {"ipxe without option 93", std::nullopt, "", "iPXE", false, Kind::kTftp,
       "kiln/ipxe-https.kpxe", "ipxe-chainload-https"},
      {"https ipxe (bios)", arch::kBios, pxe, "iPXE", true, Kind::kHttp,
       "https://10.0.0.1:8443/boot/52-54-00-12-34-56.ipxe", "ipxe-https-script"},
      {"https ipxe (efi)", arch::kEfiX64, pxe_efi, "iPXE", true, Kind::kHttp,
       "https://10.0.0.1:8443/boot/52-54-00-12-34-56.ipxe", "ipxe-https-script"},
      {"ipxe arm64 without https: no build, plain script", arch::kEfiArm64, pxe_efi, "iPXE", false,
       Kind::kHttp, "http://10.0.0.1:8080/boot/52-54-00-12-34-56.ipxe", "ipxe-script"},
      {"pxe rom (bios) gets the https build directly", arch::kBios, pxe, "", false, Kind::kTftp,
       "kiln/ipxe-https.kpxe", "pxe-https-build"},
      {"pxe rom (efi) gets the https build directly", arch::kEfiBc, pxe_efi, "", false, Kind::kTftp,
       "kiln/ipxe-https.efi", "pxe-https-build"},
      {"pxe rom arm64: the configured file", arch::kEfiArm64, pxe_efi, "", false, Kind::kTftp,
       "ipxe-arm64.efi", "uefi-arm64-pxe"},
      {"ordinary client", std::nullopt, "", "", false, Kind::kNone, "", "not-a-boot-client"},
  };
  for (const auto& r : rows) {
    BootClient c{"52:54:00:12:34:56", r.arch, r.vendor_class, r.user_class, true, r.ipxe_https};
    auto d = decide(c, https_policy());
    EXPECT_EQ(d.kind, r.kind) << r.name;
    EXPECT_EQ(d.file, r.file) << r.name;
    EXPECT_EQ(d.reason, r.reason) << r.name;
  }
}

TEST(PxePolicy, HttpsRequiredNeverHandsOutAPlainScript) {
  BootPolicy p = https_policy();
  p.https_required = true;
  BootClient arm{"52:54:00:00:00:01", arch::kEfiArm64, "PXEClient", "iPXE", true, false};
  auto d = decide(arm, p);
  EXPECT_EQ(d.kind, Kind::kNone);
  EXPECT_EQ(d.reason, "ipxe-without-https");
  // A site without the BIOS build: BIOS iPXE without HTTPS gets nothing rather than http.
  p.https_bios_file.clear();
  BootClient bios{"52:54:00:00:00:02", arch::kBios, "PXEClient", "iPXE", true, false};
  EXPECT_EQ(decide(bios, p).kind, Kind::kNone);
  bios.ipxe_https = true;
  EXPECT_EQ(decide(bios, p).file, "https://10.0.0.1:8443/boot/52-54-00-00-00-02.ipxe");
  // Not required: the same client falls back to the plain script.
  p.https_required = false;
  bios.ipxe_https = false;
  EXPECT_EQ(decide(bios, p).file, "http://10.0.0.1:8080/boot/52-54-00-00-00-02.ipxe");
}

TEST(PxePolicy, WithoutHttpsBaseAnHttpsCapableIpxeGetsThePlainScript) {
  // HTTPS boot off (the default): the feature flag changes nothing.
  BootClient c{"52:54:00:00:00:01", arch::kBios, "PXEClient", "iPXE", true, true};
  auto d = decide(c, policy());
  EXPECT_EQ(d.file, "http://10.0.0.1:8080/boot/52-54-00-00-00-01.ipxe");
  EXPECT_EQ(d.reason, "ipxe-script");
}

}  // namespace
}  // namespace kiln::boot
