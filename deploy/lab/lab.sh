# deploy/lab/lab.sh — sourced by deploy/demo.sh, tests/e2e and bench/e2e.sh: a provisioning
# network in a private network namespace, kilnd serving it, and QEMU machines that PXE-boot.
#
# Topology: netns $LAB_NS holds lo, bridge $LAB_BR (10.99.0.1/24, fd99:0:0:99::1/64) and tap
# $LAB_TAP (a bridge port QEMU's NIC plugs into; each further machine gets its own tap on the
# same bridge, see "Machines" below). There is no veth to the host and no route out: kilnd's
# DHCP, TFTP and HTTP, and the machines, see only each other. Everything is removed by lab_down
# (also on failure, from the caller's trap), processes by their PIDs.
#
# Machines: the lab has machine 1 and, on demand, machines 2, 3, ...; LAB_MACHINE=N (default 1)
# selects the one the lab_vm_*, lab_bmc_*, lab_wait_log, lab_latest and lab_wait_latest
# functions act on, e.g. `LAB_MACHINE=2 lab_vm_start_managed LOG`. Machine 1 keeps the lab's
# original names: LAB_MAC, LAB_TAP, LAB_VM_PID, LAB_BMC_PID, LAB_BMC_DRIVER, LAB_BMC_ADDRESS and
# $LAB_DIR/disk.raw, qmp.sock, firmware.log, ovmf-vars.fd, bmc.log, bmc.ready, bmc-state.json.
# Machine N has its own of each: LAB_MAC_N (default: LAB_MAC with its fifth byte N-1), tap
# LAB_TAP_N (default ${LAB_TAP}mN, made on first use), LAB_VM_PID_N, LAB_BMC_*_N and
# disk-N.raw, qmp-N.sock, bmc-N.log...; its BMC listens on LAB_BMC_REDFISH_PORT + N - 1 (or
# LAB_BMC_IPMI_PORT + N - 1). The BMC credentials ($LAB_DIR/bmc.pass) are the lab's, shared.
#
# QEMU uses KVM when /dev/kvm really works (not the nested paravirtual kvm_pvm), TCG otherwise.
# The machine: q35, 512 MiB, Debian's iPXE ROM on a modern-only virtio NIC (the ROM matches
# only 1af4:1041), a blank virtio disk; BIOS (SeaBIOS) or UEFI (OVMF). Reboots are warm (the
# machine resets inside one QEMU process); poweroff ends QEMU.
#
# TLS: lab_build makes a site CA and a server certificate for $LAB_SERVER (lab_ca) and bakes the
# CA into the agent's initramfs (/etc/kiln/ca.pem). With LAB_HTTPS=1, lab_build also builds iPXE
# with HTTPS and that CA (deploy/build-ipxe.sh; the source from KILN_IPXE_SOURCE, the cache or
# apt), and lab_kilnd adds a TLS listener ($LAB_HTTPS_URL): the stock ROM chainloads that iPXE
# over TFTP and the boot path (script, kernel, initrd, agent API) goes over TLS; chunks stay on
# $LAB_URL. Without an iPXE source lab_build says so and sets LAB_HTTPS=0.
: "${LAB_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${KILN_BUILD:=$LAB_ROOT/build}"
: "${LAB_NS:=kiln-lab-$$}"
: "${LAB_BR:=klbr$$}"
: "${LAB_TAP:=kltap$$}"
if [[ -z ${LAB_DIR:-} ]]; then
  LAB_DIR=$(mktemp -d /tmp/kiln-lab.XXXXXX)
  LAB_OWN_DIR=1  # made here: lab_down removes it (unless LAB_KEEP=1)
