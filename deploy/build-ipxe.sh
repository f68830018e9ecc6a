#!/usr/bin/env bash
# Builds iPXE with HTTPS and image trust from Debian 12's `ipxe` source package, with the site's
# CA embedded as the only trusted root, for kilnd's HTTPS boot path (dhcp.boot.https_bios_file,
# dhcp.boot.https_efi_file). The stock ROM (Debian's prebuilt iPXE: no HTTPS, no imgverify)
# chainloads this build over TFTP; this build then fetches the https script, kernel and initrd.
#
#   deploy/build-ipxe.sh --ca CA.pem --out DIR [--cache DIR] [--source DIR]
#
# Writes DIR/ipxe-https.kpxe (legacy BIOS, from bin/undionly.kpxe) and DIR/ipxe-https.efi
# (x86-64 UEFI, from bin-x86_64-efi/snponly.efi: it drives the NIC through the firmware's SNP,
# which is what works when chainloaded from a UEFI PXE ROM such as QEMU's efi-*.rom), and
# DIR/ipxe-https.ca.sha256 (the fingerprint of the CA they trust).
#
# The source comes from the Debian mirror through apt (`apt-get source ipxe`; a deb-src entry for
# bookworm main is added next to /etc/apt/sources.list.d/debian.sources when missing, and
# `apt-get update` runs only when apt does not know the source package yet). --source DIR uses
# an already unpacked iPXE source tree instead (a directory with src/Makefile), e.g. one copied
# from another machine; nothing else is ever fetched. Without --source, a tree already in the
# cache (from either) is reused, with its objects. The build tree stays in the cache dir
# (default /var/cache/kiln/ipxe, or $KILN_IPXE_CACHE): a rebuild with another CA recompiles the
# two certificate objects and relinks. Build dependencies are Debian packages (see
# deploy/install-deps.sh).
#
# Exit status: 0 built (or already up to date), 2 usage, 3 the iPXE source is not available
# (the mirror did not serve it and no --source was given), 1 any other failure.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

ca="" out="" src_override=""
cache="${KILN_IPXE_CACHE:-/var/cache/kiln/ipxe}"
while (($#)); do
  case $1 in
    --ca) ca=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --cache) cache=${2:?}; shift 2 ;;
    --source) src_override=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    *) echo "build-ipxe: unknown argument: $1" >&2; usage ;;
  esac
done
[[ -n $ca && -n $out ]] || usage
[[ -r $ca ]] || { echo "build-ipxe: cannot read CA certificate $ca" >&2; exit 2; }
if ! openssl x509 -in "$ca" -noout 2>/dev/null; then
  echo "build-ipxe: $ca is not a PEM X.509 certificate" >&2
  exit 2
fi
if [[ $(openssl x509 -in "$ca" -noout -text | grep -c 'Public Key Algorithm: rsaEncryption') -eq 0 ]]; then
  # Debian 12's iPXE (2019) verifies RSA signatures only.
  echo "build-ipxe: $ca must be an RSA CA (this iPXE cannot verify other signatures)" >&2
  exit 2
fi
ca=$(realpath "$ca")
mkdir -p "$cache" "$out"
cache=$(realpath "$cache")
log() { echo "build-ipxe: $*" >&2; }

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo

# --- the source tree: $cache/tree (a copy, so the build objects stay next to it) ---
tree="$cache/tree"
if [[ -n $src_override ]]; then
  [[ -f $src_override/src/Makefile ]] || {
    echo "build-ipxe: $src_override has no src/Makefile (not an iPXE source tree)" >&2
    exit 2
  }
  stamp="source:$(realpath "$src_override")"
  if [[ ! -f $tree/.kiln-source || $(cat "$tree/.kiln-source") != "$stamp" ]]; then
    log "copying the iPXE source from $src_override"
    rm -rf "$tree"
    mkdir -p "$tree"
    cp -a "$src_override/." "$tree/"
    echo "$stamp" >"$tree/.kiln-source"
  fi
elif [[ -f $tree/.kiln-source ]]; then
  log "reusing the iPXE source in $tree ($(cat "$tree/.kiln-source"))"
else
  sources_file=/etc/apt/sources.list.d/kiln-deb-src.sources
  if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding $sources_file (deb-src for bookworm main)"
    $SUDO tee "$sources_file" >/dev/null <<'EOF'
