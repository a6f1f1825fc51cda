"""The licenses check: every SPDX id valid and open, a dataset's license covering its sources, credit
where a license asks for it, and a model's license compatible with its data.

    result = check_licenses(CheckInput(root, "dataset/psalms@1", "registry/entries/datasets/psalms/1.yaml"))
    result = check_licenses(CheckInput(root, "recipe/forge-small@2", "registry/entries/recipes/forge-small/2.yaml"))

Expressions are parsed and validated with the maintained SPDX library (``license-expression``:
:func:`license_expression.get_spdx_licensing`), never with a hand-written list of ids. Whether an id
is *open* is the forge's policy, a committed file: ``registry/governance/licenses.yaml`` (read it
for the families and the reasons; in short: OSI/FSF-approved software licenses, CC0 and the
public-domain marks, CC-BY-*, CC-BY-SA-*, the open data licenses; NonCommercial and
NoDerivatives refused with their reason). The policy is read from the *base* checkout when there
is one, so a pull request is never judged by a policy it changes itself.

A **dataset** (``dataset/...``):

* its license and every source's license parse as SPDX expressions of known ids (an id spelled
  otherwise than SPDX spells it, e.g. ``cc-by-4.0`` or the deprecated ``GPL-2.0+``, is a problem:
  the registry compares ids as strings);
* every id (and every ``WITH`` exception) named anywhere is allowed by the policy; an ``OR`` that
  offers a refused license is refused too;
* the dataset's expression **covers** each source: whichever alternative of the dataset's
  expression a user takes (its disjunctive normal form), it includes one alternative of the
  source's own expression (``CC0-1.0 AND MIT`` covers a source under ``MIT``; ``CC0-1.0 OR MIT``
  does not cover a CC0 source and an MIT source together);
* a source under a license the policy marks ``attribution: true`` (CC-BY-*, CC-BY-SA-*, ODC-By,
  ODbL, OGL-UK, etalab) carries ``attribution:`` text.

A **recipe** (``recipe/...``): the model's license is valid and open, and for every ShareAlike
license among its datasets' licenses (the policy's ``share_alike: true``: CC-BY-SA-*, ODbL,
CDLA-Sharing, the GPLs, the GFDL) the model's license names that license or one the policy's
``share_alike_compatible`` allows, in every alternative. Otherwise the check **fails**: whether a
trained model adapts its training text is unsettled, and the forge takes the reading that never
wrongs an author (license the model under the data's ShareAlike license, or train on other data).
The sources whose attribution a model card must carry are listed in ``details["attributions"]``.

The entry is read as YAML, not through the schema, so its license problems are reported with
their lines even when the schema check fails too. Nothing is written.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from commonforge.errors import ForgeError, InputError
from contributions.report import CheckInput, CheckResult, Problem
from contributions.sources_check import EntryFile, first_line, read_entry
from registry.schema import Model, Text
from registry.yamlio import load_model

NAME = "licenses"
POLICY = Path("registry") / "governance" / "licenses.yaml"
MAX_ALTERNATIVES = 256  # alternatives of an expression's disjunctive normal form we are willing to expand
_TOKEN = re.compile(r"[A-Za-z0-9.+:-]+")
_OPERATORS = {"and", "or", "with"}


# --- the policy -----------------------------------------------------------------------------


class Refusal(Model):
    pattern: Text  # a regular expression matched in full, case-insensitively, e.g. ".*-NC(-.*)?"
    reason: Text


class Family(Model):
    name: Text
    reason: Text
    licenses: list[Text] = []  # SPDX ids, e.g. ["MIT", "Apache-2.0"]
    patterns: list[Text] = []  # regular expressions over ids, e.g. ["CC-BY-[0-9.]+(-[A-Za-z]{2,5})?"]
    attribution: bool = False  # copies must credit the author: sources need `attribution:` text
    share_alike: bool = False  # adaptations must carry the same license


class LicensePolicy(Model):
    schema_version: Literal[1] = 1
    refused: list[Refusal] = []
    families: list[Family] = Field(min_length=1)
    exceptions: list[Text] = []  # `WITH` exceptions that only add permissions
    share_alike_compatible: dict[str, list[Text]] = {}  # SA license -> licenses an adaptation may carry instead


@dataclass(frozen=True)
class Verdict:
    """What the policy says of one id."""

    key: str  # as the SPDX library spells it
    allowed: bool
    why: str  # the family it belongs to, or the reason it is refused
    attribution: bool = False
    share_alike: bool = False


@lru_cache(maxsize=1)
def licensing() -> Any:
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def parse(expression: str) -> Any:
    """The parsed, validated expression; InputError saying what is wrong otherwise."""
    if not isinstance(expression, str) or not expression.strip():
        raise InputError(f"{expression!r} is not a license expression")
    try:
        parsed = licensing().parse(expression, validate=True, strict=True)
    except Exception as err:  # noqa: BLE001 - the parser raises assorted errors on malformed input
        raise InputError(f"{expression!r} is not a valid SPDX license expression: {err}") from None
    if parsed is None:
        raise InputError(f"{expression!r} names no license")
    return parsed


def canonical(license_id: str) -> str:
    """The SPDX library's spelling of one id (``cc-by-4.0`` -> ``CC-BY-4.0``)."""
    return str(parse(license_id))


