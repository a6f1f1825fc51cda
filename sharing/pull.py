"""``commonforge pull``: a release from untrusted peers into the user's own registry, verified first.

No peer is trusted: each may lie, stall or drop out. A pull therefore

1. asks every peer for its index (``/v1/index``) and keeps the peers that answer;
2. fetches into a **staging** forge root (``<user registry>/.forge/pull-staging/…``, neither registry
   nor store): the governance policy files and their signatures, the release's entry, records and
   statements, and the recipe and datasets it names. Every file must hash to what the index
   says, and its size is bounded;
3. verifies the staged policy chain (every version's thresholds), checks it against what this
   user accepted before for the user registry (a rollback or a replaced founding policy is
   refused, ``trust.policy.Pins``), and checks that it extends the chain already there;
4. opens the policy's transparency log from the peers (``sharing.logsource.http_source``), which
   must be consistent with the newest checkpoint this user accepted (``trust.log.forge.open_view``),
   and computes the release's status from the staged statements and the log. A pull takes a
   *published* release (a bare name: the newest one), never a revoked one unless asked;
5. downloads every artifact of every variant from all peers at once
   (``sharing.fetch.download_from``: ranges spread across peers, failover, the liars named) into
   staging, each verified against the manifest's sha256;
6. only then commits: blobs into the user registry's store (content-addressed, each atomic), then
   the registry files, the release's entry **last**, so an interrupted commit leaves no release
   visible. Nothing before this step writes into the user registry or its store.

Every error names the peer and what it did. The user registry's layout is a checkout's
(``registry/layers.py``).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonforge import settings
from commonforge.errors import ForgeError, InputError, NotFoundError, VerificationError
from registry import fsutil
from registry.catalog import Registry
from registry.digest import sha256_bytes, sha256_file
from registry.refs import VERSION_RE, Ref, version_key
from registry.schema import RECORD_SUFFIXES, Release
from registry.store import Store
from sharing.fetch import PEER_ERRORS, Peer, PeerError, Timeouts, blob_path, download_from
from trust import policy as trust_policy
from trust import status as trust_status

log = logging.getLogger(__name__)

MAX_FILE = 4 << 20  # a registry file (entry, record, statement, policy) is a few KB
MAX_INDEX = 16 << 20
MAX_STAGED_FILES = 4096  # a release's entry, records and statements, the policy chain: a few hundred
MAX_STAGED_BYTES = 64 << 20
GOVERNANCE = "registry/governance/"
_HEX = re.compile(r"[0-9a-f]{64}")
_ENTRY = re.compile(r"registry/entries/(?:datasets|recipes|models)/[^/]+/[0-9][0-9.]*\.yaml")
# What may sit beside a release's entry: its records, its statements, its torrent (sharing.seed).
_RELEASE_FILE = re.compile(r"\.(?:(?:" + "|".join(RECORD_SUFFIXES) + r")\.yaml|statements/[a-z]+-[0-9a-f]{64}\.json|torrent)")
# The governance files a chain is verified from; nothing else under registry/governance/ is pulled.
_POLICY_FILE = re.compile(r"policy/(?:0|[1-9][0-9]{0,8})(?:\.yaml|\.statements/[a-z]+-[0-9a-f]{64}\.json)")


class PullError(VerificationError):
    """A pull refused: what was wrong, and (where one is to blame) which peer."""


@dataclass
class PullResult:
    release: Release
    status: trust_status.ReleaseStatus
    root: Path  # the user registry it landed in
    peers: list[str]  # the peers that answered
    blobs: int = 0  # blobs downloaded (those already in the store are not fetched again)
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # peers that failed, with why
    liars: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexEntry:
    path: str
    sha256: str
    size: int


def _index(peer: Peer) -> dict[str, IndexEntry]:
    data = peer.get_json("/v1/index", MAX_INDEX)
    if not isinstance(data, dict) or data.get("api") != 1 or not isinstance(data.get("files"), list):
        raise PeerError(peer.url, "sent an index that is not a commonforge peer index (api 1)")
    out: dict[str, IndexEntry] = {}
    for item in data["files"]:
        try:
            path, digest, size = item["path"], item["sha256"], item["size"]
            fsutil.check_relative_path(path, what="index path")
            ok = path.startswith("registry/") and _HEX.fullmatch(digest) and isinstance(size, int) and 0 <= size
        except (TypeError, KeyError, ValueError, ForgeError):
            ok = False
        if not ok:
            raise PeerError(peer.url, f"sent a bad index entry: {str(item)[:120]}")
        out[path] = IndexEntry(path, digest, size)
    return out


class Staging:
    """The files fetched so far, in a forge root of their own that nothing else reads."""

    def __init__(self, dest_root: Path, peers: list[Peer], indexes: dict[str, dict[str, IndexEntry]]) -> None:
        base = dest_root / ".forge" / "pull-staging"
        base.mkdir(parents=True, exist_ok=True)
        for stale in base.glob("pull-*"):  # left by a pull killed earlier
            shutil.rmtree(stale, ignore_errors=True)
        # Downloads survive an interrupted pull (ranges synced and journalled): the next pull of the
        # same blob resumes them, verified whole as always. Only blobs, never trusted files.
        self.blobs = base / "blobs"
        self.blobs.mkdir(exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="pull-", dir=base))
        (self.root / "registry" / "entries").mkdir(parents=True)
        self.peers = peers
        self.indexes = indexes
        self.files: dict[str, bytes] = {}
        self.log_peer: str | None = None
        self.staged_bytes = 0
        self.of_release: dict[str, set[str]] = {}  # ref -> the files staged for it (only the chosen one lands)
        self.source: dict[str, str] = {}  # path -> the peer whose copy was staged

    def served_by(self, *prefixes: str) -> str:
        """The peer(s) that sent the staged files under ``prefixes``: errors name who served what was refused."""
        urls = sorted({url for path, url in self.source.items() if path.startswith(prefixes)})
        return ("peer " if len(urls) == 1 else "peers ") + ", ".join(urls) if urls else "no peer"

    def listed(self, prefix: str) -> list[str]:
        """Every path under ``prefix`` any peer lists."""
        return sorted({p for index in self.indexes.values() for p in index if p.startswith(prefix)})

    def fetch(self, path: str, *, required: bool = True) -> bytes | None:
        """``path`` from the first peer whose bytes hash to what its own index says."""
        problems = []
        for peer in self.peers:
            entry = self.indexes[peer.url].get(path)
            if entry is None:
                continue
            if entry.size > MAX_FILE:
                problems.append(f"{peer.url}: lists {path} at {entry.size:,} bytes, more than a registry file holds")
                continue
            try:
                data = peer.get_bytes("/v1/files/" + path, min(entry.size, MAX_FILE))
            except PEER_ERRORS as err:
                problems.append(err.message)
                continue
            if sha256_bytes(data) != entry.sha256 or len(data) != entry.size:
                problems.append(f"peer {peer.url} sent {path} with sha256 {sha256_bytes(data)[:12]}, "
                                f"its own index says {entry.sha256[:12]}")
                continue
            if len(self.files) >= MAX_STAGED_FILES or self.staged_bytes + len(data) > MAX_STAGED_BYTES:
                raise PullError(f"peer {peer.url} lists more registry files than a release and its governance "
                                f"need (over {MAX_STAGED_FILES:,} files or {MAX_STAGED_BYTES >> 20} MB): refused",
                                hint="pull from another peer")
            target = self.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self.files[path] = data
            self.staged_bytes += len(data)
            self.source[path] = peer.url
            return data
        if required:
            raise PullError(f"no peer sent {path}" + (": " + "; ".join(problems) if problems else ""),
                            hint="try other peers (`--from URL`)")
        return None

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _connect(urls: Sequence[str], timeouts: Timeouts | None) -> tuple[list[Peer], dict, list[str]]:
    peers, indexes, skipped = [], {}, []
    for url in urls:
        peer = Peer(url, timeouts=timeouts)
        try:
            indexes[peer.url] = _index(peer)
        except PEER_ERRORS as err:
            skipped.append(err.message)
            log.warning("%s", err.message)
            continue
        peers.append(peer)
    if not peers:
        raise PullError("no peer answered: " + "; ".join(skipped), hint="check the URLs; `commonforge peers list`")
    return peers, indexes, skipped


def _candidates(staging: Staging, ref: Ref) -> list[str]:
    if ref.pinned:
        return [f"registry/entries/models/{ref.name}/{ref.version}.yaml"]
    folder = f"registry/entries/models/{ref.name}/"
    versions = [p[len(folder): -len(".yaml")] for p in staging.listed(folder) if p.endswith(".yaml")]
    versions = [v for v in versions if VERSION_RE.match(v)]
    return [f"{folder}{v}.yaml" for v in sorted(versions, key=version_key, reverse=True)]


def _stage_release(staging: Staging, entry_path: str) -> Release:
    """The release's entry, records and statements, and the recipe and datasets it names."""
    before = set(staging.files)
    staging.fetch(entry_path)
    stem = entry_path[: -len(".yaml")]
    for path in staging.listed(stem + "."):
        if _RELEASE_FILE.fullmatch(path[len(stem):]):  # records, statements, the torrent: nothing else lands
            staging.fetch(path)
    rel_name, version = entry_path.split("/")[3], entry_path.split("/")[4][: -len(".yaml")]
    release = Registry(staging.root).release(f"model/{rel_name}@{version}")
    m = release.manifest
    for needed in ([m.recipe.ref] if m.recipe else []) + [d.ref for d in m.datasets]:
        r = Ref.parse(needed)
        folder = {"recipe": "recipes", "dataset": "datasets"}[r.kind]
        path = f"registry/entries/{folder}/{r.name}/{r.version}.yaml"
        if staging.fetch(path, required=False) is None:
            continue
        try:
            entry = Registry(staging.root).get(needed)
        except ForgeError as err:
            raise PullError(f"the {r.kind} entry {needed} {staging.served_by(path)} served is not valid: {err.message}",
                            hint="pull from another peer") from None
        digest = getattr(entry, "digest", "")
        if r.kind == "recipe" and m.recipe is not None and digest != m.recipe.sha256:
            raise PullError(f"the recipe {needed} {staging.served_by(path)} served is sha256:{digest[:12]}, "
                            f"not the sha256:{m.recipe.sha256[:12]} the release was built from",
                            hint="the peer swapped the recipe; pull from another peer")
    staging.of_release[release.ref] = set(staging.files) - before
    return release


