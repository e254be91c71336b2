"""Runs the README's five-minute tour as written and checks what its comments promise.

The tour is the first `sh` block under "## A five-minute tour" in README.md. Every command in
it runs, in order, in one shell (so `PRIVACY=$(...)` carries over), in the folder the demo server
was started in. The only changes: `./target/release/kept` is this build's binary and port 7300
is the server's. Nothing else is rewritten, so a tour step that no longer works fails here.

What is checked comes from the README's own words where they say it:
- a command's exit status is 0, or the `exit N` its trailing comment names (a pipeline's is
  its first failing command's, as under `set -o pipefail`);
- a trailing comment that promises `file:line:column` gets a finding with one;
- every reason code a step's comment names in backticks (`denied.not_promised`) appears in the
  answer of each of the step's commands that has no comment of its own (and a step has one);
- every HTTP request the tour makes is answered without an error (curl is wrapped to report
  each status), and no JSON answer is an error body.
What the tour shows but does not spell in a checkable form is checked against the product
(below, `SHOWN`): the ledger verification passes, the consent comes back with its place in the
chain, the decision carries that very record as evidence and has obligations, the record of
uses holds the send, the receipt verifies, the new key is listed. Each of those must be shown
by some command of the tour: dropping one from the README fails the suite. Nor may the tour
build again (`cargo run`, a debug binary): its introduction builds the release binary once.

Prints a line per command to standard error and `tour: N passed, M failed` last.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

HEADING = "## A five-minute tour"
RELEASE_BIN = "./target/release/kept"
PORT = "7300"
REASON_CODE = re.compile(r"`((?:allowed|denied)\.[a-z_]+)`")
EXIT_STATUS = re.compile(r"\bexits? (\d+)\b")
FILE_LINE_COLUMN = re.compile(r"[\w./-]+:\d+:\d+")
HTTP_STATUS = re.compile(r"^tour-http-status (\d{3})$", re.M)


@dataclass
class Command:
    """One command of the tour, as the README spells it."""

    number: int
    line: int  # in README.md, for the failure message
    text: str
    step: int  # which step (a comment and the commands below it) it belongs to
    comment: str  # the step's comment lines above it
    trailing: str  # the comment at the end of its own line, if any
    # Filled in by the run.
    status: int = -1
    stdout: str = ""
    stderr: str = ""
    http: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    def fail(self, message):
        self.failures.append(message)

    def json(self):
        """The answer as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None


def tour_block(readme):
    """The tour's introduction, and the lines and first line number of its shell block."""
    lines = readme.splitlines()
    try:
        start = lines.index(HEADING)
    except ValueError:
        raise SystemExit(f"README.md has no `{HEADING}` section")
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("## "):
            break
        if lines[i].strip() == "```sh":
            end = lines.index("```", i + 1)
            return "\n".join(lines[start:i]), lines[i + 1 : end], i + 2
    raise SystemExit("the tour has no ```sh block")


def balanced(text):
    """Whether `text` is whole shell words (no open quote, no line continuation)."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def trailing_comment(line):
    """The `# ...` ending a command's last line, outside quotes, or ""."""
    for match in re.finditer(r"\s+#\s?(.*)$", line):
        if balanced(line[: match.start()]):
            return match.group(1).strip()
    return ""


def parse(lines, first_line):
    """Splits the block into commands, each with the comment of its step."""
    commands = []
    comment = []
    after_command = False
    pending = []
    step = 0
    for offset, line in enumerate(lines):
        if pending:
            pending.append(line)
            if balanced("\n".join(pending)):
                commands.append(make(commands, pending, start_line, step, comment))
                pending = []
            continue
        stripped = line.strip()
        if not stripped:
            comment, after_command = [], False
            step += 1
        elif stripped.startswith("#"):
            if after_command or not comment:  # a comment after commands begins the next step
                comment, after_command = [], False
                step += 1
            comment.append(stripped.lstrip("#").strip())
        else:
            after_command = True
            pending, start_line = [line], first_line + offset
            if balanced(line):
                commands.append(make(commands, pending, start_line, step, comment))
                pending = []
    if pending:
        raise SystemExit(f"README.md:{start_line}: the command never ends (an open quote?)")
    return commands


