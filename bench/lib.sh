# bench/lib.sh — shared helpers for the benchmarks in bench/.
#
# Source it from a benchmark script. It sets `set -euo pipefail`, makes a scratch directory
# ($WORK) that is removed on exit, and stops — by PID, never by name — every process it started
# (kilnd, nginx). Binaries come from $KILN_BUILD (default: ./build relative to the repository
# root). Benchmarks print figures; they never pass or fail on timings. They exit non-zero only
# when a tool is missing or the setup itself fails.
set -euo pipefail

KILN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KILN_BUILD=${KILN_BUILD:-$KILN_ROOT/build}
KILND=$KILN_BUILD/kilnd
BENCH_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "/tmp/kiln-bench-${BENCH_NAME}.XXXXXX")
STARTED_PIDS=()   # every process we started, stopped in reverse order on exit
CLEANUP_CMDS=()   # run at exit after the processes stop (e.g. losetup -d)
COMMANDS=()       # the commands that produced the figures, printed at the end (token redacted)

log() { echo "[$BENCH_NAME] $*" >&2; }
die() {
  echo "[$BENCH_NAME] ERROR: $*" >&2
  exit 1
}

# stop_pid PID — TERM, wait up to 5 s, then KILL. For nginx, the master's children (its workers,
# which we started through it) are killed too if the master had to be killed.
stop_pid() {
  local pid=$1 children
  kill -0 "$pid" 2>/dev/null || return 0
  children=$(pgrep -P "$pid" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    for c in $children; do kill -KILL "$c" 2>/dev/null || true; done
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i
  [[ -n "${CHILD_PID:-}" ]] && stop_pid "$CHILD_PID"
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${STARTED_PIDS[$i]}"
  done
  for c in "${CLEANUP_CMDS[@]:-}"; do
    [[ -n "$c" ]] && eval "$c" 2>/dev/null || true
  done
  if [[ $rc -ne 0 ]]; then
    for f in "$WORK"/kilnd.log "$WORK"/nginx/error.log; do
      [[ -s "$f" ]] || continue
      echo "--- $BENCH_NAME: tail of $f ---" >&2
      tail -n 30 "$f" >&2 || true
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run CMD... — runs a long client command (curl, wrk) as a tracked background child and waits
# for it. Bash defers traps while a foreground child runs; this way Ctrl-C or TERM ends the
# benchmark at once and the client is stopped with the servers.
CHILD_PID=""
run() {
  "$@" &
  CHILD_PID=$!
  local rc=0
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  return "$rc"
}

# require_tools TOOL... — exits non-zero naming every missing tool.
require_tools() {
  local missing=()
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  if [[ ${#missing[@]} -ne 0 ]]; then
    die "missing tool(s): ${missing[*]} (deploy/install-deps.sh --bench installs wrk and nginx-light)"
  fi
}

# quote ARG... — the arguments as one shell-quoted line (single quotes where needed; the bearer
# token, if $TOKEN is set, appears as "$TOKEN").
quote() {
  local a out=()
  for a in "$@"; do
    if [[ -n "${TOKEN:-}" && "$a" == *"$TOKEN"* ]]; then
      out+=("\"${a//"$TOKEN"/\$TOKEN}\"")  # never print the token itself
    elif [[ "$a" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

# record LINE — remembers a command line for the "commands" section of the report.
record() { COMMANDS+=("$(redact "$1")"); }

# print_machine — what the figures were measured on.
print_machine() {
  local cpu
  cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
  echo "== machine"
  echo "  nproc:    $(nproc)"
  echo "  cpu:      ${cpu:-unknown}"
  echo "  kernel:   $(uname -srm)"
  echo "  memory:   $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "  loadavg:  $(cut -d' ' -f1-3 /proc/loadavg) (at start; other load on the host skews figures)"
  echo "  kiln:     $(git -C "$KILN_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
    [[ -n "$(git -C "$KILN_ROOT" status --porcelain 2>/dev/null)" ]] && echo ' (dirty tree)')"
  echo "  wrk:      $(wrk --version 2>&1 | head -n1 | awk '{print $1, $2}')"
  echo "  nginx:    $(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "  curl:     $(curl --version | head -n1 | awk '{print $2}')"
}

# start_kilnd DATA_DIR [extra args...] — starts kilnd on an ephemeral loopback port and waits until
# it listens. Sets KILND_PID and KILND_URL (e.g. http://127.0.0.1:41234).
start_kilnd() {
  local data=$1
  shift
  local ready=$WORK/kilnd.ready
  rm -f "$ready"
  local cmd=("$KILND" --data-dir "$data" --listen 127.0.0.1:0 --ready-file "$ready" --log-level warn "$@")
  record "$(quote "${cmd[@]}")"
  "${cmd[@]}" >"$WORK/kilnd.log" 2>&1 &
  KILND_PID=$!
  STARTED_PIDS+=("$KILND_PID")
  for _ in $(seq 1 200); do
    [[ -s "$ready" ]] && break
    kill -0 "$KILND_PID" 2>/dev/null || die "kilnd exited before listening"
    sleep 0.05
  done
  [[ -s "$ready" ]] || die "kilnd did not become ready within 10 s"
  KILND_URL=$(head -n1 "$ready")
  KILND_URL=${KILND_URL%/}
}

# cpu_s — the CPU seconds (user + system) the kilnd of start_kilnd has used so far.
cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$KILND_PID/stat"; }
# commits — its store's write commits so far (kiln_store_commits_total).
commits() { curl -s "$KILND_URL/metrics" | awk '$1 == "kiln_store_commits_total" {print $2}'; }

# small_images — builds $WORK/v1.kiln and $WORK/v2.kiln: os:1 and os:2, 1 MiB images in 256 KiB
# chunks, 512 KiB of each random (the simulated fleets' images).
small_images() {
  truncate -s 1M "$WORK/v.raw"
  for v in 1 2; do
    head -c $((512 << 10)) /dev/urandom | dd of="$WORK/v.raw" bs=256K seek=1 conv=notrunc status=none
    "$KILN_BUILD/kiln" image build "$WORK/v.raw" -o "$WORK/v$v.kiln" --name os --version $v \
      --chunk-size 256K >/dev/null 2>&1 || die "image build"
  done
}

# start_nginx ROOT_LOCATION_DIR WORKERS — starts nginx (foreground master, `daemon off`, in the
# background) with a minimal config of its own in $WORK/nginx, serving ROOT_LOCATION_DIR at
# /files/ on a free loopback port. Sets NGINX_PID and NGINX_URL.
start_nginx() {
  local files=$1 workers=$2
  local dir=$WORK/nginx
  mkdir -p "$dir/tmp"
  local attempt port
  for attempt in 1 2 3 4 5; do
    # A port below the kernel's ephemeral range (32768+), so wrk's/curl's client sockets never
    # collide with it; retried if something grabbed it between the check and nginx's bind.
    port=$((20000 + RANDOM % 12000))
    if ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then continue; fi
    cat >"$dir/nginx.conf" <<EOF
# Minimal nginx for kiln benchmarks: static files only, no logging on the hot path.
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    # kilnd has no per-connection request cap; nginx's default (1000) would make wrk reconnect.
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        location /files/ {
            alias $files/;
        }
        location / {
            return 404;
        }
    }
}
EOF
    nginx -e "$dir/error.log" -p "$dir/" -c "$dir/nginx.conf" -t >"$dir/configtest.log" 2>&1 ||
      { cat "$dir/configtest.log" >&2; die "nginx rejected its config"; }
    local cmd=(nginx -e "$dir/error.log" -p "$dir/" -c "$dir/nginx.conf")
    "${cmd[@]}" >>"$dir/error.log" 2>&1 &
    NGINX_PID=$!
    STARTED_PIDS+=("$NGINX_PID")
    for _ in $(seq 1 100); do
      kill -0 "$NGINX_PID" 2>/dev/null || break
      if ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
        NGINX_URL=http://127.0.0.1:$port
        record "$(quote "${cmd[@]}")   # config: worker_processes $workers; sendfile on; tcp_nopush on; access_log off; keepalive_requests 1000000"
        return 0
      fi
      sleep 0.05
    done
    stop_pid "$NGINX_PID"
    if grep -q "Address already in use" "$dir/error.log" 2>/dev/null; then
      log "nginx: port $port taken, retrying"
      : >"$dir/error.log"
      continue
    fi
    die "nginx did not start (see $dir/error.log)"
  done
  die "nginx: no free port found after 5 attempts"
}

# run_wrk LABEL URL [wrk args...] — runs wrk with the benchmark's shape and parses its output.
# Sets WRK_RPS (requests/s), WRK_P99 (99th percentile latency), WRK_FLAGS (non-2xx/3xx
# responses and socket errors, empty when none) and prints wrk's full output.
run_wrk() {
  local label=$1 url=$2
  shift 2
  local out=$WORK/wrk.$label.out
  local cmd=(wrk -t2 -c64 "-d${DURATION}s" --latency "$@" "$url")
  record "$(quote "${cmd[@]}")"
  echo "== wrk: $label"
  echo "   ${COMMANDS[-1]}"
  run "${cmd[@]}" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed for $label"; }
  sed 's/^/   | /' "$out"
  WRK_RPS=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  WRK_P99=$(awk '$1 == "99%" {print $2}' "$out")
  [[ -n "$WRK_RPS" ]] || die "could not parse wrk output for $label"
  WRK_FLAGS=""
  local non2xx sockerr
  non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$out")
  sockerr=$(awk '/Socket errors:/ {sub(/^ *Socket errors: */, ""); print}' "$out")
  [[ -n "$non2xx" && "$non2xx" != 0 ]] && WRK_FLAGS+="${non2xx} non-2xx/3xx! "
  [[ -n "$sockerr" ]] && WRK_FLAGS+="socket errors ($sockerr)! "
  if [[ -n "$WRK_FLAGS" ]]; then
    echo "   !! $label: $WRK_FLAGS— failed or timed-out requests (wrk's timeout is 2 s) are not in req/s"
  fi
  return 0
}

# stream_once LABEL URL EXPECTED_BYTES — downloads URL once with curl to /dev/null. Sets GBPS
# (10^9 bytes per second over the whole transfer, connection setup included).
stream_once() {
  local label=$1 url=$2 expected=$3
  local cmd=(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$url")
  record "$(quote "${cmd[@]}")"
  local res code size secs
  res=$("${cmd[@]}") || die "curl failed streaming $label"
  read -r code size secs <<<"$res"
  [[ "$code" == 200 ]] || die "$label: HTTP $code"
  [[ "$size" == "$expected" ]] || die "$label: got $size bytes, expected $expected"
  GBPS=$(awk -v b="$size" -v s="$secs" 'BEGIN {printf "%.2f", b / s / 1e9}')
  echo "== curl: $label: $size bytes in ${secs}s = $GBPS GB/s"
}

# redact TEXT — hides the bearer token in printed commands.
redact() { sed "s/Bearer [A-Za-z0-9._~+\/=-][A-Za-z0-9._~+\/=-]*/Bearer \$TOKEN/g" <<<"$1"; }

# ratio A B — A/B with two decimals, "-" when either side is missing.
ratio() {
  if [[ "$1" == - || "$2" == - ]]; then echo -; return; fi
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'
}