def _check_chain(staging: Staging, dest_root: Path, pins: trust_policy.Pins) -> trust_policy.Chain:
    for path in staging.listed(GOVERNANCE):
        if _POLICY_FILE.fullmatch(path[len(GOVERNANCE):]):  # not licenses.yaml, proposals, or anything unsigned
            staging.fetch(path)
    if not (staging.root / GOVERNANCE / "policy" / "0.yaml").is_file():
        raise PullError("the peers serve no governance policy (registry/governance/policy/0.yaml)",
                        hint="pull from a commonforge peer")
    try:
        chain = trust_policy.load_chain(staging.root)
        pins.check(dest_root, list(chain.versions))
    except ForgeError as err:
        raise PullError(f"the policy chain {staging.served_by(GOVERNANCE)} served is refused: {err.message}",
                        hint=err.hint) from None
    here = trust_policy.policy_dir(dest_root)
    if trust_policy.versions_in(here):
        mine = trust_policy.load_chain(dest_root)
        if len(mine.versions) > len(chain.versions):
            raise PullError(f"{staging.served_by(GOVERNANCE)} serve(s) policy versions up to {len(chain.versions)}; "
                            f"your registry already has version {len(mine.versions)}: a rollback",
                            hint="pull from peers that are up to date")
        for a, b in zip(mine.versions, chain.versions, strict=False):
            if a.digest != b.digest:
                raise PullError(f"the policy {b.version} {staging.served_by(GOVERNANCE)} served "
                                f"(sha256:{b.digest[:12]}) is not the one your registry holds "
                                f"(sha256:{a.digest[:12]}): another forge, or a fork of this one",
                                hint="a user registry follows one forge; pull it into another "
                                "(COMMONFORGE_USER_REGISTRY) if you mean to")
    return chain


