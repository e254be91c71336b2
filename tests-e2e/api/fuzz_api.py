"""Schemathesis against a running Kept, once per role's key.

Reads the served `/openapi.json`, finds for each role the operations its key may call (by asking
each once: the server's own answer, `auth.forbidden` or not, decides, so a role the document and
the server disagree on shows up as a failure elsewhere), and runs `st run` on a copy of the
document holding just those operations. Public and server keys are write keys: they go as HTTP
Basic with the key as user name, as the Segment and RudderStack libraries send them; the others
as a bearer token.

Positive data acceptance: a request the schema allows must not be refused with 400 or 422. For
the operations below, a 422 is still allowed, because what makes such a request valid is not
something a JSON schema can state: names the deployment's manifest declares (purposes, notices,
collection points, topics), or rules across fields and parameters ("exactly one identifier").
A 400 (a body Kept cannot read) is a failure everywhere but on the Segment-compatible collection
calls, where the check is off: one message schema serves six calls whose required fields differ
(`event` for a track, `groupId` for a group, `userId` or `anonymousId`, ...), and an unusable
message is a 400 there as Segment answers it.

Negative data rejection: a request the schema refuses must be refused; a 413 (the body is larger
than the server takes, as a list over its `maxItems` can be) is a refusal too.

One worker: Python 3.11 fails in `ast.parse` (used by Hypothesis to describe a strategy) when two
threads build deep strategies at once ("AST constructor recursion depth mismatch").

Prints one summary line last: `api: N passed, M failed`, one per role.
"""

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

URL = os.environ["KEPT_URL"]
with open(os.environ["KEPT_KEYS_FILE"], encoding="utf-8") as f:
    KEYS = json.load(f)
REPORTS = os.environ.get("API_REPORTS", tempfile.mkdtemp())
ROLES = ["public", "server", "decide", "privacy", "admin"]
WRITE_ROLES = {"public", "server"}
ST = os.path.join(os.path.dirname(sys.executable), "st")
MAX_EXAMPLES = int(os.environ.get("KEPT_API_MAX_EXAMPLES", "40"))
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
]

# Operations whose valid requests depend on the manifest or on rules across fields: a 422 for a
# schema-valid request is a refusal the schema cannot foresee, not a disagreement (see above).
MANIFEST_OR_CROSS_FIELD = [
    ("POST", "/v1/consents"),  # notices and purposes of the manifest
    ("POST", "/v1/decisions"),  # purposes, topics; exactly one identifier per subject
    ("POST", "/v1/contacts"),  # purposes, topics; one contact or `contacts`
    ("POST", "/v1/audiences/evaluate"),  # purposes, categories, topics
    ("POST", "/v1/audiences/export"),
    ("GET", "/v1/subjects/{id}/profile"),  # purposes
    ("GET", "/v1/subjects/lookup"),  # exactly one identifier
    ("PUT", "/v1/keys/{id}/collection-point"),  # collection points
    ("PUT", "/v1/subjects/{id}/preferences"),  # purposes and topics
    ("GET", "/v1/decision-log"),  # purposes
    ("GET", "/v1/uses"),  # purposes
    ("POST", "/v1/requests"),  # exactly one identifier, of a known subject; verification's needs
    ("POST", "/v1/requests/{id}/advance"),  # the request's state; verification's needs
    ("POST", "/v1/requests/{id}/extend"),  # the rule's extension; a non-blank reason
    ("GET", "/v1/requests/{id}/export"),  # a language the pages speak
    ("GET", "/exports/{token}"),  # a format and language the pages speak
    ("POST", "/v1/requests/{id}/tasks/{target}/handled"),  # a target's shape; a non-blank note
    ("POST", "/v1/requests/{id}/systems/{system}/ack"),  # a non-blank token
    ("POST", "/v1/requests/{id}/reject"),  # a non-blank reason
]

# Segment's calls (see above).
COLLECTION_CALLS = ["identify", "track", "page", "screen", "group", "alias", "batch"]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def auth_header(role):
    key = KEYS[role]
    if role in WRITE_ROLES:
        return "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    return f"Bearer {key}"


def fetch_document():
    with urllib.request.urlopen(URL + "/openapi.json", timeout=10) as r:
        return json.load(r)


def probe_path(path):
    """A concrete path for a template, with ids that exist in the demo."""
    return (
        path.replace("/v1/keys/{id}", "/v1/keys/kept_00000000")
        .replace("{id}", "1")
    )


