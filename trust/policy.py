"""The governance policy: who may vouch for what, and how many of them must.

``registry/governance/policy/<N>.yaml``, every version kept. Version 0 is the bootstrap the
repository ships: no maintainers, no keys, only the default rules that ``policy init`` proposes
to a forge's founders. From version 1 on a policy lists its maintainers (keyid, public key, name,
affiliation, roles, not-after date, and a compromise date when one was declared) and, per
action, numbers:

    signatures            how many signatures are counted at least
    max_per_affiliation   at most how many of one affiliation's signatures are counted
    affiliations          how many distinct affiliations the counted signatures come from at least
    identical_rebuilds    (publish) identical rebuilds by rebuilders who are not the builder

Changing the policy (version N -> N+1) needs the ``policy`` rule of version N *and* of N+1, each
counted over the signatures on N+1 (TUF's root rotation rule), and N+1 must be exactly the next
number. The ``policy`` rule may not ask less than ⌈2n/3⌉ of the n maintainers. Version 1 has
no predecessor: it needs its own threshold, and each client pins its digest the first time it
sees it (trust on first use, docs/trust.md); the newest version a client accepted is remembered
too, so an older chain (a rollback) is refused.

Proposals are made in ``registry/governance/proposals/<N>.yaml``, signed there
(``<N>.statements/``), and moved into ``policy/`` by ``policy apply`` once both thresholds hold.
Nothing trusts ``apply``: every reader verifies the whole chain again.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from commonforge.errors import ForgeError, InputError, NotFoundError
from registry.digest import canonical_digest
from registry.fsutil import atomic_write_text
from registry.schema import Timestamp, utc_now
from registry.yamlio import load_model, save_model
from trust.errors import PolicyError, SignatureError
from trust.keys import KeyId, Label, PublicKey, PublicKeyPem
from trust.statements import CLOCK_SKEW, PolicyPredicate, Rejected, Statement, Strict, parse_time, read_all, sign, write

GOVERNANCE = Path("registry") / "governance"
Role = Literal["maintainer", "rebuilder"]
Action = Literal["publish", "revoke", "policy"]


class Maintainer(Strict):
    keyid: KeyId
    name: Label
    affiliation: Label
    public_key: PublicKeyPem
    roles: list[Role] = Field(min_length=1)
    not_after: Timestamp  # signatures made after this do not count
    # Declared by a policy change: signatures this key made at or after this time do not count.
    compromised_since: Timestamp | None = None
    # The same, in the log's order (the forge's trusted time, when the policy names a log): this
    # key's statements count only when the log holds them at a position before this entry.
    compromised_from_entry: int | None = Field(None, ge=0)

    def public(self) -> PublicKey:
        return PublicKey(keyid=self.keyid, name=self.name, affiliation=self.affiliation, public_key=self.public_key)


class WitnessSpec(Strict):
    """A witness the policy trusts: its cosignature/v1 note key and who runs it."""

    name: Label
    affiliation: Label
    key: str  # a note verifier key, name+hash+base64, of type 0x04 (cosignature/v1)

    def verifier(self):
        from trust.log import note

        return note.parse_verifier(self.key)


class LogSpec(Strict):
    """The forge's transparency log (``docs/trust.md``): what a checkpoint of it must carry."""

    origin: Label  # the checkpoint's origin line
    key: str  # the log's Ed25519 note verifier key, name+hash+base64 (type 0x01)
    witnesses: list[WitnessSpec] = []
    witnesses_required: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> LogSpec:
        from trust.log import note
        from trust.log.checkpoint import Checkpoint

        try:
            Checkpoint(self.origin, 0, bytes(32))  # an origin a checkpoint can carry
            log_key = self.verifier()
            keys = [(w, w.verifier()) for w in self.witnesses]
        except ForgeError as err:
            raise ValueError(err.message) from None
        if log_key.alg != note.ALG_ED25519:
            raise ValueError("log.key must be an Ed25519 note key (type 0x01)")
        seen = set()
        for w, v in keys:
            if v.alg != note.ALG_COSIGNATURE_V1:
                raise ValueError(f"witness {w.name}'s key must be a cosignature/v1 note key (type 0x04)")
            if (v.name, v.key_id) in seen:
                raise ValueError(f"witness key {v.label} is listed twice")
            seen.add((v.name, v.key_id))
        if self.witnesses_required > len(self.witnesses):
            raise ValueError(f"log.witnesses_required {self.witnesses_required} exceeds the {len(self.witnesses)} witnesses")
        return self

    def verifier(self):
        from trust.log import note

        return note.parse_verifier(self.key)

    def witness_verifiers(self) -> list:
        return [w.verifier() for w in self.witnesses]