def _status(staging: Staging, release: Release, chain: trust_policy.Chain, peers: list[Peer], state, timeouts):
    view: Any = None  # a verified LogView, or why there is none
    policy = chain.current
    if policy is not None and policy.log is not None:
        from sharing.logsource import http_source
        from trust.log import forge as log_forge

        reasons = []
        for peer in peers:
            try:
                source = http_source(peer.url, timeouts=timeouts)
            except PEER_ERRORS as err:
                reasons.append(err.message)
                continue
            opened = log_forge.try_view(policy.log, source, state)
            if isinstance(opened, str) and opened.startswith("fork"):  # equivocation: no peer's answer is taken
                raise PullError(f"peer {peer.url} shows a fork of log {policy.log.origin}: {opened}: not pulled",
                                hint="keep both checkpoints as evidence (`commonforge log monitor --peer URL ...`)")
            if isinstance(opened, str):
                reasons.append(f"{peer.url}: {opened}")
            elif view is None or opened.size > view.size:
                # Every peer's log is asked, and the newest verified one decides: a peer showing an
                # older (consistent) tree cannot hide a revocation another peer's log holds.
                view = opened
                staging.log_peer = peer.url  # the registry keeps a copy of this verified log (see pull)
        if view is None:
            view = "; ".join(reasons) or "no peer serves the log"
    return trust_status.release_status(staging.root, release, chain=chain, view=view)


