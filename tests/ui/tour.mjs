// tests/ui/tour.mjs — signs in to a running kilnd's dashboard in Debian's headless chromium
// and screenshots every page while a machine is deploying; checks that the machine page's bar
// shows the deployment's reported progress and that no page logs an error or CSP violation.
// Run by tests/integration/package_test.sh against the kilnd installed from the .deb (the
// service under systemd); environment:
//   KILN_URL, TOKEN (admin), MACHINE (id of the deploying machine), PERCENT (the bar's expected
//   aria-valuenow), ROLLOUT (a rollout id), ARTIFACTS (screenshots), PROFILE (a fresh user
//   data dir).
// Prints "ok: <check>" / "FAIL: <check>"; exits 1 on any failure.
import puppeteer from 'puppeteer-core';

const { KILN_URL, TOKEN, MACHINE, PERCENT, ROLLOUT, ARTIFACTS, PROFILE } = process.env;
let failures = 0;
const check = (cond, what) => {
  if (!cond) failures++;
  console.log((cond ? 'ok: ' : 'FAIL: ') + what);
};

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  userDataDir: PROFILE,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage'],
});
const problems = [];
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
  page.on('pageerror', (e) => problems.push('pageerror: ' + e.message));
  const shot = async (name) => {
    const path = ARTIFACTS + '/' + name + '.png';
    await page.screenshot({ path, fullPage: true });
    console.log('screenshot: ' + path);
  };

  await page.goto(KILN_URL + '/ui/', { waitUntil: 'networkidle0' });
  await page.waitForSelector('#token');
  await shot('01-signin');
  await page.type('#token', TOKEN);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#machines tbody tr[data-machine-id]');
  const deploying = await page.$$eval('#machines tbody tr[data-machine-id]', (rows) =>
    rows.filter((r) => /deploying/.test(r.textContent)).length);
  check(deploying === 1, 'the fleet page lists the demo machine as deploying (' + deploying + ')');
  // A machine named "<img src=x onerror=...>" with a label "<b>bold</b>": text, never markup.
  const markup = async () => page.evaluate(() => [document.querySelectorAll('img, b').length, window.__xss === undefined]);
  const shown = await page.$eval('#machines', (t) => t.textContent);
  const [tags, clean] = await markup();
  check(shown.includes('<img src=x onerror=window.__xss=1>') && shown.includes('<b>bold</b>') && tags === 0 && clean,
    'HTML in a machine name and label is shown as text (elements made: ' + tags + ', handler ran: ' + !clean + ')');
  await shot('02-fleet');

  await page.goto(KILN_URL + '/ui/#/machines/' + MACHINE, { waitUntil: 'networkidle2' });
  await page.waitForSelector('#progress');
  let now = null;
  try {
    await page.waitForFunction((w) => document.querySelector('#progress').getAttribute('aria-valuenow') === w,
      { timeout: 10000 }, PERCENT);
    now = PERCENT;
  } catch {
    now = await page.$eval('#progress', (e) => e.getAttribute('aria-valuenow'));
  }
  check(now === PERCENT, 'the machine page shows the deployment at ' + PERCENT + '% (bar: ' + now + ')');
  await shot('03-machine-deploying');

  await page.goto(KILN_URL + '/ui/#/images', { waitUntil: 'networkidle0' });
  await page.waitForSelector('#dedup');
  await shot('04-images');
  await page.goto(KILN_URL + '/ui/#/rollouts', { waitUntil: 'networkidle0' });
  await page.waitForSelector('#rollouts');
  await shot('05-rollouts');
  await page.goto(KILN_URL + '/ui/#/rollouts/' + ROLLOUT, { waitUntil: 'networkidle2' });
  await page.waitForSelector('#batches');
  // Its one machine has no BMC, so it is skipped and the rollout is finished with it: 100%.
  const [rtags, rclean] = await markup();
  check(rtags === 0 && rclean, 'the rollout page shows the HTML-named machine as text');
  const rolled = await page.$eval('#rollout-progress', (e) => e.getAttribute('aria-valuenow'));
  check(rolled === '100', 'the rollout page counts the skipped machine as finished (bar: ' + rolled + ')');
  await shot('06-rollout');
} catch (e) {
  check(false, 'the tour ran: ' + e.message);
} finally {
  await browser.close();
}
check(problems.length === 0, 'no console or page errors' + (problems.length ? ': ' + problems.join('; ') : ''));
process.exit(failures ? 1 : 0);
