// kept.js in headless Chromium against a running Kept: the banner appears, nothing held for a
// purpose runs before consent, accepting runs it and writes the consent ledger, a German
// visitor chooses in German, "do not sell or share" stops forwarding, and Global Privacy
// Control suppresses sale and sharing. Deliveries to the advertising partner are received here
// and their Standard Webhooks signatures checked with Node's own HMAC.
//
// Prints one summary line last: `browser: N passed, M failed`.
import { chromium } from 'playwright-core';
import crypto from 'node:crypto';
import http from 'node:http';
import path from 'node:path';

const { KEPT_URL, COLLECT_KEY, PRIVACY_KEY, WEBHOOK_PORT, WEBHOOK_SECRET, ARTIFACTS } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ADS = 'marketing.advertising.third_party.targeted';
const ANALYTICS = 'analytics.reporting';

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
async function eventually(what, fn, ms = 10000) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      // Subject ids start at 0: only null, undefined and false mean "not yet".
      if (v !== null && v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms${last ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// --- Kept's API, as the privacy team reads it ----------------------------------------------
async function privacy(pathAndQuery) {
  const r = await fetch(KEPT_URL + pathAndQuery, { headers: { Authorization: `Bearer ${PRIVACY_KEY}` } });
  const body = await r.json().catch(() => null);
  return { status: r.status, body };
}
async function subjectOf(anonymousId) {
  const r = await privacy(`/v1/subjects/lookup?anonymous_id=${encodeURIComponent(anonymousId)}`);
  return r.status === 200 ? r.body.subject : null;
}
async function ledgerOf(subject) {
  const r = await privacy(`/v1/subjects/${subject}/consents`);
  equal(r.status, 200, 'consents');
  return r.body.entries.map((e) => e.record);
}
async function eventsOf(subject) {
  const r = await privacy(`/v1/subjects/${subject}/events?limit=1000`);
  equal(r.status, 200, 'events');
  return r.body.events;
}

// --- the advertising partner ------------------------------------------------------------------
const deliveries = [];
const receiver = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    deliveries.push({ headers: req.headers, body, json: JSON.parse(body) });
    res.writeHead(204);
    res.end();
  });
});
await new Promise((resolve) => receiver.listen(Number(WEBHOOK_PORT), '127.0.0.1', resolve));

// Standard Webhooks verification, from the specification: HMAC-SHA256 keyed with the base64
// after `whsec_`, over `id.timestamp.body`; one of the space-separated `v1,` signatures must
// match; the timestamp within five minutes.
function verified(d) {
  const id = d.headers['webhook-id'];
  const timestamp = d.headers['webhook-timestamp'];
  const key = Buffer.from(WEBHOOK_SECRET.replace(/^whsec_/, ''), 'base64');
  const expected = crypto.createHmac('sha256', key).update(`${id}.${timestamp}.${d.body}`).digest();
  const fresh = Math.abs(Date.now() / 1000 - Number(timestamp)) <= 300;
  const match = String(d.headers['webhook-signature'] || '')
    .split(' ')
    .map((s) => s.split(','))
    .some(([v, sig]) => {
      if (v !== 'v1' || !sig) return false;
      const got = Buffer.from(sig, 'base64');
      return got.length === expected.length && crypto.timingSafeEqual(got, expected);
    });
  return Boolean(id) && fresh && match;
}
const deliveredFor = (sku) => deliveries.filter((d) => d.json?.data?.event?.properties?.sku === sku);

