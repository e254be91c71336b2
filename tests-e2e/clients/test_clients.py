"""Real client libraries against a running Kept: Segment's Python and Node libraries with their
`host` set to Kept, RudderStack's Python and Node libraries (gzip bodies; the Node one with its
default options), and plain HTTP for the edges.
Each test sends, then reads the profile and the events back through Kept's own API (subject
lookup and events, role `privacy`).

Prints one summary line last: `clients: N passed, M failed`.
"""

import json
import os
import subprocess
import sys
import time
import traceback
import uuid

import requests
import rudderstack.analytics.request as rudder_request
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics import Client as SegmentClient

URL = os.environ["KEPT_URL"]
with open(os.environ["KEPT_KEYS_FILE"], encoding="utf-8") as f:
    KEYS = json.load(f)
WRITE_KEY = KEYS["server"]
PRIVACY_KEY = KEYS["privacy"]
ADMIN_KEY = KEYS["admin"]
RUN = uuid.uuid4().hex[:10]
HERE = os.path.dirname(os.path.abspath(__file__))


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --- reading back through Kept's API ----------------------------------------------------------


def privacy_get(path, **params):
    return requests.get(
        URL + path,
        params=params,
        headers={"Authorization": f"Bearer {PRIVACY_KEY}"},
        timeout=10,
    )


def lookup(**identifier):
    r = privacy_get("/v1/subjects/lookup", **identifier)
    assert r.status_code == 200, f"lookup {identifier}: {r.status_code} {r.text}"
    return r.json()


def events_of(subject):
    out, after = [], None
    for _ in range(100):
        params = {"limit": 1000}
        if after is not None:
            params["after"] = after
        r = privacy_get(f"/v1/subjects/{subject}/events", **params)
        assert r.status_code == 200, f"events of {subject}: {r.status_code} {r.text}"
        page = r.json()
        out.extend(page["events"])
        after = page.get("next_after")
        if after is None:
            return out
    raise AssertionError("too many event pages")


def identifier(profile, kind):
    return [i["value"] for i in profile["identifiers"] if i["kind"] == kind]


def trait(profile, key):
    found = [t for t in profile["traits"] if t["key"] == key]
    assert found, f"no trait `{key}` in {[t['key'] for t in profile['traits']]}"
    return found[0]


def by_type(events, kind):
    return [e for e in events if e["type"] == kind]


class Errors:
    """Collects what a client library reports through its error callback, in `seen`. Not a
    list: the libraries call `on_error` only `if self.on_error:`, and an empty list is false."""

    def __init__(self):
        self.seen = []

    def __call__(self, error, *rest):
        self.seen.append(error)


def counting_posts(module):
    """Counts the requests a library's `request` module makes; undo with the returned function."""
    sent = []
    post = module._session.post

    def recording(url, **kwargs):
        response = post(url, **kwargs)
        sent.append(response.status_code)
        return response

    module._session.post = recording

    def undo():
        module._session.post = post

    return sent, undo


BAD_KEY = "kept_00000000_" + "0" * 64


# --- the tests -------------------------------------------------------------------------------


def test_segment_python_batches_identify_track_and_page():
    errors = Errors()
    client = SegmentClient(WRITE_KEY, host=URL, on_error=errors, max_retries=1, gzip=False)
    user = f"seg-py-{RUN}"
    email = f"Seg.Py.{RUN}@Example.com"
    consent = {"consent": {"categoryPreferences": {"marketing.communications": True}}}
    client.identify(
        user,
        {"email": email, "name": "Ada Py", "plan": "gold"},
        context=consent,
        message_id=f"seg-py-identify-{RUN}",
    )
    client.track(
        user,
        "Order Completed",
        {"order_id": "py-1", "total": 42.5},
        context=consent,
        message_id=f"seg-py-track-{RUN}",
    )
    client.page(user, name="Checkout", properties={"path": "/checkout"}, message_id=f"seg-py-page-{RUN}")
    client.flush()
    client.join()
    assert not errors.seen, errors.seen

    profile = lookup(user_id=user)
    assert profile["user_id"] == user
    # Emails are normalised (lower case) before they are hashed and stored.
    assert identifier(profile, "email") == [email.lower()], profile["identifiers"]
    assert trait(profile, "plan")["value"] == "gold"
    assert trait(profile, "name")["provenance"]["source"], trait(profile, "name")

    events = events_of(profile["subject"])
    ids = {e["message_id"] for e in events}
    assert {f"seg-py-identify-{RUN}", f"seg-py-track-{RUN}", f"seg-py-page-{RUN}"} <= ids, ids
    (track,) = [e for e in events if e["message_id"] == f"seg-py-track-{RUN}"]
    assert track["type"] == "track" and track["name"] == "Order Completed", track
    assert track["properties"]["total"] == 42.5
    assert track["consent"]["categories"] == {"marketing.communications": True}, track["consent"]
    (page,) = by_type(events, "page")
    assert page["name"] == "Checkout", page


