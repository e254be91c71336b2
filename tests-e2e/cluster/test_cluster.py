"""Two Kept servers on one PostgreSQL database behave as one.

Each check writes through one server and reads through the other, waiting at most ten seconds
for the other to hear of the write. Prints one summary line last.
"""

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

FIRST = os.environ["FIRST_URL"]
SECOND = os.environ["SECOND_URL"]
with open(os.environ["KEPT_KEYS_FILE"], encoding="utf-8") as f:
    KEYS = json.load(f)
RUN = uuid.uuid4().hex[:10]
NEWSLETTER = {
    "purpose": "marketing.communications",
    "channel": "email",
    "topic": "newsletter",
}


def call(base, method, path, key, body=None, basic=False):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if basic:
        token = base64.b64encode(f"{key}:".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    else:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def decide(base, subject):
    status, answer = call(
        base, "POST", "/v1/decisions", KEYS["decide"], {"subject": subject, **NEWSLETTER}
    )
    assert status == 200, (status, answer)
    return answer["reason"]


def eventually(base, subject, want):
    last = None
    for _ in range(200):
        last = decide(base, subject)
        if last == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"{base} still answers {last} for {subject}, not {want}")


def append(base, subject_id, action, method):
    """Records a newsletter consent change through one server's consent API."""
    record = {
        "subject": subject_id,
        "action": action,
        "notice": "newsletter",
        "method": method,
        "source": "api",
        "evidence": {"reference": f"cluster-{RUN}"},
        **NEWSLETTER,
    }
    status, answer = call(base, "POST", "/v1/consents", KEYS["privacy"], {"records": [record]})
    assert status == 201, (status, answer)


def withdrawal_through_one_reaches_the_other():
    status, audience = call(
        SECOND,
        "POST",
        "/v1/audiences/evaluate",
        KEYS["decide"],
        {**NEWSLETTER, "sample_size": 1},
    )
    assert status == 200, (status, audience)
    assert audience["eligible"] > 0, audience
    subject = {"id": audience["sample"][0]["id"]}
    assert decide(FIRST, subject).startswith("allowed."), decide(FIRST, subject)
    append(FIRST, subject["id"], "withdrawn", "web_form")
    assert decide(FIRST, subject) == "denied.unsubscribed"
    eventually(SECOND, subject, "denied.unsubscribed")


def a_person_first_seen_by_one_is_known_to_the_other():
    user = f"cluster-{RUN}"
    subject = {"user_id": user}
    assert decide(SECOND, subject) == "denied.unknown_subject"
    event = {
        "userId": user,
        "traits": {"email": f"{user}@example.com"},
        "context": {
            "location": {"country": "DE"},
            "kept": {"collection_point": "newsletter_signup"},
        },
    }
    status, answer = call(FIRST, "POST", "/v1/identify", KEYS["server"], event, basic=True)
    assert status == 200, (status, answer)
    eventually(SECOND, subject, "denied.no_consent")
    # ...and a consent given through the second server counts on the first.
    status, found = call(
        SECOND, "GET", f"/v1/subjects/lookup?user_id={user}", KEYS["privacy"]
    )
    assert status == 200, (status, found)
    append(SECOND, found["subject"], "given", "double_opt_in")
    eventually(FIRST, subject, "allowed.consent")


def main():
    tests = [withdrawal_through_one_reaches_the_other, a_person_first_seen_by_one_is_known_to_the_other]
    passed = failed = 0
    for test in tests:
        try:
            test()
            passed += 1
            print(f"ok   {test.__name__}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            failed += 1
            print(f"FAIL {test.__name__}: {e!r}", file=sys.stderr)
    print(f"cluster: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
