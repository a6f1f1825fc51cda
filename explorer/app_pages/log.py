"""Log: the forge's transparency log as this machine's copy shows it, once that copy verified.

The copy is :func:`commonforge.settings.log_dir` (``COMMONFORGE_LOG``) and it is opened with
:func:`trust.log.forge.open_view` against the log the governance policy names: the log key's
signature, the policy's quorum of witness cosignatures, no rollback or fork against the checkpoint
this user accepted before (:func:`commonforge.settings.log_state`, which the open moves forward the
way ``commonforge status`` does), and every entry hashing to the signed root. Nothing is shown from
a copy that fails any of these: the reason is, in red, because a fork, a rollback or a forged
signature is an attack on everyone who reads the log.

Then: the checkpoint and who cosigned it, every entry (what it claims, who claims to have signed
it: whether it *counts* is the Model page's question), what the log says about one release
(``?release=``), and the inclusion proof of one entry (``?entry=``), shown only after it verified
against the accepted root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import streamlit as st

from commonforge import settings
from commonforge.errors import ForgeError
from explorer import ui
from trust import policy as trust_policy
from trust.log import forge as log_forge
from trust.log import monitor
from trust.log.client import ClientState
from trust.log.merkle import LogError

EVERY = "every entry"
POLICY = "policy changes"


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def governance(root: str, fingerprint: str) -> tuple[trust_policy.Policy | None, dict[str, tuple[str, str]]]:
    """The checkout's current policy and the names of every key any version lists (keyid -> name,
    affiliation), keyed by the checkout's fingerprint (which covers registry/governance)."""
    chain = trust_policy.load_chain(Path(root))
    # Read-only: a rolled-back chain is refused against this user's pins, but nothing is pinned here.
    trust_policy.user_pins().check(Path(root), list(chain.versions))
    names: dict[str, tuple[str, str]] = {}
    for version in chain.versions:  # later versions win: a renamed maintainer shows by the newest name
        names.update({m.keyid: (m.name, m.affiliation) for m in version.maintainers})
    return chain.current, names


