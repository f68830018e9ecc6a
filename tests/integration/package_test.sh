#!/usr/bin/env bash
# The Debian packages (deploy/package.sh) as an operator gets them:
#   1. built from the build tree; lintian reports no errors; systemd-analyze verify accepts
#      the packaged unit (in the unpacked package tree);
#   2. `apt-get install ./kiln*.deb` into a clean Debian 12 root (mmdebstrap, cached in
#      $KILN_LAB_CACHE keyed by its package list; apt reaches the Debian mirror for the
#      packages' dependencies): the kiln user exists, /etc/kiln/kilnd.json is a conffile,
#      the secrets key is kiln's and 0600, `kilnd db-check` and `kiln --help` run;
#   3. kilnd.service started by systemd: the root booted with systemd-nspawn --boot in a private
#      network namespace (fallback where nspawn cannot boot: the unit's ExecStart, User, Group
#      and capabilities through setpriv, without systemd's sandbox). With the packaged config,
#      /healthz and /api/v1/machines answer on loopback (a token from the installed `kilnd
#      token create`) and nothing listens on UDP; after the conffile is edited for DHCP and
#      TFTP on a veth pair between two private namespaces and the service restarted, a client
#      gets a DHCPOFFER (port 67, SO_BINDTODEVICE) and a file over TFTP (port 69). kilnd runs
#      as kiln with CAP_NET_BIND_SERVICE and CAP_NET_RAW only (and under nspawn: seccomp on,
#      /usr read-only), and its IPMI driver runs ipmitool there (power status of an emulator).
#   4. `apt-get remove` keeps /var/lib/kiln and the conffile; `apt-get purge` removes both.
# Needs root, mmdebstrap, lintian and the Debian mirror. Cold: ~3 minutes for the root tarball
# (its packages include the kiln packages' dependencies, systemd and ipmitool), then ~45 s;
# warm: ~45 s (apt installs the three .debs from the cache without the network).
source "$(dirname "$0")/lib.sh"
[[ $(id -u) -eq 0 ]] || { log "skip: needs root (chroot)"; exit 77; }
for t in mmdebstrap lintian systemd-analyze setpriv nsenter findmnt ip dpkg-deb curl jq; do
  command -v $t >/dev/null || { log "skip: $t missing (deploy/install-deps.sh)"; exit 77; }
done
: "${KILN_LAB_CACHE:=$KILN_ROOT/var/lab-cache}"
mkdir -p "$KILN_LAB_CACHE"

# --- 1. build, lintian, systemd-analyze verify -----------------------------------------------
KILN_BUILD=$KILN_BUILD "$KILN_ROOT/deploy/package.sh" --out "$WORK/deb" >"$WORK/package.log" 2>&1 ||
  { cat "$WORK/package.log" >&2; fail "deploy/package.sh failed"; finish; }
