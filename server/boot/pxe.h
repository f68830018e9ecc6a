// boot/pxe.h — what a network-booting client gets: pure policy, no I/O. Given what the client
// said in its DHCP request (architecture option 93, vendor class 60, user class 77) and whether
// kiln knows the machine, decide the boot file: a TFTP file name, an HTTP URL, or nothing.
//
//   legacy BIOS PXE (arch 0)            -> undionly.kpxe over TFTP
//   UEFI x86-64 PXE (arch 7, 9)         -> ipxe.efi over TFTP (or snponly.efi, configurable)
//   UEFI IA32 PXE (arch 6)              -> the IA32 file, if configured
//   UEFI arm64 PXE (arch 11)            -> the arm64 iPXE file, if configured
//   UEFI HTTP boot (60 "HTTPClient",
//     arch 16 x86-64 / 19 arm64)        -> http://.../files/<that iPXE binary>, 60 echoed
//   iPXE itself (77 "iPXE" or "kiln")   -> the HTTP URL of this machine's iPXE script: iPXE
//                                          chainloaded from the ROM asks again, and this
//                                          answer breaks the loop
//   anything else                       -> no boot information (an ordinary DHCP client)
//
// HTTPS boot (`https_base` set; deploy/build-ipxe.sh builds iPXE with HTTPS and the site CA):
//   iPXE announcing HTTPS (175 feature 0x14) -> the https URL of the script
//   iPXE without HTTPS (Debian's ROMs)       -> the HTTPS build over TFTP (BIOS or x86-64 UEFI)
//   a PXE ROM that is not iPXE               -> the HTTPS build over TFTP directly
// An iPXE without HTTPS for which there is no HTTPS build (another architecture) gets the plain
// http script, or nothing when `https_required` is set.
// Unknown machines boot too (into discovery) unless `boot_unknown` is off.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::boot {

struct BootClient {
  std::string mac;                    // "aa:bb:cc:dd:ee:ff"
  std::optional<std::uint16_t> arch;  // option 93
  std::string vendor_class;           // option 60
  std::string user_class;             // option 77
  bool known = false;                 // kiln has this machine (by MAC)
  bool ipxe_https = false;            // iPXE announced HTTPS (option 175, feature 0x14)
};

struct BootPolicy {
  std::string bios_file = "undionly.kpxe";
  std::string efi_x64_file = "ipxe.efi";  // "snponly.efi" reuses the firmware's NIC driver
  std::string efi_ia32_file;              // empty: IA32 UEFI clients get nothing
  std::string efi_arm64_file;             // empty: arm64 clients get nothing (Debian's ipxe
                                          // package ships x86 binaries only)
  std::string http_base;  // "http://10.0.0.1:8080": where /files/ and the scripts are served
  std::string script_path = "/boot/{mac}.ipxe";  // {mac} is replaced with the client's MAC
  bool boot_unknown = true;
  // HTTPS boot: "https://10.0.0.1:8443" (where the TLS listener serves the scripts); "" = off.
  std::string https_base;
  std::string https_bios_file = "kiln/ipxe-https.kpxe";  // iPXE with HTTPS, BIOS ("" = none)
  std::string https_efi_file = "kiln/ipxe-https.efi";    // iPXE with HTTPS, x86-64 UEFI
  bool https_required = false;  // with https_base: never hand out a plain http script URL
};

struct BootDecision {
  enum class Kind { kNone, kTftp, kHttp } kind = Kind::kNone;
  std::string file;          // the TFTP file name, or the full URL for kHttp
  bool http_client = false;  // UEFI HTTP boot: echo option 60 "HTTPClient"
  std::string reason;        // why (for logs), e.g. "bios-pxe", "ipxe-script"
};

// Client architecture types (RFC 4578 and the IANA registry).
namespace arch {
inline constexpr std::uint16_t kBios = 0, kEfiIa32 = 6, kEfiBc = 7, kEfiX64 = 9, kEfiArm32 = 10,
                               kEfiArm64 = 11, kEfiX64Http = 16, kEfiArm64Http = 19;
}

BootDecision decide(const BootClient& c, const BootPolicy& p);

// True when option 60 marks a PXE ROM ("PXEClient...") or a UEFI HTTP boot client.
bool is_pxe_client(std::string_view vendor_class);
bool is_http_client(std::string_view vendor_class);
bool is_ipxe(std::string_view user_class);

}  // namespace kiln::boot