def test_segment_python_merges_anonymous_browsing_on_identify():
    errors = Errors()
    client = SegmentClient(WRITE_KEY, host=URL, on_error=errors, max_retries=1, sync_mode=True)
    anon = f"anon-{RUN}"
    user = f"seg-merge-{RUN}"
    client.track(anonymous_id=anon, event="Product Viewed", properties={"sku": "LG-1"})
    client.track(anonymous_id=anon, event="Product Viewed", properties={"sku": "LG-2"})
    client.identify(user, {"email": f"merge-{RUN}@example.com"}, anonymous_id=anon)
    assert not errors.seen, errors.seen

    profile = lookup(user_id=user)
    assert profile["subject"] == lookup(anonymous_id=anon)["subject"]
    assert anon in identifier(profile, "anonymous_id"), profile["identifiers"]
    viewed = [e for e in events_of(profile["subject"]) if e["name"] == "Product Viewed"]
    assert sorted(e["properties"]["sku"] for e in viewed) == ["LG-1", "LG-2"], viewed


def test_rudderstack_python_sends_gzip_bodies():
    sent = []
    post = rudder_request._session.post

    def recording(url, **kwargs):
        response = post(url, **kwargs)
        sent.append((url, kwargs.get("headers", {}), response.status_code))
        return response

    rudder_request._session.post = recording
    try:
        errors = Errors()
        client = RudderClient(WRITE_KEY, host=URL, gzip=True, on_error=errors, max_retries=1)
        user = f"rudder-{RUN}"
        client.identify(user, {"email": f"rudder-{RUN}@example.com", "plan": "bronze"})
        for i in range(3):
            client.track(user, "Order Completed", {"order_id": f"rs-{i}", "total": 10 + i})
        client.flush()
        client.join()
        assert not errors.seen, errors.seen
    finally:
        rudder_request._session.post = post

    assert sent, "the library sent nothing"
    for url, headers, status in sent:
        assert url == URL + "/v1/batch", url
        assert headers.get("Content-Encoding") == "gzip", headers
        assert status == 200, status
    profile = lookup(user_id=f"rudder-{RUN}")
    assert trait(profile, "plan")["value"] == "bronze"
    orders = [e for e in events_of(profile["subject"]) if e["name"] == "Order Completed"]
    assert sorted(e["properties"]["order_id"] for e in orders) == ["rs-0", "rs-1", "rs-2"], orders


