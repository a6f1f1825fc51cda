"""Peers: the peers this user added (``commonforge peers add``), what ``peers sync`` last recorded
about each (last contact, the log checkpoint it showed, its last error), the peers they advertised
(learned, never contacted), and, only when asked, which model releases each added peer has now.

The explorer makes no network connection on its own: everything above the button is read from the
peers file (:func:`commonforge.settings.peers_file`, ``COMMONFORGE_PEERS``). **Ask the peers now**
sends ``GET /v1/info`` and ``GET /v1/index`` to the *added* peers only, through the hardened client
(sharing.fetch: bounded sizes, short timeouts, no redirects, no proxies), in parallel. Learned peers
are gossip from an untrusted host and are never dialled here either (sharing.peers says why).

What a peer answers is untrusted: it is shown as plain text (tables, code), never as Markdown (a
Markdown image in an error body would make the browser fetch a URL the peer chose), and a release
it lists is only a file in its index: whether it is published, and whether its files are what the
entry says, is checked by ``commonforge pull``, which verifies everything before it keeps anything.
The answers are kept in the session (``peer_answers``) so the Model page can say which peer had a
release; nothing is written to the peers file (the explorer is read-only).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import streamlit as st

from commonforge import settings
from commonforge.errors import ForgeError
from explorer import ui
from explorer.search import escape_markdown
from registry.refs import NAME_RE, VERSION_RE
from registry.schema import utc_now
from sharing.fetch import PEER_ERRORS, Peer, PeerError, Timeouts
from sharing.peers import KnownPeer, PeerBook

ANSWERS = "peer_answers"  # st.session_state key: {url: PeerAnswer as a dict}; the Model page reads it
TIMEOUTS = Timeouts(connect=2.0, read=3.0, total=5.0)  # a page waits seconds, not the CLI's half-minute
MAX_INFO = 64 << 10
MAX_INDEX = 16 << 20
_ENTRY = re.compile(r"^registry/entries/models/([^/]+)/([^/]+)\.yaml$")


@dataclass
class PeerAnswer:
    """What one added peer answered when asked from this page."""

    url: str
    asked: str
    version: str | None = None
    log_origin: str | None = None
    releases: list[str] = field(default_factory=list)  # "model/NAME@VERSION", sorted
    error: str | None = None


def releases_in(index: Any, url: str) -> list[str]:
    """The model releases a ``/v1/index`` body lists (``registry/entries/models/NAME/VERSION.yaml``,
    name and version as the registry allows them); PeerError when it is no index at all."""
    if not isinstance(index, dict) or index.get("api") != 1 or not isinstance(index.get("files"), list):
        raise PeerError(url, "sent an index that is not a commonforge peer index (api 1)")
    found = set()
    for item in index["files"]:
        path = item.get("path") if isinstance(item, dict) else None
        match = _ENTRY.match(path) if isinstance(path, str) else None
        if match and NAME_RE.match(match[1]) and VERSION_RE.match(match[2]):
            found.add((match[1], tuple(int(p) for p in match[2].split(".")), match[2]))
    return [f"model/{name}@{version}" for name, _, version in sorted(found)]


def ask(known: KnownPeer) -> PeerAnswer:
    """GET /v1/info and /v1/index of one added peer (and nothing else, nothing it names)."""
    answer = PeerAnswer(known.url, utc_now())
    peer = Peer(known.url, timeouts=TIMEOUTS)
    try:
        info = peer.get_json("/v1/info", MAX_INFO)
        if not isinstance(info, dict) or info.get("api") != 1 or info.get("forge") != "commonforge":
            raise PeerError(known.url, "answered /v1/info with something that is not a commonforge peer (API 1)")
        log = info.get("log")
        origin = log.get("origin") if isinstance(log, dict) else None
        answer.log_origin = origin[:200] if isinstance(origin, str) else None
        answer.version = str(info.get("version", "?"))[:40]
        answer.releases = releases_in(peer.get_json("/v1/index", MAX_INDEX), known.url)
    except PEER_ERRORS as err:
        answer.error = err.message
    finally:
        peer.close()
    return answer


def ask_all(peers: list[KnownPeer]) -> dict[str, dict[str, Any]]:
    """Every added peer at once (so one slow peer costs its timeout once, not once per peer)."""
    with ThreadPoolExecutor(max_workers=min(8, len(peers))) as pool:
        return {a.url: asdict(a) for a in pool.map(ask, peers)}


def peer_rows(book: PeerBook) -> list[dict[str, Any]]:
    """The added peers as the peers file records them, then the learned ones (never contacted)."""
    rows = []
    for p in book.peers:
        cp = p.checkpoint or {}
        rows.append({"peer": p.label, "kind": "added", "added": p.added, "last contact": p.last_contact or "never",
                     "log checkpoint": (f"{cp.get('origin')} size {cp.get('size')} root {str(cp.get('root', ''))[:16]}"
                                        if cp else "none seen"),
                     "checkpoint seen": cp.get("seen") or "", "last error": p.last_error or ""})
    for lp in book.learned():
        rows.append({"peer": lp.url, "kind": "learned", "added": "", "last contact": "never (learned, not contacted)",
                     "log checkpoint": "", "checkpoint seen": "",
                     "last error": f"advertised by {', '.join(lp.advertised_by)}"})
    return rows


# --- the page ---------------------------------------------------------------------------------

st.title("Peers")
path = settings.peers_file()
try:
    book = PeerBook.load(path)
except ForgeError as err:
    ui.show_problem(err, what="The peers file cannot be read.")
    st.stop()

st.caption(f"From `{path}`: what `commonforge peers sync` last recorded. Nothing on this page connects to a peer "
           "until you press **Ask the peers now**, and then only to the peers you added.")
if not book.peers:
    st.info("**You have added no peers.** Add one with `commonforge peers add URL` (a forge running "
            "`commonforge peer serve`, e.g. `commonforge peers add http://127.0.0.1:8470 --name lab`), then "
            "`commonforge peers sync` records what it shows.", icon=":material/group_add:")
    st.stop()

st.header("Known peers", anchor=False)
st.dataframe(peer_rows(book), hide_index=True)
learned = book.learned()
if learned:
    st.caption(f"{len(learned)} learned peer(s): advertised by a peer you added, so gossip from a host you do not "
               "control; never contacted. To use one, add it: `commonforge peers add URL`.")

st.header("What they have now", anchor=False)
answers: dict[str, dict[str, Any]] = st.session_state.setdefault(ANSWERS, {})
if st.button("Ask the peers now", icon=":material/sync:",
             help=f"GET /v1/info and /v1/index of the {len(book.peers)} peer(s) you added, at most "
                  f"{TIMEOUTS.total:.0f} s each; learned peers are not asked"):
    with st.spinner(f"Asking {len(book.peers)} peer(s)…"):
        answers.update(ask_all(book.peers))
if not answers:
    st.caption("Not asked yet in this session.")
for p in book.peers:
    a = answers.get(p.url)
    if a is None:
        continue
    st.subheader(p.label, anchor=False)
    if a["error"]:
        st.error(f"**Could not use {p.url}** (asked at {a['asked']}):", icon=":material/cloud_off:")
        st.code(a["error"], language=None, wrap_lines=True)  # the peer's words: plain text only
        continue
    st.caption(f"asked at {a['asked']} · commonforge {escape_markdown(a['version'] or '?')} · "
               + (f"log {escape_markdown(a['log_origin'])}" if a["log_origin"] else "serves no log"))
    if a["releases"]:
        st.dataframe([{"release": r, "pull": f"commonforge pull {r} --from {p.url}"} for r in a["releases"]],
                     hide_index=True)
    else:
        st.info("Its index lists no model release.")
if answers:
    st.caption("A release listed here is a file in the peer's index, nothing more: `commonforge pull` checks its "
               "signatures, its status under the policy and the log, and every artifact's sha256 before keeping it.")
