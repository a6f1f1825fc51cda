"""The peers a user added (``commonforge peers add|list|remove``), and what each last showed.

One JSON file per user (``settings.peers_file()``), rewritten atomically::

    {"version": 1, "peers": [{"url": "http://127.0.0.1:8470", "name": "lab", "added": "...Z",
      "last_contact": "...Z" | null, "checkpoint": {"origin", "size", "root", "note"} | null,
      "learned": ["http://...", ...], "last_error": str | null}, ...]}

Why only *added* peers are ever contacted: a peer's list of peers (``/v1/peers``) is untrusted
gossip. Contacting what it names would let any peer point this client at any host (an internal
address, a tracker that records who asks); so an advertised URL is only stored under the peer that
advertised it ("learned") and shown by ``peers list``, and nothing dials it until the user adds it.

URLs are normalised to ``scheme://host[:port]`` (http or https, lower-case host, no default port, no
user info, path, query or fragment): one peer, one spelling, so ``add`` and ``remove`` and the
learned list agree on who is who.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from commonforge.errors import InputError
from registry import fsutil
from registry.schema import utc_now

VERSION = 1
MAX_LEARNED = 256  # advertised URLs kept per peer: a peer cannot grow this file without bound
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_url(url: str) -> str:
    """``scheme://host[:port]`` of a peer URL, or InputError saying what is wrong with it."""
    text = (url or "").strip()
    hint = "name a peer as http://HOST:PORT or https://HOST (its base URL, nothing after the port)"
    if not text or any(c.isspace() or ord(c) < 32 for c in text) or "\\" in text:
        raise InputError(f"{url!r} is not a peer URL (empty, or holds spaces, control characters or backslashes)",
                         hint=hint)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise InputError(f"{url!r} is not a peer URL ({err})", hint=hint) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InputError(f"{url!r} is not an http(s) URL (scheme {parts.scheme or 'none'!r})", hint=hint)
    if not parts.hostname:
        raise InputError(f"{url!r} names no host", hint=hint)
    if parts.username is not None or parts.password is not None:
        raise InputError(f"{url!r} holds user info; a peer needs no credentials", hint=hint)
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise InputError(f"{url!r} has a path, query or fragment; a peer is named by its base URL only", hint=hint)
    if port == 0:
        raise InputError(f"{url!r} names port 0", hint=hint)
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


@dataclass
class KnownPeer:
    """A peer the user added, and what it showed the last time ``peers sync`` reached it."""

    url: str
    name: str | None = None
    added: str = ""
    last_contact: str | None = None
    checkpoint: dict[str, Any] | None = None  # {"origin", "size", "root" (hex), "note"}: verified when stored
    learned: list[str] = field(default_factory=list)  # the peers it advertised: never contacted until added
    last_error: str | None = None  # why the last sync could not use it (None: it worked)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.url})" if self.name else self.url


@dataclass(frozen=True)
class LearnedPeer:
    """A URL some added peers advertised that the user has not added (so it was never contacted)."""

    url: str
    advertised_by: tuple[str, ...]