class Rule(Strict):
    signatures: int = Field(ge=1)
    max_per_affiliation: int = Field(ge=1)
    affiliations: int = Field(ge=1)


class PublishRule(Rule):
    identical_rebuilds: int = Field(1, ge=0)


class Rules(Strict):
    publish: PublishRule
    revoke: Rule
    policy: Rule


def policy_floor(members: list[Maintainer], max_per_affiliation: int) -> int:
    """The fewest counted signatures a policy change may ask of ``members``: ⌈2n/3⌉ of the n
    maintainers, or every signature the affiliation cap lets count where that is fewer (four
    maintainers from three affiliations, one counted each: 3 = ⌈8/3⌉; six from three: 3, not 4,
    which the cap would make unreachable and freeze the forge)."""
    per = Counter(m.affiliation for m in members)
    seats = sum(min(c, max_per_affiliation) for c in per.values())
    return min(math.ceil(2 * len(members) / 3), seats)


def reachable(rule: Rule, members: list[Maintainer]) -> bool:
    """Whether ``members`` can satisfy ``rule`` at all (a rule nobody can meet freezes the forge)."""
    per = Counter(m.affiliation for m in members)
    return sum(min(c, rule.max_per_affiliation) for c in per.values()) >= rule.signatures and len(per) >= rule.affiliations


class Policy(Strict):
    schema_version: Literal[1] = 1
    version: int = Field(ge=0)
    maintainers: list[Maintainer] = []
    rules: Rules
    log: LogSpec | None = None  # from the version that names it, publication goes through this log

    @model_validator(mode="after")
    def _check(self) -> Policy:
        keyids = [m.keyid for m in self.maintainers]
        dupes = sorted({k for k in keyids if keyids.count(k) > 1})
        if dupes:
            raise ValueError(f"a key is listed twice: {', '.join(dupes)}")
        if self.version == 0:
            if self.maintainers:
                raise ValueError("version 0 is the empty bootstrap: it lists no maintainers (policy init makes 1)")
            return self
        for m in self.maintainers:
            m.public().sslib_key()  # the keyid must be the key's
            if m.compromised_from_entry is not None and self.log is None:
                raise ValueError(f"{m.name}'s compromised_from_entry needs a log: the policy names none")
        voters = self.holders("maintainer")
        if not voters:
            raise ValueError("a policy needs at least one maintainer whose key is not compromised")
        floor = policy_floor(voters, self.rules.policy.max_per_affiliation)
        if self.rules.policy.signatures < floor:
            raise ValueError(f"rules.policy.signatures {self.rules.policy.signatures} is less than {floor}: ⌈2n/3⌉ of the "
                             f"{len(voters)} maintainers, as far as max_per_affiliation lets them count")
        for action, members in (("publish", voters), ("revoke", voters), ("policy", voters)):
            if not reachable(getattr(self.rules, action), members):
                raise ValueError(f"rules.{action} cannot be met by these maintainers and affiliations "
                                 "(count what max_per_affiliation lets each affiliation add)")
        rebuilders = self.holders("rebuilder")
        if self.rules.publish.identical_rebuilds > len(rebuilders):
            raise ValueError(f"rules.publish.identical_rebuilds {self.rules.publish.identical_rebuilds} exceeds the "
                             f"{len(rebuilders)} rebuilders")
        return self

    @property
    def digest(self) -> str:
        return canonical_digest(self.model_dump(mode="json", exclude_none=True))

    @property
    def subject(self) -> str:
        return f"policy/{self.version}"

    def member(self, keyid: str) -> Maintainer | None:
        return next((m for m in self.maintainers if m.keyid == keyid), None)

    def holders(self, role: Role) -> list[Maintainer]:
        """Who holds ``role`` and can still sign: a key declared compromised stays listed (its
        earlier signatures count) but signs nothing new, so thresholds are met without it."""
        return [m for m in self.maintainers if role in m.roles and m.compromised_since is None
                and m.compromised_from_entry is None]


# --- counting signatures ------------------------------------------------------------------