class Policy:
    """The forge's open-license policy (``registry/governance/licenses.yaml``), ready to judge ids."""

    def __init__(self, spec: LicensePolicy, source: str = str(POLICY)) -> None:
        self.spec, self.source = spec, source
        try:
            self._ids = {canonical(i): f for f in spec.families for i in f.licenses}
            # An exception parses only after WITH: spell it through a stand-in license.
            self.exceptions = {str(parse(f"MIT WITH {e}").exception_symbol) for e in spec.exceptions}
            self.compatible = {canonical(k): {canonical(v) for v in vs} for k, vs in spec.share_alike_compatible.items()}
            self._refused = [(re.compile(r.pattern, re.IGNORECASE), r.reason) for r in spec.refused]
            self._patterns = [(re.compile(p, re.IGNORECASE), f) for f in spec.families for p in f.patterns]
        except (InputError, re.error) as err:
            raise InputError(f"{source}: {err}", hint="the license policy must name valid SPDX ids and regexes") from None

    @classmethod
    def load(cls, root: Path) -> Policy:
        path = root / POLICY
        if not path.is_file():
            raise InputError(f"{path} does not exist: the licenses check has no policy",
                             hint="restore registry/governance/licenses.yaml from git")
        return cls(load_model(LicensePolicy, path), str(POLICY))

    def judge(self, key: str) -> Verdict:
        for rx, reason in self._refused:
            if rx.fullmatch(key):
                return Verdict(key, False, reason.strip())
        family = self._ids.get(key) or next((f for rx, f in self._patterns if rx.fullmatch(key)), None)
        if family is None:
            return Verdict(key, False, f"{key} is not on the forge's open-license policy ({self.source})")
        return Verdict(key, True, family.name, family.attribution, family.share_alike)


def policy_for(inp: CheckInput) -> Policy:
    """The base checkout's policy where there is one (a pull request never judges itself), else the head's."""
    if inp.base_root is not None and (inp.base_root / POLICY).is_file():
        return Policy.load(inp.base_root)
    return Policy.load(inp.root)


# --- expressions ----------------------------------------------------------------------------


def symbols(parsed: Any) -> list[Any]:
    """License symbols of an expression, ``WITH`` kept together (``Apache-2.0 WITH LLVM-exception``)."""
    return list(licensing().license_symbols(parsed, decompose=False))


def alternatives(parsed: Any) -> list[frozenset[str]]:
    """The expression's disjunctive normal form: each alternative a set of (canonical) symbols."""
    lic = licensing()
    if isinstance(parsed, lic.OR):
        out = [alt for arg in parsed.args for alt in alternatives(arg)]
    elif isinstance(parsed, lic.AND):
        out = [frozenset()]
        for arg in parsed.args:
            out = list({a | b for a, b in itertools.product(out, alternatives(arg))})
            if len(out) > MAX_ALTERNATIVES:
                raise InputError(f"{parsed} has more than {MAX_ALTERNATIVES} alternatives",
                                 hint="write the license expression in a simpler form")
    else:
        out = [frozenset({str(parsed)})]
    return sorted(set(out), key=sorted)


def _spelling(expression: str) -> list[tuple[str, str]]:
    """``(as written, as SPDX spells it)`` for every id written otherwise (LicenseRef aliases aside)."""
    out = []
    for token in _TOKEN.findall(expression):
        if token.lower() in _OPERATORS or token.startswith("LicenseRef-"):
            continue
        try:
            key = canonical(token)
        except InputError:
            continue  # reported by parse() with the whole expression
        if key != token:
            out.append((token, key))
    return out


