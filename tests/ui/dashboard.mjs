// tests/ui/dashboard.mjs — drives kilnd's web dashboard in Debian's headless chromium
// (puppeteer-core, executablePath /usr/bin/chromium; nothing downloads a browser).
// Run by tests/integration/ui_browser_test.sh, which starts kilnd and seeds it; environment:
//   KILN_URL, ADMIN_TOKEN, READ_TOKEN, ARTIFACTS (screenshots), PROFILE (a fresh user data dir),
//   M1 (the machine id the UI assigns), M3 (one with a BMC), IMAGE / VERSION (what it assigns; version 1 exists too).
// Prints "ok: <check>" per check and "FAIL: <check>" per failure; exits 1 on any failure.
import { execFileSync } from 'node:child_process';
import puppeteer from 'puppeteer-core';

const { KILN_URL, ADMIN_TOKEN, READ_TOKEN, ARTIFACTS, PROFILE, M1, M3, IMAGE, VERSION } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
let failures = 0;
const ok = (what) => console.log('ok: ' + what);
const fail = (what) => {
  failures++;
  console.log('FAIL: ' + what);
};
const check = (cond, what) => (cond ? ok(what) : fail(what));
const shots = [];
async function shot(page, name) {
  const path = ARTIFACTS + '/' + name + '.png';
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
}

// The simulated agent and the API checks go through curl, as the other integration tests do.
function curl(method, path, token, body) {
  const args = ['-s', '-o', '-', '-w', '\n%{http_code}', '-X', method, KILN_URL + path];
  if (token) args.push('-H', 'Authorization: Bearer ' + token);
  if (body !== undefined) args.push('-H', 'Content-Type: application/json', '--data-binary', JSON.stringify(body));
  const out = execFileSync('curl', args, { encoding: 'utf8' });
  const nl = out.lastIndexOf('\n');
  const text = out.slice(0, nl);
  return { status: Number(out.slice(nl + 1)), body: text ? JSON.parse(text) : null };
}