mapfile -t DEBS < <(ls "$WORK"/deb/*.deb)
for p in kiln-server kiln kiln-agent; do
  ls "$WORK/deb/${p}_"*.deb >/dev/null 2>&1 && ok || fail "no $p package in ${DEBS[*]}"
done
for d in "${DEBS[@]}"; do
  # --fail-on error: warnings are printed (and reported), errors fail.
  if lintian --fail-on error --tag-display-limit 0 "$d" >"$WORK/lintian.log" 2>&1; then ok; else
    fail "lintian $(basename "$d"): $(grep -E '^E:' "$WORK/lintian.log" | head -10)"
  fi
  sed "s/^/[lintian] /" "$WORK/lintian.log" >&2
done
SERVER_DEB=$(ls "$WORK"/deb/kiln-server_*.deb)
dpkg-deb -x "$SERVER_DEB" "$WORK/tree"
UNIT=lib/systemd/system/kilnd.service
[[ -f $WORK/tree/$UNIT ]] && ok || fail "the package has no $UNIT"
# verify, rooted in the unpacked package: ExecStart's binary must exist there and man finds
# Documentation=man:kilnd(8) in it; the standard targets the unit orders itself after come
# from the host's systemd.
cp -a "$WORK/tree" "$WORK/vroot"
cp -n /lib/systemd/system/*.target "$WORK/vroot/lib/systemd/system/" 2>/dev/null || true
if MANPATH=$WORK/vroot/usr/share/man systemd-analyze verify --root="$WORK/vroot" "/$UNIT" \
  >"$WORK/verify.log" 2>&1 && ! grep -q . "$WORK/verify.log"; then ok; else
  fail "systemd-analyze verify: $(head -5 "$WORK/verify.log")"
fi
grep -q '^User=kiln$' "$WORK/tree/$UNIT" && grep -q '^CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW$' "$WORK/tree/$UNIT" &&
  ok || fail "the unit does not run as kiln with two capabilities"
# The sandbox's rating (informative: printed, not asserted).
systemd-analyze security --offline=yes --root="$WORK/vroot" "$WORK/vroot/$UNIT" >"$WORK/security.log" 2>&1 || true
log "$(grep 'Overall exposure' "$WORK/security.log" || tail -1 "$WORK/security.log")"
dpkg-deb -c "$(ls "$WORK"/deb/kiln-agent_*.deb)" >"$WORK/agent.list"
grep -q 'usr/lib/kiln/kiln-agent$' "$WORK/agent.list" && ok ||
  fail "kiln-agent package lacks usr/lib/kiln/kiln-agent"
file "$WORK/tree/usr/sbin/kilnd" | grep -q ', stripped' && ok || fail "kilnd is not stripped"

# --- 2. a clean Debian 12 root (cached), apt install ------------------------------------------
SUITE=bookworm
MIRROR=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The packages' dependencies are in the cached root (apt then installs kiln's packages from
# the cache offline); a dependency not listed here is fetched from the mirror.
PKGS=systemd-sysv,dbus,ipmitool,adduser,init-system-helpers,libarchive13,libfmt9,libspdlog1.10,libsqlite3-0,libssl3,busybox-static,cpio,binutils
OPTS=(--variant=apt --format=tar --aptopt='Apt::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$PKGS" "${OPTS[@]}" "$(mmdebstrap --version)" |
  sha256sum | cut -c1-16)
TARBALL=$KILN_LAB_CACHE/package-test-root-$key.tar
if [[ ! -s $TARBALL ]]; then
  log "building the Debian 12 root (mmdebstrap, once): $PKGS"
  mmdebstrap --quiet "${OPTS[@]}" --include="$PKGS" "$SUITE" "$TARBALL.tmp" "$MIRROR" >&2 ||
    { rm -f "$TARBALL.tmp"; fail "mmdebstrap failed"; finish; }
  mv "$TARBALL.tmp" "$TARBALL"
fi
R=$WORK/root
mkdir -p "$R"
tar -C "$R" -xf "$TARBALL"
for m in proc dev; do
  mkdir -p "$R/$m"
done
# /proc and /dev for apt and dpkg in the chroot (unmounted while nspawn boots the root).
mount_root() {
  mount -t proc proc "$R/proc"
  mount --rbind /dev "$R/dev"
  mount --make-rslave "$R/dev"
}
umount_root() {
  umount -l "$R/proc" 2>/dev/null || true
  umount -R -l "$R/dev" 2>/dev/null || true
}
mount_root
CLEANUP_CMDS+=("umount -l '$R/proc'" "umount -R -l '$R/dev'")
# Never delete a tree with the host's /dev still bound into it.
CLEANUP_CMDS+=("if mountpoint -q '$R/dev' || mountpoint -q '$R/proc'; then KEEP_WORK=1; echo '$WORK kept: still mounted' >&2; fi")
cp /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
mkdir -p "$R/tmp/debs"
cp "${DEBS[@]}" "$R/tmp/debs/"
# No service may start in the chroot (there is no systemd there anyway).
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"
IN_ROOT_DEBS=()
for d in "${DEBS[@]}"; do IN_ROOT_DEBS+=("/tmp/debs/$(basename "$d")"); done
if ! in_root apt-get install -y -q -o Dpkg::Use-Pty=0 "${IN_ROOT_DEBS[@]}" >"$WORK/apt.log" 2>&1; then
  in_root apt-get update -q >>"$WORK/apt.log" 2>&1 || true
  in_root apt-get install -y -q -o Dpkg::Use-Pty=0 "${IN_ROOT_DEBS[@]}" >>"$WORK/apt.log" 2>&1 ||
    { tail -20 "$WORK/apt.log" >&2; fail "apt-get install ./kiln*.deb failed"; finish; }
fi
ok
grep -E '^(Get|Setting up)' "$WORK/apt.log" | sed 's/^/[apt] /' >&2 || true

in_root getent passwd kiln >"$WORK/passwd" && ok || fail "no user kiln"
in_root getent group kiln >/dev/null && ok || fail "no group kiln"
[[ $(cut -d: -f7 "$WORK/passwd") == */nologin || $(cut -d: -f7 "$WORK/passwd") == /bin/false ]] &&
  ok || fail "kiln has a login shell: $(cat "$WORK/passwd")"