@dataclass
class Judged:
    """One license field of the entry: parsed, judged, with its problems."""

    expression: str
    parsed: Any = None  # None when it does not parse
    verdicts: tuple[Verdict, ...] = ()
    alternatives: list[frozenset[str]] = field(default_factory=list)  # its disjunctive normal form

    @property
    def keys(self) -> set[str]:
        return {v.key for v in self.verdicts}

    @property
    def attribution(self) -> list[str]:
        return sorted(v.key for v in self.verdicts if v.attribution)

    @property
    def share_alike(self) -> list[str]:
        return sorted(v.key for v in self.verdicts if v.share_alike)


def judge_field(expression: Any, what: str, policy: Policy, entry: EntryFile, loc: tuple[str | int, ...],
                problems: list[Problem]) -> Judged:
    """Parse and judge one license field, appending its problems (with the field's line)."""
    line = entry.line(*loc)
    if not isinstance(expression, str):
        problems.append(Problem(f"{what}: no license expression", fix="add `license:` with an SPDX expression",
                                path=entry.path, line=line))
        return Judged(str(expression))
    judged = Judged(expression)
    try:
        judged.parsed = parse(expression)
        judged.alternatives = alternatives(judged.parsed)
    except InputError as err:
        judged.parsed = None
        problems.append(Problem(f"{what}: {err.message}",
                                fix="use SPDX ids (https://spdx.org/licenses/) joined with AND, OR and WITH",
                                path=entry.path, line=line))
        return judged
    for written, key in _spelling(expression):
        problems.append(Problem(f"{what}: {written!r} is spelled {key!r} in SPDX",
                                fix=f"write {key}: the registry compares license ids as strings",
                                path=entry.path, line=line))
    verdicts = []
    for sym in symbols(judged.parsed):
        license_sym = getattr(sym, "license_symbol", sym)
        exception = getattr(sym, "exception_symbol", None)
        verdict = policy.judge(str(license_sym))
        verdicts.append(verdict)
        if not verdict.allowed:
            problems.append(Problem(
                f"{what}: {verdict.key} is refused: {verdict.why}",
                fix="only openly licensed material can enter the forge: choose another source, or a license "
                f"on the policy; a change of the policy itself is a separate pull request to {POLICY}",
                path=entry.path, line=line))
        if exception is not None and str(exception) not in policy.exceptions:
            problems.append(Problem(
                f"{what}: the exception {exception} is not on the forge's list of exceptions that only add permissions",
                fix=f"drop `WITH {exception}`, or propose it for `exceptions` in {POLICY}",
                path=entry.path, line=line))
    judged.verdicts = tuple(verdicts)
    return judged


# --- datasets and recipes -------------------------------------------------------------------


def _check_dataset(entry: EntryFile, policy: Policy) -> tuple[list[Problem], dict[str, Any]]:
    data = entry.data
    problems: list[Problem] = []
    dataset = judge_field(data.get("license"), "dataset license", policy, entry, ("license",), problems)
    sources = data.get("sources") if isinstance(data.get("sources"), list) else []
    details: dict[str, Any] = {"license": str(dataset.parsed) if dataset.parsed is not None else dataset.expression,
                               "sources": {}, "attribution": [], "share_alike": dataset.share_alike,
                               "policy": policy.source}
    dataset_alts = dataset.alternatives if dataset.parsed is not None else None
    for i, source in enumerate(sources):
        if not isinstance(source, dict):
            continue
        sid = str(source.get("id", f"#{i + 1}"))
        judged = judge_field(source.get("license"), f"source {sid}", policy, entry, ("sources", i, "license"), problems)
        details["sources"][sid] = str(judged.parsed) if judged.parsed is not None else judged.expression
        if judged.attribution:
            details["attribution"].append(sid)
            credit = source.get("attribution")
            if not isinstance(credit, str) or not credit.strip():
                problems.append(Problem(
                    f"source {sid}: {', '.join(judged.attribution)} asks for attribution, and the source has no "
                    "`attribution:` text",
                    fix="add `attribution:` to the source: who made the work (author or rights holder), its title, "
                    "the license with a link to it, and that the text was changed (cleaned, split); the dataset "
                    "card and the model cards reproduce it",
                    path=entry.path, line=entry.line("sources", i, "attribution")))
        if dataset_alts is None or judged.parsed is None:
            continue
        source_alts = judged.alternatives
        for alt in dataset_alts:
            if not any(s <= alt for s in source_alts):
                shown = " AND ".join(sorted(alt))
                missing = sorted(min(source_alts, key=lambda s: len(s - alt)) - alt)
                problems.append(Problem(
                    f"the dataset's license {details['license']!r} does not cover source {sid} ({judged.parsed})"
                    + (f": its alternative {shown!r} leaves out {', '.join(missing)}" if len(dataset_alts) > 1
                       else f": {', '.join(missing)} is missing"),
                    fix="a dataset's license is every source's license joined with AND, e.g. "
                    f"{' AND '.join(sorted(dataset.keys | set(missing)))}",
                    path=entry.path, line=entry.line("license")))
                break
    return problems, details