def check_signer(policy: Policy, st: Statement, role: Role, now: datetime,
                 position: int | None = None) -> Maintainer | str:
    """The maintainer whose valid signature ``st`` carries, or why it does not count.

    ``position``: where the log holds ``st`` (None: not logged, or no log is known)."""
    member = policy.member(st.keyid)
    if member is None:
        return f"key {st.keyid[:12]} is not in policy {policy.version}"
    who = f"{member.name} ({member.affiliation}, key {st.keyid[:12]})"
    try:
        st.verify(member.public().sslib_key())
    except SignatureError:
        return f"the signature claimed by {who} does not verify: forged or altered"
    if role not in member.roles:
        return f"{who} is not a {role} in policy {policy.version}"
    signed = st.signed_at
    if signed > now + CLOCK_SKEW:
        return f"{who} dated it {st.predicate.signed_at}, in the future"
    if signed > parse_time(member.not_after):
        return f"{who} signed at {st.predicate.signed_at}, after the key's not-after date {member.not_after}"
    if member.compromised_since is not None and signed >= parse_time(member.compromised_since):
        return (f"{who} signed at {st.predicate.signed_at}, after the key was declared compromised "
                f"since {member.compromised_since}")
    cut = member.compromised_from_entry
    if cut is not None and (position is None or position >= cut):
        where = "the log does not hold it" if position is None else f"the log holds it at entry {position}"
        return f"{who}'s key was declared compromised from log entry {cut} and {where}"
    return member


def elsewhere(st: Statement, subject_name: str, subject_digest: str) -> str:
    """Why a statement about something else (a replay) does not count here."""
    return (f"it is about {st.subject_name} sha256:{st.subject_digest[:12]}, "
            f"not {subject_name} sha256:{subject_digest[:12]}")


@dataclass
class Tally:
    """How one rule fared over a set of statements, with the reasons for everything not counted."""

    what: str  # "approvals", "revocations", "signatures on policy 2"
    rule: Rule
    policy_version: int
    counted: list[tuple[Maintainer, Statement]] = field(default_factory=list)
    uncounted: list[Rejected] = field(default_factory=list)
    signed_by_affiliation: Counter = field(default_factory=Counter)

    @property
    def affiliations(self) -> set[str]:
        return {m.affiliation for m, _ in self.counted}

    @property
    def holds(self) -> bool:
        return len(self.counted) >= self.rule.signatures and len(self.affiliations) >= self.rule.affiliations

    def explain(self) -> str:
        parts = [f"{len(self.counted)} of {self.rule.signatures} {self.what} counted"]
        for aff, n in sorted(self.signed_by_affiliation.items()):
            kept = sum(1 for m, _ in self.counted if m.affiliation == aff)
            if n > kept:
                parts.append(f"affiliation {aff} signed {n} times, counted {_times(kept)}")
        if len(self.affiliations) < self.rule.affiliations:
            parts.append(f"{len(self.affiliations)} of {self.rule.affiliations} distinct affiliations")
        return "; ".join(parts)


def _times(n: int) -> str:
    return {0: "never", 1: "once", 2: "twice"}.get(n, f"{n} times")


def tally(policy: Policy, statements: list[Statement], *, action: Action, kind: str, what: str,
          subject_name: str, subject_digest: str, now: datetime,
          position: Callable[[Statement], int | None] | None = None) -> Tally:
    """Count ``kind`` statements about the subject under ``policy``'s rule for ``action``.

    A statement counts when it names exactly this subject (ref and digest: no replay from
    another release, version or build), verifies under the key the policy lists for its keyid,
    comes from a maintainer, was made while the key was valid, and its key was not counted
    yet; then at most ``max_per_affiliation`` per affiliation count, earliest first.
    """
    rule: Rule = getattr(policy.rules, action)
    result = Tally(what, rule, policy.version)
    seen: set[str] = set()
    eligible: list[tuple[Maintainer, Statement]] = []
    for st in statements:
        if st.kind != kind:
            continue
        if (st.subject_name, st.subject_digest) != (subject_name, subject_digest):
            result.uncounted.append(Rejected(st.source, elsewhere(st, subject_name, subject_digest)))
            continue
        signer = check_signer(policy, st, "maintainer", now, position(st) if position else None)
        if isinstance(signer, str):
            result.uncounted.append(Rejected(st.source, signer))
            continue
        if signer.keyid in seen:
            result.uncounted.append(Rejected(st.source, f"{signer.name}'s key {signer.keyid[:12]} is already counted once"))
            continue
        seen.add(signer.keyid)
        result.signed_by_affiliation[signer.affiliation] += 1
        eligible.append((signer, st))
    per: Counter = Counter()
    for signer, st in sorted(eligible, key=lambda e: (e[1].signed_at, e[0].keyid)):
        if per[signer.affiliation] >= rule.max_per_affiliation:
            result.uncounted.append(Rejected(st.source, f"{signer.name}'s: affiliation {signer.affiliation} already has "
                                                        f"{rule.max_per_affiliation} counted"))
            continue
        per[signer.affiliation] += 1
        result.counted.append((signer, st))
    return result