// --- the shop page, served at Kept's own origin ----------------------------------------------
const shop = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Larkspur Test Shop</title>
<script src="/kept.js" data-write-key="${COLLECT_KEY}" data-collection-point="web_shop"></script>
<script type="text/plain" data-kept-purpose="analytics">window.analyticsRuns = (window.analyticsRuns || 0) + 1;</script>
<script type="text/plain" data-kept-purpose="advertising">window.adsRuns = (window.adsRuns || 0) + 1;</script>
<style>body{font:16px/1.5 system-ui,sans-serif;margin:2rem;color:#222}main{max-width:40rem}</style>
</head><body><main><h1>Larkspur Test Shop</h1>
<p>Linen shirts, oak boards and wool blankets, made to last.</p>
<p><a href="#">Shirts</a> · <a href="#">Kitchen</a> · <a href="#">Bedroom</a></p></main></body></html>`;

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

async function visit({ headers = {}, locale = 'en-US', gpc = false } = {}) {
  const extra = { ...headers };
  if (gpc) extra['Sec-GPC'] = '1';
  const context = await browser.newContext({ extraHTTPHeaders: extra, locale, viewport: { width: 1100, height: 720 } });
  if (gpc) {
    await context.addInitScript(() => {
      Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true, configurable: true });
    });
  }
  await context.route(`${KEPT_URL}/shop/**`, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: shop }));
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  await page.goto(`${KEPT_URL}/shop/`);
  return { context, page, problems };
}
const consentCalls = (page) => page.evaluate(() =>
  (window.dataLayer || []).map((a) => Array.from(a)).filter((a) => a[0] === 'consent'));
async function cookie(context, name) {
  return (await context.cookies(KEPT_URL)).find((c) => c.name === name);
}
const global = (page, name) => page.evaluate((n) => window[n], name);

await test('GDPR: the banner holds analytics back until Accept, which writes the ledger', async () => {
  const { context, page, problems } = await visit({ headers: { 'X-Kept-Country': 'DE' } });
  const banner = page.locator('#kept-banner');
  await banner.waitFor({ state: 'visible', timeout: 10000 });
  equal(await banner.getAttribute('role'), 'dialog', 'role');
  const title = await banner.getAttribute('aria-labelledby');
  equal(await page.locator(`#${title}`).textContent(), 'Your privacy choices', 'its label');
  // Nothing held for a purpose has run, and Consent Mode started with everything denied.
  equal(await global(page, 'analyticsRuns'), undefined, 'analytics before consent');
  equal(await global(page, 'adsRuns'), undefined, 'ads before consent');
  equal(await page.locator('script[type="text/plain"][data-kept-purpose="analytics"]').count(), 1, 'still held');
  const [first] = await consentCalls(page);
  equal([first[1], first[2].analytics_storage, first[2].ad_storage, first[2].ad_user_data], ['default', 'denied', 'denied', 'denied'], 'consent default');
  // No identifier is stored on the device before the visitor chose (opt-in regime).
  equal(await cookie(context, 'kept_aid'), undefined, 'kept_aid before a choice');
  await page.screenshot({ path: path.join(ARTIFACTS, 'banner-gdpr.png') });

  // By keyboard: Tab to "Accept all", Enter.
  let focused = null;
  for (let i = 0; i < 8 && focused !== 'accept'; i += 1) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement && document.activeElement.dataset.kept);
  }
  equal(focused, 'accept', 'Accept is reachable by keyboard');
  await page.keyboard.press('Enter');

  await page.waitForFunction(() => window.analyticsRuns === 1 && window.adsRuns === 1, null, { timeout: 5000 });
  equal(await banner.count(), 0, 'the banner is gone');
  const last = (await consentCalls(page)).at(-1);
  equal([last[1], last[2].analytics_storage, last[2].ad_storage], ['update', 'granted', 'granted'], 'consent update');
  const aid = await cookie(context, 'kept_aid');
  assert(aid && aid.sameSite === 'Lax' && !aid.secure && aid.expires > Date.now() / 1000 + 360 * 86400, `kept_aid ${JSON.stringify(aid)}`);

  const subject = await eventually('the subject', () => subjectOf(aid.value));
  const given = await eventually('the ledger record', async () =>
    (await ledgerOf(subject)).find((r) => r.purpose === ANALYTICS && r.action === 'given'));
  equal(given.regime, 'gdpr', 'the regime recorded');
  const events = await eventsOf(subject);
  const updated = events.find((e) => e.name === 'Consent Updated');
  assert(updated, `a Consent Updated event among ${JSON.stringify(events.map((e) => e.name))}`);
  equal(updated.properties.purposes[ANALYTICS], true, 'Consent Updated carries the choice');
  // Kept stores the consent an event carried once, beside the event, not inside its context.
  equal(updated.consent.categories[ANALYTICS], true, 'and so does the consent it carried');

  // Withdrawing is as easy: "Privacy choices", then "Reject all".
  await page.locator('[data-kept="manage"]').click();
  await page.locator('#kept-banner [data-kept="reject"]').click();
  await eventually('the withdrawal in the ledger', async () =>
    (await ledgerOf(subject)).find((r) => r.purpose === ANALYTICS && r.action === 'withdrawn'));
  equal(problems, [], 'page errors');
  await context.close();
});

await test('German visitor: the banner speaks German and "Choose" lets analytics alone through', async () => {
  const { context, page, problems } = await visit({
    headers: { 'X-Kept-Country': 'DE', 'Accept-Language': 'de-DE,de;q=0.9' },
    locale: 'de-DE',
  });
  const banner = page.locator('#kept-banner');
  await banner.waitFor({ state: 'visible', timeout: 10000 });
  equal(await page.locator('#kept-title').textContent(), 'Ihre Datenschutzeinstellungen', 'title');
  await page.locator('[data-kept="choose"]').click();
  assert((await banner.innerText()).includes('Website-Statistik'), 'the purposes in German');
  const analytics = page.locator(`input[data-purpose="${ANALYTICS}"]`);
  equal(await analytics.isChecked(), false, 'nothing is pre-ticked');
  await analytics.check();
  await page.screenshot({ path: path.join(ARTIFACTS, 'banner-choose-de.png') });
  await page.locator('[data-kept="choose"]').click();
  await page.waitForFunction(() => window.analyticsRuns === 1, null, { timeout: 5000 });
  equal(await global(page, 'adsRuns'), undefined, 'ads were not chosen');
  const aid = await cookie(context, 'kept_aid');
  const subject = await eventually('the subject', () => subjectOf(aid.value));
  const ledger = await eventually('the choices in the ledger', async () => {
    const l = await ledgerOf(subject);
    return l.some((r) => r.purpose === ADS) && l.some((r) => r.purpose === ANALYTICS) ? l : null;
  });
  equal(ledger.find((r) => r.purpose === ANALYTICS).action, 'given', 'analytics');
  // A box left unticked on a first visit is a refusal: nothing was given, so nothing withdrawn.
  equal(ledger.find((r) => r.purpose === ADS).action, 'refused', 'ads');
  equal(problems, [], 'page errors');
  await context.close();
});

await test('California: no banner, ads until "Do not sell or share", then no more forwarding', async () => {
  const { context, page, problems } = await visit({ headers: { 'X-Kept-Country': 'US', 'X-Kept-Region': 'CA' } });
  const dns = page.locator('[data-kept="do-not-sell"]');
  await dns.waitFor({ state: 'visible', timeout: 10000 });
  equal(await dns.textContent(), 'Do not sell or share my personal information', 'the link');
  equal(await page.locator('#kept-banner').count(), 0, 'no banner in an opt-out regime');
  await page.waitForFunction(() => window.analyticsRuns === 1 && window.adsRuns === 1, null, { timeout: 5000 });
  const aid = await cookie(context, 'kept_aid');
  assert(aid, 'kept_aid is stored where nothing needs opt-in');

  // Browsing collected in the web shop, then a product view: the partner gets it, signed.
  await page.evaluate(async () => {
    await window.kept.identify({ viewed_products: ['LG-1'] });
    await window.kept.track('Product Viewed', { sku: 'LG-1' });
  });
  const [delivery] = await eventually('a signed delivery', async () => (deliveredFor('LG-1').length ? deliveredFor('LG-1') : null));
  assert(verified(delivery), `signature of ${JSON.stringify(delivery.headers)}`);
  equal(delivery.json.type, 'event.track', 'type');
  equal(delivery.json.data.system, 'ad_partner', 'system');
  equal(delivery.json.data.purposes, [ADS], 'purposes');
  equal(delivery.json.data.event.anonymousId, aid.value, 'the visitor');

  await dns.click();
  await eventually('the link confirms', async () =>
    (await dns.textContent()) === 'You have opted out of the sale and sharing of your personal information.');
  const subject = await eventually('the subject', () => subjectOf(aid.value));
  await eventually('the opt-out in the ledger', async () =>
    (await ledgerOf(subject)).find((r) => r.purpose === ADS && r.action === 'opted_out'));
  await page.evaluate(() => window.kept.track('Product Viewed', { sku: 'LG-2' }));
  // A later event in the same round would have been delivered by now; this one never is.
  await page.evaluate(() => window.kept.track('Product Viewed', { sku: 'LG-3' }));
  await new Promise((r) => setTimeout(r, 2500));
  equal(deliveredFor('LG-2').length + deliveredFor('LG-3').length, 0, 'deliveries after opting out');
  await page.screenshot({ path: path.join(ARTIFACTS, 'do-not-sell-ccpa.png') });
  equal(problems, [], 'page errors');
  await context.close();
});

await test('California with Global Privacy Control: sale and sharing suppressed from the start', async () => {
  const { context, page, problems } = await visit({ headers: { 'X-Kept-Country': 'US', 'X-Kept-Region': 'CA' }, gpc: true });
  equal(await page.evaluate(() => navigator.globalPrivacyControl), true, 'GPC in the page');
  const dns = page.locator('[data-kept="do-not-sell"]');
  await dns.waitFor({ state: 'visible', timeout: 10000 });
  equal(await dns.getAttribute('aria-pressed'), 'true', 'already opted out');
  assert((await dns.textContent()).includes('Global Privacy Control'), 'the link says GPC is honoured');
  await page.waitForFunction(() => window.analyticsRuns === 1, null, { timeout: 5000 });
  equal(await global(page, 'adsRuns'), undefined, 'the advertising script never runs');
  const last = (await consentCalls(page)).at(-1);
  equal([last[2].ad_storage, last[2].ad_user_data, last[2].analytics_storage], ['denied', 'denied', 'granted'], 'consent mode');

  await page.evaluate(async () => {
    await window.kept.identify({ viewed_products: ['LG-9'] });
    await window.kept.track('Product Viewed', { sku: 'LG-9' });
  });
  const aid = await cookie(context, 'kept_aid');
  const subject = await eventually('the subject', () => subjectOf(aid.value));
  const events = await eventsOf(subject);
  const viewed = events.find((e) => e.name === 'Product Viewed');
  assert(viewed, 'the event is kept');
  equal(viewed.consent.gpc, true, 'and Kept recorded it');
  assert(!viewed.consent.usable_for.includes(ADS), `usable for ${viewed.consent.usable_for}`);
  await eventually('the GPC opt-out in the ledger', async () =>
    (await ledgerOf(subject)).find((r) => r.method === 'gpc' && r.action === 'opted_out'));
  await new Promise((r) => setTimeout(r, 2500));
  equal(deliveredFor('LG-9').length, 0, 'deliveries under GPC');
  await page.screenshot({ path: path.join(ARTIFACTS, 'gpc-ccpa.png') });
  equal(problems, [], 'page errors');
  await context.close();
});

await browser.close();
receiver.close();
const passed = results.filter(Boolean).length;
console.log(`browser: ${passed} passed, ${results.length - passed} failed`);
process.exit(results.every(Boolean) ? 0 : 1);