grep -qx /etc/kiln/kilnd.json "$R/var/lib/dpkg/info/kiln-server.conffiles" && ok ||
  fail "/etc/kiln/kilnd.json is not a conffile"
in_root dpkg-query -W -f='${Conffiles}\n' kiln-server | grep -q '/etc/kiln/kilnd.json [0-9a-f]\{32\}' &&
  ok || fail "dpkg-query does not list the conffile"
expect_eq "$(in_root stat -c '%U:%G %a %s' /var/lib/kiln/secrets.key)" "kiln:kiln 600 32" "secrets key"
expect_eq "$(in_root stat -c '%U:%G %a' /var/lib/kiln)" "kiln:kiln 750" "state directory"
in_root kiln --help >"$WORK/kiln-help" 2>&1 && grep -q 'Subcommands:' "$WORK/kiln-help" && ok ||
  fail "kiln --help in the root: $(head -3 "$WORK/kiln-help")"
in_root kiln-build-initramfs --help >"$WORK/kbi-help" 2>&1 && grep -q -- '--trust-key' "$WORK/kbi-help" &&
  ok || fail "kiln-build-initramfs --help: $(head -3 "$WORK/kbi-help")"
# the wrapper's agent is the static one build-initramfs.sh insists on (ldd must fail on it)
! in_root ldd /usr/lib/kiln/kiln-agent >/dev/null 2>&1 && ok || fail "the packaged kiln-agent is not static"
in_root test -f /usr/share/man/man8/kilnd.8.gz && in_root test -f /usr/share/bash-completion/completions/kiln &&
  ok || fail "man page or completion not installed"
for f in grafana/kiln.json prometheus/kiln-rules.yml prometheus/kiln-rules.test.yml; do
  cmp -s "$R/usr/share/kiln/$f" "$KILN_ROOT/deploy/$f" && ok || fail "/usr/share/kiln/$f is not deploy/$f"
done
as_kiln() { in_root setpriv --reuid=kiln --regid=kiln --init-groups "$@"; }
as_kiln kilnd --config /etc/kiln/kilnd.json db-check >"$WORK/dbcheck" 2>&1 && ok ||
  fail "kilnd db-check as kiln: $(tail -3 "$WORK/dbcheck")"
in_root test -s /var/lib/kiln/kiln.db && ok || fail "db-check made no /var/lib/kiln/kiln.db"
TOKEN=$(as_kiln kilnd --config /etc/kiln/kilnd.json token create --name pkg-test 2>"$WORK/token.err")
[[ -n $TOKEN ]] && ok || fail "kilnd token create: $(cat "$WORK/token.err")"