fi
: "${LAB_MAC:=52:54:00:99:00:01}"
: "${LAB_DISK_MB:=256}"
: "${LAB_MEM_MB:=512}"
: "${LAB_FIRMWARE:=bios}"   # bios | uefi
: "${LAB_AFTER:=reboot}"    # what the agent does after writing: reboot | kexec
LAB_SERVER=10.99.0.1
LAB_URL=http://$LAB_SERVER:8080
LAB_HTTPS_URL=https://$LAB_SERVER:8443
: "${LAB_HTTPS:=0}"           # 1: kilnd boots machines over its TLS listener
LAB_KILND_PID=
: "${LAB_MACHINE:=1}"  # the machine the lab_vm_*, lab_bmc_* ... functions act on (see "Machines")
# Machine 1's; read and written through lab_get / lab_set (hence shellcheck's SC2034).
# shellcheck disable=SC2034
LAB_VM_PID=
# The lab's BMC (lab_bmc_start): an emulator in the namespace on 127.0.0.1, driving the
# managed machine (lab_vm_start_managed) over QMP.
: "${LAB_BMC_USER:=kiln-lab}"
: "${LAB_BMC_PASS:=lab-bmc-pass}"
: "${LAB_BMC_REDFISH_PORT:=8000}"
: "${LAB_BMC_IPMI_PORT:=6230}"
# shellcheck disable=SC2034
LAB_BMC_PID= LAB_BMC_DRIVER= LAB_BMC_ADDRESS=
LAB_T0=
LAB_OWN_NS=

lab_log() { printf '[lab %6.1fs] %s\n' "$(lab_elapsed)" "$*" >&2; }
lab_elapsed() {
  local now=${EPOCHREALTIME/./}
  [[ -n $LAB_T0 ]] || { echo 0; return; }
  awk -v a="$now" -v b="$LAB_T0" 'BEGIN{printf "%.1f", (a-b)/1e6}'
}
in_ns() { ip netns exec "$LAB_NS" "$@"; }

# Machine $LAB_MACHINE's names (see "Machines" above). lab_var NAME: its variable's name (NAME
# for machine 1, NAME_N otherwise); lab_get NAME / lab_set NAME VALUE read and write it;
# lab_file NAME.EXT: its file in $LAB_DIR (NAME.EXT, or NAME-N.EXT).
lab_var() {
  if [[ ${LAB_MACHINE:-1} == 1 ]]; then echo "$1"; else echo "$1_$LAB_MACHINE"; fi
}
lab_get() { local v; v=$(lab_var "$1"); printf '%s' "${!v:-}"; }
lab_set() { declare -g "$(lab_var "$1")=$2"; }
lab_file() {
  if [[ ${LAB_MACHINE:-1} == 1 ]]; then echo "$LAB_DIR/$1"; else echo "$LAB_DIR/${1%%.*}-$LAB_MACHINE.${1#*.}"; fi
}
# lab_mac / lab_tap — machine $LAB_MACHINE's MAC and tap.
lab_mac() {
  local n=${LAB_MACHINE:-1} m
  m=$(lab_get LAB_MAC)
  [[ -n $m ]] || m=$(printf '%s:%02x:%s' "${LAB_MAC%:*:*}" $((n - 1)) "${LAB_MAC##*:}")
  echo "$m"
}
lab_tap() {
  local t
  t=$(lab_get LAB_TAP)
  echo "${t:-${LAB_TAP}m$LAB_MACHINE}"
}
# lab_tap_up — machine $LAB_MACHINE's tap, a port of the lab bridge (machine 1's comes from
# lab_up); made once, removed with the namespace.
lab_tap_up() {
  local tap
  tap=$(lab_tap)
  in_ns ip link show dev "$tap" >/dev/null 2>&1 && return 0
  in_ns ip tuntap add dev "$tap" mode tap || return 1
  in_ns ip link set "$tap" master "$LAB_BR" && in_ns ip link set "$tap" up
}
# lab_machines — the machines this shell has started a VM or a BMC for (1 always).
lab_machines() {
  local v
  { echo 1; for v in $(compgen -v LAB_VM_PID_) $(compgen -v LAB_BMC_PID_); do echo "${v##*_}"; done; } | sort -nu
}
kiln_cli() { KILN_URL=$LAB_URL KILN_TOKEN=$LAB_TOKEN in_ns "$KILN_BUILD/kiln" "$@"; }

lab_accel() {
  if [[ -w /dev/kvm && ! -d /sys/module/kvm_pvm && ${LAB_ACCEL:-auto} != tcg ]]; then
    echo kvm
  else
    echo tcg
  fi
}

