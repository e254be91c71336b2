// The console in headless Chromium against a running Kept (the demo): every demo operator signs
// in with their password and a TOTP code computed here as an authenticator app would (RFC 6238),
// walks the pages their team may use and is refused the others. Every page gets an axe-core
// scan (no serious or critical violation allowed) and screenshots at desktop and phone width.
//
// Prints one summary line last: `console: N passed, M failed`.
import { chromium } from 'playwright-core';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const { KEPT_URL, ARTIFACTS, KEYS_FILE } = process.env;
const DEMO_KEYS = JSON.parse(fs.readFileSync(KEYS_FILE, 'utf8'));
const OPERATORS = DEMO_KEYS.operators;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PAGES = {
  '/admin': ['marketing', 'privacy', 'engineering', 'admin'],
  '/admin/data-map': ['marketing', 'privacy', 'engineering', 'admin'],
  '/admin/campaigns': ['marketing', 'admin'],
  '/admin/subjects': ['privacy', 'admin'],
  '/admin/requests': ['privacy', 'admin'],
  '/admin/ledger': ['privacy', 'admin'],
  '/admin/keys': ['engineering', 'admin'],
  '/admin/webhooks': ['engineering', 'admin'],
  '/admin/audit': ['privacy', 'admin'],
  '/admin/operators': ['admin'],
};

const log = (...a) => console.error(...a);
const results = [];
async function test(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push(true);
    log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push(false);
    log(`FAIL ${name}\n${e && e.stack ? e.stack : e}`);
  }
}
function assert(ok, message) {
  if (!ok) throw new Error(`assertion failed: ${message}`);
}
function equal(got, want, message) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(`${message}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

// --- TOTP as an authenticator app computes it (RFC 6238: SHA-1, 6 digits, 30 s) -------------
function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of text.replace(/=+$/, '').toUpperCase()) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error(`not base32: ${c}`);
    bits += v.toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}
function totp(secret, atMs = Date.now()) {
  const step = Math.floor(atMs / 1000 / 30);
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', base32(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return String(value).padStart(6, '0');
}

// --- the browser ----------------------------------------------------------------------------
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let serious = 0;
let scanned = 0;

async function check(page, name) {
  await page.addScriptTag({ content: AXE_SOURCE });
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length,
      targets: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  scanned += 1;
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  serious += bad.length;
  if (violations.length) log(`  axe ${name}: ${JSON.stringify(violations)}`);
  const viewport = page.viewportSize();
  await page.screenshot({ path: path.join(ARTIFACTS, `console-${name}-desktop.png`), fullPage: true });
  await page.setViewportSize({ width: 360, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: path.join(ARTIFACTS, `console-${name}-phone.png`), fullPage: true });
  await page.setViewportSize(viewport);
  assert(overflow <= 1, `${name}: wider than a 360 px phone by ${overflow} px`);
  assert(bad.length === 0, `${name}: axe found serious or critical violations: ${JSON.stringify(bad)}`);
}

async function submit(page, formAction) {
  await Promise.all([
    page.waitForNavigation(),
    page.locator(`form[method=post][action="${formAction}"] button[type=submit]`).first().click(),
  ]);
}

async function signIn(role, { code } = {}) {
  const op = OPERATORS[role];
  const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 900 }, bypassCSP: true });
  const page = await context.newPage();
  const first = await page.goto(`${KEPT_URL}/admin`);
  assert(page.url().endsWith('/admin/sign-in'), `sent to sign in: ${page.url()} (${first.status()})`);
  await page.fill('#email', op.email);
  await page.fill('#password', op.password);
  const used = code || totp(op.totp_secret);
  await page.fill('#code', used);
  await submit(page, '/admin/sign-in');
  codes[role] = used;
  return page;
}

// The code each role last signed in with: a replay must use that very code, not one computed
// again (the 30-second step may have moved on since).
const codes = {};

// --- the story ------------------------------------------------------------------------------
const sessions = {};

await test('the sign-in page', async () => {
  const context = await browser.newContext({ locale: 'en-US', bypassCSP: true });
  const page = await context.newPage();
  await page.goto(`${KEPT_URL}/admin/sign-in`);
  await check(page, 'sign-in');
  await context.close();
});

await test('each team signs in with password and code and sees only its pages', async () => {
  for (const role of ['marketing', 'privacy', 'engineering', 'admin']) {
    const page = await signIn(role);
    equal(new URL(page.url()).pathname, '/admin', `${role} lands on the overview`);
    sessions[role] = page;
    const nav = await page.locator('nav a').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    const allowed = Object.entries(PAGES).filter(([, roles]) => roles.includes(role)).map(([p]) => p);
    equal(nav, allowed, `${role}'s navigation`);
    for (const [p, roles] of Object.entries(PAGES)) {
      const answer = await page.goto(`${KEPT_URL}${p}`);
      equal(answer.status(), roles.includes(role) ? 200 : 403, `${role} on ${p}`);
    }
  }
});

