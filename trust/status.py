"""A release's status, computed from the statements that verify under the current policy.

    draft       what a release is until the publish rule holds and someone signed its publication
    published   a verified publication statement, *and* the publish rule holds now: enough
                approvals from enough affiliations, and identical rebuilds by rebuilders who are
                not the builder (re-checked every time: a key removed or declared compromised
                later takes its approvals with it)
    revoked     the revoke rule holds over the revocation statements (whatever else holds)

Nothing here reads a status from a file. :func:`release_status` returns the verdict with its
reasons (:meth:`ReleaseStatus.explain`): which rules hold, which do not and why, and every
statement that did not count with the reason it did not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from commonforge.errors import ForgeError, InputError, NotFoundError, VerificationError
from registry.catalog import Registry, Status
from registry.refs import Ref
from registry.schema import Release, utc_now
from trust import policy as trust_policy
from trust import statements as st_mod
from trust.errors import SignatureError
from trust.keys import KeyInfo, sslib_key
from trust.policy import Chain, Maintainer, Pins, Policy, Tally, check_signer, elsewhere, load_chain, tally, user_pins
from trust.statements import (
    ApprovalPredicate,
    BuildPredicate,
    Predicate,
    PublicationPredicate,
    RebuildPredicate,
    Rejected,
    RevocationPredicate,
    Statement,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    holds: bool
    detail: str


@dataclass
class ReleaseStatus:
    ref: str
    digest: str
    status: Status
    policy: Policy | None
    checks: list[Check] = field(default_factory=list)
    approvals: Tally | None = None
    revocations: Tally | None = None
    builders: list[tuple[str, str, str | None]] = field(default_factory=list)  # name, keyid, affiliation if a member
    rebuilds: list[tuple[Maintainer, Statement]] = field(default_factory=list)
    # Every rebuild statement about this release: (signer's name or keyid, statement, why it did
    # not count or None), for whoever shows rebuilds, counted or not.
    rebuild_log: list[tuple[str, Statement, str | None]] = field(default_factory=list)
    publication: tuple[Maintainer, Statement] | None = None
    rejected: list[Rejected] = field(default_factory=list)
    # The verified copy of the policy's transparency log, and where it holds each statement that
    # counted (file digest -> entry); None when the policy names no log or no copy verified.
    log: Any = None
    logged: dict[str, int] = field(default_factory=dict)
    root: Path | None = None  # the registry the release is in: a checkout, or the user's own (registry.layers)

    @property
    def layer(self) -> str:
        from registry.layers import layer_name

        return layer_name(self.root) if self.root is not None else "checkout"

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    @property
    def publishable(self) -> bool:
        return all(self.check(n).holds for n in ("approvals", "rebuilds"))

    @property
    def revocation_reasons(self) -> list[str]:
        out = []
        for m, st in self.revocations.counted if self.revocations else []:
            pred = st.predicate
            if isinstance(pred, RevocationPredicate):
                out.append(f"{m.name} ({m.affiliation}), {pred.severity}: {pred.reason}")
        return out

    @property
    def needs(self) -> list[str]:
        """What keeps a draft from being published, one line per rule that does not hold."""
        if self.status != "draft":
            return []
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.holds and c.name != "revocation"]

    def governance(self) -> dict[str, Any]:
        """Who vouched, as plain data (for the explorer and cards): names, affiliations, keyids, times."""
        def person(m: Maintainer, st: Statement, **extra: Any) -> dict[str, Any]:
            return {"name": m.name, "affiliation": m.affiliation, "keyid": st.keyid,
                    "signed_at": st.predicate.signed_at, **extra}

        approvals = []
        for m, st in self.approvals.counted if self.approvals else []:
            pred = st.predicate
            approvals.append(person(m, st, comment=pred.comment if isinstance(pred, ApprovalPredicate) else None))
        pub = None
        if self.publication is not None:
            m, st = self.publication
            pub = person(m, st, policy_version=named(st))
        return {
            "status": self.status,
            "policy_version": self.policy.version if self.policy else 0,
            "builders": [{"name": n, "keyid": k, "affiliation": a} for n, k, a in self.builders],
            "approvals": approvals,
            "rebuilds": [person(m, st, result="identical") for m, st in self.rebuilds],
            "publication": pub,
            "revocations": self.revocation_reasons,
            "needs": self.needs,
            "log": None if self.log is None else {
                "origin": self.log.opened.checkpoint.origin, "size": self.log.size,
                "root": self.log.opened.checkpoint.root_hash.hex(),
                "cosigned_by": [c.name for c in self.log.opened.cosignatures],
                "entries": sorted(self.logged.values())},
            "not_counted": [f"{r.source}: {r.reason}" for r in [
                *self.rejected, *(self.approvals.uncounted if self.approvals else []),
                *(self.revocations.uncounted if self.revocations else [])]],
        }

    def explain(self) -> list[str]:
        policy = f"policy {self.policy.version}" if self.policy else "no policy yet"
        lines = [f"{self.ref}  sha256:{self.digest}", f"status: {self.status}  ({policy})"]
        lines += [f"  {'✓' if c.holds else '✗'} {c.name}: {c.detail}" for c in self.checks]
        uncounted = [*self.rejected, *(self.approvals.uncounted if self.approvals else []),
                     *(self.revocations.uncounted if self.revocations else [])]
        if uncounted:
            lines.append("not counted:")
            lines += [f"  {r.source}: {r.reason}" for r in uncounted]
        return lines


def _about(statements: list[Statement], kind: str, subject: tuple[str, str],
           rejected: list[Rejected]) -> Iterator[Statement]:
    """The ``kind`` statements about ``subject``; those about anything else go to ``rejected``."""
    for st in statements:
        if st.kind != kind:
            continue
        if (st.subject_name, st.subject_digest) != subject:
            rejected.append(Rejected(st.source, elsewhere(st, *subject)))
            continue
        yield st


def _builders(statements: list[Statement], policy: Policy, subject: tuple[str, str],
              rejected: list[Rejected]) -> list[tuple[str, str, str | None]]:
    """Who built the release, from build statements that verify under the key they carry."""
    found = []
    for st in _about(statements, "build", subject, rejected):
        pred = st.predicate
        assert isinstance(pred, BuildPredicate)
        try:
            key = sslib_key(pred.public_key)
            st.verify(key)
        except (SignatureError, InputError) as err:
            rejected.append(Rejected(st.source, err.message))
            continue
        member = policy.member(st.keyid)
        found.append((pred.builder, st.keyid, member.affiliation if member else None))
    return found


def _rebuilds(statements: list[Statement], policy: Policy, subject: tuple[str, str], builders,
              now: datetime, rejected: list[Rejected],
              log_to: list[tuple[str, Statement, str | None]] | None = None,
              position=None) -> list[tuple[Maintainer, Statement]]:
    """Identical rebuilds by rebuilders independent of every builder (one per key)."""
    builder_keys = {k for _, k, _ in builders}
    builder_affiliations = {a for _, _, a in builders if a}
    counted: dict[str, tuple[Maintainer, Statement]] = {}
    for st in _about(statements, "rebuild", subject, rejected):
        signer = check_signer(policy, st, "rebuilder", now, position(st) if position else None)
        pred = st.predicate
        assert isinstance(pred, RebuildPredicate)
        if isinstance(signer, str):
            why = signer
        elif pred.result != "identical" or pred.rebuilt_digest != st.subject_digest:
            why = (f"{signer.name}'s rebuild differs (sha256:{pred.rebuilt_digest[:12]}, first differing stage: "
                   f"{pred.first_differing_stage or 'unknown'})")
        elif st.keyid in builder_keys:
            why = f"{signer.name} rebuilt with the builder's own key: a rebuild must be by another party"
        elif signer.affiliation in builder_affiliations:
            why = f"{signer.name} is of the builder's affiliation {signer.affiliation}: not an independent rebuild"
        else:
            counted.setdefault(st.keyid, (signer, st))
            if log_to is not None:
                log_to.append((f"{signer.name} ({signer.affiliation})", st, None))
            continue
        rejected.append(Rejected(st.source, why))
        if log_to is not None:
            who = st.keyid[:12] if isinstance(signer, str) else f"{signer.name} ({signer.affiliation})"
            log_to.append((who, st, why))
    return list(counted.values())


def named(publication: Statement) -> int:
    """The policy version a publication statement says it was checked against."""
    pred = publication.predicate
    return pred.policy_version if isinstance(pred, PublicationPredicate) else 0


NOT_LOGGED = "not in the transparency log yet: its operator runs `commonforge log append`"


def _with_log(root: Path, chain: Chain, statements: list[Statement], subject: tuple[str, str], view,
              result: ReleaseStatus, now: datetime) -> tuple[list[Statement], Any]:
    """The statements that may count once the policy names a log, and their positions in it.

    The log's statements about the release join the checkout's (a revocation deleted from a
    checkout or a git remote still counts); approvals, rebuilds and publications count only when
    logged; revocations and build statements count either way (a revocation can only make a
    release less trusted)."""
    from trust.log import forge as log_forge

    policy = chain.current
    assert policy is not None and policy.log is not None
    view = view if view is not None else log_forge.try_view(policy.log, log_forge.default_source(root))
    if isinstance(view, str):
        result.checks.append(Check("log", False, f"no verified copy of log {policy.log.origin}: {view}"))
        view = None
    else:
        result.log = view
        have = {st.digest for st in statements}
        for entry in view.about(subject[0]):
            if entry.statement.digest not in have:
                statements.append(entry.statement)
                have.add(entry.statement.digest)
    position = view.position if view is not None else (lambda st: None)
    if view is not None:
        why = _policy_change_unlogged(root, chain, view, now)
        if why:
            result.checks.append(Check("log", False, why))
    kept = []
    for st in statements:
        if st.kind in ("approval", "rebuild", "publication") and position(st) is None:
            if (st.subject_name, st.subject_digest) == subject:
                result.rejected.append(Rejected(st.source, NOT_LOGGED))
            continue
        kept.append(st)
    return kept, position


def _policy_change_unlogged(root: Path, chain: Chain, view, now: datetime) -> str | None:
    """Why the current policy does not hold yet for a client of the log, or None.

    Once a policy names a log, every later change takes effect for publication only when that
    log holds enough of its signatures (the log's origin and key never change: check_change): a
    change shown to some clients and kept out of the log, a split view of the governance itself,
    publishes nothing."""
    versions = chain.versions
    for previous, current in zip(versions, versions[1:], strict=False):
        if previous.log is None:
            continue
        signatures = st_mod.read_all(trust_policy.signatures_dir(trust_policy.policy_dir(root), current.version))[0]
        logged = [st for st in signatures if view.position(st) is not None]
        why = trust_policy.failing(trust_policy.check_change(previous, current, logged, now))
        if why is not None:
            return (f"policy {current.version}'s change is not in log {previous.log.origin} enough to hold ({why}): "
                    "until its operator runs `commonforge log append` (and the witnesses cosign), nothing is "
                    "published")
    return None


def release_status(root: Path, release: Release, *, chain: Chain | None = None, pins: Pins | None = None,
                   now: datetime | None = None, view=None) -> ReleaseStatus:
    """The status of ``release`` in the checkout at ``root``, with its reasons.

    When the policy names a transparency log, ``view`` is a verified copy of it
    (``trust.log.forge.open_view``; default: this machine's copy, verified now)."""
    now = now or datetime.now(UTC)
    chain = chain or load_chain(root, pins=pins, now=now)
    ref = Ref("model", release.name, release.version)
    subject = (st_mod.release_subject(ref), release.release_digest)
    statements, rejected = st_mod.read_all(st_mod.statements_dir(root, ref))
    policy = chain.current
    result = ReleaseStatus(str(ref), release.release_digest, "draft", policy, rejected=list(rejected), root=Path(root))
    if policy is None:
        result.checks.append(Check("policy", False, "the forge has only its bootstrap policy (version 0): nothing can "
                                                    "be published until founders run `commonforge policy init`"))
        return result
    position = None
    if policy.log is not None:
        statements, position = _with_log(root, chain, statements, subject, view, result, now)
    result.approvals = tally(policy, statements, action="publish", kind="approval", what="approvals",
                             subject_name=subject[0], subject_digest=subject[1], now=now, position=position)
    result.revocations = tally(policy, statements, action="revoke", kind="revocation", what="revocations",
                               subject_name=subject[0], subject_digest=subject[1], now=now, position=position)
    result.builders = _builders(statements, policy, subject, result.rejected)
    result.rebuilds = _rebuilds(statements, policy, subject, result.builders, now, result.rejected,
                                result.rebuild_log, position)
    need = policy.rules.publish.identical_rebuilds
    if not result.builders:
        rebuild_detail = "no verified build statement: who built it is unknown, so no rebuild can be shown independent"
    elif not result.rebuilds:
        rebuild_detail = f"0 of {need} identical rebuilds: no identical rebuild by another party"
    else:
        rebuild_detail = f"{len(result.rebuilds)} of {need} identical rebuilds by another party (" + ", ".join(
            f"{m.name}, {m.affiliation}" for m, _ in result.rebuilds) + ")"
    result.checks.append(Check("approvals", result.approvals.holds, result.approvals.explain()))
    result.checks.append(Check("rebuilds", bool(result.builders) and len(result.rebuilds) >= need, rebuild_detail))
    for pub in _about(statements, "publication", subject, result.rejected):
        signer = check_signer(policy, pub, "maintainer", now, position(pub) if position else None)
        if isinstance(signer, str):
            result.rejected.append(Rejected(pub.source, signer))
        elif named(pub) > policy.version:
            result.rejected.append(Rejected(pub.source, f"it names policy {named(pub)}, "
                                                        f"which this checkout does not have (newest: {policy.version})"))
        elif result.publication is None:
            result.publication = (signer, pub)
    if result.publication is None:
        result.checks.append(Check("publication", False, "not published yet"
                                   + (": the rules hold, `commonforge publish` publishes it" if result.publishable else "")))
    else:
        signer, pub = result.publication
        pred = pub.predicate
        assert isinstance(pred, PublicationPredicate)
        still = "" if result.publishable else f", but policy {policy.version}'s rules no longer hold"
        result.checks.append(Check("publication", result.publishable,
                                   f"published by {signer.name} ({signer.affiliation}) at {pred.signed_at} "
                                   f"under policy {pred.policy_version}{still}"))
    result.checks.append(Check("revocation", not result.revocations.holds,
                               ("REVOKED: " if result.revocations.holds else "") + result.revocations.explain()))
    if result.log is not None:
        counted = [st for _, st in [*result.approvals.counted, *result.rebuilds, *result.revocations.counted]]
        if result.publication is not None:
            counted.append(result.publication[1])
        result.logged = {st.digest: p for st in counted if (p := result.log.position(st)) is not None}
        entries = ", ".join(f"#{p}" for p in sorted(result.logged.values())) or "none yet"
        result.checks.append(Check("log", True, f"{result.log.describe()}; entries that count here: {entries}"))
    if result.revocations.holds:
        result.status = "revoked"
    elif result.publication is not None and result.publishable and all(c.holds for c in result.checks
                                                                          if c.name == "log"):
        result.status = "published"
    return result


def resolve(root: Path, ref: Ref | str, *, chain: Chain | None = None, pins: Pins | None = None,
            now: datetime | None = None) -> tuple[Release, ReleaseStatus]:
    """A model ref resolved by verified status: a pinned ref as it is; a bare name to its newest
    published release, else its newest draft (with a warning); revoked ones only when named."""
    reg = Registry(root)
    ref = ref if isinstance(ref, Ref) else Ref.parse(ref, default_kind="model")
    if ref.kind != "model":
        raise InputError(f"{ref} is not a model ref", hint="statements are about model releases")
    chain = chain or load_chain(root, pins=pins, now=now)
    if ref.pinned:
        release = reg.release(str(ref))
        return release, release_status(root, release, chain=chain, now=now)
    versions = reg.versions("model", ref.name)
    if not versions:
        raise NotFoundError(str(ref), candidates=reg.names("model"))
    found = []
    for version in reversed(versions):
        release = reg.release(f"model/{ref.name}@{version}")
        found.append((release, release_status(root, release, chain=chain, now=now)))
    for wanted in ("published", "draft"):
        for release, status in found:
            if status.status == wanted:
                if wanted == "draft":
                    log.warning("%s has no published release; using the draft %s", ref, release.ref)
                return release, status
    raise NotFoundError(str(ref), hint=f"every release of {ref} is revoked; name a version to use one anyway")


def locate(root: Path, ref: Ref | str, *, pins: Pins | None = None,
           now: datetime | None = None) -> tuple[Release, ReleaseStatus]:
    """:func:`resolve` across the registry layers (``registry.layers``): the checkout at ``root``,
    then the user's own registry. A pinned ref: the first layer that holds it. A bare name: a
    published release in the first layer that has one, else a draft (with a warning). Each layer
    has its own policy chain and statements; ``status.root`` says which one answered."""
    from registry.layers import layer_roots

    parsed = ref if isinstance(ref, Ref) else Ref.parse(ref, default_kind="model")
    found: list[tuple[Release, ReleaseStatus]] = []
    last: ForgeError | None = None
    for layer in layer_roots(root):
        if parsed.pinned:
            try:
                Registry(layer).release(str(parsed))
            except NotFoundError as err:
                last = err
                continue
            return resolve(layer, parsed, pins=pins, now=now)
        if not Registry(layer).versions("model", parsed.name):
            continue
        try:
            release, status = _quiet_resolve(layer, parsed, pins=pins, now=now)
        except NotFoundError as err:  # every release of it revoked in this layer
            last = err
            continue
        if status.status == "published":
            return release, status
        found.append((release, status))
    if found:
        release, status = found[0]
        log.warning("%s has no published release; using the draft %s (%s)", parsed, release.ref, status.layer)
        return release, status
    if last is not None:
        raise last
    raise NotFoundError(str(parsed), candidates=sorted({n for r in layer_roots(root) for n in Registry(r).names("model")}))


def _quiet_resolve(root: Path, ref: Ref, **kw) -> tuple[Release, ReleaseStatus]:
    """:func:`resolve` without its draft warning (``locate`` warns once, for the layer it picks)."""
    previous = log.disabled
    log.disabled = True
    try:
        return resolve(root, ref, **kw)
    finally:
        log.disabled = previous


def for_use(root: Path, ref: Ref | str | Release, *, allow_revoked: bool = False, pins: Pins | None = None,
            now: datetime | None = None) -> tuple[Release, ReleaseStatus]:
    """The release to load for inference (serving, evaluation, the explorer) with its verified status.

    A bare name resolves as :func:`resolve` does; a revoked release is refused unless
    ``allow_revoked`` (then a warning says so), whoever asks. ``pins``: default the user's
    (``trust.policy.user_pins``: a rolled-back policy chain is refused).
    """
    if pins is None:
        pins = user_pins()
    if isinstance(ref, Release):
        release, status = ref, release_status(root, ref, pins=pins, now=now)
    else:
        release, status = locate(root, ref, pins=pins, now=now)
    if status.status == "revoked":
        why = "; ".join(status.revocation_reasons) or "revoked by the maintainers"
        if not allow_revoked:
            raise VerificationError(
                f"{status.ref} is revoked ({why})",
                hint="a revoked release is not used unless you insist: pass --allow-revoked (e.g. to study it)",
            )
        log.warning("%s is REVOKED (%s); using it because --allow-revoked was given", status.ref, why)
    return release, status


# --- signing statements about a release ----------------------------------------------------


def _write(root: Path, release: Release, kind: str, signer: Signer, predicate: Predicate) -> Path:
    if release.manifest.private:
        # A statement goes into the log and travels with the release: a private fine-tune gets none.
        raise InputError(f"{release.ref} is private (a fine-tune on its owner's own data): it is never approved, "
                         "published, shared or logged",
                         hint="share it as a fine-tune recipe over a registry dataset instead")
    ref = Ref("model", release.name, release.version)
    data = st_mod.sign(signer, kind, st_mod.release_subject(ref), release.release_digest, predicate)
    return st_mod.write(st_mod.statements_dir(root, ref), kind, signer.public_key.keyid, data)


def require_member(chain: Chain, info: KeyInfo, role: str, what: str) -> Policy:
    """The current policy, where it gives ``info``'s key ``role``; else a clear refusal (``what`` would not count)."""
    policy = chain.current
    member = policy.member(info.keyid) if policy else None
    if policy is None or member is None or role not in member.roles:
        where = f"policy {policy.version}" if policy else "the bootstrap policy"
        raise VerificationError(
            f"key {info.keyid[:12]} ({info.name}, {info.affiliation}) is not a {role} in {where}: {what} would not count",
            hint="a policy change (`commonforge policy propose --add`) must list the key first",
        )
    return policy


def approve(root: Path, release: Release, signer: Signer, info: KeyInfo, *, comment: str | None = None,
            chain: Chain | None = None) -> Path:
    require_member(chain or load_chain(root), info, "maintainer", "its approval")
    return _write(root, release, "approval", signer, ApprovalPredicate(signed_at=utc_now(), comment=comment or None))


def attest_build(root: Path, release: Release, signer: Signer, info: KeyInfo, *,
                 machine: dict[str, str] | None = None) -> Path:
    """The builder's statement (any key: the builder need not be a maintainer)."""
    return _write(root, release, "build", signer, BuildPredicate(
        signed_at=utc_now(), builder=info.name, public_key=info.public_key,
        source_commit=release.manifest.source_commit, machine=machine or {}))


def attest_rebuild(root: Path, release: Release, signer: Signer, info: KeyInfo, *, rebuilt_digest: str,
                   first_differing_stage: str | None = None, environment_differences: list[str] | None = None,
                   machine: dict[str, str] | None = None, chain: Chain | None = None) -> Path:
    require_member(chain or load_chain(root), info, "rebuilder", "its rebuild")
    identical = rebuilt_digest == release.release_digest
    return _write(root, release, "rebuild", signer, RebuildPredicate(
        signed_at=utc_now(), result="identical" if identical else "different", rebuilt_digest=rebuilt_digest,
        first_differing_stage=None if identical else first_differing_stage,
        environment_differences=environment_differences or [], machine=machine or {}))


def attest_sharing(root: Path, release: Release, signer: Signer, info: KeyInfo, predicate, *,
                   chain: Chain | None = None) -> Path:
    """A maintainer's statement that this torrent (``sharing.torrent``) carries the release's files."""
    require_member(chain or load_chain(root), info, "maintainer", "its sharing statement")
    return _write(root, release, "sharing", signer, predicate)


def revoke(root: Path, release: Release, signer: Signer, info: KeyInfo, *, reason: str, severity: str,
           chain: Chain | None = None) -> Path:
    require_member(chain or load_chain(root), info, "maintainer", "its revocation")
    try:
        predicate = RevocationPredicate(signed_at=utc_now(), reason=reason, severity=severity)  # type: ignore[arg-type]
    except ValueError as err:
        raise InputError(f"bad revocation: {err}", hint="give a reason of a sentence at least "
                         "and a severity of low, medium, high or critical") from None
    return _write(root, release, "revocation", signer, predicate)


def log_statement(root: Path, path: Path, op=None, *, chain: Chain | None = None) -> str:
    """Append the statement file ``path`` to the policy's log when ``op`` (its operator) is at hand;
    a line saying where it went, or who must append it."""
    policy = (chain or load_chain(root)).current
    if policy is None or policy.log is None:
        return "the policy names no transparency log: nothing to append"
    if op is None:
        return (f"{path.name} is not in log {policy.log.origin} yet: until its operator runs "
                "`commonforge log append`, it does not count")
    from trust.log import forge as log_forge

    st = st_mod.parse_envelope(Path(path).read_bytes(), f"{path.parent.name}/{path.name}")
    if st.digest not in {s.digest for s in loggable(root, chain=chain)}:
        raise VerificationError(f"{path.name} does not count under policy {policy.version}: it is not appended",
                                hint="`commonforge validate` says why")
    new = log_forge.append(op, [st])
    where = f"entry #{new[0].index}" if new else "already logged"
    return f"{path.name}: {where} of log {policy.log.origin} (witnesses cosign next: `commonforge log witness`)"


def publish(root: Path, release: Release, signer: Signer, info: KeyInfo, *, chain: Chain | None = None,
            now: datetime | None = None, op=None, view=None) -> tuple[Path, ReleaseStatus]:
    """Sign the publication of ``release``; refused unless the policy's publish rule holds now.

    Where the policy names a log, ``op`` (the log's operator) appends the publication at once;
    without it the release stays a draft until the operator appends it."""
    chain = chain or load_chain(root, now=now)
    policy = require_member(chain, info, "maintainer", "its publication")
    status = release_status(root, release, chain=chain, now=now, view=view)
    if status.status == "revoked":
        raise ForgeError(f"{status.ref} is revoked; a revoked release is never published again",
                         hint="build and approve a new version")
    if not status.publishable:
        raise VerificationError(
            f"{status.ref} cannot be published under policy {policy.version}: "
            + "; ".join(c.detail for c in status.checks if c.name in ("log", "approvals", "rebuilds") and not c.holds),
            hint="`commonforge status` shows what is missing",
        )
    assert status.approvals is not None
    counted = sorted({s.digest for _, s in status.approvals.counted} | {s.digest for _, s in status.rebuilds})
    path = _write(root, release, "publication", signer, PublicationPredicate(
        signed_at=utc_now(), policy_version=policy.version, policy_digest=policy.digest, counted=counted))
    if policy.log is not None and op is not None:
        log_statement(root, path, op, chain=chain)
    return path, release_status(root, release, chain=chain, now=now, view=view)


# --- checking every statement (for `validate` and a pull request's `check`) ------------------------

ROLE_OF = {"approval": "maintainer", "revocation": "maintainer", "publication": "maintainer", "rebuild": "rebuilder"}


def _why_not(st: Statement, subject: tuple[str, str], policy: Policy | None, chain: Chain, now: datetime) -> str | None:
    """Why the statement ``st`` beside the release ``subject`` would not count (None: it would)."""
    if (st.subject_name, st.subject_digest) != subject:
        return elsewhere(st, *subject)
    if st.kind == "build":
        found: list[Rejected] = []
        _builders([st], policy or chain.bootstrap, subject, found)
        return found[0].reason if found else None
    if policy is None:
        return "the forge has only its bootstrap policy: no key counts yet"
    signer = check_signer(policy, st, ROLE_OF.get(st.kind, "maintainer"), now)  # type: ignore[arg-type]
    return signer if isinstance(signer, str) else None


def loggable(root: Path, *, chain: Chain | None = None, now: datetime | None = None) -> list[Statement]:
    """Every statement of the checkout the policy lets count: what ``commonforge log append`` adds
    (the policy versions' signatures, then the releases' statements). Nothing else enters the log."""
    now = now or datetime.now(UTC)
    chain = chain or load_chain(root, now=now)
    found: list[Statement] = []
    previous = None
    for version in chain.versions:
        folder = trust_policy.signatures_dir(trust_policy.policy_dir(root), version.version)
        for st in st_mod.read_all(folder)[0]:
            if st.kind != "policy" or (st.subject_name, st.subject_digest) != (version.subject, version.digest):
                continue
            if any(isinstance(check_signer(p, st, "maintainer", now), Maintainer) for p in (previous, version) if p):
                found.append(st)
        previous = version
    reg = Registry(root)
    for folder in sorted((Path(root) / "registry" / "entries" / "models").glob("*/*.statements")):
        ref = Ref("model", folder.parent.name, folder.name[: -len(".statements")])
        try:
            release = reg.release(str(ref))
        except ForgeError:
            continue
        subject = (st_mod.release_subject(ref), release.release_digest)
        found += [st for st in st_mod.read_all(folder)[0] if _why_not(st, subject, chain.current, chain, now) is None]
    return found


def statement_problems(root: Path, *, only: set[Path] | None = None, pins: Pins | None = None,
                       now: datetime | None = None) -> list[str]:
    """Every statement file beside a release that would not count, with why (empty: all verify).

    ``only`` limits the report to those files (a pull request's added statements): a statement
    must parse, name the release it sits beside (ref and digest), verify, and be signed by a key
    the current policy gives the statement's role (build statements: by the key they carry).
    A broken policy chain is one problem that stops the rest.
    """
    now = now or datetime.now(UTC)
    try:
        chain = load_chain(root, pins=pins, now=now)
    except ForgeError as err:
        return [f"the policy chain: {err.message}"]
    reg = Registry(root)
    problems: list[str] = []
    models = Path(root) / "registry" / "entries" / "models"
    for folder in sorted(models.glob("*/*.statements")):
        ref = Ref("model", folder.parent.name, folder.name[: -len(".statements")])
        wanted = [p for p in sorted(folder.glob("*")) if only is None or p.resolve() in only]
        if not wanted:
            continue
        try:
            release = reg.release(str(ref))
        except ForgeError:
            problems += [f"{p.relative_to(root)}: there is no release {ref} for it to be about" for p in wanted]
            continue
        statements, rejected = st_mod.read_all(folder)
        policy = chain.current
        subject = (st_mod.release_subject(ref), release.release_digest)
        for st in statements:
            why = _why_not(st, subject, policy, chain, now)
            if why:
                rejected.append(Rejected(st.source, why))
        problems += [f"{folder.relative_to(root)}/{r.source.split('/', 1)[1]}: {r.reason}" for r in rejected
                     if only is None or (folder / r.source.split("/", 1)[1]).resolve() in only]
    return problems