# lab_up — the namespace, bridge and tap.
lab_up() {
  LAB_T0=${EPOCHREALTIME/./}
  mkdir -p "$LAB_DIR"
  ip netns add "$LAB_NS" || return 1
  LAB_OWN_NS=1  # only a namespace created here is emptied and deleted by lab_down
  in_ns ip link set lo up
  in_ns ip link add "$LAB_BR" type bridge
  in_ns ip addr add "$LAB_SERVER/24" dev "$LAB_BR"
  in_ns ip -6 addr add fd99:0:0:99::1/64 dev "$LAB_BR" nodad
  in_ns ip tuntap add dev "$LAB_TAP" mode tap
  in_ns ip link set "$LAB_TAP" master "$LAB_BR"
  in_ns ip link set "$LAB_TAP" up
  in_ns ip link set "$LAB_BR" up
  # Safety: nothing in the namespace leads outside it.
  if in_ns ip route show default | grep -q .; then
    echo "lab: a default route in $LAB_NS" >&2
    return 1
  fi
}

# lab_down — the VMs and BMCs, kilnd, the namespace (with its bridge and tap) and the lab dir: only
# what this shell created.
lab_down() {
  set +e
  local n
  for n in $(lab_machines); do
    LAB_MACHINE=$n lab_bmc_stop
    LAB_MACHINE=$n lab_vm_stop
  done
  [[ -n $LAB_KILND_PID ]] && kill "$LAB_KILND_PID" 2>/dev/null && wait "$LAB_KILND_PID" 2>/dev/null
  if [[ -n $LAB_OWN_NS ]]; then
    # Whatever is still inside was started by us: nothing else can enter a namespace we made.
    for p in $(ip netns pids "$LAB_NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$LAB_NS"
  fi
  [[ -n ${LAB_OWN_DIR:-} && ${LAB_KEEP:-0} != 1 ]] && rm -rf "$LAB_DIR"
  LAB_KILND_PID= LAB_OWN_NS=
}

# lab_ca — the lab's site CA ($LAB_DIR/ca.pem, its key ca.key) and kilnd's server certificate
# (tls.pem, tls.key) signed by it, naming $LAB_SERVER (IP SAN) and kiln.lab (DNS SAN). RSA 2048:
# the iPXE that fetches the boot path over HTTPS (Debian 12's 2019 source, deploy/build-ipxe.sh)
# verifies RSA signatures only and speaks only RSA key exchange (TLS_RSA_WITH_AES_*_CBC_*), so
# neither the CA nor the server key may be EC. Made with the openssl CLI; kept when they exist.
lab_ca() {
  local d=$LAB_DIR
  [[ -s $d/tls.pem && -s $d/ca.pem ]] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
    -subj "/CN=kiln lab CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null || return 1
  openssl req -new -newkey rsa:2048 -nodes \
    -subj "/CN=$LAB_SERVER" -keyout "$d/tls.key" -out "$d/tls.csr" 2>/dev/null || return 1
  printf 'subjectAltName=IP:%s,DNS:kiln.lab\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
    "$LAB_SERVER" >"$d/tls.ext"
  openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/tls.ext" -out "$d/tls.pem" 2>/dev/null || return 1
  rm -f "$d/tls.csr" "$d/tls.ext"
}

# lab_build — the agent's kernel + initramfs (with the lab's trusted key and site CA) and the
# signing key.
lab_build() {
  mkdir -p "$LAB_DIR/build"
  [[ -s $LAB_DIR/site.pem ]] || "$KILN_BUILD/kiln" key generate --out "$LAB_DIR/site" >/dev/null
  lab_ca || { echo "lab: cannot make the lab CA" >&2; return 1; }
  "$LAB_ROOT/deploy/build-initramfs.sh" --out "$LAB_DIR/build" --trust-key "$LAB_DIR/site.pub.pem" \
    --ca "$LAB_DIR/ca.pem" >&2 || return 1
  if [[ $LAB_HTTPS == 1 ]]; then
    # iPXE with HTTPS and the lab CA as its only trust root; the stock ROM chainloads it. Exit 3:
    # no iPXE source here (the mirror did not serve it, none cached, no KILN_IPXE_SOURCE).
    local rc=0
    "$LAB_ROOT/deploy/build-ipxe.sh" --ca "$LAB_DIR/ca.pem" --out "$LAB_DIR/build" \
      ${KILN_IPXE_SOURCE:+--source "$KILN_IPXE_SOURCE"} >&2 || rc=$?
    if ((rc == 3)); then
      echo "lab: no iPXE source: NOT booting over HTTPS (LAB_HTTPS=0)" >&2
      LAB_HTTPS=0
    elif ((rc != 0)); then
      return 1
    fi
  fi
}

# lab_image VERSION — builds, signs and pushes demo:VERSION (LAB_IMAGE_FLAGS: --stay-up ...).
lab_image() {
  "$LAB_ROOT/deploy/lab/build-test-image.sh" --version "$1" --sign "$LAB_DIR/site.pem" \
    --out "$LAB_DIR/build/demo-$1.kiln" ${LAB_IMAGE_FLAGS:-} >&2
  kiln_cli image push "$LAB_DIR/build/demo-$1.kiln" >/dev/null
}

# lab_kilnd — kilnd in the namespace: DHCP (authoritative, on the lab bridge only), TFTP, HTTP,
# the agent kernel and initramfs. Deployed OSes confirm their boot at $LAB_URL (plain HTTP:
# the test OS's busybox wget has no TLS); deadlines and automatic rollback from LAB_WRITTEN_S,
# LAB_BOOTED_S, LAB_DEADLINE_RETRIES, LAB_AUTO_ROLLBACK (off by default).
lab_kilnd() {
  local data=$LAB_DIR/kilnd
  mkdir -p "$data/files/kiln"
  cp "$LAB_DIR/build/vmlinuz" "$LAB_DIR/build/initrd.img" "$data/files/kiln/"
  local tls= https_boot=
  if [[ $LAB_HTTPS == 1 ]]; then
    lab_ca || return 1
    tls=", \"tls_listen\": \"$LAB_SERVER:8443\", \"tls_cert\": \"$LAB_DIR/tls.pem\", \"tls_key\": \"$LAB_DIR/tls.key\""
    # The stock ROM gets the HTTPS iPXE over TFTP, which gets the https script (dhcp.boot).
    cp "$LAB_DIR/build/ipxe-https.kpxe" "$LAB_DIR/build/ipxe-https.efi" "$data/files/kiln/" || return 1
    https_boot=", \"https_base\": \"$LAB_HTTPS_URL\", \"https_required\": true"
  fi
  cat >"$LAB_DIR/kilnd.json" <<JSON
{
  "data_dir": "$data",
  "log_level": "${LAB_LOG_LEVEL:-info}",
  "http": { "listen": "$LAB_SERVER:8080"$tls },
  "tftp": { "listen": "$LAB_SERVER:69" },
  "images": { "trusted_keys": ["$LAB_DIR/site.pub.pem"] },
  "store": { "synchronous": "normal" },
  "dhcp": { "mode": "authoritative", "interfaces": ["$LAB_BR"],
            "subnets": [ { "subnet": "10.99.0.0/24", "pool": "10.99.0.100-10.99.0.199",
                           "lease_time_s": 600 } ],
            "boot": { "bios_file": "undionly.kpxe"$https_boot } },
  "ra": { "interfaces": ${LAB_RA_IFACES:-[\"$LAB_BR\"]}, "prefixes": ["fd99:0:0:99::/64"] },
  "boot": { "server_url": "$LAB_URL", "https_url": "$([[ $LAB_HTTPS == 1 ]] && echo "$LAB_HTTPS_URL")", "poll_s": 2, "retry_s": 3, "retries": ${LAB_RETRIES:-2},
            "after": "$LAB_AFTER",
            "cmdline": "console=tty0 console=ttyS0,115200 panic=10 kiln.retries=2 kiln.backoff_ms=100 kiln.fail_pause=2",
            "localboot_efi": "${LAB_LOCALBOOT_EFI:-exit}",
            "instance_url": "$LAB_URL",
            "deadlines": { "written_s": ${LAB_WRITTEN_S:-0}, "booted_s": ${LAB_BOOTED_S:-0},
                           "retries": ${LAB_DEADLINE_RETRIES:-1} },
            "auto_rollback": ${LAB_AUTO_ROLLBACK:-false} },
  "power": { "timeout_ms": 10000, "reboot_on_assign": ${LAB_REBOOT_ON_ASSIGN:-false} }
}
JSON
  rm -f "$LAB_DIR/kilnd.ready"  # (a restarted kilnd writes it again once it listens)
  LAB_TOKEN=$("$KILN_BUILD/kilnd" --data-dir "$data" token create --name lab --scope admin 2>/dev/null)
  ip netns exec "$LAB_NS" "$KILN_BUILD/kilnd" --config "$LAB_DIR/kilnd.json" \
    --ready-file "$LAB_DIR/kilnd.ready" >"$LAB_DIR/kilnd.log" 2>&1 &
  LAB_KILND_PID=$!
  local i
  for i in $(seq 100); do
    [[ -s $LAB_DIR/kilnd.ready ]] && return 0
    kill -0 "$LAB_KILND_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$LAB_DIR/kilnd.log" >&2
  echo "lab: kilnd did not start" >&2
  return 1
}

# lab_vm_args — the QEMU arguments machine $LAB_MACHINE's two start functions share (its
# name, disk, tap, MAC, UEFI's flash); makes its disk (blank, LAB_DISK_MB) and tap once. Sets
# VM_ARGS, VM_ROM (the NIC's boot ROM for the firmware) and VM_VARS (UEFI's variables).
lab_vm_args() {
  local accel cpu disk n=${LAB_MACHINE:-1}
  accel=$(lab_accel)
  disk=$(lab_file disk.raw)
  [[ -e $disk ]] || truncate -s "${LAB_DISK_MB}M" "$disk"
  lab_tap_up || return 1
  if [[ $accel == kvm ]]; then cpu=host; else cpu=max; accel=tcg,thread=single; fi
  VM_ARGS=(-name "kiln-lab-vm$([[ $n == 1 ]] || echo "$n")" -machine q35 -accel "$accel" -cpu "$cpu"
    -m "$LAB_MEM_MB" -smp 1 -nographic -no-user-config -nodefaults -serial stdio
    -netdev "tap,id=n0,ifname=$(lab_tap),script=no,downscript=no"
    -drive "file=$disk,if=none,id=d0,format=raw,cache=writeback,discard=unmap")
  if [[ $LAB_FIRMWARE == uefi ]]; then
    VM_ROM=/usr/lib/ipxe/qemu/efi-virtio.rom
    VM_VARS=$(lab_file ovmf-vars.fd)
    [[ -e $VM_VARS ]] || cp /usr/share/OVMF/OVMF_VARS_4M.fd "$VM_VARS"
    VM_ARGS+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
      -drive "if=pflash,format=raw,unit=1,file=$VM_VARS")
  else
    VM_ROM=/usr/lib/ipxe/qemu/pxe-virtio.rom
  fi
}

# lab_vm_run SERIAL_LOG QEMU_ARGS... — runs QEMU in the namespace (bounded by LAB_VM_TIMEOUT),
# its serial lines time-stamped into SERIAL_LOG; sets the machine's LAB_VM_PID.
lab_vm_run() {
  local log=$1
  shift
  : >"$log"
  local t0=${EPOCHREALTIME/./}
  # $! must be QEMU's side (ip netns exec execs timeout, which runs QEMU and passes signals
  # on), not the time-stamping reader: hence the process substitution, not a pipe.
  ip netns exec "$LAB_NS" timeout "${LAB_VM_TIMEOUT:-600}" qemu-system-x86_64 "$@" \
    </dev/null > >(lab_stamp "$t0" >>"$log") 2>&1 &
  lab_set LAB_VM_PID $!
}

# lab_vm_start SERIAL_LOG — powers the machine on (its disk persists across power cycles).
# Every serial line is written with the seconds since power-on.
lab_vm_start() {
  local netidx=1 diskidx=2 VM_ARGS VM_ROM VM_VARS
  lab_vm_args || return 1
  # UEFI walks every network boot option before the disk once iPXE exits (~290 s), so the
  # disk goes first: a blank or invalidated disk fails at once and the network follows.
  [[ $LAB_FIRMWARE == uefi ]] && netidx=2 diskidx=1
  lab_vm_run "$1" "${VM_ARGS[@]}" \
    -device "virtio-net-pci,disable-legacy=on,netdev=n0,mac=$(lab_mac),bootindex=$netidx,romfile=$VM_ROM" \
    -device "virtio-blk-pci,drive=d0,bootindex=$diskidx"
}

# lab_vm_start_managed SERIAL_LOG — the machine as an installed server with a BMC: disk first
# (bootindex disk0=1, net0=2; BIOS and UEFI alike), QMP on $LAB_DIR/qmp.sock (machine N:
# qmp-N.sock) for the BMC emulator, and it starts powered OFF (-S) and stays alive when the
# guest powers off (-no-shutdown: status "shutdown" = Off), so only the BMC powers it on
# (lab_bmc_start, then a power-on through it). Serial lines are time-stamped from QEMU's start,
# like lab_vm_start; under BIOS, SeaBIOS's debug log (which device each boot tried) goes to
# $LAB_DIR/firmware.log (firmware-N.log). Stopped (QEMU ended) by lab_vm_stop / lab_down.
# lab_vm_wait does not apply: QEMU outlives the guest's power-offs (up to LAB_VM_TIMEOUT); ask
# the BMC (lab_bmc_state) instead.
lab_vm_start_managed() {
  local VM_ARGS VM_ROM VM_VARS qmp pid
  lab_vm_args || return 1
  qmp=$(lab_file qmp.sock)
  rm -f "$qmp"
  VM_ARGS+=(-S -no-shutdown -qmp "unix:$qmp,server=on,wait=off")
  [[ $LAB_FIRMWARE == uefi ]] ||
    VM_ARGS+=(-chardev "file,id=seabios,path=$(lab_file firmware.log)" -device isa-debugcon,iobase=0x402,chardev=seabios)
  lab_vm_run "$1" "${VM_ARGS[@]}" \
    -device "virtio-net-pci,id=net0,disable-legacy=on,netdev=n0,mac=$(lab_mac),bootindex=2,romfile=$VM_ROM" \
    -device "virtio-blk-pci,id=disk0,drive=d0,bootindex=1"
  pid=$(lab_get LAB_VM_PID)
  local i
  for i in $(seq 100); do
    [[ -S $qmp ]] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "lab: QEMU (machine ${LAB_MACHINE:-1}) did not open its QMP socket" >&2
  return 1
}

# lab_bmc_start redfish|ipmi [emulator flags...] — the machine's BMC: tests/tools/redfish_bmc.py
# (http://127.0.0.1:$LAB_BMC_REDFISH_PORT) or ipmi_bmc.py (udp 127.0.0.1:$LAB_BMC_IPMI_PORT)
# inside the lab namespace (kilnd runs there too), over $LAB_DIR/qmp.sock, with the lab
# credentials ($LAB_BMC_USER / $LAB_BMC_PASS, the password from a 0600 file). Sets
# LAB_BMC_DRIVER and LAB_BMC_ADDRESS (what a machine's bmc config names); its log is
# $LAB_DIR/bmc.log. One BMC per machine (machine N: port + N - 1, qmp-N.sock, LAB_BMC_*_N,
# bmc-N.log); lab_bmc_stop / lab_down end it.
lab_bmc_start() {
  local driver=$1 n=${LAB_MACHINE:-1}
  shift
  lab_bmc_stop
  (umask 077 && printf '%s\n' "$LAB_BMC_PASS" >"$LAB_DIR/bmc.pass")
  local ready qmp log address pid
  ready=$(lab_file bmc.ready) qmp=$(lab_file qmp.sock) log=$(lab_file bmc.log)
  rm -f "$ready"
  local py=/usr/bin/python3 tools=$LAB_ROOT/tests/tools
  case $driver in
    redfish)
      address=127.0.0.1:$((LAB_BMC_REDFISH_PORT + n - 1))
      ip netns exec "$LAB_NS" "$py" "$tools/redfish_bmc.py" --qmp "$qmp" \
        --listen "$address" --user "$LAB_BMC_USER" --password-file "$LAB_DIR/bmc.pass" \
        --ready-file "$ready" "$@" >/dev/null 2>>"$log" &
      address=http://$address ;;
    ipmi)
      address=127.0.0.1:$((LAB_BMC_IPMI_PORT + n - 1))
      ip netns exec "$LAB_NS" "$py" "$tools/ipmi_bmc.py" --qmp "$qmp" \
        --listen "$address" --user "$LAB_BMC_USER" --password-file "$LAB_DIR/bmc.pass" \
        --state-file "$(lab_file bmc-state.json)" --faults-file "$(lab_file bmc-faults.json)" \
        --ready-file "$ready" "$@" >/dev/null 2>>"$log" & ;;
    *)
      echo "lab_bmc_start: redfish or ipmi, not '$driver'" >&2
      return 1 ;;
  esac
  pid=$!
  lab_set LAB_BMC_PID "$pid"
  lab_set LAB_BMC_DRIVER "$driver"
  lab_set LAB_BMC_ADDRESS "$address"
  local i
  for i in $(seq 100); do
    [[ -s $ready ]] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$log" >&2
  echo "lab: the $driver BMC emulator (machine $n) did not start" >&2
  lab_set LAB_BMC_PID ""
  return 1
}