# --- 3. the service, as systemd runs it -------------------------------------------------------
# The root is booted with systemd-nspawn --boot inside a network namespace of this test ($SRV,
# loopback and a veth to $CLI): its systemd starts kilnd.service as installed (enabled by the
# postinst), with the unit's user, capabilities and sandbox. Where nspawn cannot boot the root,
# the unit's ExecStart runs in the chroot as the unit would without systemd's sandbox
# (setpriv: User/Group, NoNewPrivileges, ambient = inheritable = bounding set = the unit's
# capabilities); the log says which. KILN_PACKAGE_TEST_NO_NSPAWN=1 forces the fallback.
CAPS=$(sed -n 's/^AmbientCapabilities=//p' "$R/$UNIT" | tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
EXEC=$(sed -n 's/^ExecStart=//p' "$R/$UNIT")
expect_eq "$CAPS" "+net_bind_service,+net_raw" "the unit's capabilities"
SRV=kpk-srv-$$ CLI=kpk-cli-$$
netns_add $SRV $CLI
in_srv() { ip netns exec "$SRV" "$@"; }
uid=$(in_root id -u kiln)
MODE=setpriv
SVC_PID=""     # the host's pid of kilnd
NSPAWN_PID=""  # systemd-nspawn, when booted
CT_INIT=""     # the container's systemd (host pid)
in_ct() { nsenter -t "$CT_INIT" -m -u -i -n -p -- "$@"; }
healthy() {
  for _ in $(seq 1 150); do
    in_srv curl -sf -o /dev/null --max-time 2 http://127.0.0.1:8080/healthz && return 0
    sleep 0.2
  done
  return 1
}
# descendant NAME — the host pid of the first process called NAME below systemd-nspawn.
descendant() {
  local -a todo=("$NSPAWN_PID")
  local p c
  while ((${#todo[@]})); do
    p=${todo[0]}
    todo=("${todo[@]:1}")
    for c in $(pgrep -P "$p"); do
      [[ $(cat "/proc/$c/comm" 2>/dev/null) == "$1" ]] && { echo "$c"; return 0; }
      todo+=("$c")
    done
  done
  return 0
}
ct_kilnd_pid() { descendant kilnd; }
boot_container() {
  command -v systemd-nspawn >/dev/null || return 1
  in_root test -x /lib/systemd/systemd || return 1
  rm -f "$R/usr/sbin/policy-rc.d"
  umount_root
  timeout 300 systemd-nspawn -q -D "$R" --register=no --keep-unit --console=read-only \
    --network-namespace-path="/run/netns/$SRV" --boot >"$WORK/nspawn.log" 2>&1 &
  NSPAWN_PID=$!
  CLEANUP_CMDS+=("kill -TERM $NSPAWN_PID; sleep 2; kill -KILL $NSPAWN_PID")
  for _ in $(seq 1 150); do
    CT_INIT=$(descendant systemd)
    [[ -n $CT_INIT ]] && SVC_PID=$(ct_kilnd_pid) && [[ -n $SVC_PID ]] && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || return 1
    sleep 0.2
  done
  [[ -n $SVC_PID ]] && healthy
}
start_service() {
  if [[ $MODE == nspawn ]]; then
    in_ct systemctl restart kilnd.service
    # Type=simple: restart returns once systemd has forked, while the child may still be
    # "(kilnd)" before its exec; the pid is looked up once kilnd answers.
    healthy || return 1
    SVC_PID=$(ct_kilnd_pid)
    [[ -n $SVC_PID ]]
    return
  else
    ip netns exec "$SRV" chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin \
      setpriv --reuid=kiln --regid=kiln --init-groups --no-new-privs \
      --inh-caps=-all,$CAPS --ambient-caps=-all,$CAPS --bounding-set=-all,$CAPS \
      sh -c "cd /var/lib/kiln && exec $EXEC" >>"$WORK/kilnd.svc.log" 2>&1 &
    SVC_PID=$!  # ip, chroot, env, setpriv and sh exec each other: this is kilnd
    KILND_PIDS+=("$SVC_PID")
  fi
  healthy
}
# stop_service — stops kilnd; STOP_RC = its exit status.
stop_service() {
  if [[ $MODE == nspawn ]]; then
    in_ct systemctl stop kilnd.service
    STOP_RC=$(in_ct systemctl show -p ExecMainStatus --value kilnd.service)
  else
    kill -TERM "$SVC_PID"
    STOP_RC=0
    wait "$SVC_PID" || STOP_RC=$?
  fi
}
service_log() {
  if [[ $MODE == nspawn ]]; then in_ct journalctl -q -o cat -u kilnd.service --no-pager; else cat "$WORK/kilnd.svc.log"; fi
}
check_process() {
  grep -E '^(Name|Uid|Gid|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "/proc/$SVC_PID/status" | tr -s '\t ' ' ' >"$WORK/status"
  grep -q "^Uid: $uid $uid $uid $uid" "$WORK/status" && ok || fail "$1: kilnd not running as kiln: $(cat "$WORK/status")"
  # CAP_NET_BIND_SERVICE (bit 10) and CAP_NET_RAW (bit 13) = 0x2400, nothing else.
  grep -q '^CapEff: 0000000000002400' "$WORK/status" && grep -q '^CapBnd: 0000000000002400' "$WORK/status" &&
    grep -q '^NoNewPrivs: 1' "$WORK/status" && ok || fail "$1: kilnd's capabilities: $(cat "$WORK/status")"
  if [[ $MODE == nspawn ]]; then
    # SystemCallFilter= is a seccomp filter (mode 2); ProtectSystem=strict: /usr is read-only.
    grep -q '^Seccomp: 2' "$WORK/status" && ok || fail "$1: no seccomp filter: $(cat "$WORK/status")"
    findmnt --task "$SVC_PID" -no OPTIONS -T /usr | grep -qE '(^|,)ro(,|$)' && ok ||
      fail "$1: /usr is writable for kilnd (ProtectSystem=strict)"
  fi
}

if [[ -z ${KILN_PACKAGE_TEST_NO_NSPAWN:-} ]] && boot_container; then
  MODE=nspawn
  log "kilnd.service runs under systemd in systemd-nspawn --boot (the unit's sandbox applies)"
else
  why="KILN_PACKAGE_TEST_NO_NSPAWN is set"
  [[ -n ${KILN_PACKAGE_TEST_NO_NSPAWN:-} ]] ||
    why="systemd-nspawn --boot did not start kilnd.service: $(tail -3 "$WORK/nspawn.log" 2>/dev/null | tr '\n' ' ')"
  # Without the sandbox, a unit change that breaks DHCP, TFTP or ipmitool under systemd would
  # pass: the fallback is a failure unless it was asked for.
  if [[ -n ${KILN_PACKAGE_TEST_NO_NSPAWN:-} ]]; then
    log "$why; running the unit's ExecStart with setpriv, without systemd's sandbox"
  else
    fail "$why; the unit's sandbox is not tested (KILN_PACKAGE_TEST_NO_NSPAWN=1 runs the setpriv path)"
  fi
  if [[ -n $NSPAWN_PID ]]; then
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  mountpoint -q "$R/proc" || mount_root
  printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
  chmod 755 "$R/usr/sbin/policy-rc.d"
  start_service || fail "kilnd (setpriv) did not become healthy"
fi

# srv_api METHOD PATH [JSON] [TOKEN] -> STATUS, BODY: the installed kilnd's API from $SRV.
srv_api() {
  local args=(-s -o "$WORK/body" -w '%{http_code}' -X "$1" -H "Authorization: Bearer ${4:-$TOKEN}")
  [[ -n ${3:-} ]] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  STATUS=$(in_srv curl "${args[@]}" "http://127.0.0.1:8080$2")
  BODY=$(cat "$WORK/body")
}

# 3a. The packaged configuration as it is: the API on loopback, nothing else.
expect_eq "$(in_srv curl -s -o "$WORK/healthz" -w '%{http_code}' http://127.0.0.1:8080/healthz)" 200 \
  "/healthz of the installed kilnd"
expect_eq "$(in_srv curl -s -o "$WORK/machines" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  http://127.0.0.1:8080/api/v1/machines)" 200 "/api/v1/machines with the installed token"
jq -e 'type == "array" or type == "object"' "$WORK/machines" >/dev/null && ok ||
  fail "machines body: $(head -c 200 "$WORK/machines")"
expect_eq "$(in_srv curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/api/v1/machines)" 401 \
  "/api/v1/machines without a token"
in_srv ss -Hlnup >"$WORK/udp.listen"
[[ ! -s $WORK/udp.listen ]] && ok || fail "the packaged config listens on UDP: $(cat "$WORK/udp.listen")"
check_process "packaged config"
service_log >"$WORK/svc1.log"
grep -q 'event=daemon.listening url=http://127.0.0.1:8080' "$WORK/svc1.log" && ok ||
  fail "kilnd log: $(tail -5 "$WORK/svc1.log")"
if grep -q 'secrets_key_created' "$WORK/svc1.log"; then
  fail "kilnd made a new secrets key: the package's was not used"
else ok; fi

# 3a'. The dashboard of the installed service shows a demo machine deploying: an image pushed
# with the kiln CLI, a machine assigned, a simulated agent (its ticket, session and progress
# reports through the API) at 75%; tests/ui/tour.mjs signs in in Debian's headless chromium
# (in $SRV, where the service listens) and screenshots every page into
# $KILN_BUILD/test-artifacts/package-ui. Skipped without chromium or node.
UI_TESTS=$KILN_ROOT/tests/ui
if [[ ! -x /usr/bin/chromium ]] || ! command -v node >/dev/null; then
  log "skip the dashboard tour: no /usr/bin/chromium or node (deploy/install-deps.sh)"
elif [[ ! -d $UI_TESTS/node_modules/puppeteer-core ]] &&
  ! (cd "$UI_TESTS" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund >"$WORK/npm.log" 2>&1); then
  fail "npm ci in tests/ui: $(tail -3 "$WORK/npm.log")"
else
  head -c $((8 << 20)) /dev/urandom >"$WORK/demo.raw"
  "$KILN" image build "$WORK/demo.raw" -o "$WORK/demo.kiln" --name demo --version 1 \
    --chunk-size 1M >/dev/null 2>&1 || fail "kiln image build"
  in_srv env KILN_URL=http://127.0.0.1:8080 KILN_TOKEN="$TOKEN" "$KILN" image push "$WORK/demo.kiln" \
    >"$WORK/push.log" 2>&1 && ok || fail "kiln image push to the installed kilnd: $(tail -3 "$WORK/push.log")"
  srv_api POST /api/v1/machines '{"mac":"52:54:00:77:00:21","name":"demo-1","state":"ready","labels":{"rack":"r1"}}'
  expect_status 201 "the demo machine"
  DEMO=$(jq -r .id <<<"$BODY")
  # The second machine's name and a label are HTML: the dashboard must show them as text.
  srv_api POST /api/v1/machines '{"mac":"52:54:00:77:00:22","name":"<img src=x onerror=window.__xss=1>","state":"ready","labels":{"rack":"r2","note":"<b>bold</b>"}}'
  expect_status 201 "a second machine, named in HTML"
  srv_api PUT "/api/v1/machines/$DEMO/assignment" '{"image":"demo","version":"1"}'
  expect_status 201 "assign demo 1 ($BODY)"
  DEP=$(jq -r .id <<<"$BODY")  # the answer is the new deployment
  srv_api POST "/api/v1/deployments/$DEP/agent-ticket"
  TICKET=$(jq -r .ticket <<<"$BODY")
  srv_api POST /api/v1/agent/session '' "$TICKET"
  [[ $STATUS == 20[01] ]] && ok || fail "the simulated agent's session: $STATUS $BODY"
  AGENT=$(jq -r .token <<<"$BODY")
  for done in 2097152 6291456; do
    srv_api POST /api/v1/agent/progress "{\"stage\":\"writing\",\"bytes_done\":$done,\"bytes_total\":8388608}" "$AGENT"
    [[ $STATUS == 20? ]] && ok || fail "progress $done: $STATUS $BODY"
  done
  srv_api POST /api/v1/rollouts '{"selector":"rack=r2","image":"demo","version":"1","batch":1}'
  expect_status 201 "a rollout ($BODY)"
  ROLLOUT=$(jq -r .id <<<"$BODY")
  ARTIFACTS=$KILN_BUILD/test-artifacts/package-ui
  rm -rf "$ARTIFACTS" && mkdir -p "$ARTIFACTS"
  if in_srv env KILN_URL=http://127.0.0.1:8080 TOKEN="$TOKEN" MACHINE="$DEMO" PERCENT=75 \
    ROLLOUT="$ROLLOUT" ARTIFACTS="$ARTIFACTS" PROFILE="$WORK/chromium" \
    timeout 120 node "$UI_TESTS/tour.mjs" >"$WORK/tour.out" 2>"$WORK/tour.err"; then
    ok
  else
    fail "the dashboard tour: $(grep FAIL "$WORK/tour.out"; tail -5 "$WORK/tour.err")"
  fi
  cat "$WORK/tour.out" >&2
  CHECKS=$((CHECKS + $(grep -c '^ok: ' "$WORK/tour.out" || true)))
  log "screenshots of the installed service's dashboard: $ARTIFACTS"
fi
stop_service
expect_eq "$STOP_RC" 0 "kilnd's exit status after stop (packaged config)"

# 3b. The capabilities suffice for what the unit grants them for: DHCP on port 67 bound to an
# interface (SO_BINDTODEVICE) and TFTP on port 69, served to a client in $CLI over a veth pair
# this test creates (10.77.0.0/24, inside the two namespaces only). The operator's way: edit
# the conffile, restart the service.
cmake --build "$KILN_BUILD" --target dhcp_probe >/dev/null 2>&1 || true
[[ -x $KILN_BUILD/dhcp_probe ]] || { fail "dhcp_probe missing in $KILN_BUILD"; finish; }
ip link add kpk-s netns "$SRV" type veth peer name kpk-c netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/24 dev kpk-s
ip -n "$SRV" link set kpk-s up
ip -n "$CLI" addr add 10.77.0.2/24 dev kpk-c
ip -n "$CLI" link set kpk-c up
cat >"$R/etc/kiln/kilnd.json" <<'EOS'
{
  // operator edit: DHCP and TFTP on the test's veth
  "data_dir": "/var/lib/kiln",
  "http": {"listen": "127.0.0.1:8080"},
  "tftp": {"listen": "10.77.0.1:69"},
  "boot": {"roots": [], "server_url": "http://10.77.0.1:8080"},
  "dhcp": {"mode": "authoritative", "interfaces": ["kpk-s"],
           "subnets": [{"subnet": "10.77.0.0/24", "pool": "10.77.0.100-10.77.0.120"}]}
}
EOS
install -d -o "$uid" -g "$uid" "$R/var/lib/kiln/files"
echo "kiln package test" >"$R/var/lib/kiln/files/hello.txt"
start_service || fail "kilnd did not come up with DHCP and TFTP configured: $(service_log | tail -5)"
ip netns exec "$CLI" "$KILN_BUILD/dhcp_probe" --iface kpk-c --mac 52:54:00:77:00:01 --wait-ms 2000 \
  >"$WORK/offers" 2>&1 || true
grep -q 'from=10.77.0.1 type=2 yiaddr=10.77.0.1[0-2][0-9]' "$WORK/offers" && ok ||
  fail "no DHCPOFFER from kilnd as kiln: $(cat "$WORK/offers"; service_log | tail -5)"
expect_eq "$(ip netns exec "$CLI" curl -s --max-time 10 tftp://10.77.0.1/hello.txt 2>&1)" \
  "kiln package test" "TFTP (port 69) from kilnd as kiln"
check_process "DHCP config"

# 3c. The IPMI driver runs /usr/bin/ipmitool (package ipmitool, recommended) inside the same
# sandbox (seccomp, MemoryDenyWriteExecute, no new privileges) and opens the BMC password
# sealed with the secrets key the postinst made: a power status through an IPMI emulator
# (tests/tools/ipmi_bmc.py, in $SRV on loopback).
if ! in_root test -x /usr/bin/ipmitool; then
  fail "ipmitool is not in the root (PKGS)"
elif ! /usr/bin/python3 -c 'import pyghmi' 2>/dev/null; then
  log "skip the IPMI check: python3-pyghmi missing (deploy/install-deps.sh)"
else
  printf 'pkg-test-pw\n' >"$WORK/bmc.pass"
  chmod 600 "$WORK/bmc.pass"
  ip netns exec "$SRV" /usr/bin/python3 "$KILN_ROOT/tests/tools/ipmi_bmc.py" --sim \
    --listen 127.0.0.1:0 --user admin --password-file "$WORK/bmc.pass" \
    --ready-file "$WORK/ipmi.ready" >/dev/null 2>"$WORK/ipmi.log" &
  IPMI_PID=$!
  CLEANUP_CMDS+=("kill -TERM $IPMI_PID")
  for _ in $(seq 1 100); do [[ -s $WORK/ipmi.ready ]] && break; sleep 0.1; done
  srv_api POST /api/v1/machines '{"macs":["52:54:00:77:00:09"],"name":"ipmi-1"}'
  expect_status 201 "create a machine"
  MID=$(jq -r .id <<<"$BODY")
  srv_api PUT "/api/v1/machines/$MID/bmc" \
    "{\"driver\":\"ipmi\",\"address\":\"$(head -n1 "$WORK/ipmi.ready")\",\"username\":\"admin\",\"password\":\"pkg-test-pw\"}"
  expect_status 200 "PUT an IPMI BMC"
  srv_api POST "/api/v1/machines/$MID/power" '{"action":"status"}'
  expect_eq "$STATUS:$(jq -r .power_state <<<"$BODY")" "200:off" \
    "power status through ipmitool in the service's sandbox ($BODY)"
  kill -TERM "$IPMI_PID" 2>/dev/null || true
  wait "$IPMI_PID" 2>/dev/null || true
fi
stop_service
expect_eq "$STOP_RC" 0 "kilnd's exit status after stop (DHCP config)"
if [[ $MODE == nspawn ]]; then
  kill -TERM "$NSPAWN_PID"  # nspawn shuts the container down in order
  wait "$NSPAWN_PID" 2>/dev/null || true
  mount_root
  printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
  chmod 755 "$R/usr/sbin/policy-rc.d"
fi

# --- 4. remove keeps state and conffile, purge deletes them -----------------------------------
in_root apt-get remove -y -q kiln-server >"$WORK/remove.log" 2>&1 && ok ||
  fail "apt-get remove: $(tail -5 "$WORK/remove.log")"
[[ ! -e $R/usr/sbin/kilnd ]] && ok || fail "kilnd still installed after remove"
[[ -s $R/var/lib/kiln/kiln.db && -s $R/var/lib/kiln/secrets.key ]] && ok ||
  fail "remove deleted /var/lib/kiln"
grep -q 'operator edit' "$R/etc/kiln/kilnd.json" && ok || fail "remove lost the edited conffile"
in_root apt-get purge -y -q kiln-server >"$WORK/purge.log" 2>&1 && ok ||
  fail "apt-get purge: $(tail -5 "$WORK/purge.log")"
[[ ! -e $R/var/lib/kiln ]] && ok || fail "purge kept /var/lib/kiln: $(ls "$R/var/lib/kiln")"
[[ ! -e $R/etc/kiln/kilnd.json ]] && ok || fail "purge kept /etc/kiln/kilnd.json"
finish