def test_segment_node_sends_identify_and_track():
    env = dict(os.environ, KEPT_WRITE_KEY=WRITE_KEY, RUN_ID=RUN)
    done = subprocess.run(
        ["node", os.path.join(HERE, "send_node.mjs")],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"node: {done.returncode} {done.stdout} {done.stderr}"
    sent = json.loads(done.stdout.strip().splitlines()[-1])
    assert sent["delivered"] == 3, sent
    profile = lookup(user_id=sent["userId"])
    assert identifier(profile, "email") == [sent["email"]], profile["identifiers"]
    assert trait(profile, "plan")["value"] == "silver"
    events = events_of(profile["subject"])
    assert len(by_type(events, "identify")) == 1, events
    orders = sorted(e["properties"]["order_id"] for e in by_type(events, "track"))
    assert orders == ["node-1", "node-2"], orders
    lib = by_type(events, "track")[0]["context"].get("library", {})
    assert lib.get("name") == "@segment/analytics-node", lib


def test_rudderstack_node_with_default_options():
    """Its defaults gzip the batch and label it a form: refused with 415, it dropped every event."""
    env = dict(os.environ, KEPT_WRITE_KEY=WRITE_KEY, RUN_ID=RUN)
    done = subprocess.run(
        ["node", os.path.join(HERE, "send_rudder_node.mjs")],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"node: {done.returncode} {done.stdout} {done.stderr}"
    sent = json.loads(done.stdout.strip().splitlines()[-1])
    # The library may drop a refused batch without reporting it: what counts is what Kept holds.
    assert not sent["errors"], sent
    profile = lookup(user_id=sent["userId"])
    assert identifier(profile, "email") == [sent["email"]], profile["identifiers"]
    assert trait(profile, "plan")["value"] == "gold"
    events = events_of(profile["subject"])
    orders = sorted(e["properties"]["order_id"] for e in by_type(events, "track"))
    assert orders == ["rudder-node-1", "rudder-node-2"], orders
    lib = by_type(events, "track")[0]["context"].get("library", {})
    # What RudderStack's Node SDK calls itself (Segment's says `@segment/analytics-node`).
    assert lib.get("name") == "analytics-node", lib


def test_a_wrong_write_key_is_refused():
    bad = "kept_00000000_" + "0" * 64
    r = requests.post(URL + "/v1/track", auth=(bad, ""), json={"userId": "x", "event": "E"}, timeout=10)
    assert r.status_code == 401, (r.status_code, r.text)
    r = requests.post(URL + "/v1/track", json={"userId": "x", "event": "E"}, timeout=10)
    assert r.status_code == 401, (r.status_code, r.text)
    # The library hears about it too: in blocking mode as an exception carrying the status.
    client = SegmentClient(bad, host=URL, max_retries=0, sync_mode=True)
    try:
        client.track("x", "E")
    except Exception as e:  # noqa: BLE001 - the library's own error type
        assert getattr(e, "status", None) == 401, repr(e)
    else:
        raise AssertionError("the library was not told")


def test_a_retried_event_is_stored_once():
    user = f"retry-{RUN}"
    body = {"userId": user, "event": "Order Completed", "messageId": f"retry-{RUN}", "properties": {"n": 1}}
    for _ in range(2):
        r = requests.post(URL + "/v1/track", auth=(WRITE_KEY, ""), json=body, timeout=10)
        assert r.status_code == 200, (r.status_code, r.text)
    events = events_of(lookup(user_id=user)["subject"])
    assert [e["message_id"] for e in events] == [f"retry-{RUN}"], events


def test_a_bad_event_in_a_batch_is_named_not_swallowed():
    user = f"b-{RUN}"
    batch = {
        "batch": [
            {"type": "track", "userId": user, "event": "Fine", "messageId": f"b-fine-{RUN}"},
            {"type": "track", "userId": user, "messageId": f"b-bad-{RUN}"},
        ]
    }
    r = requests.post(URL + "/v1/batch", auth=(WRITE_KEY, ""), json=batch, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    answer = r.json()
    assert answer["accepted"] == 1, answer
    assert [(x["index"], x["path"], x["code"]) for x in answer["rejected"]] == [
        (1, "batch[1].event", "request.invalid_event")
    ], answer
    events = events_of(lookup(user_id=user)["subject"])
    assert [e["message_id"] for e in events] == [f"b-fine-{RUN}"], events


def test_python_libraries_report_a_wrong_write_key_with_kepts_code():
    """They read `code` and `message` at the top of an error body: without them RudderStack's
    library raised a `KeyError`, retried it, and Segment's reported the code `unknown`."""
    import segment.analytics.request as segment_request

    for name, module, make in [
        ("segment", segment_request, lambda on_error: SegmentClient(
            BAD_KEY, host=URL, on_error=on_error, max_retries=3, gzip=False)),
        ("rudderstack", rudder_request, lambda on_error: RudderClient(
            BAD_KEY, host=URL, on_error=on_error, max_retries=3, gzip=True)),
    ]:
        raised = Errors()
        sent, undo = counting_posts(module)
        try:
            client = make(raised)
            client.track(f"wrong-key-{RUN}", "Order Completed", {"order_id": "x"})
            client.flush()
            client.join()
        finally:
            undo()
        assert len(raised.seen) == 1, (name, raised.seen)
        error = raised.seen[0]
        assert type(error).__name__ == "APIError", (name, repr(error))
        assert error.status == 401, (name, repr(error))
        assert error.code == "auth.invalid_key", (name, repr(error))
        assert "not valid" in error.message, (name, repr(error))
        # A client error is not retried.
        assert sent == [401], (name, sent)


def test_a_real_client_batch_with_one_bad_message_lands_the_good_ones():
    raised = Errors()
    client = SegmentClient(WRITE_KEY, host=URL, on_error=raised, max_retries=1, gzip=False)
    user = f"partial-{RUN}"
    client.track(user, "Product Viewed", {"sku": "P-1"}, message_id=f"partial-1-{RUN}")
    client.track(
        user,
        "Product Viewed",
        {"sku": "P-2"},
        context={"consent": {"categoryPreferences": {"marketing.communications": "perhaps"}}},
        message_id=f"partial-2-{RUN}",
    )
    client.track(user, "Product Viewed", {"sku": "P-3"}, message_id=f"partial-3-{RUN}")
    client.flush()
    client.join()
    # The library saw a 200: nothing to report, and nothing it would drop.
    assert not raised.seen, raised.seen
    events = events_of(lookup(user_id=user)["subject"])
    assert sorted(e["message_id"] for e in events) == [f"partial-1-{RUN}", f"partial-3-{RUN}"], events
    # The bad one is in the quarantine, for the admin to see.
    r = requests.get(
        URL + "/v1/quarantine",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert r.status_code == 200, (r.status_code, r.text)
    held = [m for m in r.json()["messages"] if m["body"].get("messageId") == f"partial-2-{RUN}"]
    assert len(held) == 1, r.json()
    assert held[0]["code"] == "request.invalid_event", held
    assert held[0]["path"].endswith("context.consent.categoryPreferences.marketing.communications"), held
    assert "writeKey" not in held[0]["body"], held


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    passed = failed = 0
    started = time.monotonic()
    for test in TESTS:
        try:
            test()
            passed += 1
            log(f"ok   {test.__name__}")
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            log(f"FAIL {test.__name__}")
            log(traceback.format_exc())
    log(f"ran {passed + failed} tests in {time.monotonic() - started:.1f} s")
    print(f"clients: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
