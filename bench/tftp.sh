#!/usr/bin/env bash
# bench/tftp.sh — kilnd's TFTP server side by side with tftpd-hpa and dnsmasq's TFTP, in one
# run, on the same files, with the same clients:
#   1. loopback, one client (curl), blksize 512, 1468 and 65464 (lock-step: RFC 1350/2348);
#   2. loopback, 20 concurrent clients (curl, blksize 1468);
#   3. a 10 ms round trip (a remote rack): curl lock-step at 1468, and atftp asking for
#      windowsize 16 and 64 (RFC 7440; servers without it ignore the option and go lock-step).
# The 10 ms round trip comes from tests' udp_relay (5 ms each way, user space) in front of each
# server: this kernel has no sch_netem for tc, so the veth + netem set-up is not available here;
# the relay's own cost is the same for every server.
# Figures are MB/s (10^6 bytes/s) of whole transfers (request to last ACK), the median of
# $REPS runs, with kilnd/peer ratios. Every fetched file is checksummed; a wrong byte aborts.
# The 65464 point uses a larger file (BIG_MB): at ~1 GB/s a 32 MiB transfer lasts a few tens of
# milliseconds, less than curl's own start-up.
# Usage: bench/tftp.sh   (env: REPS=3 SIZE_MB=32 BIG_MB=256 CONC_MB=16 RTT_SIZE_MB=1 CLIENTS=20
#                         ONLY= BASELINE_KILND=)
# ONLY=blksize runs point 1 alone, ONLY=65464 its 65464 row alone. BASELINE_KILND=PATH adds that
# kilnd binary (e.g. main's build) as one more server, so before/after ratios come from one run.
source "$(dirname "$0")/lib.sh"

REPS=${REPS:-3}
SIZE_MB=${SIZE_MB:-32}
BIG_MB=${BIG_MB:-256}
CONC_MB=${CONC_MB:-16}
RTT_SIZE_MB=${RTT_SIZE_MB:-1}
CLIENTS=${CLIENTS:-20}
ONLY=${ONLY:-}
BASELINE_KILND=${BASELINE_KILND:-}
case $ONLY in
  "" | blksize | 65464) ;;
  *) die "ONLY=$ONLY: expected blksize or 65464" ;;
esac
[[ -z "$BASELINE_KILND" || -x "$BASELINE_KILND" ]] || die "BASELINE_KILND=$BASELINE_KILND is not executable"
require_tools curl atftp in.tftpd dnsmasq sha256sum
RELAY=$KILN_BUILD/udp_relay
[[ -n "$ONLY" || -x "$RELAY" ]] || die "missing $RELAY (build the tests: ninja -C build udp_relay)"

# Peers drop privileges to nobody: the tree must be world-readable.
chmod 755 "$WORK"
FILES=$WORK/files
mkdir -p "$FILES"
# Only the files the selected points fetch.
declare -A MB=([big.img]=$BIG_MB)
[[ "$ONLY" == 65464 ]] || MB[boot.img]=$SIZE_MB
[[ -n "$ONLY" ]] || MB+=([conc.img]=$CONC_MB [remote.img]=$RTT_SIZE_MB)
declare -A SUM
for f in "${!MB[@]}"; do
  head -c $((MB[$f] << 20)) /dev/urandom >"$FILES/$f"
  SUM[$f]=$(sha256sum "$FILES/$f" | cut -d' ' -f1)
