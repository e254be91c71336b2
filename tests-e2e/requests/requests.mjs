// Data subject requests end to end against a running Kept (the demo with the fixture shop as
// datasets and the advertising partner's webhook at a receiver run here): erasure from the
// preference center's delete button through the connectors and a signed, acknowledged
// obligation to completion, the evidence afterwards, and access with the shop's rows in the
// export.
//
// Prints one summary line last: `requests: N passed, M failed`.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const { KEPT_URL, KEPT_BIN, KEYS_FILE, RECEIVER_PORT, WEBHOOK_SECRET, MANIFEST, KEPT_DATA } = process.env;
const { SHOP_POSTGRES_URL, SHOP_MYSQL_URL } = process.env;
const KEYS = JSON.parse(fs.readFileSync(KEYS_FILE, 'utf8'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

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
async function eventually(what, fn, ms = 60000) {
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
    await new Promise((r) => setTimeout(r, 200));
  }
}

// --- Kept's API and CLI ---------------------------------------------------------------------
async function api(role, method, pathAndQuery, body) {
  const headers = role ? { Authorization: `Bearer ${KEYS[role]}` } : {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(KEPT_URL + pathAndQuery, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: r.status, body: json, text, headers: r.headers };
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
function kept(args) {
  try {
    return { status: 0, out: execFileSync(KEPT_BIN, args, { encoding: 'utf8', cwd: KEPT_DATA }) };
  } catch (e) {
    return { status: e.status, out: `${e.stdout}${e.stderr}` };
  }
}
function psql(sql) {
  return execFileSync('psql', [SHOP_POSTGRES_URL, '-qAtc', sql], { encoding: 'utf8' }).trim();
}
function mysql(sql) {
  const url = new URL(SHOP_MYSQL_URL);
  const bin = fs.existsSync('/usr/bin/mariadb') ? 'mariadb' : 'mysql';
  return execFileSync(bin, ['-h', url.hostname, '-P', url.port || '3306', '-u', url.username,
    `-p${url.password}`, '-N', '-B', url.pathname.slice(1), '-e', sql], { encoding: 'utf8' }).trim();
}

// --- the partner's webhook receiver ---------------------------------------------------------
// Checks every delivery's signature as the partner would (Standard Webhooks: HMAC-SHA256 over
// "id.timestamp.body" with the shared secret), keeps what arrived, and acknowledges
// obligations through the callback they carry.
const received = [];
const secret = Buffer.from(WEBHOOK_SECRET.replace(/^whsec_/, ''), 'base64');
function signed(headers, body) {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const expected = crypto.createHmac('sha256', secret).update(`${id}.${ts}.${body}`).digest('base64');
  return (headers['webhook-signature'] || '').split(' ').some((s) => s === `v1,${expected}`);
}
const receiver = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    const ok = signed(req.headers, body);
    let json = null;
    try {
      json = JSON.parse(body);
    } catch {
      json = null;
    }
    received.push({ path: req.url, headers: req.headers, body: json, signed: ok });
    res.writeHead(ok ? 204 : 401);
    res.end();
  });
});
await new Promise((r) => receiver.listen(Number(RECEIVER_PORT), '127.0.0.1', r));

// --- the browser ----------------------------------------------------------------------------
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
async function signedIn(subject) {
  const context = await browser.newContext({ acceptDownloads: true, locale: 'en-US' });
  const page = await context.newPage();
  const link = await api('privacy', 'POST', `/v1/subjects/${subject}/preference-link`, {});
  equal(link.status, 201, 'a preference link');
  await page.goto(link.body.url);
  assert(new URL(page.url()).pathname === '/preferences', `on the page: ${page.url()}`);
  return page;
}
async function save(page, formAction) {
  await Promise.all([
    page.waitForNavigation(),
    page.locator(`form[method=post][action="${formAction}"] button[type=submit]`).first().click(),
  ]);
}

// --- the story ------------------------------------------------------------------------------
// Ada and Bob are the fixture shop's customers; Kept knows them by the same addresses.
const ADA = 'ada@example.com';
const BOB = 'bob@example.com';
let ada;
let bob;
let erasure;

await test('the shop holds Ada and Bob, and Kept knows them', async () => {
  equal(psql(`SELECT count(*) FROM customers WHERE email = '${ADA}'`), '1', 'Ada in PostgreSQL');
  equal(mysql(`SELECT count(*) FROM customers WHERE email = '${ADA}'`), '1', 'Ada in MariaDB');
  ada = await identify('e2e-ada', ADA, { country: 'DE' });
  bob = await identify('e2e-bob', BOB, { country: 'US', region: 'CA' });
  assert(ada !== bob, 'two subjects');
});

await test('Ada deletes her data in the preference center: a request with its GDPR due date', async () => {
  const page = await signedIn(ada);
  await page.check('#erase-confirm');
  await save(page, '/preferences/erase');
  const banner = await page.locator('.alert[role=status]').innerText();
  assert(banner.includes('delete your data'), `the request is visible: ${banner}`);
  await page.context().close();
  const list = await api('privacy', 'GET', `/v1/requests?subject=${ada}&kind=erasure`);
  equal(list.status, 200, 'listed');
  equal(list.body.requests.length, 1, 'one erasure request');
  erasure = list.body.requests[0];
  equal([erasure.channel, erasure.rule], ['preference_center', 'gdpr.requests'], 'channel and rule');
  const days = (erasure.due_at - erasure.received_at) / 86400000;
  assert(days >= 28 && days <= 31, `GDPR: one month (${days} days)`);
});