# lab_end VAR — ends the process whose PID the machine's VAR holds (if any), by that PID.
lab_end() {
  local pid
  pid=$(lab_get "$1")
  [[ -n $pid ]] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  lab_set "$1" ""
  return 0
}

# lab_bmc_stop — ends the BMC emulator (if one runs).
lab_bmc_stop() { lab_end LAB_BMC_PID; }

# lab_bmc_state — the BMC emulator's state JSON: power state, boot override, faults, counts,
# the boots it started (and what each tried first) and its action log with times.
lab_bmc_state() {
  case $(lab_get LAB_BMC_DRIVER) in
    redfish) in_ns curl -s --max-time 10 "$(lab_get LAB_BMC_ADDRESS)/_emulator/state" ;;
    ipmi) cat "$(lab_file bmc-state.json)" ;;
    *) echo "lab_bmc_state: no BMC started" >&2; return 1 ;;
  esac
}

# lab_bmc_faults JSON — injects faults into the running BMC emulator (see the emulators'
# headers: ignore_override, drop_override, stale_etag, error_500, delay_ms).
lab_bmc_faults() {
  local f
  case $(lab_get LAB_BMC_DRIVER) in
    redfish) in_ns curl -sf --max-time 10 -X POST -H 'Content-Type: application/json' --data-binary "$1" \
      "$(lab_get LAB_BMC_ADDRESS)/_emulator/faults" >/dev/null ;;
    ipmi) f=$(lab_file bmc-faults.json) && printf '%s\n' "$1" >"$f.tmp" && mv "$f.tmp" "$f" ;;
    *) echo "lab_bmc_faults: no BMC started" >&2; return 1 ;;
  esac
}