def forbidden(role, method, path):
    """Whether the server refuses this role on this operation (`auth.forbidden`)."""
    request = urllib.request.Request(
        URL + probe_path(path),
        method=method.upper(),
        headers={"Authorization": auth_header(role), "Content-Type": "application/json"},
        data=b"{}" if method.upper() in ("POST", "PUT", "PATCH") else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            r.read()
            return False
    except urllib.error.HTTPError as e:
        body = e.read()
        if e.code != 403:
            return False
        try:
            return json.loads(body)["error"]["code"] == "auth.forbidden"
        except (ValueError, KeyError, TypeError):
            return False


def document_for(role, document):
    """The document with only the operations `role` may call, and how many there are."""
    doc = json.loads(json.dumps(document))
    count = 0
    for path, item in list(doc["paths"].items()):
        for method in list(item):
            operation = item[method]
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            # Operations that take no key are the same for every role: the admin run has them.
            keyless = not operation.get("security")
            if (keyless and role != "admin") or forbidden(role, method, path):
                del item[method]
            else:
                count += 1
        if not any(isinstance(v, dict) and "responses" in v for v in item.values()):
            del doc["paths"][path]
    return doc, count


def config_text():
    lines = ["[checks]", "enabled = false", ""]
    for check in CHECKS:
        lines += [f"[checks.{check}]", "enabled = true"]
        if check == "positive_data_acceptance":
            # 409 and 410: the answer depends on the request's state (closed, rejected, erased).
            lines.append('expected-statuses = ["2xx", "401", "403", "404", "409", "410", "413", "429"]')
        if check == "negative_data_rejection":
            lines.append(
                'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", '
                '"414", "415", "422", "428", "429"]'
            )
        lines.append("")
    for call in COLLECTION_CALLS:
        lines += [
            "[[operations]]",
            f'include-name = "POST /v1/{call}"',
            "[operations.checks.positive_data_acceptance]",
            "enabled = false",
            "",
        ]
    for method, path in MANIFEST_OR_CROSS_FIELD:
        lines += [
            "[[operations]]",
            f'include-name = "{method} {path}"',
            "[operations.checks.positive_data_acceptance]",
            'expected-statuses = ["2xx", "401", "403", "404", "409", "410", "413", "422", "429"]',
            "",
        ]
    return "\n".join(lines)


def run_role(role, document, workdir):
    doc, operations = document_for(role, document)
    schema = os.path.join(workdir, f"openapi-{role}.json")
    with open(schema, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    config = os.path.join(workdir, "schemathesis.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(config_text())
    command = [
        ST,
        "--config-file",
        config,
        "run",
        schema,
        "--url",
        URL,
        "-H",
        f"Authorization: {auth_header(role)}",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        os.path.join(REPORTS, f"{role}.xml"),
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    with open(os.path.join(REPORTS, f"{role}.txt"), "w", encoding="utf-8") as f:
        f.write(output)
    generated = re.search(r"(\d+) generated", output)
    failures = re.search(r"found (\d+) unique failures?", output)
    errors = re.search(r"(\d+) errors?\b", output.splitlines()[-1] if output else "")
    figures = {
        "role": role,
        "operations": operations,
        "generated": int(generated.group(1)) if generated else 0,
        "failures": int(failures.group(1)) if failures else 0,
        "errors": int(errors.group(1)) if errors else 0,
        "seconds": round(seconds, 1),
        "exit": result.returncode,
    }
    ok = result.returncode == 0
    if not ok:
        log(output[-20000:])
    log(
        f"{role}: {figures['operations']} operations, {figures['generated']} examples, "
        f"{figures['failures']} failures, {figures['errors']} errors, {figures['seconds']} s"
        f"{'' if ok else ' (st exit ' + str(result.returncode) + ')'}"
    )
    return ok, figures


def main():
    document = fetch_document()
    passed = failed = 0
    all_figures = []
    with tempfile.TemporaryDirectory() as workdir:
        for role in ROLES:
            ok, figures = run_role(role, document, workdir)
            all_figures.append(figures)
            if ok:
                passed += 1
            else:
                failed += 1
    with open(os.path.join(REPORTS, "figures.json"), "w", encoding="utf-8") as f:
        json.dump(all_figures, f, indent=2)
    print(f"api: {passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
