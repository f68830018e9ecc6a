#!/usr/bin/env bash
# tests/integration/ui_browser_test.sh — the web dashboard (/ui/) in a real browser: Debian's
# headless chromium driven by puppeteer-core (tests/ui/dashboard.mjs) against a real kilnd on
# loopback with a temporary database, two uploaded image versions and three machines.
#
# First, with curl: /ui/ is served from the binary with its security headers, ETag/304, HEAD,
# 404 and 405; GET /api/v1/whoami names the token and its scope. Then the browser signs in,
# filters the fleet by label and searches by MAC, assigns a version through the confirmation
# dialog (checked in the API), watches a simulated agent's progress move the bar (rate, ETA),
# reads the images (dedup) and rollouts pages, and signs in with a read token: every write
# control is disabled and a forced write is 403. No console error or CSP violation is allowed.
# Screenshots: $KILN_BUILD/test-artifacts/ui/*.png (printed at the end).
#
# Skipped (77) without /usr/bin/chromium or node/npm; `npm ci` fills tests/ui/node_modules
# from tests/ui/package-lock.json on first use (deploy/install-deps.sh does it too).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
UI_TESTS=$KILN_ROOT/tests/ui
[[ -x "$CHROMIUM" ]] || { log "skip: no $CHROMIUM (apt-get install chromium)"; exit 77; }
command -v node >/dev/null && command -v npm >/dev/null || { log "skip: no node/npm"; exit 77; }
if [[ ! -d "$UI_TESTS/node_modules/puppeteer-core" ]]; then
  (cd "$UI_TESTS" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund >"$WORK/npm.log" 2>&1) ||
    { cat "$WORK/npm.log" >&2; fail "npm ci in tests/ui"; finish; }
fi
ARTIFACTS=$KILN_BUILD/test-artifacts/ui
rm -rf "$ARTIFACTS" && mkdir -p "$ARTIFACTS"

# --- two versions of an 8 MiB image, 1 MiB chunks; version 2 rewrites 2 of the 8 -----------
cd "$WORK"
head -c $((8 << 20)) /dev/urandom >v1.raw
cp v1.raw v2.raw
for at in 2 5; do head -c $((1 << 20)) /dev/urandom | dd of=v2.raw bs=1M seek=$at conv=notrunc status=none; done
for v in 1 2; do
  "$KILN" image build v$v.raw -o v$v.kiln --name os --version $v --chunk-size 1M >/dev/null 2>&1 ||
    fail "image build v$v"
done

start_kilnd
ADMIN=$(make_token ops admin)
READ=$(make_token viewer read)
export KILN_URL=$URL KILN_TOKEN=$ADMIN
for v in 1 2; do "$KILN" image push v$v.kiln >/dev/null 2>&1 || fail "push v$v"; done

# --- /ui/ over plain HTTP ------------------------------------------------------------------
curl -s -D ui.h -o ui.html "$URL/ui/"
grep -qi "^content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'" ui.h &&
  ok || fail "/ui/ carries the strict CSP: $(cat ui.h)"
grep -qi '^x-content-type-options: nosniff' ui.h && grep -qi '^referrer-policy: no-referrer' ui.h && ok ||
  fail "/ui/ nosniff and no-referrer"
grep -qi '^content-type: text/html; charset=utf-8' ui.h && grep -q '<script type="module" src="app.js">' ui.html &&
  ok || fail "/ui/ is index.html"