def _per_file(progress: Callable[[str, int, int], None] | None, name: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)


def _store(dest_root: Path) -> Store:
    """The user registry's own store (``settings.Settings.load`` gives the same for the user registry)."""
    return Store(dest_root / ".forge" / "store")


def _commit(staging: Staging, dest_root: Path, release: Release, blob_files: dict[str, Path]) -> None:
    """Blobs, then registry files, the release's entry last (see the module's docstring). Only the
    chosen release's files and the governance land; nothing is written before every entry and policy
    version it would replace has been found identical."""
    entry = Registry(staging.root).entry_path(Ref("model", release.name, release.version)).relative_to(staging.root)
    landing = {name: data for name, data in staging.files.items()
               if name.startswith(GOVERNANCE) or name in staging.of_release.get(release.ref, set())}
    for name, data in landing.items():
        target = dest_root / name
        if not target.is_file() or target.read_bytes() == data:
            continue
        if _ENTRY.fullmatch(name):
            raise PullError(f"{target} differs from the copy {staging.served_by(name)} served: an entry is never "
                            "replaced by a pull", hint="remove it yourself if you mean to replace it, then pull again")
        if name.startswith(GOVERNANCE + "policy/") and name.count("/") == 3:
            raise PullError(f"{target} differs from the copy {staging.served_by(name)} served",
                            hint="your registry follows another chain")
    store = _store(dest_root)
    for digest, path in blob_files.items():
        store.adopt(path, expected=digest)  # a rename: the staging area is on the same file system
    for name, data in sorted(landing.items(), key=lambda item: item[0] == str(entry)):
        target = dest_root / name
        if not (target.is_file() and target.read_bytes() == data):
            fsutil.atomic_write_bytes(target, data)


