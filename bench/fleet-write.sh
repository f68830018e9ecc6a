#!/usr/bin/env bash
# bench/fleet-write.sh — many real agents deploying one image from one kilnd at the same time,
# and the same agents fetching the same chunk files from nginx (--mirror) for reference.
#
# For each N in $AGENTS (default "16 64"): N kiln-agent processes (build/kiln-agent, the binary
# machines boot; one machine and one ticket each) deploy the same .kiln image (a $SIZE_MIB MiB
# ext4 filesystem of real files from /usr) at once, each onto its own hash-checked sink
# (`--disk sink:SIZE:STATS`, agent/disk.h): the agent's whole pipeline runs (fetch by hash,
# decode, SHA-256 check of every chunk before "writing"), the bytes are discarded, and the sink's
# digest (SHA-256 of the CRC-32 of every 64 KiB block) must equal the one computed here from the
# raw image, for every agent, or the benchmark stops. Chunk retries (timeouts, resets) are
# counted and flagged with their reasons. Runs, in one invocation:
#   kilnd   chunks from kilnd (/v1/chunks/<sha256>, its chunk store)
#   nginx   chunks from nginx serving the same chunk files laid out as /v1/chunks/<sha256>
#           (hard links into kilnd's store), given to the agents as --mirror; kilnd still serves
#           the plan, the manifest and the progress reports (a retried chunk may come from kilnd).
# Printed per run: aggregate GB/s (image bytes delivered by all agents / wall), server CPU
# seconds per GB of chunk payload served (utime + stime from /proc; nginx: master + workers),
# chunk latency (each agent's sink records, per chunk, a write worker's time from its previous
# write: fetch + decode + SHA-256 check; the median and the worst of the agents' p99), and the
# slowest agent's wall time over the median agent's; the agents' own CPU per GB (/usr/bin/time)
# and peak RSS. Figures, never judged.
#
# Environment: SIZE_MIB (default 512), AGENTS (default "16 64"), WORKERS (kilnd --threads and
# nginx worker_processes, default 2), AGENT_WORKERS (each agent's --workers, default 0 = its own
# choice), KILN_BUILD.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KILN=$KILN_BUILD/kiln
AGENT=$KILN_BUILD/kiln-agent
SIZE_MIB=${SIZE_MIB:-512}
AGENTS=${AGENTS:-"16 64"}
WORKERS=${WORKERS:-2}
AGENT_WORKERS=${AGENT_WORKERS:-0}
require_tools mkfs.ext4 curl jq nginx python3 awk bc
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (Debian package: time)"
[[ -x "$AGENT" && -x "$KILN" && -x "$KILND" ]] || die "kilnd, kiln and kiln-agent must be built in $KILN_BUILD"
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ && $SIZE_MIB -ge 64 && $SIZE_MIB -le 8192 ]] || die "SIZE_MIB: 64..8192"
max_n=0
for n in $AGENTS; do
  [[ "$n" =~ ^[1-9][0-9]*$ && $n -le 256 ]] || die "AGENTS: 1..256 each"
  ((n > max_n)) && max_n=$n
done

print_machine
echo "  image:    ${SIZE_MIB} MiB ext4 of real files; agents: $AGENTS; server threads/workers: $WORKERS"