# lab_vm_stop — powers the machine off now (if it is on).
lab_vm_stop() { lab_end LAB_VM_PID; }

# Prefixes each line with [seconds since $1]; drops CRs and ANSI escapes.
lab_stamp() {
  local t0=$1 line now d
  shopt -s extglob
  while IFS= read -r line || [[ -n $line ]]; do
    now=${EPOCHREALTIME/./}
    d=$((now - t0))
    line=${line//$'\r'/}
    line=${line//$'\e'\[*([0-9;?])[a-zA-Z]/}
    line=${line//$'\e'c/}
    printf '[%4d.%03d] %s\n' $((d / 1000000)) $((d / 1000 % 1000)) "$line"
  done
}

# lab_vm_wait — waits (bounded by LAB_VM_TIMEOUT) until the machine powers off; QEMU's exit
# status (124: the timeout stopped it).
lab_vm_wait() {
  local pid rc=0
  pid=$(lab_get LAB_VM_PID)
  [[ -n $pid ]] || return 0
  wait "$pid" || rc=$?
  lab_set LAB_VM_PID ""
  sleep 0.2  # let the time-stamping reader write the last lines
  return $rc
}

# lab_wait_log LOG REGEX TIMEOUT_S — waits for a serial line; prints its seconds since power-on.
# Fails at the timeout, or as soon as the machine is off without having printed it.
lab_wait_log() {
  local log=$1 re=$2 deadline=$((SECONDS + $3)) line off=0 pid
  pid=$(lab_get LAB_VM_PID)
  while ((SECONDS < deadline)); do
    line=$(grep -E -m1 "$re" "$log" 2>/dev/null || true)
    if [[ -n $line ]]; then
      sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p' <<<"$line"
      return 0
    fi
    ((off)) && return 1
    [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null && off=1  # one last look
    sleep 0.2
  done
  return 1
}

# lab_latest — the newest deployment of the lab machine ($LAB_MAC; machine N's: LAB_MACHINE=N),
# as compact JSON.
lab_latest() { kiln_cli --json machine history "$(lab_mac)" | jq -c '(.items // .)[0]'; }
# lab_wait_latest JQ_CONDITION TIMEOUT_S — until the newest deployment satisfies the condition.
lab_wait_latest() {
  local deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    jq -e "$1" <<<"$(lab_latest)" >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

# lab_wait_state ID STATE TIMEOUT_S — waits until machine ID is in STATE.
lab_wait_state() {
  local deadline=$((SECONDS + $3)) st
  while ((SECONDS < deadline)); do
    st=$(kiln_cli --json machine show "$1" 2>/dev/null | jq -r .state)
    [[ $st == "$2" ]] && return 0
    sleep 0.5
  done
  return 1
}

# --- The Debian 12 cloud-init image (deploy/lab/build-cloud-image.sh) ----------------------
# What a cloud-image machine needs: the image is $LAB_CLOUD_SIZE_MB (GPT, ESP + ext4 root) and
# the agent appends a config drive after it, so the disk must be larger; Debian with systemd
# and cloud-init wants more RAM than the test OS. lab_cloud_machine applies both (call it
# before the first lab_vm_start: the disk is made once).
: "${LAB_CLOUD_SIZE_MB:=1024}"
: "${LAB_CLOUD_DISK_MB:=1536}"
: "${LAB_CLOUD_MEM_MB:=1024}"
: "${LAB_CLOUD_SEED_URL:=$LAB_URL/nocloud/}"  # kilnd's NoCloud metadata service
LAB_CLOUD_LINE='' LAB_CLOUD_T=''

lab_cloud_machine() {
  LAB_DISK_MB=$LAB_CLOUD_DISK_MB
  LAB_MEM_MB=$LAB_CLOUD_MEM_MB
  local disk
  disk=$(lab_file disk.raw)
  if [[ -e $disk ]] && (($(stat -c %s "$disk") < LAB_DISK_MB * 1048576)); then
    truncate -s "${LAB_DISK_MB}M" "$disk"
  fi
}

# lab_cloud_image VERSION [build-cloud-image.sh flags...] — builds, signs and pushes
# cloud:VERSION ($LAB_DIR/build/cloud-VERSION.kiln, with its .raw for byte comparisons), the
# image seeding from $LAB_CLOUD_SEED_URL when no config drive is attached (--seed-url ''
# among the flags: a drive-only image). Cached root filesystem: ~1 min warm, ~4-5 min cold.
lab_cloud_image() {
  local v=$1 seed=(--seed-url "$LAB_CLOUD_SEED_URL")
  shift
  local a
  for a in "$@"; do [[ $a == --seed-url ]] && seed=(); done
  local args=(--version "$v" --sign "$LAB_DIR/site.pem" --size-mb "$LAB_CLOUD_SIZE_MB"
    --out "$LAB_DIR/build/cloud-$v.kiln" --raw "$LAB_DIR/build/cloud-$v.raw" "${seed[@]}" "$@")
  "$LAB_ROOT/deploy/lab/build-cloud-image.sh" "${args[@]}" >&2 || return 1
  kiln_cli image push "$LAB_DIR/build/cloud-$v.kiln" >/dev/null
}

# lab_cloud_wait LOG TIMEOUT_S — waits for the image's "KILN-CLOUD: ..." serial line (printed
# once cloud-init's final stage is done); sets LAB_CLOUD_LINE (the part after "KILN-CLOUD: ")
# and LAB_CLOUD_T (its seconds since power-on). Call it directly, not in $(...).
lab_cloud_wait() {
  LAB_CLOUD_LINE='' LAB_CLOUD_T=''
  LAB_CLOUD_T=$(lab_wait_log "$1" 'KILN-CLOUD: hostname=' "$2") || return 1
  LAB_CLOUD_LINE=$(grep -a -m1 'KILN-CLOUD: hostname=' "$1" | sed 's/.*KILN-CLOUD: //')
}

# lab_cloud_field NAME — one value of LAB_CLOUD_LINE: hostname, fqdn, keys (user:SHA256:..,..
# or none), addrs (ifname=a.b.c.d/len,...), instance, datasource, cloudinit (ok|errors), image.
lab_cloud_field() { tr ' ' '\n' <<<"$LAB_CLOUD_LINE" | sed -n "s/^$1=//p"; }

# lab_cloud_schema USER-DATA... — `cloud-init schema` with the image's cloud-init (22.4).
lab_cloud_schema() { "$LAB_ROOT/deploy/lab/cloud-init-schema.sh" "$@"; }
