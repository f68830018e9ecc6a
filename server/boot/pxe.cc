#include "boot/pxe.h"

#include <utility>

#include "core/mac.h"

namespace kiln::boot {

bool is_pxe_client(std::string_view vc) { return vc.rfind("PXEClient", 0) == 0; }
bool is_http_client(std::string_view vc) { return vc.rfind("HTTPClient", 0) == 0; }
bool is_ipxe(std::string_view uc) { return uc == "iPXE" || uc == "kiln"; }

namespace {

std::string script_url(const std::string& base, const BootClient& c, const BootPolicy& p) {
  std::string path = p.script_path;
  // Hyphens, as iPXE's ${net0/mac:hexhyp}: a colon in a URL path is best avoided.
  if (auto at = path.find("{mac}"); at != std::string::npos) {
    path.replace(at, 5, mac_hyphenated(c.mac));
  }
  return base + path;
}

// The iPXE-with-HTTPS build for this client's architecture ("" = none). Without option 93 a
// client is taken for legacy BIOS, as below.
std::string https_build(const BootClient& c, const BootPolicy& p) {
  switch (c.arch.value_or(arch::kBios)) {
    case arch::kBios:
      return p.https_bios_file;
    case arch::kEfiBc:
    case arch::kEfiX64:
      return p.https_efi_file;
    default:
      return {};
  }
}

}  // namespace

BootDecision decide(const BootClient& c, const BootPolicy& p) {
  BootDecision d;
  const bool pxe = is_pxe_client(c.vendor_class);
  const bool http = is_http_client(c.vendor_class);
  const bool ipxe = is_ipxe(c.user_class);
  if (!pxe && !http && !ipxe) {
    d.reason = "not-a-boot-client";
    return d;
  }
  if (!c.known && !p.boot_unknown) {
    d.reason = "unknown-machine-ignored";
    return d;
  }
  const bool https = !p.https_base.empty();
  if (ipxe) {
    if (https && c.ipxe_https) {
      d.kind = BootDecision::Kind::kHttp;
      d.file = script_url(p.https_base, c, p);
      d.reason = "ipxe-https-script";
      return d;
    }
    if (https) {
      // The ROM's iPXE cannot fetch https: chainload the build that can.
      if (std::string file = https_build(c, p); !file.empty()) {
        d.kind = BootDecision::Kind::kTftp;
        d.file = std::move(file);
        d.reason = "ipxe-chainload-https";
        return d;
      }
      if (p.https_required) {
        d.reason = "ipxe-without-https";
        return d;
      }
    }
    if (p.http_base.empty()) {
      d.reason = "no-http-base";
      return d;
    }
    d.kind = BootDecision::Kind::kHttp;
    d.file = script_url(p.http_base, c, p);
    d.reason = "ipxe-script";
    return d;
  }
  if (!c.arch) {
    // PXE ROMs always send option 93; without it assume a legacy BIOS ROM (RFC 4578 predates
    // some of them), and UEFI HTTP clients cannot be served.
    if (http) {
      d.reason = "http-client-without-arch";
      return d;
    }
  }
  const std::uint16_t a = c.arch.value_or(arch::kBios);
  if (https && pxe) {
    // A PXE ROM (not iPXE): the HTTPS build directly, one chainload fewer.
    if (std::string file = https_build(c, p); !file.empty()) {
      d.kind = BootDecision::Kind::kTftp;
      d.file = std::move(file);
      d.reason = "pxe-https-build";
      return d;
    }
  }
  if (http) {
    std::string file;
    if (a == arch::kEfiX64Http) file = p.efi_x64_file;
    if (a == arch::kEfiArm64Http) file = p.efi_arm64_file;
    if (file.empty() || p.http_base.empty()) {
      d.reason = "http-arch-unsupported";
      return d;
    }
    d.kind = BootDecision::Kind::kHttp;
    d.file = p.http_base + "/files/" + file;
    d.http_client = true;
    d.reason = "uefi-http";
    return d;
  }
  std::string file;
  switch (a) {
    case arch::kBios:
      file = p.bios_file;
      d.reason = "bios-pxe";
      break;
    case arch::kEfiBc:
    case arch::kEfiX64:
      file = p.efi_x64_file;
      d.reason = "uefi-x64-pxe";
      break;
    case arch::kEfiIa32:
      file = p.efi_ia32_file;
      d.reason = "uefi-ia32-pxe";
      break;
    case arch::kEfiArm64:
      file = p.efi_arm64_file;
      d.reason = "uefi-arm64-pxe";
      break;
    default:
      break;
  }
  if (file.empty()) {
    d.reason = "arch-unsupported";
    return d;
  }
  d.kind = BootDecision::Kind::kTftp;
  d.file = file;
  return d;
}

}  // namespace kiln::boot