# Added by kiln's deploy/build-ipxe.sh: Debian source packages (apt-get source ipxe).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  if ! apt-cache showsrc ipxe 2>/dev/null | grep -q '^Package: ipxe'; then
    log "apt does not know the ipxe source package yet: apt-get update"
    $SUDO apt-get update >&2
  fi
  dl="$cache/apt"
  rm -rf "$dl"
  mkdir -p "$dl"
  log "apt-get source ipxe (into $dl)"
  # The unpacked tree is ipxe-<upstream version>/ with debian/ applied.
  # (As root, apt would warn that its _apt sandbox user cannot write here.)
  if ! (cd "$dl" && apt-get -o APT::Sandbox::User=root source ipxe >&2); then
    echo "build-ipxe: the Debian mirror did not serve the ipxe source package;" \
      "run with --source DIR (an unpacked iPXE source tree) instead" >&2
    exit 3
  fi
  unpacked=$(find "$dl" -mindepth 3 -maxdepth 3 -name Makefile -path '*/src/Makefile' -printf '%h\n' | head -1)
  unpacked=${unpacked%/src}
  [[ -n $unpacked && -f $unpacked/src/Makefile ]] || {
    echo "build-ipxe: apt-get source ipxe produced no src/Makefile under $dl" >&2
    exit 1
  }
  rm -rf "$tree"
  mv "$unpacked" "$tree"
  echo "apt:$(basename "$(ls "$dl"/*.dsc)" .dsc)" >"$tree/.kiln-source"
  rm -rf "$dl"
fi

# --- build configuration: HTTPS download + image trust commands ---
cfg="$tree/src/config/local/general.h"
mkdir -p "$(dirname "$cfg")"
want_cfg='/* kiln: written by deploy/build-ipxe.sh */
#define DOWNLOAD_PROTO_HTTPS /* fetch the script, kernel and initrd over TLS */
#define IMAGE_TRUST_CMD      /* imgtrust, imgverify */
#define CERT_CMD             /* certstat: shows the embedded CA on the console */'
# Rewritten only when it differs: its mtime drives iPXE's dependency tracking.
if [[ ! -f $cfg || $(cat "$cfg") != "$want_cfg" ]]; then
  printf '%s\n' "$want_cfg" >"$cfg"
fi

# The CA lives at a fixed path inside the cache so TRUST= and CERT= stay the same strings:
# iPXE's Makefile re-generates the certificate objects when the file's content changes.
# But its rootcert.o depends on an undefined $(TRUSTED_FILES) (2019 Makefile.housekeeping), so
# a new CA would keep the old fingerprint: drop both certificate objects when the CA changes.
cp "$ca" "$cache/ca.pem.new"
if ! cmp -s "$cache/ca.pem.new" "$cache/ca.pem"; then
  mv "$cache/ca.pem.new" "$cache/ca.pem"
  rm -f "$tree"/src/bin*/rootcert.o "$tree"/src/bin*/certstore.o
else
  rm -f "$cache/ca.pem.new"
fi
fp=$(openssl x509 -in "$cache/ca.pem" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f')

targets=(bin/undionly.kpxe bin-x86_64-efi/snponly.efi)
jobs=${KILN_IPXE_JOBS:-$(nproc)}
log "make ${targets[*]} (TRUST=CERT=$ca, -j$jobs)"
start=$SECONDS
# NO_WERROR: gcc 12 warns about code in the 2019 snapshot that older compilers did not.
if ! make -C "$tree/src" -j"$jobs" NO_WERROR=1 \
  TRUST="$cache/ca.pem" CERT="$cache/ca.pem" "${targets[@]}" >"$cache/build.log" 2>&1; then
  tail -n 30 "$cache/build.log" >&2
  echo "build-ipxe: make failed; the full log is $cache/build.log" >&2
  exit 1
fi
log "built in $((SECONDS - start)) s"
# The trust root is the CA's SHA-256 fingerprint compiled into rootcert.o: check that it is
# this CA's (the outputs themselves are compressed).
for o in "$tree/src/bin/rootcert.o" "$tree/src/bin-x86_64-efi/rootcert.o"; do
  if ! xxd -p "$o" | tr -d '\n' | grep -q "$fp"; then
    echo "build-ipxe: $o does not trust $ca (fingerprint $fp): not installing" >&2
    exit 1
  fi
done

install -m 0644 "$tree/src/bin/undionly.kpxe" "$out/ipxe-https.kpxe.tmp"
install -m 0644 "$tree/src/bin-x86_64-efi/snponly.efi" "$out/ipxe-https.efi.tmp"
mv "$out/ipxe-https.kpxe.tmp" "$out/ipxe-https.kpxe"
mv "$out/ipxe-https.efi.tmp" "$out/ipxe-https.efi"
echo "$fp" >"$out/ipxe-https.ca.sha256"
log "wrote $out/ipxe-https.kpxe and $out/ipxe-https.efi (trusting only CA sha256 $fp)"