await test('the partner receives a signed obligation and acknowledges it', async () => {
  const obligation = await eventually('an obligation for the request', () =>
    received.find((d) => d.body && d.body.type === 'request.obligation' && d.body.data && d.body.data.request === erasure.id));
  assert(obligation.signed, 'signed with the shared secret');
  equal([obligation.body.data.kind, obligation.body.data.system], ['erasure', 'ad_partner'], 'an erasure for the partner');
  const callback = obligation.body.data.callback;
  assert(callback && callback.url && callback.token, `a callback: ${JSON.stringify(obligation.body)}`);
  const ack = (token) => fetch(callback.url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token }),
  });
  const forged = await ack('forged');
  equal(forged.status, 403, 'a forged token is refused');
  const first = await ack(callback.token);
  equal(first.status, 200, 'acknowledged');
  const replay = await ack(callback.token);
  equal(replay.status, 200, 'a replay is answered the same');
  equal((await replay.json()).replayed, true, 'and changes nothing');
});

await test('the request completes once Kept, both shop databases and the partner are done', async () => {
  const done = await eventually('the request completed', async () => {
    const r = await api('privacy', 'GET', `/v1/requests/${erasure.id}`);
    return r.body && r.body.state === 'completed' ? r.body : null;
  });
  const tasks = done.tasks.map((t) => `${t.target}=${t.state}`).sort();
  equal(tasks, ['dataset:shop=done', 'dataset:shop_mysql=done', 'kept=done', 'system:ad_partner=done'],
    'every target');
  const steps = done.log.map((l) => l.to);
  for (const state of ['received', 'verified', 'in_progress', 'completed']) {
    assert(steps.includes(state), `the log shows ${state}: ${steps}`);
  }
});

await test('the shop rows are gone, orders kept for tax law without the customer', async () => {
  equal(psql(`SELECT count(*) FROM customers WHERE email = '${ADA}'`), '0', 'customer (PostgreSQL)');
  equal(psql("SELECT count(*) FROM addresses WHERE customer_id = 1"), '0', 'addresses (PostgreSQL)');
  equal(psql("SELECT count(*) FROM support_tickets WHERE customer_id = 1"), '0', 'tickets (PostgreSQL)');
  equal(psql(`SELECT count(*) FROM orders WHERE email = '${ADA}'`), '0', 'no order names her');
  assert(Number(psql('SELECT count(*) FROM orders WHERE customer_id IS NULL')) > 0, 'orders stay, detached');
  equal(mysql(`SELECT count(*) FROM customers WHERE email = '${ADA}'`), '0', 'customer (MariaDB)');
  equal(psql(`SELECT count(*) FROM customers WHERE email = '${BOB}'`), '1', 'Bob untouched');
});

await test('afterwards Ada cannot be found or decrypted; the ledger and the requests log verify', async () => {
  const found = await api('privacy', 'GET', `/v1/subjects/lookup?email=${encodeURIComponent(ADA)}`);
  equal(found.status, 404, 'no lookup by her email');
  const decision = await api('decide', 'POST', '/v1/decisions', { subject: { id: ada }, purpose: 'marketing.communications', channel: 'email' });
  assert(decision.body && decision.body.allowed === false, `no use: ${decision.text}`);
  const ledger = kept(['ledger', 'verify', '--database-url', `${KEPT_DATA}/kept.db`, '--format', 'json']);
  equal(ledger.status, 0, `the ledger verifies: ${ledger.out}`);
  const log = kept(['dsr', 'verify', '--database-url', `${KEPT_DATA}/kept.db`, '--manifest', MANIFEST,
    '--witness', path.join(KEPT_DATA, 'requests-witness.log'), '--format', 'json']);
  equal(log.status, 0, `the requests log verifies: ${log.out}`);
  equal(JSON.parse(log.out).verdict, 'intact', 'intact');
});

await test('Bob asks for his data: the export holds the shop rows', async () => {
  const page = await signedIn(bob);
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('a[href="/preferences/data.json"]').click(),
  ]);
  const file = await download.path();
  const text = fs.readFileSync(file, 'utf8');
  const exported = JSON.parse(text);
  assert(text.includes(BOB), 'the export names him');
  assert(JSON.stringify(exported).includes('order_lines'), 'with the shop\'s order lines, found by the connectors');
  await page.context().close();
  const list = await api('privacy', 'GET', `/v1/requests?subject=${bob}&kind=access`);
  equal(list.body.requests.length, 1, 'filed as an access request');
  equal(list.body.requests[0].state, 'completed', 'answered at once');
});

await browser.close();
receiver.close();
const passed = results.filter(Boolean).length;
const failed = results.length - passed;
console.log(`requests: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