def pull(ref: str, urls: Sequence[str], *, dest_root: Path | None = None, allow_draft: bool = False,
         allow_revoked: bool = False, timeouts: Timeouts | None = None, state=None,
         pins: trust_policy.Pins | None = None,
         progress: Callable[[str, int, int], None] | None = None,
         blobs: Callable[[Staging, Release, dict], dict[str, Path]] | None = None,
         keep_log: bool = True) -> PullResult:
    """Pull ``ref`` (a pinned model ref, or a bare name: the newest published) from ``urls`` into
    ``dest_root`` (default: the user registry). See the module's docstring for what is verified.
    ``blobs(staging, release, missing)``: another way to get the artifacts (``sharing.seed``: a
    BitTorrent swarm); it returns {sha256: file}, each file checked here again; what it did not
    bring comes from the peers. ``keep_log``: keep a copy of the verified log in ``<dest_root>/.forge/log``
    (a mirror keeps its own in ``DIR/log`` and says False)."""
    parsed = Ref.parse(ref, default_kind="model")
    if parsed.kind != "model":
        raise InputError(f"{ref} is not a model ref", hint="pull takes a model release, e.g. model/forge-small@1.0.0")
    if not urls:
        raise InputError("no peer to pull from", hint="name one with --from URL (`commonforge peers list` has yours)")
    dest_root = Path(dest_root) if dest_root is not None else settings.user_root()
    pins = pins if pins is not None else trust_policy.user_pins()
    peers, indexes, skipped = _connect(urls, timeouts)
    staging = Staging(dest_root, peers, indexes)
    committing = False
    try:
        chain = _check_chain(staging, dest_root, pins)
        candidates = _candidates(staging, parsed)
        if not candidates or not staging.listed(candidates[0]):
            raise NotFoundError(str(parsed), hint="none of the peers has it; `commonforge peers list`")
        chosen: tuple[Release, trust_status.ReleaseStatus] | None = None
        first_draft: tuple[Release, trust_status.ReleaseStatus] | None = None
        seen = []
        for entry_path in candidates:
            release = _stage_release(staging, entry_path)
            status = _status(staging, release, chain, peers, state, timeouts)
            seen.append(f"{release.ref}: {status.status}")
            if status.status == "published" or (parsed.pinned and (
                    (status.status == "draft" and allow_draft) or (status.status == "revoked" and allow_revoked))):
                chosen = (release, status)
                break
            if status.status == "draft" and allow_draft and first_draft is None:
                first_draft = (release, status)  # a bare name takes a draft only when nothing is published
            if parsed.pinned:
                why = "; ".join(status.revocation_reasons) if status.status == "revoked" else "; ".join(status.needs)
                raise PullError(f"{release.ref} as {staging.served_by(entry_path[: -len('.yaml')])} served it is "
                                f"{status.status} ({why or 'see its status'}): not pulled",
                                hint="a pull takes published releases; --allow-draft takes a draft, "
                                "--allow-revoked a revoked release named by version")
        chosen = chosen or first_draft
        if chosen is None:
            raise PullError(f"{staging.served_by(candidates[0].rsplit('/', 1)[0] + '/')} serve(s) no published "
                            f"release of {parsed}: " + "; ".join(seen),
                            hint="name a version and --allow-draft to take a draft")
        release, status = chosen
        dest_store = _store(dest_root)
        blob_files: dict[str, Path] = {}
        result = PullResult(release, status, dest_root, [p.url for p in peers], skipped=skipped)
        wanted = {a.sha256: a for a in release.manifest.artifacts}
        if blobs is not None:  # another transport (a BitTorrent swarm): it hands back files, verified here
            missing = {d: a for d, a in wanted.items() if not dest_store.has(d)}
            for digest, path in blobs(staging, release, missing).items():
                if digest not in missing or sha256_file(path) != digest:
                    raise PullError(f"the {blobs.__name__} transport gave a file that is not {missing.get(digest)}")
                blob_files[digest] = path
                result.blobs += 1
                result.bytes += missing[digest].size
            wanted = {d: a for d, a in wanted.items() if d not in blob_files}
        for digest, artifact in sorted(wanted.items()):
            if dest_store.has(digest):
                continue
            target = staging.blobs / digest
            report = download_from(peers, blob_path, target, digest, artifact.size, timeouts=timeouts,
                                   progress=_per_file(progress, artifact.path), resume=True)
            for liar, ranges in report.liars.items():
                result.liars.setdefault(liar, []).extend(ranges)
            blob_files[digest] = target
            result.blobs += 1
            result.bytes += artifact.size
        committing = True
        _commit(staging, dest_root, release, blob_files)
        pins.remember(dest_root, list(chain.versions))
        if keep_log and staging.log_peer is not None and chain.current is not None and chain.current.log is not None:
            # The registry keeps its own copy of the log it was verified against (trust.log.forge.
            # default_source), so that status, verify and serve read the same history offline; the
            # copy has its own accepted checkpoint, so it too can never be rolled back.
            from sharing.logcopy import follow_log
            from trust.log.client import ClientState

            follow_log(staging.log_peer, chain.current.log, dest_root / ".forge" / "log",
                       ClientState(dest_root / ".forge" / "log-state.json"), timeouts=timeouts)
        final = trust_status.release_status(dest_root, release, chain=trust_policy.load_chain(dest_root),
                                            view=status.log)
        result.status = final
        return result
    except ForgeError:
        raise
    except OSError as err:  # a full disk, a file-size limit, a read-only registry: not the peers' doing
        where = f" {err.filename}" if err.filename else ""
        if committing:
            raise ForgeError(f"the pull could not write{where} while committing into {dest_root}: {err.strerror or err}"
                             "; the release's entry is written last, so it is not there yet",
                             hint="free some space and pull again (what landed is content-addressed and reused)"
                             ) from err
        raise ForgeError(f"the pull could not write{where} while staging in {staging.root}: {err.strerror or err}; "
                         f"nothing in {dest_root} changed", hint="free some space and pull again") from err
    finally:
        staging.close()
        for peer in peers:
            peer.close()