await test('a code works once: the same code again is refused, the same way as a wrong password', async () => {
  const op = OPERATORS.marketing;
  const context = await browser.newContext({ locale: 'en-US', bypassCSP: true });
  const page = await context.newPage();
  await page.goto(`${KEPT_URL}/admin/sign-in`);
  await page.fill('#email', op.email);
  await page.fill('#password', op.password);
  await page.fill('#code', codes.marketing);
  await submit(page, '/admin/sign-in');
  const replay = await page.locator('[role=alert]').innerText();
  await page.fill('#email', op.email);
  await page.fill('#password', 'not the password');
  await page.fill('#code', totp(op.totp_secret));
  await submit(page, '/admin/sign-in');
  equal(await page.locator('[role=alert]').innerText(), replay, 'one answer for every refusal');
  await context.close();
});

await test('every page passes axe, at desktop and phone width', async () => {
  const admin = sessions.admin;
  for (const p of Object.keys(PAGES)) {
    await admin.goto(`${KEPT_URL}${p}`);
    await check(admin, p.replace(/^\/admin\/?/, '') || 'overview');
  }
  await admin.goto(`${KEPT_URL}/admin/data-map/record`);
  await check(admin, 'record-of-processing');
});

await test('a marketer dry-runs an SMS campaign and sees who is excluded as not promised', async () => {
  const page = sessions.marketing;
  await page.goto(`${KEPT_URL}/admin/campaigns`);
  await page.selectOption('#purpose', 'marketing.communications');
  await page.selectOption('#channel', 'sms');
  await Promise.all([page.waitForNavigation(), page.click('#campaign button[type=submit]')]);
  const text = await page.locator('main').innerText();
  assert(text.includes('may be reached'), `the eligible count: ${page.url()} ${text.slice(0, 400)}`);
  assert(text.includes('denied.not_promised'), `phone numbers not promised for marketing are excluded: ${text.slice(0, 600)}`);
  assert(await page.locator('svg[role=img]').count() === 1, 'the chart');
  await check(page, 'campaign-sms');
});

await test('the privacy lead verifies the ledger and reads the audit log', async () => {
  const page = sessions.privacy;
  await page.goto(`${KEPT_URL}/admin/ledger`);
  await submit(page, '/admin/ledger/verify');
  for (let i = 0; i < 100; i++) {
    if ((await page.locator('main').innerText()).includes('Intact')) break;
    await page.waitForTimeout(300);
    await page.goto(`${KEPT_URL}/admin/ledger`);
  }
  assert((await page.locator('main').innerText()).includes('Intact'), 'the ledger verifies');
  await page.goto(`${KEPT_URL}/admin/audit`);
  const audit = await page.locator('main').innerText();
  for (const role of ['marketing', 'privacy', 'engineering', 'admin']) {
    assert(audit.includes(OPERATORS[role].email), `${role}'s sign-in is in the audit log`);
  }
  assert(audit.includes('ledger.verify'), 'and the verification');
});

