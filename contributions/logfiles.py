"""A pull request never carries the transparency log's files (issue 13).

The log (``trust.log``: C2SP tlog-tiles) lives in its operator's state directory and is
published by peers; entries go in when the operator runs ``commonforge log append`` after a merge.
Nothing of it belongs in git: a checkpoint, hash tile or entry bundle committed to the forge
would be a second, unverified copy of the log that a reader might take for the real one, and a
committed note signing key would let anyone sign checkpoints as the log or a witness. So
``commonforge check`` marks every added or changed path that is one of these as kind
``log-file``, and the ``log files`` check (:data:`contributions.check.KIND_CHECKS`) fails it with
a problem saying what it is:

=====================  ====================================================================
what                   how it is recognised (anywhere in the tree, whatever the file's name)
=====================  ====================================================================
hash tile              a path ending ``tile/<L>/<N>[.p/<W>]`` in tlog-tiles shape (``tile/0/000``,
                       ``tile/1/x001/234.p/5``); by path alone, as the log writes them
entry bundle           a path ending ``tile/entries/<N>[.p/<W>]``
checkpoint             content whose first three lines are an origin, a decimal tree size and a
                       base64 32-byte root hash (signed or not, CRLF or not)
signed note            a file named ``checkpoint`` whose content is a signed note (a text, a
                       blank line, ``— name base64`` signature lines)
log state              a JSON object whose ``format`` is ``commonforge-log-state/<n>``
note signing key       ``PRIVATE+KEY+<name>+<8 hex>+<base64 of a type byte and a 32-byte seed>``
                       anywhere in a file (except the signed-note spec's published example key)
=====================  ====================================================================

Recognised by content, not by name: ``docs/checkpointing.md`` is an ordinary document, and a
file called ``checkpoint`` that holds something else (a training step, a model's weights) is
classified as its place in the tree says. A document that *shows* a checkpoint in a code block
or the state format in prose is not a log file either (only a whole file in those shapes is);
a complete signing key is refused wherever it appears, since publishing one is the harm.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable

from contributions.diff import Change
from contributions.report import CheckInput, CheckResult, Problem

KIND = "log-file"
CHECK = "log files"
STATE_FORMAT_PREFIX = "commonforge-log-state/"  # trust.log.client.STATE_FORMAT is version 1 of it
MAX_SCAN = 64 * 1024 * 1024  # bytes of one file scanned for a signing key (a corpus file is far smaller)

# tlog-tiles: tile/<L>/<N>[.p/<W>], <N> in 3-digit groups all but the last prefixed x; L a level or "entries".
_TILE = re.compile(r"(?:^|/)tile/(?P<level>entries|[0-9]{1,2})/(?:x[0-9]{3}/)*[0-9]{3}(?:\.p/[0-9]{1,3})?$")
_SIZE = re.compile(r"^(?:0|[1-9][0-9]*)$")
_SIG_LINE = re.compile(r"^\u2014 \S+ [A-Za-z0-9+/]+=*$")
_NOTE_KEY = re.compile(rb"PRIVATE\+KEY\+(?P<name>[^\s+]+)\+(?P<hash>[0-9a-fA-F]{8})\+(?P<key>[A-Za-z0-9+/]{44})")
# Keys published in C2SP's signed-note specification as examples (public by definition; the project's
# own note tests use them as test vectors): name+hash.
PUBLISHED_EXAMPLE_KEYS = frozenset({"PeterNeumann+c74f20a3"})

OPERATED = ("the transparency log is operated, not merged: its files live in the log operator's state "
            "directory and are published by peers, never committed to git")
FIX = ("remove it from the pull request; once the change is merged, the log's operator runs "
       "`commonforge log append`, which appends, signs and publishes the log")
KEY_FIX = ("remove it from the pull request and from the branch's history, and treat the key as compromised: "
           "its owner makes a new one and the policy replaces the old (a log or witness key is kept by its "
           "operator, who signs with it in `commonforge log append` after a merge; it never goes in git)")


def _b64(text: str, size: int) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == size
    except (binascii.Error, ValueError):
        return False


def _checkpoint_body(lines: list[str]) -> bool:
    return (len(lines) >= 3 and bool(lines[0].strip()) and _SIZE.match(lines[1]) is not None
            and _b64(lines[2], 32))


def _signed_note(lines: list[str]) -> bool:
    """A text, one blank line, then nothing but ``— name base64`` lines (trailing empty lines allowed)."""
    while lines and not lines[-1]:
        lines = lines[:-1]
    if "" not in lines:
        return False
    cut = len(lines) - 1 - lines[::-1].index("")
    sigs = lines[cut + 1:]
    return cut > 0 and bool(sigs) and all(_SIG_LINE.match(s) for s in sigs)


def _note_key(data: bytes) -> str | None:
    for m in _NOTE_KEY.finditer(data):
        label = f"{m['name'].decode('ascii', 'replace')}+{m['hash'].decode().lower()}"
        if label not in PUBLISHED_EXAMPLE_KEYS and _b64(m["key"].decode(), 33):
            return label
    return None


def identify(path: str, data: bytes | None) -> str | None:
    """What log file ``path`` (repository-relative, POSIX) with content ``data`` is, or None.

    ``data`` None: the content is unknown (a symlink, a submodule); only the path is judged.
    """
    m = _TILE.search(path)
    if m:
        return "an entry bundle of the transparency log" if m["level"] == "entries" else (
            f"a hash tile (level {m['level']}) of the transparency log")
    if data is None:
        return None
    key = _note_key(data[:MAX_SCAN])
    if key is not None:
        return f"a note signing key (PRIVATE+KEY+{key}+...): a log's or witness's secret key"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None  # every other log file is text
    if text.lstrip().startswith("{") and STATE_FORMAT_PREFIX in text:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and str(doc.get("format", "")).startswith(STATE_FORMAT_PREFIX):
            return f"a log client's or operator's state file ({doc['format']})"
    lines = text.replace("\r\n", "\n").split("\n")
    if _checkpoint_body(lines):
        signed = " signed" if _signed_note(lines) else " (unsigned)"
        return f"a{signed} checkpoint of the transparency log (origin {lines[0].strip()!r}, tree size {lines[1]})"
    if path.rsplit("/", 1)[-1] == "checkpoint" and _signed_note(lines):
        return "a signed note in the log's checkpoint file"
    return None


def mark(changes: list[Change], read: Callable[[Change], bytes | None]) -> list[Change]:
    """``changes`` with every added or changed log file made a ``log-file`` change to check.

    ``read(change)``: the path's content in head (None when it has none to read: a symlink, a
    submodule). Deletions stay as classified: removing a log file that was committed is welcome.
    """
    out = []
    for c in changes:
        what = None if c.status == "deleted" else identify(c.path, read(c))
        out.append(c if what is None else Change(c.path, c.status, KIND, "check", f"{what}: {OPERATED}",
                                                  fix=KEY_FIX if what.startswith("a note signing key") else FIX))
    return out


def check_log_file(inp: CheckInput) -> CheckResult:
    """A log file in a pull request fails, always: the problem says what it is and who writes the log."""
    file = inp.root / inp.path
    data = file.read_bytes() if file.is_file() and not file.is_symlink() else None
    what = identify(inp.path, data) or "a file of the transparency log"
    fix = KEY_FIX if what.startswith("a note signing key") else FIX
    return CheckResult.failed(CHECK, f"{what.split(' (')[0].split(':')[0]} is in the pull request",
                              [Problem(f"is {what}; {OPERATED}", fix=fix, path=inp.path)], what=what)