done
chmod 755 "$FILES"
chmod 644 "$FILES"/*

# --- servers ----------------------------------------------------------------------------------
mkdir -p "$WORK/var"
# Every benchmark client comes from 127.0.0.1: lift the per-client limit (16) over CLIENTS.
echo '{"tftp": {"max_per_client": 256}}' >"$WORK/kilnd.json"
start_kilnd "$WORK/var" --config "$WORK/kilnd.json" --files-dir "$FILES" --tftp-listen 127.0.0.1:0
KILN_PORT=$(sed -n 's/^tftp=.*://p' "$WORK/kilnd.ready")
[[ -n "$KILN_PORT" ]] || die "kilnd did not report its TFTP port"
if [[ -n "$BASELINE_KILND" ]]; then
  mkdir -p "$WORK/var-baseline"
  cmd=("$BASELINE_KILND" --data-dir "$WORK/var-baseline" --listen 127.0.0.1:0
    --ready-file "$WORK/baseline.ready" --log-level warn --config "$WORK/kilnd.json"
    --files-dir "$FILES" --tftp-listen 127.0.0.1:0)
  record "$(quote "${cmd[@]}")"
  "${cmd[@]}" >"$WORK/baseline.log" 2>&1 &
  STARTED_PIDS+=($!)
  for _ in $(seq 200); do [[ -s "$WORK/baseline.ready" ]] && break; sleep 0.05; done
  BASE_PORT=$(sed -n 's/^tftp=.*://p' "$WORK/baseline.ready" 2>/dev/null || true)
  [[ -n "$BASE_PORT" ]] || die "the baseline kilnd did not report its TFTP port"
fi

free_udp_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 12000))
    ss -Huln "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
  done
  die "no free UDP port"
}
HPA_PORT=$(free_udp_port)
cmd=(in.tftpd -L -a "127.0.0.1:$HPA_PORT" -s "$FILES")
record "$(quote "${cmd[@]}")"
"${cmd[@]}" >"$WORK/tftpd-hpa.log" 2>&1 &
STARTED_PIDS+=($!)

# dnsmasq's TFTP port is 69 and cannot be changed: it runs only if 127.0.0.1:69 is free.
DNSMASQ_PORT=""
if ! ss -Huln "sport = :69" | grep -q .; then
  cmd=(dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --enable-tftp
    "--tftp-root=$FILES" --interface=lo --listen-address=127.0.0.1 --bind-interfaces
    --tftp-max=100 --quiet-tftp --user=root "--pid-file=$WORK/dnsmasq.pid" --log-facility=-)
  record "$(quote "${cmd[@]}")"
  "${cmd[@]}" >"$WORK/dnsmasq.log" 2>&1 &
  STARTED_PIDS+=($!)
  DNSMASQ_PORT=69
else
  log "127.0.0.1:69 is taken: dnsmasq is left out"
fi
sleep 0.5

SERVERS=(kilnd tftpd-hpa)
declare -A PORT=([kilnd]=$KILN_PORT [tftpd-hpa]=$HPA_PORT)
if [[ -n "$DNSMASQ_PORT" ]]; then
  SERVERS+=(dnsmasq)
  PORT[dnsmasq]=$DNSMASQ_PORT
fi
if [[ -n "$BASELINE_KILND" ]]; then
  SERVERS+=(baseline)
  PORT[baseline]=$BASE_PORT
fi

# --- measuring --------------------------------------------------------------------------------
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
verify() { # verify FILE NAME
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [[ "$got" == "${SUM[$2]}" ]] || die "$1: wrong bytes from the server (checksum mismatch)"
  rm -f "$1"
}

# fetch CLIENT PORT NAME OUT BLKSIZE [WINDOW] — one transfer with the given client.
fetch() {
  local client=$1 port=$2 name=$3 out=$4 bs=$5 win=${6:-}
  case $client in
    curl) curl -sS --tftp-blksize "$bs" -o "$out" "tftp://127.0.0.1:$port/$name" ;;
    atftp) atftp --option "blksize $bs" ${win:+--option "windowsize $win"} -g -r "$name" -l "$out" \
      127.0.0.1 "$port" >/dev/null 2>&1 ;;
  esac
}

# once CLIENT PORT NAME BLKSIZE [WINDOW] — MB/s of one transfer (checked byte for byte).
once() {
  local client=$1 port=$2 name=$3 bs=$4 win=${5:-} size t0 t1
  size=$(stat -c %s "$FILES/$name")
  t0=$(now)
  fetch "$client" "$port" "$name" "$WORK/out" "$bs" "$win" || die "$client failed (port $port, $name)"
  t1=$(now)
  verify "$WORK/out" "$name"
  awk -v s="$size" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", s / (b - a) / 1e6}'
}

# point KEY PORTS CLIENT NAME BLKSIZE [WINDOW] — R[KEY,server] = median MB/s of REPS transfers
# from every server; PORTS names an array of ports by server. Runs go round-robin over the
# servers (run 1 on each, then run 2 on each, ...), so drift on a noisy host hits all alike.
point() {
  local key=$1 client=$3 name=$4 bs=$5 win=${6:-} s
  local -n ports=$2
  local -A rates=()
  for _ in $(seq "$REPS"); do
    for s in "${SERVERS[@]}"; do
      log "$s: $key ($client, blksize $bs${win:+, windowsize $win})"
      rates[$s]+="$(once "$client" "${ports[$s]}" "$name" "$bs" "$win") "
    done
  done
  for s in "${SERVERS[@]}"; do R[$key,$s]=$(tr ' ' '\n' <<<"${rates[$s]}" | grep . | median); done
}

# concurrent PORT — CLIENTS curl transfers at once; aggregate MB/s, median of REPS.
concurrent() {
  local port=$1 size rates=() t0 t1 pids i
  size=$(stat -c %s "$FILES/conc.img")
  for _ in $(seq "$REPS"); do
    pids=()
    t0=$(now)
    for i in $(seq "$CLIENTS"); do
      curl -sS --tftp-blksize 1468 -o "$WORK/c$i" "tftp://127.0.0.1:$port/conc.img" &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || die "a concurrent client failed (port $port)"; done
    t1=$(now)
    for i in $(seq "$CLIENTS"); do verify "$WORK/c$i" conc.img; done
    rates+=("$(awk -v s="$size" -v n="$CLIENTS" -v a="$t0" -v b="$t1" \
      'BEGIN {printf "%.2f", s * n / (b - a) / 1e6}')")
  done
  printf '%s\n' "${rates[@]}" | median
}

declare -A R
row() { # row KEY LABEL — prints one table row for every server, with ratios against kilnd
  local key=$1 label=$2 s line
  line=$(printf '%-40s' "$label")
  for s in "${SERVERS[@]}"; do line+=$(printf ' %10s' "${R[$key,$s]}"); done
  for s in "${SERVERS[@]:1}"; do
    line+=$(awk -v a="${R[$key,kilnd]}" -v b="${R[$key,$s]}" 'BEGIN {printf "   %5.2fx", a / b}')
  done
  echo "$line"
}

table_header() {
  local header s
  echo
  echo "== MB/s (median of $REPS); ratio = kilnd / peer"
  header=$(printf '%-40s' "")
  for s in "${SERVERS[@]}"; do header+=$(printf ' %10s' "$s"); done
  for s in "${SERVERS[@]:1}"; do header+=$(printf '   %6s' "/$s" | cut -c1-9); done
  echo "$header"
}

print_machine
echo "  tftpd-hpa: $(in.tftpd -V 2>&1 | head -n1)"
echo "  dnsmasq:  $(dnsmasq --version | head -n1 | awk '{print $3}')"
echo "  atftp:    $(atftp --version 2>&1 | head -n1)"
[[ -z "$BASELINE_KILND" ]] || echo "  baseline: $BASELINE_KILND (the last column: kilnd / baseline)"
echo "== files: $SIZE_MB MiB (blksize 512, 1468), $BIG_MB MiB (65464), $CONC_MB MiB per concurrent client, $RTT_SIZE_MB MiB (10 ms RTT); $REPS runs each, median${ONLY:+; ONLY=$ONLY}"

# Interleaved: each point runs on every server before the next point, its runs round-robin
# over the servers, so drift on a noisy host hits all servers alike.
if [[ "$ONLY" != 65464 ]]; then
  for bs in 512 1468; do point "lo$bs" PORT curl boot.img "$bs"; done
fi
point lo65464 PORT curl big.img 65464
if [[ -n "$ONLY" ]]; then
  table_header
  [[ "$ONLY" == 65464 ]] || row lo512 "loopback, 1 client, blksize 512"
  [[ "$ONLY" == 65464 ]] || row lo1468 "loopback, 1 client, blksize 1468"
  row lo65464 "loopback, 1 client, blksize 65464"
  echo
  echo "== commands"
  for c in "${COMMANDS[@]}"; do echo "  $c"; done
  echo "  client: curl -sS --tftp-blksize B -o OUT tftp://127.0.0.1:PORT/FILE"
  exit 0
fi
for s in "${SERVERS[@]}"; do
  log "$s: loopback, $CLIENTS concurrent curl clients"
  R[conc,$s]=$(concurrent "${PORT[$s]}")
done

declare -A RP
for s in "${SERVERS[@]}"; do
  "$RELAY" --upstream "${PORT[$s]}" --port-file "$WORK/relay.$s" --delay-ms 5 --lifetime-s 1800 \
    2>"$WORK/relay.$s.log" &
  STARTED_PIDS+=($!)
  for _ in $(seq 100); do [[ -s "$WORK/relay.$s" ]] && break; sleep 0.05; done
  RP[$s]=$(cat "$WORK/relay.$s")
  record "$(quote "$RELAY" --upstream "${PORT[$s]}" --delay-ms 5)"
done
point rtt1 RP curl remote.img 1468
for w in 16 64; do point "rttw$w" RP atftp remote.img 1468 "$w"; done

table_header
row lo512 "loopback, 1 client, blksize 512"
row lo1468 "loopback, 1 client, blksize 1468"
row lo65464 "loopback, 1 client, blksize 65464"
row conc "loopback, $CLIENTS clients, blksize 1468"
row rtt1 "10 ms RTT, blksize 1468, lock-step"
row rttw16 "10 ms RTT, 1468, windowsize 16 asked"
row rttw64 "10 ms RTT, 1468, windowsize 64 asked"
echo
echo "== commands"
for c in "${COMMANDS[@]}"; do echo "  $c"; done
echo "  clients: curl -sS --tftp-blksize B -o OUT tftp://127.0.0.1:PORT/FILE;" \
  "atftp --option 'blksize 1468' --option 'windowsize W' -g -r FILE -l OUT 127.0.0.1 PORT"
