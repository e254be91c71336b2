// Sends identify and track calls to Kept with Segment's Node library (`host` set to Kept), then
// prints what it sent as JSON for the Python side to read back. Exits non-zero on any error the
// library reports.
import { Analytics } from '@segment/analytics-node';

const { KEPT_URL, KEPT_WRITE_KEY, RUN_ID } = process.env;
const analytics = new Analytics({
  writeKey: KEPT_WRITE_KEY,
  host: KEPT_URL,
  flushAt: 10,
  flushInterval: 200,
  maxRetries: 1,
  httpRequestTimeout: 10000,
});
const errors = [];
analytics.on('error', (e) => errors.push(String(e && (e.reason || e.message || e.code || e))));
let delivered = 0;
analytics.on('http_request', () => {});
analytics.on('call_after_close', () => errors.push('call after close'));

const userId = `node-${RUN_ID}`;
const email = `node-${RUN_ID}@example.com`;
const consent = { categoryPreferences: { 'marketing.communications': true } };
const sent = { userId, email, messages: [] };
const done = (name) => (err, ctx) => {
  if (err) errors.push(`${name}: ${err}`);
  else delivered += 1;
};

const identify = { userId, traits: { email, name: 'Ada Node', plan: 'silver' }, context: { consent } };
analytics.identify(identify, done('identify'));
sent.messages.push({ type: 'identify' });
for (const [i, total] of [[1, 19.5], [2, 7.25]]) {
  analytics.track(
    { userId, event: 'Order Completed', properties: { order_id: `node-${i}`, total }, context: { consent } },
    done(`track ${i}`),
  );
  sent.messages.push({ type: 'track', order_id: `node-${i}` });
}

await analytics.closeAndFlush({ timeout: 20000 });
sent.delivered = delivered;
sent.errors = errors;
console.log(JSON.stringify(sent));
process.exit(errors.length ? 1 : 0);