const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  userDataDir: PROFILE,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage'],
});
const problems = [];  // console errors, page errors, CSP violations
let ROLLOUT = 0;
const page = await browser.newPage();
try {
  await page.setViewport({ width: 1280, height: 900 });
  page.on('console', (m) => { if (m.type() === 'error' || /Content.Security.Policy/i.test(m.text())) problems.push('console: ' + m.text()); });
  page.on('pageerror', (e) => problems.push('pageerror: ' + e.message));
  page.on('requestfailed', (r) => {
    const why = r.failure() ? r.failure().errorText : '';
    if (why !== 'net::ERR_ABORTED') problems.push('requestfailed: ' + r.url() + ' ' + why);
  });
  await page.evaluateOnNewDocument(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
  });

  // --- sign in (keyboard: type the token, Enter) ---------------------------------------------
  const res = await page.goto(KILN_URL + '/ui/', { waitUntil: 'networkidle0' });
  const csp = res.headers()['content-security-policy'] || '';
  check(csp.includes("default-src 'none'") && csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"),
        'the page carries the strict Content-Security-Policy (' + csp + ')');
  check(res.headers()['x-content-type-options'] === 'nosniff', 'X-Content-Type-Options: nosniff');
  await page.waitForSelector('#token');
  await shot(page, '01-signin');
  await page.focus('#token');
  await page.keyboard.type(ADMIN_TOKEN);
  await page.keyboard.press('Enter');

  // --- fleet -----------------------------------------------------------------------------------
  await page.waitForSelector('#machines tbody tr[data-machine-id]');
  check((await page.$eval('#who-scope', (e) => e.textContent)) === 'admin', 'signed in with the admin token');
  const rows = async () => page.$$eval('#machines tbody tr[data-machine-id]', (trs) => trs.map((t) => t.querySelector('td').textContent));
  const all = await rows();
  check(all.length === 3 && all.includes('web-1') && all.includes('web-2') && all.includes('db-1'),
        'the fleet lists the three machines: ' + all.join(', '));
  const ready = await page.$eval('#state-counts [data-state="ready"] .count-n', (e) => e.textContent);
  check(ready === '3', 'machines by state: 3 ready (saw ' + ready + ')');
  await shot(page, '02-fleet');
  await page.type('#selector', 'rack=r1');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('#machines tbody tr[data-machine-id]').length === 2);
  const r1 = await rows();
  check(r1.length === 2 && !r1.includes('db-1'), 'label filter rack=r1 shows web-1 and web-2: ' + r1.join(', '));
  await page.type('#search', '00:02');
  await page.waitForFunction(() => document.querySelectorAll('#machines tbody tr[data-machine-id]').length === 1);
  const s = await rows();
  check(s.length === 1 && s[0] === 'web-2', 'search by MAC 00:02 within rack=r1 shows web-2: ' + s.join(', '));
  await shot(page, '03-fleet-filtered');

  // --- machine: assign through the confirmation dialog -----------------------------------------
  await page.goto(KILN_URL + '/ui/#/machines/' + M1, { waitUntil: 'networkidle2' });
  await page.waitForSelector('#assign:not([disabled])');
  await page.select('#assign-image', IMAGE);
  await page.select('#assign-version', VERSION);
  await page.click('#assign');
  await page.waitForSelector('#confirm[open]');
  check(await page.evaluate(() => document.activeElement && document.activeElement.id === 'confirm-cancel'),
        'the confirmation dialog takes the focus (on Cancel)');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#confirm:not([open])');
  let m = curl('GET', '/api/v1/machines/' + M1, ADMIN_TOKEN);
  check(m.status === 200 && m.body.assignment === null, 'Escape cancels: nothing assigned');
  await page.click('#assign');
  await page.waitForSelector('#confirm[open]');
  await shot(page, '04-machine-confirm');
  await page.click('#confirm-ok');
  await page.waitForFunction((v) => (document.querySelector('#assigned-version') || {}).textContent === v,
                             {}, IMAGE + ' ' + VERSION);
  m = curl('GET', '/api/v1/machines/' + M1, ADMIN_TOKEN);
  check(m.status === 200 && m.body.assignment && m.body.assignment.image === IMAGE && m.body.assignment.version === VERSION,
        'the API shows the assignment made in the UI: ' + JSON.stringify(m.body.assignment));
  const dep = m.body.assignment ? m.body.assignment.deployment_id : 0;

  // --- a simulated agent reports progress; the bar follows the event stream -------------------
  await page.waitForSelector('#progress');
  const ticket = curl('POST', '/api/v1/deployments/' + dep + '/agent-ticket', ADMIN_TOKEN).body.ticket;
  const sess = curl('POST', '/api/v1/agent/session', ticket);
  check(sess.status === 200 || sess.status === 201, 'the agent opened its session (' + sess.status + ')');
  const agent = sess.body.token;
  const bar = async () => page.$eval('#progress', (e) => [e.getAttribute('aria-valuenow'), e.firstChild.style.width]);
  const before = await bar();
  const total = 8 << 20;
  for (const [done, want] of [[2 << 20, '25'], [6 << 20, '75']]) {
    const p = curl('POST', '/api/v1/agent/progress', agent, { stage: 'writing', bytes_done: done, bytes_total: total });
    check(p.status >= 200 && p.status < 300, 'progress ' + done + '/' + total + ' accepted (' + p.status + ')');
    await page.waitForFunction((w) => document.querySelector('#progress').getAttribute('aria-valuenow') === w,
                               { timeout: 30000 }, want).catch(() => {});
    const [now, width] = await bar();
    check(now === want && width === want + '%',
          'the bar moved to ' + want + '% (aria-valuenow ' + now + ', width ' + width + '; before ' + before.join('/') + ')');
  }
  const text = await page.$eval('#progress-text', (e) => e.textContent);
  check(/MiB\/s/.test(text) && /ETA \d/.test(text), 'rate and ETA from the events: ' + text);
  await shot(page, '05-machine-progress');

  // --- a machine with a BMC offers the power actions --------------------------------------------
  await page.goto(KILN_URL + '/ui/#/machines/' + M3, { waitUntil: 'networkidle2' });
  await page.waitForSelector('#power-cycle');
  const power = await page.$$eval('[id^="power-"]', (bs) => bs.map((b) => b.id + (b.disabled ? ':disabled' : '')));
  check(power.join(',') === 'power-on,power-off,power-cycle,power-soft-off', 'db-1 (BMC) has the power actions: ' + power);
  await shot(page, '06-machine-bmc');

  // --- images and rollouts ---------------------------------------------------------------------
  await page.goto(KILN_URL + '/ui/#/images', { waitUntil: 'networkidle0' });
  await page.waitForSelector('#dedup');
  const dedup = await page.$eval('#dedup', (e) => e.textContent);
  check(/10 distinct chunks/.test(dedup) && /dedup saves/.test(dedup), 'images: dedup from the manifests: ' + dedup);
  const versions = await page.$$eval('section[data-image="' + IMAGE + '"] tr[data-version]', (t) => t.map((r) => r.dataset.version));
  check(versions.length === 2, 'images: the two versions of ' + IMAGE + ' (' + versions.join(', ') + ')');
  await shot(page, '07-images');
  const made = curl('POST', '/api/v1/rollouts', ADMIN_TOKEN, { selector: 'rack=r2', image: IMAGE, version: '1', batch: 1, max_unavailable: 1 });
  check(made.status === 201, 'a rollout for rack=r2 (' + made.status + ' ' + JSON.stringify(made.body) + ')');
  ROLLOUT = made.body ? made.body.id : 0;
  await page.goto(KILN_URL + '/ui/#/rollouts', { waitUntil: 'networkidle0' });
  await page.waitForSelector('#rollouts');
  await shot(page, '08-rollouts');
  await page.goto(KILN_URL + '/ui/#/rollouts/' + ROLLOUT, { waitUntil: 'networkidle2' });
  await page.waitForSelector('#batches');
  check(await page.$eval('#rollout-abort', (b) => !b.disabled), 'rollout: abort is enabled for the admin token');
  await shot(page, '09-rollout');

  // --- a read token: a read-only UI, and the API refuses anyway --------------------------------
  await page.click('#sign-out');
  await page.waitForSelector('#token');
  await page.type('#token', READ_TOKEN);
  await page.click('#sign-in');
  await page.waitForSelector('#machines tbody tr[data-machine-id]');
  check((await page.$eval('#who-scope', (e) => e.textContent)) === 'read-only', 'the read token is shown read-only');
  for (const where of ['#/machines/' + M1, '#/rollouts/' + ROLLOUT]) {
    await page.goto(KILN_URL + '/ui/' + where, { waitUntil: 'networkidle2' });
    await page.waitForSelector('[data-write]');
    const writes = await page.$$eval('[data-write]', (bs) => bs.map((b) => [b.id, b.disabled]));
    check(writes.length > 0 && writes.every(([, d]) => d),
          'read token on ' + where + ': every write control is disabled: ' + JSON.stringify(writes));
    await shot(page, where.includes('rollouts') ? '11-readonly-rollout' : '10-readonly-machine');
  }
  const forced = curl('PUT', '/api/v1/machines/' + M1 + '/assignment', READ_TOKEN, { image: IMAGE, version: VERSION, force: true });
  check(forced.status === 403 && /scope 'read'/.test(forced.body.error.message),
        'a forced write with the read token is 403: ' + JSON.stringify(forced.body));

  const csps = await page.evaluate(() => window.__csp);
  check(csps.length === 0, 'no CSP violations: ' + JSON.stringify(csps));
  check(problems.length === 0, 'no console errors, page errors or failed requests: ' + JSON.stringify(problems));
} catch (e) {
  fail('browser script: ' + (e.stack || e));
  await shot(page, '99-failure').catch(() => {});
  console.log('problems so far: ' + JSON.stringify(problems));
} finally {
  await browser.close();
}
for (const s of shots) console.log('screenshot: ' + s);
process.exit(failures ? 1 : 0);