def make(commands, lines, line, step, comment):
    return Command(
        number=len(commands) + 1,
        line=line,
        step=step,
        text="\n".join(lines),
        comment=" ".join(comment),
        trailing=trailing_comment(lines[-1]),
    )


def localise(text, url, kept):
    """The command as it runs here: this build's binary, the server's address."""
    if "cargo run" in text or "cargo build" in text or "target/debug" in text:
        raise ValueError("builds again inside the tour: use the binary built once")
    server = re.compile(r"\b(?:127\.0\.0\.1|localhost):" + PORT + r"\b")
    if PORT in server.sub("", text):
        raise ValueError(f"names port {PORT} in a form the suite does not know")
    text = text.replace(RELEASE_BIN, shlex.quote(kept))
    return server.sub(url.removeprefix("http://"), text)


def script(commands, url, kept, outdir):
    """One bash script running every command in turn, each one's output kept apart."""
    parts = [
        "set -o pipefail",
        # Every request's status on standard error, one line each, for the check below.
        "curl() { command curl -w '%{stderr}tour-http-status %{http_code}\\n' \"$@\"; }",
    ]
    for c in commands:
        try:
            text = localise(c.text, url, kept)
        except ValueError as e:
            c.fail(str(e))
            text = "false"
        out = os.path.join(outdir, str(c.number))
        parts.append(f"{{ {text}\n}} >{out}.out 2>{out}.err </dev/null; echo $? >{out}.rc")
    return "\n".join(parts) + "\n"


def run(commands, url, kept, workdir):
    outdir = os.path.join(workdir, ".tour")
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "tour.sh")
    with open(path, "w", encoding="utf-8") as f:
        f.write(script(commands, url, kept, outdir))
    subprocess.run(["bash", path], cwd=workdir, check=False, timeout=540)
    for c in commands:
        base = os.path.join(outdir, str(c.number))
        with open(base + ".rc", encoding="utf-8") as f:
            c.status = int(f.read().strip())
        with open(base + ".out", encoding="utf-8", errors="replace") as f:
            c.stdout = f.read()
        with open(base + ".err", encoding="utf-8", errors="replace") as f:
            err = f.read()
        c.http = [int(s) for s in HTTP_STATUS.findall(err)]
        c.stderr = HTTP_STATUS.sub("", err).strip()


# --- what the README says, checked --------------------------------------------------------


def check_words(commands):
    for c in commands:
        said = EXIT_STATUS.search(c.trailing)
        want = int(said.group(1)) if said else 0
        if c.status != want:
            c.fail(f"exit status {c.status}, the tour says {want}")
        if "file:line:column" in c.trailing and not FILE_LINE_COLUMN.search(c.stdout + c.stderr):
            c.fail("no finding with file:line:column")
        bad = [s for s in c.http if s == 0 or s >= 400]
        if bad:
            c.fail(f"HTTP status {bad}")
        answer = c.json()
        if isinstance(answer, dict) and "error" in answer:
            c.fail(f"error answer {json.dumps(answer['error'])}")
        if not c.trailing:
            for code in REASON_CODE.findall(c.comment):
                if code not in c.stdout:
                    c.fail(f"the step names `{code}`, the answer does not")
    # A reason code a step names must be checked somewhere: by a command without a comment of
    # its own.
    for step in sorted({c.step for c in commands}):
        in_step = [c for c in commands if c.step == step]
        if REASON_CODE.search(in_step[0].comment) and all(c.trailing for c in in_step):
            in_step[0].fail("the step names a reason code, but every command has its own comment")


# --- what the tour shows, checked against the product ---------------------------------------


class Shown:
    """Facts one command's answer gives a later check (the consent's place in the chain)."""

    consent_seq = None


def shows_consent(c, shown):
    entries = (c.json() or {}).get("entries") or [{}]
    seq, chain_hash = entries[0].get("seq"), entries[0].get("hash")
    if not isinstance(seq, int) or seq < 1:
        return c.fail(f"the consent has no place in the chain: {c.stdout[:200]!r}")
    if not (isinstance(chain_hash, str) and re.fullmatch(r"[0-9a-f]{64}", chain_hash)):
        c.fail(f"the consent has no chain hash: {chain_hash!r}")
    shown.consent_seq = seq