log "making a ${SIZE_MIB} MiB ext4 image of real files"
# Files from /usr up to ~55% of the filesystem, then free space.
python3 - "$WORK/tree" $((SIZE_MIB * 1024 * 1024 * 55 / 100)) <<'EOF'
import os, shutil, sys
dst, budget = sys.argv[1], int(sys.argv[2])
total = 0
for root, dirs, files in os.walk("/usr"):
    dirs.sort()
    for f in sorted(files):
        src = os.path.join(root, f)
        if not os.path.isfile(src) or os.path.islink(src):
            continue
        size = os.path.getsize(src)
        if total + size > budget:
            continue
        out = os.path.join(dst, os.path.relpath(src, "/usr"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        try:
            shutil.copyfile(src, out)
        except OSError:
            continue
        total += size
    if total >= budget * 0.99:
        break
EOF
truncate -s "${SIZE_MIB}M" "$WORK/disk.raw"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/disk.raw"
rm -rf "$WORK/tree"
bytes=$((SIZE_MIB << 20))
# The sink's digest of the raw image (agent/disk.h): SHA-256 of the little-endian CRC-32 of
# every 64 KiB block, in order.
want=$(python3 - "$WORK/disk.raw" <<'EOF'
import hashlib, struct, sys, zlib
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(65536)
        if not b:
            break
        h.update(struct.pack("<I", zlib.crc32(b)))
print(h.hexdigest())
EOF
)

"$KILN" key generate --out "$WORK/signer" >/dev/null
"$KILN" image build "$WORK/disk.raw" -o "$WORK/v1.kiln" --name fleet --version 1 --sign "$WORK/signer.pem" >/dev/null 2>&1 ||
  die "kiln image build"
rm -f "$WORK/disk.raw"

DATA=$WORK/var
mkdir -p "$DATA"
TOKEN=$("$KILND" --data-dir "$DATA" token create --name bench --scope admin 2>/dev/null | tail -n1)
[[ -n "$TOKEN" ]] || die "kilnd token create"
# Every agent connects from 127.0.0.1: lift the per-address connection cap (a defence against
# one host holding every slot), as nginx has none.
printf '{ "http": { "max_connections_per_address": 0 } }\n' >"$WORK/kilnd-bench.json"
start_kilnd "$DATA" --threads "$WORKERS" --config "$WORK/kilnd-bench.json"
export KILN_URL=$KILND_URL KILN_TOKEN=$TOKEN
"$KILN" image push "$WORK/v1.kiln" >/dev/null 2>&1 || die "image push"
for ((i = 1; i <= max_n; i++)); do
  "$KILN" machine create --mac "$(printf '52:54:00:fe:%02x:%02x' $((i >> 8)) $((i & 255)))" >/dev/null || die "machine create $i"
done
curl -sf -H "Authorization: Bearer $TOKEN" "$KILND_URL/api/v1/images/fleet/versions/1/manifest" >"$WORK/manifest.json" ||
  die "manifest"
payload_chunks=$(jq '[.chunks[] | select(.[0] == "D" or .[0] == "R")] | length' "$WORK/manifest.json")
payload_bytes=$(jq '[.chunks[] | select(.[0] == "D" or .[0] == "R") | .[2]] | add' "$WORK/manifest.json")
chunk_size=$(jq .chunk_size "$WORK/manifest.json")

# nginx: the same chunk files, hard-linked into /v1/chunks/<sha256> under /files/, readable by
# its unprivileged workers.
mkdir -p "$WORK/mirror/v1/chunks"
for f in "$DATA"/images/chunks/*/*; do
  b=$(basename "$f")
  ln "$f" "$WORK/mirror/v1/chunks/${b%.*}"
done
chmod 711 "$WORK"
chmod 755 "$WORK/mirror" "$WORK/mirror/v1" "$WORK/mirror/v1/chunks"
chmod 644 "$WORK"/mirror/v1/chunks/*
start_nginx "$WORK/mirror" "$WORKERS"
MIRROR=$NGINX_URL/files
log "kilnd at $KILND_URL (pid $KILND_PID), nginx mirror at $MIRROR (pid $NGINX_PID)"
sha=$(jq -r '[.chunks[] | select(.[0] == "D")][0][1]' "$WORK/manifest.json")
cmp -s <(curl -sf "$MIRROR/v1/chunks/$sha") <(curl -sf "$KILND_URL/v1/chunks/$sha") ||
  die "nginx and kilnd do not serve the same chunk"
cat "$DATA"/images/chunks/*/* >/dev/null  # both servers read from the page cache

tck=$(getconf CLK_TCK)
cpu_of() { # cpu_of PID... — utime + stime in seconds, summed
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "scale=3; $t / $tck" | bc
}
nginx_pids() { echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"; }

# tickets N — assigns the image to machines 1..N again and issues their tickets into $WORK/t.I
tickets() {
  local i dep
  for ((i = 1; i <= $1; i++)); do
    dep=$(curl -sf -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      -d '{"image":"fleet","version":"1","force":true}' "$KILND_URL/api/v1/machines/$i/assignment" | jq -r .id)
    curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$KILND_URL/api/v1/deployments/$dep/agent-ticket" |
      jq -r .ticket >"$WORK/t.$i" || die "ticket for machine $i"
  done
}

# run_fleet LABEL N [agent args...] — N agents at once; sets the R_* figures.
run_fleet() {
  local label=$1 n=$2
  shift 2
  tickets "$n"
  rm -rf "$WORK/run" && mkdir -p "$WORK/run"
  local pids=() i t0 t1 k0 k1 g0 g1
  k0=$(cpu_of "$KILND_PID")
  g0=$(cpu_of $(nginx_pids))
  t0=$(date +%s%N)
  for ((i = 1; i <= n; i++)); do
    (
      rc=0
      /usr/bin/time -f '%U %S %M' -o "$WORK/run/time.$i" \
        "$AGENT" --server "$KILND_URL" --ticket "$(cat "$WORK/t.$i")" --disk "sink:$bytes:$WORK/run/s.$i.json" \
        --trust-key "$WORK/signer.pub.pem" --after none --workers "$AGENT_WORKERS" "$@" >"$WORK/run/a.$i.log" 2>&1 || rc=$?
      echo "$rc $(date +%s%N)" >"$WORK/run/end.$i"
    ) &
    pids+=($!)
  done
  STARTED_PIDS+=("${pids[@]}")
  for p in "${pids[@]}"; do wait "$p" || true; done
  STARTED_PIDS=("${STARTED_PIDS[@]:0:${#STARTED_PIDS[@]}-${#pids[@]}}")
  t1=$(date +%s%N)
  k1=$(cpu_of "$KILND_PID")
  g1=$(cpu_of $(nginx_pids))
  local fetched=0 rc end secs=() mib r retries=0
  for ((i = 1; i <= n; i++)); do
    read -r rc end <"$WORK/run/end.$i"
    [[ "$rc" == 0 ]] || { tail -5 "$WORK/run/a.$i.log" >&2; die "$label: agent $i failed (exit $rc)"; }
    [[ $(jq -r .digest "$WORK/run/s.$i.json") == "$want" ]] || die "$label: agent $i delivered the wrong image"
    r=$(grep -o '[0-9]* retries' "$WORK/run/a.$i.log" | tail -1 | awk '{print $1}')
    retries=$((retries + r))
    ((r == 0)) || grep -m2 'retrying' "$WORK/run/a.$i.log" | sed "s/^/    agent $i: /" >>"$WORK/run/retries"
    mib=$(grep -o 'fetched [0-9.]* MiB' "$WORK/run/a.$i.log" | tail -1 | awk '{print $2}')
    fetched=$(echo "$fetched + $mib * 1048576" | bc)
    secs+=("$(echo "scale=3; ($end - $t0) / 1000000000" | bc)")
  done
  R_WALL=$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc)
  R_GBPS=$(awk -v b="$bytes" -v n="$n" -v s="$R_WALL" 'BEGIN {printf "%.2f", b * n / s / 1e9}')
  R_SERVED_GB=$(awk -v f="$fetched" 'BEGIN {printf "%.3f", f / 1e9}')
  R_KCPU=$(awk -v a="$k0" -v b="$k1" -v g="$R_SERVED_GB" 'BEGIN {printf "%.3f", (b - a) / g}')
  R_NCPU=$(awk -v a="$g0" -v b="$g1" -v g="$R_SERVED_GB" 'BEGIN {printf "%.3f", (b - a) / g}')
  local p99s
  p99s=$(for ((i = 1; i <= n; i++)); do jq .chunk_ms.p99 "$WORK/run/s.$i.json"; done | sort -g)
  R_P99_MED=$(awk '{v[NR] = $1} END {printf "%.1f", v[int((NR + 1) / 2)]}' <<<"$p99s")
  R_P99_MAX=$(tail -n1 <<<"$p99s")
  R_P50_MED=$(for ((i = 1; i <= n; i++)); do jq .chunk_ms.p50 "$WORK/run/s.$i.json"; done | sort -g |
    awk '{v[NR] = $1} END {printf "%.1f", v[int((NR + 1) / 2)]}')
  local sorted
  sorted=$(printf '%s\n' "${secs[@]}" | sort -g)
  R_MEDIAN=$(awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}' <<<"$sorted")
  R_SLOWEST=$(tail -n1 <<<"$sorted")
  R_STARVE=$(ratio "$R_SLOWEST" "$R_MEDIAN")
  # The agents' own CPU (user + system) per GB of image, and the largest peak RSS.
  R_ACPU=$(cat "$WORK"/run/time.* | awk -v b="$bytes" -v n="$n" '{c += $1 + $2; if ($3 > m) m = $3} END {printf "%.2f", c / (b * n / 1e9)}')
  R_ARSS=$(cat "$WORK"/run/time.* | awk '{if ($3 > m) m = $3} END {printf "%d", m / 1024}')
  R_RETRIES=$retries
  R_WORKERS=$(grep -o '[0-9]* workers' "$WORK/run/a.1.log" | tail -1 | awk '{print $1}')
  printf '  %-6s N=%-3s wall %7ss  %6s GB/s  served %7s GB  kilnd %6s CPU-s/GB  nginx %6s CPU-s/GB  chunk p50 %6s ms p99 %7s ms (worst agent %s)  slowest/median %s (%ss / %ss)\n' \
    "$label" "$n" "$R_WALL" "$R_GBPS" "$R_SERVED_GB" "$R_KCPU" "$R_NCPU" "$R_P50_MED" "$R_P99_MED" \
    "$R_P99_MAX" "$R_STARVE" "$R_SLOWEST" "$R_MEDIAN"
  printf '         agents: %s CPU-s per GB of image each, peak RSS %s MiB at most, %s chunk retries in all\n' \
    "$R_ACPU" "$R_ARSS" "$R_RETRIES"
  # A retry is a chunk that failed once (a timeout, a reset); on the nginx run it may have come
  # from kilnd (the next source), which the figures then flag.
  [[ -s "$WORK/run/retries" ]] && { echo "         !! retries (first two per agent):"; cat "$WORK/run/retries"; }
  return 0
}

echo "  chunks:   $payload_chunks payload chunks of $chunk_size bytes, $payload_bytes bytes of payload per agent"
echo
echo "== runs (every agent's sink digest checked against the raw image's)"
declare -A S
for n in $AGENTS; do
  log "N=$n: chunks from kilnd"
  run_fleet kilnd "$n"
  S[k_gbps_$n]=$R_GBPS S[k_cpu_$n]=$R_KCPU S[k_p99_$n]=$R_P99_MED S[k_starve_$n]=$R_STARVE
  S[workers_$n]=$R_WORKERS
  log "N=$n: chunks from the nginx mirror"
  run_fleet nginx "$n" --mirror "$MIRROR"
  S[n_gbps_$n]=$R_GBPS S[n_cpu_$n]=$R_NCPU S[n_p99_$n]=$R_P99_MED S[n_starve_$n]=$R_STARVE
  S[nk_cpu_$n]=$R_KCPU
  # kilnd's CPU for serving chunks alone: its kilnd run minus its nginx run (same sessions,
  # plans, manifests and progress reports in both).
  S[kc_cpu_$n]=$(awk -v a="${S[k_cpu_$n]}" -v b="$R_KCPU" 'BEGIN {printf "%.3f", a - b}')
done

echo
echo "== summary (kilnd/nginx; goals: throughput >= 0.90, CPU per GB and p99 <= 1.00, slowest/median <= 1.5)"
printf '  %-4s %-8s %9s %9s %6s   %12s %12s %12s %6s   %9s %9s %6s   %s\n' N workers "kilnd GB/s" "nginx GB/s" "k/n" \
  "kilnd CPU/GB" "(chunks only)" "nginx CPU/GB" "k/n" "kilnd p99" "nginx p99" "k/n" "slowest/median k, n"
for n in $AGENTS; do
  printf '  %-4s %-8s %9s %9s %6s   %12s %12s %12s %6s   %9s %9s %6s   %s, %s\n' "$n" "${S[workers_$n]}" \
    "${S[k_gbps_$n]}" "${S[n_gbps_$n]}" "$(ratio "${S[k_gbps_$n]}" "${S[n_gbps_$n]}")" \
    "${S[k_cpu_$n]}" "${S[kc_cpu_$n]}" "${S[n_cpu_$n]}" "$(ratio "${S[kc_cpu_$n]}" "${S[n_cpu_$n]}")" \
    "${S[k_p99_$n]}" "${S[n_p99_$n]}" "$(ratio "${S[k_p99_$n]}" "${S[n_p99_$n]}")" \
    "${S[k_starve_$n]}" "${S[n_starve_$n]}"
done
echo "  (CPU/GB: seconds of server CPU per GB of chunk payload served. During the nginx runs kilnd"
echo "   still served sessions, plans, manifests and progress (${S[nk_cpu_${max_n}]} CPU-s/GB at N=$max_n);"
echo "   \"chunks only\" is kilnd's run minus that, the figure compared with nginx's in k/n.)"
echo
echo "== commands"
for c in "${COMMANDS[@]}"; do echo "  $c"; done
echo "  $AGENT --server $KILND_URL --ticket \$TICKET --disk sink:$bytes:STATS --trust-key signer.pub.pem --after none --workers $AGENT_WORKERS [--mirror $MIRROR]"