class PeerBook:
    """The user's peers file: load, change, save (atomically). Not safe for two writers at once;
    the last ``save`` wins, and a reader never sees half a file."""

    def __init__(self, path: Path, peers: Iterable[KnownPeer] = ()) -> None:
        self.path = Path(path)
        self.peers: list[KnownPeer] = list(peers)

    @classmethod
    def load(cls, path: Path) -> PeerBook:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except OSError as err:
            raise InputError(f"cannot read the peers file {path}: {err.strerror}",
                             hint="fix its permissions, or point COMMONFORGE_PEERS at another file") from None
        damaged = InputError(f"the peers file {path} is damaged (not the JSON `commonforge peers` writes)",
                             hint="fix or delete it (then `commonforge peers add URL` again)")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise damaged from None
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("peers"), list):
            raise damaged
        peers = []
        fields = set(KnownPeer.__dataclass_fields__)
        for item in data["peers"]:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                raise damaged
            try:
                peer = KnownPeer(**{k: v for k, v in item.items() if k in fields})
                peer.url = normalise_url(peer.url)
            except (TypeError, InputError):
                raise damaged from None
            peer.learned = [u for u in peer.learned if isinstance(u, str)][:MAX_LEARNED]
            peers.append(peer)
        return cls(path, peers)

    def save(self) -> None:
        data = {"version": VERSION, "peers": [asdict(p) for p in self.peers]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    # --- what the user does -----------------------------------------------------------------------

    def find(self, url_or_name: str) -> KnownPeer | None:
        """The added peer named ``url_or_name`` (its name, or its URL in any spelling)."""
        for peer in self.peers:
            if peer.name is not None and peer.name == url_or_name:
                return peer
        try:
            url = normalise_url(url_or_name)
        except InputError:
            return None
        return next((p for p in self.peers if p.url == url), None)

    def add(self, url: str, name: str | None = None) -> KnownPeer:
        normal = normalise_url(url)
        if name is not None:
            name = name.strip()
            if not name or "://" in name or any(c.isspace() for c in name):
                raise InputError(f"{name!r} is not a peer name", hint="a short word without spaces, e.g. --name lab")
            other = next((p for p in self.peers if p.name == name), None)
            if other is not None and other.url != normal:
                raise InputError(f"the name {name!r} is already {other.url}",
                                 hint=f"pick another name, or `commonforge peers remove {name}` first")
        existing = next((p for p in self.peers if p.url == normal), None)
        if existing is not None:
            if name is not None and existing.name != name:
                existing.name = name  # renaming an added peer keeps what it showed
                return existing
            raise InputError(f"{existing.label} is already added", hint="`commonforge peers list` shows it")
        peer = KnownPeer(url=normal, name=name, added=utc_now())
        self.peers.append(peer)
        return peer

    def remove(self, url_or_name: str) -> KnownPeer:
        peer = self.find(url_or_name)
        if peer is None:
            added = ", ".join(p.label for p in self.peers) or "none"
            raise InputError(f"{url_or_name!r} is not a peer you added (added: {added})",
                             hint="name it by the URL or the name `commonforge peers list` shows")
        self.peers.remove(peer)
        return peer

    def learned(self) -> list[LearnedPeer]:
        """URLs advertised by added peers that are not added themselves, with who advertised each."""
        added = {p.url for p in self.peers}
        by: dict[str, list[str]] = {}
        for peer in self.peers:
            for url in peer.learned:
                if url not in added:
                    by.setdefault(url, []).append(peer.label)
        return [LearnedPeer(url, tuple(who)) for url, who in sorted(by.items())]

    def urls(self) -> list[str]:
        """The added peers' URLs: what ``peer serve`` advertises (never the learned ones)."""
        return [p.url for p in self.peers]


def learned_urls(advertised: Any, own: str) -> tuple[list[str], list[str]]:
    """From a peer's ``/v1/peers`` body: the advertised URLs, normalised (without ``own``, deduplicated,
    at most MAX_LEARNED), and what was dropped, in words. Nothing here is contacted."""
    if not isinstance(advertised, dict) or not isinstance(advertised.get("peers"), list):
        return [], ["its /v1/peers is not {\"api\": 1, \"peers\": [...]}"]
    urls: list[str] = []
    dropped: list[str] = []
    for item in advertised["peers"]:
        if not isinstance(item, str):
            dropped.append(f"a {type(item).__name__} instead of a URL")
            continue
        try:
            url = normalise_url(item)
        except InputError:
            dropped.append(repr(item[:80]))
            continue
        if url != own and url not in urls:
            if len(urls) >= MAX_LEARNED:
                dropped.append(f"every URL after the first {MAX_LEARNED} (ignored)")
                break
            urls.append(url)
    return urls, dropped