def shows_decision(c, shown):
    answer = c.json() or {}
    if answer.get("allowed") is not True:
        c.fail(f"not allowed: {answer.get('reason')}")
    evidence = answer.get("evidence") or []
    kinds = {e.get("kind") for e in evidence}
    if not {"provenance", "ledger"} <= kinds:
        c.fail(f"evidence lacks the collection point or the ledger record: {evidence}")
    ledger = [e.get("seq") for e in evidence if e.get("kind") == "ledger"]
    if shown.consent_seq is not None and shown.consent_seq not in ledger:
        c.fail(f"evidence names ledger records {ledger}, not the consent just committed")
    if not answer.get("obligations"):
        c.fail("no obligations")


def shows_audience(c, _shown):
    answer = c.json() or {}
    excluded = {row.get("reason"): row.get("count", 0) for row in answer.get("excluded", [])}
    if not excluded.get("denied.not_promised"):
        c.fail(f"nobody excluded as not promised: {excluded}")
    if not answer.get("eligible"):
        c.fail("nobody eligible")


def shows_verification(c, _shown):
    if not c.stdout.startswith("ok:"):
        c.fail(f"the ledger did not verify: {c.stdout[:200]!r}")


def shows_uses(c, _shown):
    uses = (c.json() or {}).get("uses") or []
    if not any(u.get("kind") == "contact" for u in uses):
        c.fail("the record of uses does not hold the send")


def shows_receipt(c, _shown):
    if not c.stdout.startswith("receipt valid"):
        c.fail(f"the receipt did not verify: {(c.stdout + c.stderr)[:200]!r}")


def shows_key(c, _shown):
    if "campaign tool" not in c.stdout:
        c.fail("the key created above is not listed")


# What the tour must show, how a command showing it is recognised, and its check; in tour order.
SHOWN = [
    ("the ledger verified", r"ledger verify --witness", shows_verification),
    ("a consent recorded", r"/v1/consents\b", shows_consent),
    ("a decision", r"/v1/decisions\b", shows_decision),
    ("a campaign dry run", r"/v1/audiences/evaluate\b", shows_audience),
    ("the record of uses", r"/v1/uses\b", shows_uses),
    ("a receipt verified", r"ledger verify-receipt\b", shows_receipt),
    ("the keys listed", r"keys list\b", shows_key),
]


def check_shown(commands):
    shown = Shown()
    missing = []
    for what, pattern, check in SHOWN:
        matching = [c for c in commands if re.search(pattern, c.text)]
        if not matching:
            missing.append(what)
        for c in matching:
            check(c, shown)
    return missing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", required=True)
    parser.add_argument("--url", required=True, help="the demo server, http://127.0.0.1:PORT")
    parser.add_argument("--kept", required=True, help="the kept binary to run")
    parser.add_argument("--dir", required=True, help="the folder the server was started in")
    args = parser.parse_args()

    with open(args.readme, encoding="utf-8") as f:
        intro, lines, first_line = tour_block(f.read())
    commands = parse(lines, first_line)
    run(commands, args.url, args.kept, args.dir)
    check_words(commands)
    problems = [f"the tour no longer shows {what}" for what in check_shown(commands)]
    # The one build: the introduction starts the server with the release binary the commands use.
    if "cargo run --release -- serve --demo" not in intro and "cargo build --release" not in intro:
        problems.append(f"the introduction does not build {RELEASE_BIN}, which the tour runs")

    passed = failed = 0
    for c in commands:
        head = c.text.splitlines()[0]
        if c.failures:
            failed += 1
            print(f"FAIL README.md:{c.line}: {head}", file=sys.stderr)
            for failure in c.failures:
                print(f"     {failure}", file=sys.stderr)
            print(f"     stdout: {c.stdout[-600:]!r}", file=sys.stderr)
            print(f"     stderr: {c.stderr[-600:]!r}", file=sys.stderr)
        else:
            passed += 1
            print(f"ok   README.md:{c.line}: {head}", file=sys.stderr)
    for problem in problems:
        failed += 1
        print(f"FAIL {problem}", file=sys.stderr)
    print(f"tour: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