await test('an engineer makes a key and sees it once', async () => {
  const page = sessions.engineering;
  await page.goto(`${KEPT_URL}/admin/keys`);
  await page.selectOption('#role', 'decide');
  await page.fill('#name', 'e2e send tool');
  await submit(page, '/admin/keys');
  const key = (await page.locator('section[role=status] code').innerText()).trim();
  assert(key.startsWith('kept_'), `the new key: ${key}`);
  const r = await fetch(`${KEPT_URL}/v1/decisions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ subject: { user_id: 'u000011' }, purpose: 'marketing.communications', channel: 'email' }),
  });
  equal(r.status, 200, 'the key works');
  await page.goto(`${KEPT_URL}/admin/keys`);
  assert(!(await page.content()).includes(key), 'and is not shown again');
});

await test('the privacy lead carries an access request from the queue to completed', async () => {
  const keys = JSON.parse(fs.readFileSync(KEYS_FILE, 'utf8'));
  const filed = await fetch(`${KEPT_URL}/v1/requests`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${keys.privacy}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ subject: { user_id: 'u000011' }, kind: 'access' }),
  });
  equal(filed.status, 201, 'the request is filed through the API');
  const { id } = await filed.json();
  const page = sessions.privacy;
  await page.goto(`${KEPT_URL}/admin/requests`);
  const row = page.locator(`#queue a[href="/admin/requests/${id}"]`);
  assert(await row.count() === 1, `request ${id} is in the queue`);
  await check(page, 'requests-queue');
  await Promise.all([page.waitForNavigation(), row.click()]);
  equal(new URL(page.url()).pathname, `/admin/requests/${id}`, 'the request opens');
  await check(page, 'request-received');

  await page.selectOption('#verify-method', 'verified_identifier');
  await page.fill('#verify-reference', 'email');
  await submit(page, `/admin/requests/${id}/verify`);
  assert((await page.locator('h1').innerText()).includes('verified'), 'verified');
  await submit(page, `/admin/requests/${id}/start`);
  assert((await page.locator('h1').innerText()).includes('in_progress'), 'in progress');
  await check(page, 'request-in-progress');
  await submit(page, `/admin/requests/${id}/export`);
  const link = await page.locator('section[role=status] code').first().innerText();
  assert(link.includes('/exports/'), `the download link is shown: ${link}`);
  await page.goto(`${KEPT_URL}/admin/requests/${id}`);
  await page.fill('#complete-note', 'sent by mail');
  await submit(page, `/admin/requests/${id}/complete`);
  assert((await page.locator('h1').innerText()).includes('completed'), 'completed');
  const timeline = await page.locator('#timeline').innerText();
  assert(timeline.includes(`operator:${OPERATORS.privacy.email}`), 'the steps are the operator\'s');
  await check(page, 'request-completed');

  const shown = await fetch(`${KEPT_URL}/v1/requests/${id}`, { headers: { Authorization: `Bearer ${keys.privacy}` } });
  equal((await shown.json()).state, 'completed', 'the API sees it completed');
  await page.goto(`${KEPT_URL}/admin/audit`);
  assert((await page.locator('main').innerText()).includes('request.advance'), 'the steps are in the audit log');
});

await test('the privacy lead finds a customer by email and reads their page', async () => {
  // The shop's backend tells Kept a demo customer's email address, with their newsletter choice.
  const email = 'e2e.subject@larkspur.example';
  const basic = Buffer.from(`${DEMO_KEYS.server}:`).toString('base64');
  const r = await fetch(`${KEPT_URL}/v1/identify`, {
    method: 'POST',
    headers: { Authorization: `Basic ${basic}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ userId: 'u000011', traits: { email },
      context: { kept: { collection_point: 'newsletter_signup' },
        consent: { categoryPreferences: { 'marketing.communications': true } } } }),
  });
  equal(r.status, 200, 'the identify is taken');
  const page = sessions.privacy;
  await page.goto(`${KEPT_URL}/admin/subjects`);
  await check(page, 'subjects');
  await page.fill('#q', email);
  await Promise.all([page.waitForNavigation(), page.click('#subject-search button[type=submit]')]);
  assert(/\/admin\/subjects\/\d+$/.test(new URL(page.url()).pathname), `sent to the subject's page: ${page.url()}`);
  const text = await page.locator('main').innerText();
  assert(text.includes(email), 'the address, opened');
  assert(await page.locator('#timeline tbody tr').count() > 0, 'the consent ledger');
  const cells = await page.locator('#decisions tbody td').allInnerTexts();
  assert(cells.length > 0 && cells.every((c) => /^(allowed|denied)\./.test(c.trim())), `a reason in every cell: ${cells.slice(0, 6)}`);
  assert(await page.locator('#decisions thead th').count() > 2, 'purposes by channel');
  await check(page, 'subject');
});

await test('the data map shows the lint findings and a notice opens with its recorded versions and their comparison', async () => {
  const page = sessions.marketing;
  await page.goto(`${KEPT_URL}/admin/data-map`);
  const findings = await page.locator('section[aria-labelledby=findings-title]').innerText();
  assert(findings.includes('No findings'), `the demo lints clean: ${findings.slice(0, 400)}`);
  // Every link to a row of the page has its row.
  const anchors = await page.locator('main a[href^="#"]').evaluateAll((as) => as.map((a) => a.getAttribute('href').slice(1)));
  for (const id of anchors) {
    assert(await page.locator(`[id="${id}"]`).count() === 1, `a row for #${id}`);
  }
  await Promise.all([page.waitForNavigation(), page.click('a[href="/admin/data-map/notices/rewards"]')]);
  equal(new URL(page.url()).pathname, '/admin/data-map/notices/rewards', 'the notice page');
  const text = await page.locator('main').innerText();
  assert(text.includes('Recorded versions'), `the versions: ${text.slice(0, 400)}`);
  assert(text.includes('the version the manifest declares'), 'the running version was recorded at start');
  // The demo's notices were recorded once, at this start: nothing to compare yet.
  assert(text.includes('Only one version of this notice has been recorded'), `nothing to compare: ${text.slice(-400)}`);
  await check(page, 'notice');
  const bad = await page.goto(`${KEPT_URL}/admin/data-map/notices/rewards?from=nope`);
  equal(bad.status(), 422, 'a from that names no recorded version');
  const alert = await page.locator('[role=alert]').innerText();
  assert(alert.startsWith('from:'), `the field is named: ${alert}`);
  await check(page, 'notice-bad-version');
  const unknown = await page.goto(`${KEPT_URL}/admin/data-map/notices/nope`);
  equal(unknown.status(), 404, 'an unknown notice');
});

await test('a forged form and a session after sign-out are refused', async () => {
  const page = sessions.admin;
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'kept_console');
  assert(session && session.httpOnly && session.sameSite === 'Strict', `cookie ${JSON.stringify(session)}`);
  const forged = await fetch(`${KEPT_URL}/admin/keys`, {
    method: 'POST',
    headers: { Cookie: `kept_console=${session.value}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: 'csrf=forged&role=admin&name=attacker',
    redirect: 'manual',
  });
  equal(forged.status, 403, 'no CSRF token, no key');
  await page.goto(`${KEPT_URL}/admin`);
  await submit(page, '/admin/sign-out');
  const stolen = await fetch(`${KEPT_URL}/admin`, { headers: { Cookie: `kept_console=${session.value}` }, redirect: 'manual' });
  equal(stolen.status, 303, 'the old cookie opens nothing');
  equal(stolen.headers.get('location'), '/admin/sign-in?reason=session', 'sent to sign in');
});

await browser.close();
const passed = results.filter(Boolean).length;
const failed = results.length - passed;
log(`axe: ${scanned} pages scanned, ${serious} serious or critical violations`);
console.log(`console: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
