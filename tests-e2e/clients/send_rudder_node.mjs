// Sends identify and track calls to Kept with RudderStack's Node library, with its default
// options but for where to send (`dataPlaneUrl`). By default it gzips each batch, and its HTTP
// library labels the body `application/x-www-form-urlencoded`. Prints what it sent as JSON for
// the Python side to read back; exits non-zero on any error the library reports.
import Analytics from '@rudderstack/rudder-sdk-node';

const { KEPT_URL, KEPT_WRITE_KEY, RUN_ID } = process.env;
const client = new Analytics(KEPT_WRITE_KEY, { dataPlaneUrl: KEPT_URL, logLevel: 'error' });
const errors = [];
let delivered = 0;
const done = (name) => (err) => {
  if (err) errors.push(`${name}: ${err && (err.message || err)}`);
  else delivered += 1;
};

const userId = `rudder-node-${RUN_ID}`;
const email = `rudder-node-${RUN_ID}@example.com`;
const sent = { userId, email };
client.identify({ userId, traits: { email, name: 'Ada Rudder', plan: 'gold' } }, done('identify'));
for (const i of [1, 2]) {
  client.track(
    { userId, event: 'Order Completed', properties: { order_id: `rudder-node-${i}`, total: 10 * i } },
    done(`track ${i}`),
  );
}
try {
  await client.flush();
} catch (e) {
  errors.push(`flush: ${e && (e.message || e)}`);
}
sent.delivered = delivered;
sent.errors = errors;
console.log(JSON.stringify(sent));
process.exit(errors.length ? 1 : 0);