# --- the chain of versions ----------------------------------------------------------------


def policy_dir(root: Path) -> Path:
    return Path(root) / GOVERNANCE / "policy"


def proposals_dir(root: Path) -> Path:
    return Path(root) / GOVERNANCE / "proposals"


def signatures_dir(folder: Path, version: int) -> Path:
    return folder / f"{version}.statements"


def versions_in(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("*.yaml") if re.fullmatch(r"0|[1-9][0-9]{0,8}", p.stem)) \
        if folder.is_dir() else []


def load_policy(folder: Path, version: int) -> Policy:
    path = folder / f"{version}.yaml"
    if not path.is_file():
        raise NotFoundError(f"policy version {version} in {folder}",
                            hint="`commonforge policy propose` (or `policy init` for version 1) makes one")
    policy = load_model(Policy, path)
    if policy.version != version:
        raise PolicyError(f"{path} declares version {policy.version}", hint="a policy file is named after its version")
    return policy


def check_change(previous: Policy | None, new: Policy, statements: list[Statement], now: datetime) -> list[Tally]:
    """The tallies a change to ``new`` needs (of ``previous``'s rule, if any, and of ``new``'s own);
    raises :class:`PolicyError` for a version that is not exactly the next."""
    expected = 1 if previous is None else previous.version + 1
    if new.version != expected:
        raise PolicyError(
            f"policy version {new.version} cannot follow version {expected - 1}: versions go up by exactly one",
            hint=f"a rollback or a skipped version is refused; propose version {expected}",
        )
    if previous is not None and previous.log is not None:
        if new.log is None:
            raise PolicyError(
                f"policy {new.version} drops the transparency log policy {previous.version} names "
                f"({previous.log.origin}): a policy change can never turn the log off",
                hint="keep the log: without it unlogged approvals would count and logged revocations go unseen")
        if (new.log.origin, new.log.key) != (previous.log.origin, previous.log.key):
            raise PolicyError(
                f"policy {new.version} replaces the transparency log of policy {previous.version} "
                f"({previous.log.origin}, key {previous.log.verifier().label}) with {new.log.origin}, key "
                f"{new.log.verifier().label}: a log's origin and key are fixed once named",
                hint="a log run by someone else would see none of the old entries; keep the log (its witnesses "
                "may change, through a logged policy change)")
    signers = [new] if previous is None else [previous, new]
    return [tally(p, statements, action="policy", kind="policy",
                  what=f"signatures of policy {p.version}'s maintainers on policy {new.version}",
                  subject_name=new.subject, subject_digest=new.digest, now=now) for p in signers]


def failing(tallies: list[Tally]) -> str | None:
    missing = [t for t in tallies if not t.holds]
    return "; ".join(t.explain() for t in missing) if missing else None


