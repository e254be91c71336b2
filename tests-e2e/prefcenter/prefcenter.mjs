// The preference center in headless Chromium against a running Kept (demo manifest), mail
// caught by an SMTP sink: sign in through the emailed link, switch a purpose, confirm a double
// opt-in, download the data and a signed receipt, unsubscribe in one click, "do not sell" with
// GPC, request erasure. After each step the ledger and decisions are read through the API.
// Every page gets an axe-core scan (no serious or critical violation allowed) and a screenshot
// at desktop and phone (360 px) width.
//
// Prints one summary line last: `prefcenter: N passed, M failed`.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const { KEPT_URL, MAIL_DIR, LEDGER_PUBLIC_KEY, ARTIFACTS, KEPT_BIN, KEYS_FILE } = process.env;
const KEYS = JSON.parse(fs.readFileSync(KEYS_FILE, 'utf8'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const MARKETING = 'marketing.communications';
const PERSONAL = 'personalize.content.profiled';
const ADS = 'marketing.advertising.third_party.targeted';

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
async function eventually(what, fn, ms = 15000) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v !== null && v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms${last ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// --- Kept's API -------------------------------------------------------------------------------
async function api(role, method, pathAndQuery, body) {
  const headers = { Authorization: `Bearer ${KEYS[role]}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(KEPT_URL + pathAndQuery, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json().catch(() => null);
  return { status: r.status, body: json };
}
async function ledgerOf(subject) {
  const r = await api('privacy', 'GET', `/v1/subjects/${subject}/consents`);
  equal(r.status, 200, 'consents');
  return r.body.entries;
}
async function lastRecord(subject) {
  const entries = await ledgerOf(subject);
  return entries[entries.length - 1].record;
}
async function decide(subject, request) {
  const r = await api('decide', 'POST', '/v1/decisions', { subject: { id: subject }, ...request });
  equal(r.status, 200, `decision ${JSON.stringify(request)}`);
  return r.body.reason;
}
async function identify(userId, email, location) {
  const r = await api('server', 'POST', '/v1/identify', {
    userId,
    traits: { email },
    context: { kept: { collection_point: 'checkout' }, location },
  });
  equal(r.status, 200, `identify ${userId}`);
  const found = await api('privacy', 'GET', `/v1/subjects/lookup?email=${encodeURIComponent(email)}`);
  equal(found.status, 200, `lookup ${email}`);
  return found.body.subject;
}

// --- the mailbox ----------------------------------------------------------------------------
const seen = new Set();
async function nextMail(to) {
  return eventually(`a mail to ${to}`, () => {
    for (const name of fs.readdirSync(MAIL_DIR).filter((n) => n.endsWith('.json')).sort()) {
      if (seen.has(name)) continue;
      const mail = JSON.parse(fs.readFileSync(path.join(MAIL_DIR, name), 'utf8'));
      if (mail.to.includes(to)) {
        seen.add(name);
        return mail;
      }
    }
    return null;
  });
}
function linkIn(mail) {
  const m = mail.text.match(/https?:\/\/\S+/);
  assert(m, `a link in the mail: ${mail.text}`);
  return m[0];
}
function mailsTo(to) {
  return fs
    .readdirSync(MAIL_DIR)
    .filter((n) => n.endsWith('.json'))
    .map((n) => JSON.parse(fs.readFileSync(path.join(MAIL_DIR, n), 'utf8')))
    .filter((m) => m.to.includes(to));
}

// --- the browser ----------------------------------------------------------------------------
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const scanned = [];
const seriousTotal = { count: 0 };

async function newPage({ gpc = false, locale = 'en-US' } = {}) {
  // The pages forbid inline scripts (CSP); axe is injected by the test, so CSP is bypassed
  // for the test's own script only.
  const context = await browser.newContext({
    bypassCSP: true,
    acceptDownloads: true,
    locale,
    viewport: { width: 1280, height: 900 },
    extraHTTPHeaders: gpc ? { 'Sec-GPC': '1' } : {},
  });
  return context.newPage();
}

/** Scans the page with axe-core and saves full-page screenshots at desktop and phone width. */
async function check(page, name) {
  await page.addScriptTag({ content: AXE_SOURCE });
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length,
      targets: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  const serious = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  scanned.push({ name, violations: result.length, serious: serious.length });
  seriousTotal.count += serious.length;
  if (result.length) log(`  axe ${name}: ${JSON.stringify(result)}`);
  const viewport = page.viewportSize();
  await page.screenshot({ path: path.join(ARTIFACTS, `prefcenter-${name}-desktop.png`), fullPage: true });
  await page.setViewportSize({ width: 360, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: path.join(ARTIFACTS, `prefcenter-${name}-phone.png`), fullPage: true });
  await page.setViewportSize(viewport);
  assert(overflow <= 1, `${name}: the page is wider than a 360 px phone by ${overflow} px`);
  assert(serious.length === 0, `${name}: axe found serious or critical violations: ${JSON.stringify(serious)}`);
}

async function save(page, formAction) {
  await Promise.all([
    page.waitForNavigation(),
    page.locator(`form[method=post][action="${formAction}"] button[type=submit]`).first().click(),
  ]);
}

// --- the story ------------------------------------------------------------------------------
const ADA = 'ada.e2e@example.com';
const BEA = 'bea.e2e@example.com';
let ada;
let bea;
let page;

await test('customers exist, collected at checkout', async () => {
  ada = await identify('e2e-ada', ADA, { country: 'DE' });
  bea = await identify('e2e-bea', BEA, { country: 'US', region: 'CA' });
  assert(ada !== bea, 'two subjects');
});

await test('sign in through the emailed link', async () => {
  page = await newPage();
  await page.goto(`${KEPT_URL}/preferences`);
  assert(page.url().includes('/preferences/sign-in'), `redirected to sign in: ${page.url()}`);
  await check(page, 'sign-in');
  await page.fill('#email', ADA.toUpperCase());
  await save(page, '/preferences/sign-in');
  const answer = await page.locator('[role=status]').innerText();
  // The same answer for an address nobody holds.
  const other = await newPage();
  await other.goto(`${KEPT_URL}/preferences/sign-in`);
  await other.fill('#email', 'nobody.e2e@example.com');
  await save(other, '/preferences/sign-in');
  equal(await other.locator('[role=status]').innerText(), answer, 'same answer for an unknown address');
  await other.context().close();

  const mail = await nextMail(ADA);
  const link = linkIn(mail);
  assert(link.startsWith(`${KEPT_URL}/preferences/open?token=`), `the link: ${link}`);
  equal(mailsTo('nobody.e2e@example.com').length, 0, 'no mail to an unknown address');
  await page.goto(link);
  assert(new URL(page.url()).pathname === '/preferences', `on the page: ${page.url()}`);
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'kept_prefs');
  assert(session && session.httpOnly && session.sameSite === 'Lax', `session cookie ${JSON.stringify(session)}`);
  await check(page, 'preferences');

  // The link works once.
  const again = await newPage();
  const r = await again.goto(link);
  equal(r.status(), 403, 'a used link');
  await check(again, 'link-used');
  await again.context().close();
});

await test('switching a purpose writes the ledger and flips the decision', async () => {
  equal(await decide(ada, { purpose: PERSONAL }), 'denied.no_consent', 'before');
  const box = page.getByLabel('Allow: Personalised shop');
  assert(!(await box.isChecked()), 'off at first');
  await box.check();
  await save(page, '/preferences/purposes');
  assert((await page.locator('[role=status]').innerText()).includes('saved'), 'saved');
  const record = await lastRecord(ada);
  equal([record.purpose, record.action, record.source, record.method, record.notice.id],
    [PERSONAL, 'given', 'preference_center', 'web_form', 'personalization'], 'the record');
  equal(await decide(ada, { purpose: PERSONAL }), 'allowed.consent', 'after');
  assert(await page.getByLabel('Allow: Personalised shop').isChecked(), 'shown on');
});

await test('email opt-in is confirmed by a link (double opt-in)', async () => {
  const newsletter = { purpose: MARKETING, channel: 'email', topic: 'newsletter' };
  const before = await decide(ada, newsletter);
  assert(before.startsWith('denied.'), `before: ${before}`);
  await page.check('#topic-email-newsletter');
  await page.selectOption('#freq-email', 'week');
  await save(page, '/preferences/messages');
  assert((await page.locator('[role=status]').innerText()).includes('email'), 'told to check the inbox');
  equal((await lastRecord(ada)).action, 'pending', 'pending first');
  equal(await decide(ada, newsletter), before, 'a pending opt-in counts for nothing');

  const mail = await nextMail(ADA);
  const link = linkIn(mail);
  assert(link.includes('/preferences/confirm?token='), `confirmation link ${link}`);
  const confirm = await newPage();
  await confirm.goto(link);
  await check(confirm, 'confirm');
  equal(await decide(ada, newsletter), before, 'opening the link alone confirms nothing');
  await Promise.all([confirm.waitForNavigation(), confirm.locator("main button[type=submit]").click()]);
  assert((await confirm.locator('[role=status]').innerText()).includes('confirmed'), 'confirmed');
  await check(confirm, 'confirmed');
  await confirm.context().close();
  const record = await lastRecord(ada);
  equal([record.action, record.method, record.notice.id], ['given', 'double_opt_in', 'newsletter'], 'given');
  equal(await decide(ada, newsletter), 'allowed.consent', 'after confirming');
  const prefs = await api('privacy', 'GET', `/v1/subjects/${ada}/preferences`);
  equal(prefs.body.channels.find((c) => c.channel === 'email').frequency, 'week', 'frequency saved');
});

await test('download my data (JSON, a CSV zip, a page), each an access request, and a signed receipt', async () => {
  await page.goto(`${KEPT_URL}/preferences`);
  const [json] = await Promise.all([
    page.waitForEvent('download'),
    page.getByText('Download my data (JSON)').click(),
  ]);
  const data = JSON.parse(fs.readFileSync(await json.path(), 'utf8'));
  equal(data.subject.id, ada, 'my own data');
  assert(data.identifiers.some((i) => i.kind === 'email' && i.value === ADA), 'the email is in it');
  assert(data.consents.length >= 3, 'the consent history is in it');
  const [zip] = await Promise.all([
    page.waitForEvent('download'),
    page.getByText('Download my data (CSV, zip)').click(),
  ]);
  const bytes = fs.readFileSync(await zip.path());
  equal(bytes.subarray(0, 2).toString('latin1'), 'PK', 'a zip of CSV files');
  const [pageFile] = await Promise.all([
    page.waitForEvent('download'),
    page.getByText('Download my data (web page)').click(),
  ]);
  const html = fs.readFileSync(await pageFile.path(), 'utf8');
  assert(html.toLowerCase().startsWith('<!doctype html>'), 'a page');
  assert(html.includes(ADA), 'the email on the page');
  const filed = await api('privacy', 'GET', `/v1/requests?subject=${ada}&kind=access`);
  equal(filed.body.requests.length, 3, 'each download an access request of its own');
  assert(filed.body.requests.every((r) => r.state === 'completed' && r.channel === 'preference_center'),
    'answered at once');

  const [receipt] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('a[href^="/preferences/receipts/"]').first().click(),
  ]);
  const file = path.join(ARTIFACTS, 'prefcenter-receipt.json');
  await receipt.saveAs(file);
  const out = execFileSync(KEPT_BIN, ['ledger', 'verify-receipt', file, '--public-key', LEDGER_PUBLIC_KEY]).toString();
  assert(out.includes('receipt valid'), `verify-receipt: ${out}`);
  const changed = JSON.parse(fs.readFileSync(file, 'utf8'));
  changed.kept.action = 'withdrawn';
  const bad = path.join(ARTIFACTS, 'prefcenter-receipt-changed.json');
  fs.writeFileSync(bad, JSON.stringify(changed));
  let code = 0;
  try {
    execFileSync(KEPT_BIN, ['ledger', 'verify-receipt', bad], { stdio: 'pipe' });
  } catch (e) {
    code = e.status;
  }
  equal(code, 1, 'a changed receipt fails');
});

await test('one-click unsubscribe (RFC 8058) takes effect at once', async () => {
  const prefs = await api('privacy', 'GET', `/v1/subjects/${ada}/preferences`);
  const { url, post } = prefs.body.list_unsubscribe;
  equal(post, 'List-Unsubscribe=One-Click', 'the List-Unsubscribe-Post header');
  const human = await newPage();
  await human.goto(url);
  await check(human, 'unsubscribe');
  await human.context().close();
  // What a mailbox provider does: a POST from elsewhere, no cookie, no CSRF token.
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: 'https://mail.example' },
    body: post,
  });
  equal(r.status, 200, 'accepted');
  const record = await lastRecord(ada);
  equal([record.purpose, record.channel, record.action, record.source], [MARKETING, 'email', 'withdrawn', 'preference_center'], 'withdrawn');
  const reason = await decide(ada, { purpose: MARKETING, channel: 'email', topic: 'newsletter' });
  equal(reason, 'denied.withdrawn', 'no more newsletters');
});

await test('unsubscribe from all marketing is one click', async () => {
  await page.goto(`${KEPT_URL}/preferences`);
  await save(page, '/preferences/unsubscribe-all');
  assert((await page.locator('[role=status]').innerText()).includes('unsubscribed'), 'confirmed on the page');
  for (const channel of ['email', 'sms']) {
    const reason = await decide(ada, { purpose: MARKETING, channel });
    assert(reason.startsWith('denied.'), `${channel}: ${reason}`);
  }
});

await test('a cross-site form post is refused', async () => {
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'kept_prefs');
  const html = await page.content();
  const csrf = html.match(/name="csrf" value="([^"]+)"/)[1];
  const r = await fetch(`${KEPT_URL}/preferences/purposes`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      Cookie: `kept_prefs=${session.value}`,
      Origin: 'https://evil.example',
    },
    body: `csrf=${encodeURIComponent(csrf)}`,
  });
  equal(r.status, 403, 'refused');
  equal(await decide(ada, { purpose: PERSONAL }), 'allowed.consent', 'nothing changed');
});

await test('do not sell or share, and what Kept did with GPC (California)', async () => {
  const link = await api('privacy', 'POST', `/v1/subjects/${bea}/preference-link`, { locale: 'en' });
  equal(link.status, 201, 'a link minted by the company app');
  equal(await decide(bea, { purpose: ADS }), 'allowed.opt_out_regime', 'sale allowed until opted out');
  const gpcPage = await newPage({ gpc: true });
  await gpcPage.goto(link.body.url);
  const section = await gpcPage.locator('#do-not-sell').innerText();
  assert(section.includes('Global Privacy Control'), 'GPC shown');
  assert(section.includes('recorded'), 'what Kept did with it');
  assert(await gpcPage.locator("#dns").isChecked(), "on");
  await check(gpcPage, 'do-not-sell-gpc');
  equal(await decide(bea, { purpose: ADS }), 'denied.gpc', 'GPC honoured');
  const record = await lastRecord(bea);
  equal([record.method, record.action], ['gpc', 'opted_out'], 'recorded as a GPC opt-out');
  await gpcPage.context().close();
});

await test('the page in German, French and Spanish', async () => {
  for (const lang of ['de', 'fr', 'es']) {
    await page.goto(`${KEPT_URL}/preferences?lang=${lang}`);
    equal(await page.getAttribute('html', 'lang'), lang, 'the language');
    await check(page, `preferences-${lang}`);
  }
  await page.goto(`${KEPT_URL}/preferences?lang=en`);
});

await test('delete my data: a request with its legal deadline that stops every use', async () => {
  await page.goto(`${KEPT_URL}/preferences`);
  await page.check('#erase-confirm');
  await save(page, '/preferences/erase');
  const banner = await page.locator('.alert[role=status]').innerText();
  assert(banner.includes('delete your data'), `the request is visible: ${banner}`);
  await check(page, 'erasure-requested');
  const list = await api('privacy', 'GET', `/v1/requests?subject=${ada}&kind=erasure`);
  equal(list.status, 200, 'the request is listed');
  const request = list.body.requests[0];
  equal(request.channel, 'preference_center', 'filed from the preference center');
  const days = (request.due_at - request.received_at) / 86400000;
  assert(days >= 28 && days <= 31, `GDPR: one month (${days} days)`);
  // Every use stops at once; the erasure then runs (the person is unknown once it ran).
  const reason = await decide(ada, { purpose: 'essential.service.operations' });
  assert(['denied.erasure_pending', 'denied.unknown_subject'].includes(reason), `every use stops: ${reason}`);
});

await test('keyboard: every control is reachable with Tab', async () => {
  const fresh = await newPage();
  const link = await api('privacy', 'POST', `/v1/subjects/${bea}/preference-link`, {});
  await fresh.goto(link.body.url);
  const controls = await fresh.locator('input:not([type=hidden]), select, button, a[href]').count();
  const reached = new Set();
  for (let i = 0; i < controls + 10; i++) {
    await fresh.keyboard.press('Tab');
    const id = await fresh.evaluate(() => {
      const el = document.activeElement;
      if (!el || el === document.body) return null;
      return el.outerHTML.slice(0, 120);
    });
    if (id) reached.add(id);
  }
  assert(reached.size >= Math.min(controls, 20), `reached ${reached.size} of ${controls} controls`);
  await fresh.context().close();
});

await browser.close();
const passed = results.filter(Boolean).length;
const failed = results.length - passed;
log(`axe: ${scanned.length} pages scanned, ${seriousTotal.count} serious or critical violations`);
console.log(`prefcenter: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