@st.cache_data(ttl=600, max_entries=8, show_spinner=False)
def entry_rows(_view: log_forge.LogView, note_digest: str,
               names: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per entry, keyed by the checkpoint note's digest (the tree it signs) and the names."""
    rows = []
    for e in _view.entries:
        s = e.statement
        if s is None:
            rows.append({"index": e.index, "kind": "(not a statement)", "subject": e.error or "", "signer": "",
                         "signed_at": "", "sha256": e.digest[:16]})
            continue
        rows.append({"index": e.index, "kind": s.kind, "subject": s.subject_name, "signer": signer(s.keyid, names),
                     "signed_at": s.predicate.signed_at, "sha256": e.digest[:16]})
    return rows


def signer(keyid: str, names: Mapping[str, tuple[str, str]]) -> str:
    """Who claims to have signed: a maintainer's name and affiliation, else the keyid's first 16 digits."""
    if keyid in names:
        name, affiliation = names[keyid]
        return f"{name} ({affiliation})"
    return f"{keyid[:16]} (not in the policy)"


def witness_rows(view: log_forge.LogView) -> list[dict[str, str]]:
    """The verified cosignatures, named as the policy names their witnesses."""
    by_key = {(w.verifier().name, w.verifier().key_id): w for w in view.spec.witnesses}
    rows = []
    for c in view.opened.cosignatures:
        w = by_key.get((c.name, c.key_id))
        rows.append({"witness": w.name if w else c.name, "affiliation": w.affiliation if w else "(not in the policy)",
                     "key": c.name, "cosigned at (UTC)": datetime.fromtimestamp(c.timestamp, UTC).isoformat()})
    return rows


def subjects(view: log_forge.LogView) -> list[str]:
    """The releases (and datasets, recipes) the log holds statements about, in order of first entry."""
    found = dict.fromkeys(e.statement.subject_name for e in view.entries
                          if e.statement and e.statement.kind != "policy")
    return list(found)


# --- the page ---------------------------------------------------------------------------------

forge = ui.current_forge()
st.title("Transparency log")
source = settings.log_dir()

try:
    policy, names = governance(str(forge.root), forge.fingerprint())
except ForgeError as err:
    ui.show_problem(err, what="The governance policy of this checkout does not verify, so its log cannot be read.")
    st.stop()
if policy is None or policy.log is None:
    st.info("**The policy names no transparency log.** "
            + ("This checkout has only its bootstrap policy (version 0). " if policy is None else
               f"Governance policy {policy.version} has no `log:` section. ")
            + "Until a policy version names one (its origin, its key, its witnesses), statements count from the "
              "checkout alone and there is nothing to show here.")
    st.stop()

spec = policy.log
st.caption(f"Log `{spec.origin}` named by governance policy {policy.version}, read from `{source}`; "
           f"{spec.witnesses_required} of {len(spec.witnesses)} witness(es) must cosign.")

if not (source / "checkpoint").is_file():
    st.warning(f"**There is no copy of the log on this machine** (`{source / 'checkpoint'}` does not exist).")
    st.caption("Hint: point COMMONFORGE_LOG at a copy of the forge's log (the operator's directory or a mirror); "
               "the operator makes one with `commonforge log append`.")
    st.stop()

try:
    view = log_forge.open_view(spec, source, ClientState(settings.log_state()))
except (ForgeError, OSError, ValueError) as err:
    reason = err.message if isinstance(err, ForgeError) else f"{type(err).__name__}: {err}"
    st.error(f"**This copy of the log does not verify: do not trust it.** {reason}", icon=":material/gpp_bad:")
    st.markdown("This is serious. A copy that is a **fork** (two histories signed by the log's key), a "
                "**rollback** (an older tree than one you accepted), or that carries a **bad signature** or a "
                "rewritten entry is what an attacker shows to hide a revocation or slip in an approval. Nothing "
                "from it is shown, and releases read from it are not published. Fetch the log from another "
                "source and compare (`commonforge log monitor SOURCE...`); report a fork to the maintainers "
                "with both checkpoints.")
    if isinstance(err, ForgeError) and err.hint:
        st.caption(f"Hint: {err.hint}")
    st.stop()

cp = view.opened.checkpoint
st.success(f"Verified: signed by the log's key, cosigned by {len(view.opened.cosignatures)} of the "
           f"{spec.witnesses_required} witness(es) required, consistent with the checkpoint you accepted before, "
           "and every entry hashes to the signed root.", icon=":material/verified:")

st.header("Checkpoint", anchor=False)
cols = st.columns([2, 1, 5])
cols[0].metric("Origin", cp.origin)
cols[1].metric("Size", cp.size, help="entries in the tree this checkpoint signs")
with cols[2]:
    st.markdown("**Root hash**")
    st.code(cp.root_hash.hex(), language=None)
st.subheader("Cosignatures", anchor=False)
if view.opened.cosignatures:
    st.dataframe(witness_rows(view), hide_index=True)
else:
    st.info("No witness has cosigned this checkpoint (the policy requires none).")

st.header("Entries", anchor=False)
if not view.entries:
    st.info("The log is empty: the operator has appended nothing yet (`commonforge log append`).")
    st.stop()
rows = entry_rows(view, hashlib.sha256(view.note).hexdigest(), names)
about = subjects(view)
options = [EVERY, POLICY, *about]
asked = ui.query_param("release")
chosen = st.selectbox("Release", options, index=options.index(asked) if asked in options else 0,
                      help="the entries about one release (or dataset, recipe), or the policy signatures")
ui.keep_in_url("release", None if chosen == EVERY else chosen)
if asked and asked not in options:
    st.warning(f"**The log holds no statement about `{asked}`.** Whatever its checkout says, nothing about it "
               "is logged: a release whose approvals are not logged is not published.")

if chosen == EVERY:
    shown = rows
elif chosen == POLICY:
    shown = [r for r in rows if r["kind"] == "policy"]
else:
    shown = [r for r in rows if r["subject"] == chosen]
    st.subheader(f"What the log says about {chosen}", anchor=False)
    for line in monitor.describe_entries([(e.index, e.data) for e in view.about(chosen)], names):
        st.markdown(f"- {line}")
st.caption(f"{len(shown)} of {len(rows)} entries. The signer is who *claims* to have signed; whether a statement "
           "counts is decided under the policy (the Model page's Governance tab).")
st.dataframe(shown, hide_index=True)

st.header("Inclusion proof", anchor=False)
indices = [r["index"] for r in shown]
asked_entry = ui.query_param("entry")
start = int(asked_entry) if asked_entry and asked_entry.isdigit() and int(asked_entry) in indices else indices[0]
by_index = {r["index"]: r for r in rows}
index = st.selectbox("Entry", indices, index=indices.index(start),
                     format_func=lambda i: f"{i}: {by_index[i]['kind']} {by_index[i]['subject']}")
ui.keep_in_url("entry", str(index))
try:
    proof = view.prove(index)
except (ForgeError, OSError, ValueError) as err:
    reason = err.message if isinstance(err, ForgeError) else f"{type(err).__name__}: {err}"
    kind = "does not verify" if isinstance(err, LogError) else "cannot be read"
    st.error(f"**The inclusion proof of entry {index} {kind}: do not trust this copy.** {reason}",
             icon=":material/gpp_bad:")
    st.stop()
st.success(f"Entry {index} (sha256 of its bytes `{view.entries[index].digest}`) is in the tree of size {cp.size}: "
           f"its {len(proof)}-hash audit path leads to the signed root.", icon=":material/check:")
if proof:
    st.dataframe([{"step": i, "hash": h.hex()} for i, h in enumerate(proof)], hide_index=True)
else:
    st.caption("The tree holds this one entry: its leaf hash is the root, the path is empty.")