class Pins:
    """What this user accepted before, per checkout: policy 1's digest and the newest version.

    A JSON file in the user's configuration directory (outside every repository, so a rewritten
    repository cannot rewrite it). ``None`` as the path keeps nothing (a one-off check).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, dict] = {}
        if path is not None and Path(path).is_file():
            try:
                self.data = json.loads(Path(path).read_text(encoding="utf-8"))
            except ValueError as err:
                raise InputError(f"{path} is not JSON: {err}", hint="restore the file or delete it to trust anew") from None

    def check(self, root: Path, chain: list[Policy]) -> None:
        key = str(Path(root).resolve())
        seen = self.data.get(key)
        if seen is None:
            return
        if not (isinstance(seen, dict) and isinstance(seen.get("newest"), int) and seen["newest"] >= 1
                and all(isinstance(seen.get(k), str) for k in ("root_digest", "newest_digest"))):
            raise InputError(f"{self.path}: the entry for {key} is damaged",
                             hint="restore the file, or remove the entry to trust this checkout anew")
        if len(chain) < seen["newest"]:
            raise PolicyError(
                f"{root} holds policy versions up to {len(chain)}, but you accepted version {seen['newest']} before",
                hint="this is a rollback to an older policy: fetch the newer policy files, never accept the older chain",
            )
        if chain[0].digest != seen["root_digest"]:
            raise PolicyError(
                f"policy 1 of {root} is sha256:{chain[0].digest}, but you trusted sha256:{seen['root_digest']} before",
                hint="someone replaced the forge's founding policy: do not trust this checkout; if the forge "
                f"really started over, remove its entry from {self.path}",
            )
        if chain[seen["newest"] - 1].digest != seen["newest_digest"]:
            raise PolicyError(
                f"policy {seen['newest']} of {root} is sha256:{chain[seen['newest'] - 1].digest}, but you accepted "
                f"sha256:{seen['newest_digest']} as version {seen['newest']} before",
                hint="the chain forked: two different policies carry the same number; trust neither until the "
                "maintainers explain",
            )

    def remember(self, root: Path, chain: list[Policy]) -> None:
        if self.path is None or not chain:
            return
        key = str(Path(root).resolve())
        entry = {"root_digest": chain[0].digest, "newest": chain[-1].version, "newest_digest": chain[-1].digest}
        if self.data.get(key) != entry:
            self.data[key] = entry
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(self.path), json.dumps(self.data, indent=2, sort_keys=True) + "\n")


def user_pins() -> Pins:
    """This user's pins (``commonforge.settings.trust_pins``), the default wherever a chain is loaded for use.

    One place for the CLI and ``trust.status.for_use``; settings is imported here, not at the top, to keep
    ``import trust`` light.
    """
    from commonforge import settings

    return Pins(settings.trust_pins())


@dataclass(frozen=True)
class Chain:
    """The verified policy versions of a checkout: ``bootstrap`` (0) and 1..N."""

    bootstrap: Policy
    versions: tuple[Policy, ...]

    @property
    def current(self) -> Policy | None:
        return self.versions[-1] if self.versions else None


def load_chain(root: Path, *, pins: Pins | None = None, now: datetime | None = None) -> Chain:
    """Verify every policy version of ``root`` in order; refuse a chain that does not verify."""
    now = now or datetime.now(UTC)
    folder = policy_dir(root)
    found = versions_in(folder)
    if 0 not in found:
        raise PolicyError(f"{folder} has no 0.yaml (the bootstrap policy)", hint="restore registry/governance from git")
    bootstrap = load_policy(folder, 0)
    numbered = [v for v in found if v]
    if numbered != list(range(1, len(numbered) + 1)):
        missing = sorted(set(range(1, max(numbered) + 1)) - set(numbered))
        raise PolicyError(f"{folder} skips policy version(s) {', '.join(map(str, missing))}",
                          hint="every version from 1 up must be present; a skipped version is never accepted")
    chain: list[Policy] = []
    for version in numbered:
        new = load_policy(folder, version)
        statements, _ = read_all(signatures_dir(folder, version))
        why = failing(check_change(chain[-1] if chain else None, new, statements, now))
        if why:
            raise PolicyError(f"policy {version} in {folder} is not signed as the rules require: {why}",
                              hint="a policy change needs the thresholds of the old and the new version")
        chain.append(new)
    if pins is not None:
        pins.check(root, chain)
        pins.remember(root, chain)
    return Chain(bootstrap, tuple(chain))


# --- proposing, signing, applying ----------------------------------------------------------


def propose(root: Path, policy: Policy) -> Path:
    """Write ``policy`` as the proposal of its version (which must be the chain's next)."""
    chain = load_chain(root)
    expected = (chain.current.version if chain.current else 0) + 1
    if policy.version != expected:
        raise PolicyError(f"a proposal must be version {expected}, not {policy.version}",
                          hint="versions go up by exactly one")
    path = proposals_dir(root) / f"{policy.version}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or load_policy(path.parent, policy.version).digest != policy.digest:
        # Signatures on an older draft name its digest and would only clutter `status`.
        shutil.rmtree(signatures_dir(path.parent, policy.version), ignore_errors=True)
    save_model(policy, path)
    return path


def proposal(root: Path) -> Policy:
    """The pending proposal (the chain's next version)."""
    chain = load_chain(root)
    version = (chain.current.version if chain.current else 0) + 1
    return load_policy(proposals_dir(root), version)


def apply(root: Path, *, now: datetime | None = None) -> Policy:
    """Move the pending proposal into ``policy/`` once the old and the new thresholds hold."""
    now = now or datetime.now(UTC)
    chain = load_chain(root)
    new = proposal(root)
    folder = proposals_dir(root)
    statements, _ = read_all(signatures_dir(folder, new.version))
    why = failing(check_change(chain.current, new, statements, now))
    if why:
        raise PolicyError(f"policy {new.version} is not signed enough yet: {why}",
                          hint=f"more maintainers run `commonforge policy sign {new.version} --key KEY`")
    target = policy_dir(root)
    shutil.copytree(signatures_dir(folder, new.version), signatures_dir(target, new.version), dirs_exist_ok=True)
    shutil.move(folder / f"{new.version}.yaml", target / f"{new.version}.yaml")
    shutil.rmtree(signatures_dir(folder, new.version))
    return new


def _policy_rule(rule: Rule, voters: list[Maintainer]) -> Rule:
    """The policy rule at the floor of :func:`policy_floor` for ``voters`` (``rule``'s cap kept)."""
    signatures = max(1, policy_floor(voters, rule.max_per_affiliation))  # no voters: Policy says why
    return Rule(signatures=signatures, max_per_affiliation=rule.max_per_affiliation,
                affiliations=math.ceil(signatures / rule.max_per_affiliation))


def _build(version: int, maintainers: list[Maintainer], rules: Rules, *, exact: bool = False,
           log: LogSpec | None = None) -> Policy:
    """Policy ``version``; its policy rule set to the floor for its maintainers unless ``exact``."""
    voters = [m for m in maintainers if "maintainer" in m.roles and m.compromised_since is None
              and m.compromised_from_entry is None]
    if not exact:
        rules = rules.model_copy(update={"policy": _policy_rule(rules.policy, voters)})
    try:
        return Policy(version=version, maintainers=maintainers, rules=rules, log=log)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise InputError(f"policy {version} would not be valid: {err}",
                         hint="a policy needs enough maintainers in enough affiliations to meet its rules") from None


def member(key: PublicKey, roles: list[Role], not_after: str) -> Maintainer:
    return Maintainer(keyid=key.keyid, name=key.name, affiliation=key.affiliation, public_key=key.public_key,
                      roles=roles, not_after=not_after)


def founding(root: Path, maintainers: list[Maintainer], log: LogSpec | None = None) -> Policy:
    """Policy 1 for a forge's founders, with the bootstrap's rules (policy rule raised to ⌈2n/3⌉)."""
    chain = load_chain(root)
    if chain.current is not None:
        raise PolicyError(f"{policy_dir(root)} already has policy {chain.current.version}",
                          hint="change it with `commonforge policy propose`")
    return _build(1, maintainers, chain.bootstrap.rules, log=log)


def changed(current: Policy, *, add: list[Maintainer] = (), remove: list[str] = (),  # type: ignore[assignment]
            compromised: dict[str, str] | None = None, rules: Rules | None = None,
            compromised_from_entry: dict[str, int] | None = None, log: LogSpec | None = None) -> Policy:
    """Policy ``current.version + 1``: maintainers added, removed, or declared compromised since a
    time (or, once the policy names a log, from a log entry on); ``log`` names (or replaces) the log."""
    compromised = compromised or {}
    from_entry = compromised_from_entry or {}
    log = log or current.log
    if from_entry and log is None:
        raise InputError("a compromise from a log entry needs a log, and the policy names none",
                         hint="name the log first (`policy propose --log-origin … --log-key …`), or give a time")
    unknown = sorted((set(remove) | set(compromised) | set(from_entry)) - {m.keyid for m in current.maintainers})
    if unknown:
        raise InputError(f"keys not in policy {current.version}: {', '.join(unknown)}",
                         hint="name keys by their full keyid (`commonforge policy show`)")
    # model_validate, not model_copy: a compromise time given on the command line is checked too.
    kept = [Maintainer.model_validate({**m.model_dump(), "compromised_since": compromised.get(m.keyid, m.compromised_since),
                                       "compromised_from_entry": from_entry.get(m.keyid, m.compromised_from_entry)})
            for m in current.maintainers if m.keyid not in remove]
    return _build(current.version + 1, [*kept, *add], rules or current.rules, exact=rules is not None, log=log)


def sign_proposal(root: Path, signer, version: int) -> Path:
    """Sign the pending proposal ``version`` with ``signer`` (a securesystemslib Signer)."""
    pending = proposal(root)
    if pending.version != version:
        raise PolicyError(f"the pending proposal is version {pending.version}, not {version}",
                          hint=f"sign version {pending.version}")
    data = sign(signer, "policy", pending.subject, pending.digest, PolicyPredicate(signed_at=utc_now(), version=version))
    return write(signatures_dir(proposals_dir(root), version), "policy", signer.public_key.keyid, data)