if grep -Eqi '<script>|<script [^>]*>[^<]|<style|style=| on[a-z]+=' ui.html; then fail "inline script or style in index.html"; else ok; fi
diff -q ui.html "$KILN_ROOT/ui/index.html" >/dev/null && ok || fail "/ui/ serves ui/index.html byte for byte"
curl -s -D js.h -o /dev/null "$URL/ui/app.js"
grep -qi '^content-type: text/javascript' js.h && ok || fail "app.js is text/javascript: $(cat js.h)"
ETAG=$(sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' js.h | tr -d '\r')
want="\"$(sha256sum "$KILN_ROOT/ui/app.js" | cut -d' ' -f1)\""
expect_eq "$ETAG" "$want" "app.js's ETag is its SHA-256"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ETAG" "$URL/ui/app.js")" 304 "If-None-Match"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "other"' "$URL/ui/app.js")" 200 "other ETag"
head=$(curl -s -I "$URL/ui/style.css" | tr -d '\r')
grep -qi "^content-length: $(stat -c %s "$KILN_ROOT/ui/style.css")$" <<<"$head" && grep -qi '^content-type: text/css' <<<"$head" &&
  ok || fail "HEAD style.css: $head"
for p in /ui/nope.js /ui/../kiln.db /ui/ui/app.js; do
  expect_eq "$(curl -s --path-as-is -o /dev/null -w '%{http_code}' "$URL$p")" 404 "GET $p"
done
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/ui/app.js")" 405 "POST /ui/app.js"
curl -s -D post.h -o /dev/null -X POST "$URL/ui/app.js"
grep -qi "^content-security-policy: default-src 'none'; script-src 'self'" post.h && ok ||
  fail "the 405 on /ui/ carries the dashboard's CSP: $(cat post.h)"
grep -qi '^content-length' <(curl -s -D - -o /dev/null -H "If-None-Match: $ETAG" "$URL/ui/app.js") &&
  fail "a 304 carries Content-Length" || ok
expect_eq "$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$URL/ui?x=1")" "301 $URL/ui/" "/ui?x=1 redirects to /ui/"
# HEAD of a missing file, then a GET, on one keep-alive connection: the 404 has no body, so the
# second answer is the file (a body after the HEAD's 404 would be read as the next response).
HOSTPORT=${URL#http://}
exec 7<>"/dev/tcp/${HOSTPORT%:*}/${HOSTPORT##*:}"
printf 'HEAD /ui/nope HTTP/1.1\r\nHost: x\r\n\r\nGET /ui/favicon.svg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&7
timeout 10 cat <&7 >pipelined.out || true
exec 7<&-
expect_eq "$(grep -a -c '^HTTP/1.1 ' pipelined.out) $(grep -a '^HTTP/1.1 ' pipelined.out | tr -d '\r' | tr '\n' ' ')" \
  "2 HTTP/1.1 404 Not Found HTTP/1.1 200 OK " "HEAD 404 then GET on one connection"
grep -aq '"error"' pipelined.out && fail "the HEAD's 404 sent a body: $(head -c 400 pipelined.out)" || ok
# An HTML file under /files/ (same origin as the dashboard) is sandboxed: it cannot run with
# the dashboard's origin and read its session's token.
mkdir -p "$WORK/var/files" && echo '<script>alert(1)</script>' >"$WORK/var/files/x.html"
curl -s -D files.h -o /dev/null "$URL/files/x.html"
grep -qi "^content-security-policy: default-src 'none'; sandbox" files.h && grep -qi '^x-content-type-options: nosniff' files.h &&
  ok || fail "/files/x.html is sandboxed: $(cat files.h)"
expect_eq "$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$URL/ui")" "301 $URL/ui/" "/ui redirects to /ui/"
TOKEN=$READ api GET /api/v1/whoami
expect_status 200 "whoami (read)"
expect_eq "$(jqb '.name + " " + .scope')" "viewer read" "whoami names the read token"
TOKEN=$ADMIN api GET /api/v1/whoami
expect_eq "$(jqb '.name + " " + .scope')" "ops admin" "whoami names the admin token"
TOKEN= api GET /api/v1/whoami
expect_status 401 "whoami without a token"

# --- three machines ------------------------------------------------------------------------
TOKEN=$ADMIN
api POST /api/v1/machines '{"mac":"52:54:00:00:00:01","name":"web-1","state":"ready","labels":{"rack":"r1","role":"web"}}'
expect_status 201 "web-1"
M1=$(jqb .id)
api POST /api/v1/machines '{"mac":"52:54:00:00:00:02","name":"web-2","state":"ready","labels":{"rack":"r1","role":"web"}}'
expect_status 201 "web-2"
api POST /api/v1/machines '{"mac":"52:54:00:00:00:03","name":"db-1","state":"ready","labels":{"rack":"r2","role":"db"}}'
expect_status 201 "db-1"
M3=$(jqb .id)
# db-1 has a BMC (nothing answers at its address): its page shows power actions, and the
# rollout the browser script makes for rack=r2 has a machine to reboot (one without is skipped).
api PUT "/api/v1/machines/$M3/bmc" '{"driver":"redfish","address":"https://127.0.0.1:9","username":"u","password":"p","insecure":true}'
expect_status 200 "db-1's BMC"

# --- the browser ---------------------------------------------------------------------------
if KILN_URL=$URL ADMIN_TOKEN=$ADMIN READ_TOKEN=$READ ARTIFACTS=$ARTIFACTS PROFILE=$WORK/chromium \
  M1=$M1 M3=$M3 IMAGE=os VERSION=2 CHROMIUM=$CHROMIUM timeout 240 node "$UI_TESTS/dashboard.mjs" >browser.out 2>browser.err; then
  ok
else
  fail "the browser checks failed"
fi
cat browser.out >&2
[[ -s browser.err ]] && { log "browser stderr:"; tail -20 browser.err >&2; }
CHECKS=$((CHECKS + $(grep -c '^ok: ' browser.out || true)))
grep -q '^FAIL: ' browser.out && fail "$(grep -c '^FAIL: ' browser.out) browser check(s) failed"
grep -q '^ok: the API shows the assignment made in the UI' browser.out || fail "the UI assignment was not checked"

# The assignment made in the browser, as the API reports it.
api GET "/api/v1/machines/$M1"
expect_eq "$(jqb '.assignment.image + " " + .assignment.version')" "os 2" "the API shows the UI's assignment"
api GET "/api/v1/machines/$M1/deployments"
expect_eq "$(jqb '.items[0].requested_by')" "ops" "the UI's deployment was requested with the admin token"
expect_eq "$(jqb '.items[0].bytes_done')" "$((6 << 20))" "the simulated agent's last progress"

# ui.enabled false: no dashboard (the API answers 404), the API itself unchanged.
echo '{"ui": {"enabled": false}}' >noui.json
DATA_DIR=$WORK/var2 start_kilnd --config "$WORK/noui.json"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/ui/")" 404 "ui.enabled false: no /ui/"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz")" 200 "ui.enabled false: the API still answers"

n=$(find "$ARTIFACTS" -name '*.png' | wc -l)
[[ $n -ge 10 ]] && ok || fail "screenshots: $n in $ARTIFACTS"
log "screenshots: $ARTIFACTS ($n files)"
finish