def _check_recipe(inp: CheckInput, entry: EntryFile, policy: Policy) -> tuple[list[Problem], dict[str, Any]]:
    from registry.catalog import Registry

    data = entry.data
    problems: list[Problem] = []
    model = judge_field(data.get("license"), "model license", policy, entry, ("license",), problems)
    details: dict[str, Any] = {"license": str(model.parsed) if model.parsed is not None else model.expression,
                               "datasets": {}, "attributions": {}, "policy": policy.source}
    model_alts = model.alternatives
    registry = Registry(inp.root)
    refs = data.get("datasets") if isinstance(data.get("datasets"), list) else []
    for j, ref in enumerate(refs):
        try:
            dataset = registry.dataset(str(ref))
            judged = parse(dataset.license)
        except ForgeError as err:
            problems.append(Problem(f"dataset {ref}: its license cannot be read ({first_line(err)})",
                                    fix="fix the dataset reference (the schema check lists what is wrong)",
                                    path=entry.path, line=entry.line("datasets", j)))
            continue
        verdicts = [policy.judge(str(getattr(s, "license_symbol", s))) for s in symbols(judged)]
        details["datasets"][str(ref)] = str(judged)
        credits = [s.id for s in dataset.sources if s.attribution]
        if credits:
            details["attributions"][str(ref)] = credits
        for v in verdicts:
            if not v.allowed:
                problems.append(Problem(f"dataset {ref} is under {v.key}, which is refused: {v.why}",
                                        fix="train on openly licensed data only", path=entry.path,
                                        line=entry.line("datasets", j)))
        for v in (v for v in verdicts if v.share_alike):
            allowed = {v.key} | policy.compatible.get(v.key, set())
            if model.parsed is None or all(alt & allowed for alt in model_alts):
                continue
            problems.append(Problem(
                f"dataset {ref} is under {v.key}, a ShareAlike license, and the model's license "
                f"{details['license']!r} is not {' or '.join(sorted(allowed))}",
                fix=f"license the model under {v.key} (`license: {v.key}`), or train on data without a "
                "ShareAlike license; the forge reads a model trained on ShareAlike text as an adaptation of it",
                path=entry.path, line=entry.line("license")))
    return problems, details


def check_licenses(inp: CheckInput) -> CheckResult:
    """Judge an added dataset's, recipe's or conversion's licenses against the forge's policy (module docstring)."""
    kind = inp.ref.split("/", 1)[0]
    if kind not in ("dataset", "recipe", "conversion"):
        return CheckResult.skipped(NAME, f"{inp.ref}: the licenses check knows datasets, recipes and conversions only")
    try:
        entry = read_entry(inp)
    except ForgeError as err:
        return CheckResult.skipped(NAME, f"the entry does not parse, so its licenses were not read: {first_line(err)}")
    if not isinstance(entry.data, dict):
        return CheckResult.skipped(NAME, "the entry is not a mapping, so its licenses were not read")
    policy = policy_for(inp)
    if kind == "conversion":
        problems: list[Problem] = []
        judged = judge_field(entry.data.get("license"), "model license", policy, entry, ("license",), problems)
        details: dict[str, Any] = {"license": str(judged.parsed) if judged.parsed is not None else judged.expression,
                   "policy": policy.source}
        if problems:
            return CheckResult.failed(NAME, f"{len(problems)} license problem(s) under {policy.source}", problems,
                                      **details)
        return CheckResult.passed(NAME, f"model license {details['license']} (as its publisher states it) is open "
                                        "under the forge's policy", **details)
    problems, details = _check_dataset(entry, policy) if kind == "dataset" else _check_recipe(inp, entry, policy)
    if problems:
        return CheckResult.failed(NAME, f"{len(problems)} license problem(s) under {policy.source}", problems, **details)
    if kind == "dataset":
        credit = f"; attribution present for {', '.join(details['attribution'])}" if details["attribution"] else ""
        return CheckResult.passed(
            NAME, f"license {details['license']}: every id open under the forge's policy, covering its "
            f"{len(details['sources'])} source(s){credit}", **details)
    return CheckResult.passed(
        NAME, f"model license {details['license']} is open and compatible with the licenses of "
        f"{', '.join(details['datasets']) or 'its datasets'}", **details)
