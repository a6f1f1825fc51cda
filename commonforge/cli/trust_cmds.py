"""``keys``, ``status``, ``approve``, ``attest``, ``publish``, ``revoke``, ``policy``: governance from the terminal.

Wiring only: the logic is in :mod:`trust` (keys, statements, policy, status).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from commonforge.cli.command import add_command

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see registry_cmds)
if TYPE_CHECKING:
    from registry.schema import Release
    from trust.policy import Maintainer, Role

STATUS_HELP = """\
Show a release's status, computed from the signed statements beside it under the current
governance policy: which rules hold, which do not and why, and every statement that does not
count with the reason. A bare name means the newest published release, else the newest draft.
Exit 0 whatever the status; 1 when the policy chain itself does not verify.
"""

POLICY_HELP = """\
The governance policy (registry/governance/policy/<N>.yaml). A forge's founders make version 1
with `policy init`; later versions come from `policy propose`. A proposal is signed by
maintainers (`policy sign N --key K`) and takes effect with `policy apply` once the thresholds
of the current and of the proposed version both hold.
"""


def key_options(p: argparse.ArgumentParser, *, key: bool = True, optional_key: str | None = None) -> None:
    """``--key`` (required, or optional with ``optional_key`` as its help), ``--passphrase-file``, ``--keys-dir``."""
    if key:
        p.add_argument("--key", required=True, metavar="KEY", help="your key: keyid, keyid prefix or name")
    elif optional_key:
        p.add_argument("--key", metavar="KEY", help=optional_key)
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help="the key's passphrase (first line of FILE)")
    p.add_argument("--keys-dir", type=Path, metavar="DIR",
                   help="where your keys are (default: $XDG_CONFIG_HOME/commonforge/keys)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    keys = add_command(sub, "keys", cmd_help, "your signing keys: generate, import, list, export")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = add_command(ksub, "generate", cmd_keys_generate, "generate a key (ECDSA P-256 by default, or Ed25519)")
    p.add_argument("--name", required=True, help="your name, as the policy will list it")
    p.add_argument("--affiliation", required=True, help="who you work for or represent (independent: say so)")
    p.add_argument("--type", choices=["ecdsa", "ed25519"], default="ecdsa", help="ecdsa = P-256 (default)")
    key_options(p, key=False)
    p = add_command(ksub, "import", cmd_keys_import, "import an OpenSSH private key (ECDSA P-256 or Ed25519)")
    p.add_argument("path", type=Path, metavar="PATH", help="e.g. ~/.ssh/id_ed25519")
    p.add_argument("--name", required=True)
    p.add_argument("--affiliation", required=True)
    key_options(p, key=False)
    p = add_command(ksub, "list", cmd_keys_list, "list your keys")
    key_options(p, key=False)
    p = add_command(ksub, "export", cmd_keys_export, "print a key's public half (JSON) for a policy proposal")
    p.add_argument("selector", metavar="KEY", help="keyid, keyid prefix or name")
    key_options(p, key=False)

    p = add_command(sub, "status", cmd_status, "a release's verified status and what it still needs", STATUS_HELP)
    p.add_argument("ref", metavar="MODEL_REF", help="e.g. model/forge-small@1.0.0 or forge-small")
    key_options(p, key=False)

    p = add_command(sub, "approve", cmd_approve, "sign your approval of a release (data, recipe, evaluations, card)")
    p.add_argument("ref", metavar="MODEL_REF", help="a pinned ref, e.g. model/forge-small@1.0.0")
    p.add_argument("--comment", help="what you checked, or a caveat")
    key_options(p)

    p = add_command(sub, "attest", cmd_attest, "sign a build or rebuild statement about a release")
    p.add_argument("what", choices=["build", "rebuild"])
    p.add_argument("ref", metavar="MODEL_REF", help="a pinned ref")
    p.add_argument("--rebuilt-digest", metavar="SHA256",
                   help="rebuild: the release digest your rebuild produced (`commonforge reproduce` prints it; "
                        "`reproduce --key K` signs the statement itself)")
    key_options(p)

    p = add_command(sub, "publish", cmd_publish, "sign the publication of a release (refused unless the policy holds)")
    p.add_argument("ref", metavar="MODEL_REF", help="a pinned ref")
    p.add_argument("--no-card", action="store_true",
                   help="don't re-render the model card with its governance as of publication")
    key_options(p)
    _log_key_option(p, "the publication")

    p = add_command(sub, "revoke", cmd_revoke, "sign a revocation of a release")
    p.add_argument("ref", metavar="MODEL_REF", help="a pinned ref")
    p.add_argument("--reason", required=True, help="why, in a sentence at least")
    p.add_argument("--severity", required=True, choices=["low", "medium", "high", "critical"])
    key_options(p)
    _log_key_option(p, "the revocation")

    policy = add_command(sub, "policy", cmd_help, "the governance policy: init, propose, sign, apply, show", POLICY_HELP)
    psub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    p = add_command(psub, "init", cmd_policy_init, "propose policy 1 for a forge's founders")
    _member_options(p)
    _log_options(p)
    p = add_command(psub, "propose", cmd_policy_propose, "propose the next policy version")
    _member_options(p)
    _log_options(p)
    p.add_argument("--compromised-from-entry", action="append", default=[], metavar="KEYID=N",
                   help="once the policy names a log: the key's statements count only where the log holds them "
                        "before entry N (the log's order is the forge's trusted time; a signer can backdate a "
                        "statement's time, not its place in the log)")
    p.add_argument("--remove", action="append", default=[], metavar="KEYID", help="drop a maintainer")
    p.add_argument("--compromised", action="append", default=[], metavar="KEYID=TIME",
                   help="declare a key compromised since TIME (e.g. 2026-11-30T00:00:00Z): its later signatures stop counting")
    p = add_command(psub, "sign", cmd_policy_sign, "sign the pending proposal")
    p.add_argument("version", type=int, metavar="N")
    key_options(p)
    p = add_command(psub, "apply", cmd_policy_apply, "make the pending proposal the policy (once its thresholds hold)")
    _log_key_option(p, "the policy's signatures")
    add_command(psub, "show", cmd_policy_show, "show the current policy")


def _log_key_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--log-signer", type=Path, metavar="FILE",
                   help=f"the log operator's private note key (`commonforge log keygen`): append {what} to the transparency "
                        "log at once; without it the operator's `commonforge log append` does, and until then it "
                        "does not count")
    p.add_argument("--log", type=Path, metavar="DIR", help="the log's directory (default: COMMONFORGE_LOG)")


def _log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-origin", metavar="ORIGIN",
                   help="name the forge's transparency log: its checkpoint origin line, e.g. forge.example/log")
    p.add_argument("--log-key", metavar="VKEY",
                   help="the log's Ed25519 note verifier key, name+hash+base64 (`commonforge log keygen` prints it)")
    p.add_argument("--witness", action="append", default=[], metavar="NAME,AFFILIATION,VKEY",
                   help="a witness the clients trust: who runs it and its cosignature/v1 verifier key "
                        "(`commonforge log keygen --witness`), repeatable")
    p.add_argument("--witnesses-required", type=int, metavar="N",
                   help="how many of the witnesses must cosign a checkpoint before clients accept it")


def _log_spec(args: argparse.Namespace, current=None):
    """The LogSpec the options name (None: they name none, and the current one is kept)."""
    from commonforge.errors import InputError
    from trust.policy import LogSpec, WitnessSpec

    given = args.log_origin or args.log_key or args.witness or args.witnesses_required is not None
    if not given:
        return None
    base = current.log if current is not None and current.log is not None else None
    origin = args.log_origin or (base.origin if base else None)
    key = args.log_key or (base.key if base else None)
    if not origin or not key:
        raise InputError("naming a log needs --log-origin and --log-key",
                         hint="`commonforge log keygen ORIGIN` makes the log's key and prints its verifier key")
    witnesses = list(base.witnesses) if base and not args.witness else []
    for item in args.witness:
        parts = item.split(",", 2)
        if len(parts) != 3:
            raise InputError(f"--witness {item!r}: write NAME,AFFILIATION,VKEY", hint="e.g. --witness 'W1,Beta,w1+…'")
        witnesses.append(WitnessSpec(name=parts[0].strip(), affiliation=parts[1].strip(), key=parts[2].strip()))
    required = args.witnesses_required if args.witnesses_required is not None else (
        base.witnesses_required if base else min(1, len(witnesses)))
    try:
        return LogSpec(origin=origin, key=key, witnesses=witnesses, witnesses_required=required)
    except ValueError as err:
        raise InputError(f"bad log: {err}", hint="check the keys `commonforge log keygen` printed") from None


def _operator(root: Path, args: argparse.Namespace, chain):
    """The log's operator when ``--log-signer`` was given (its key must be the policy's log key)."""
    if not getattr(args, "log_signer", None):
        return None
    from commonforge.errors import InputError
    from trust.log import forge as log_forge

    policy = chain.current
    if policy is None or policy.log is None:
        raise InputError("--log-signer was given but the policy names no transparency log",
                         hint="name one with `commonforge policy propose --log-origin … --log-key …`")
    return log_forge.operator(policy.log, log_forge.load_note_key(args.log_signer), args.log)


def _logged(root: Path, path: Path, args: argparse.Namespace, chain) -> None:
    from trust.status import log_statement

    policy = chain.current
    if policy is not None and policy.log is not None:
        print(log_statement(root, path, _operator(root, args, chain), chain=chain), file=sys.stderr)


def _member_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--maintainer", action="append", default=[], type=Path, metavar="FILE",
                   help="a maintainer's exported public key (`commonforge keys export`), repeatable")
    p.add_argument("--rebuilder", action="append", default=[], type=Path, metavar="FILE",
                   help="a rebuilder's exported public key (the same file in both: both roles)")
    p.add_argument("--not-after", metavar="TIME", help="the new keys' not-after time, e.g. 2028-01-01T00:00:00Z")


def cmd_help(args: argparse.Namespace) -> int:  # argparse requires an action; never reached
    return 2


# --- where things are -------------------------------------------------------------------------


def _keys_dir(args: argparse.Namespace) -> Path:
    from commonforge import settings

    return args.keys_dir or settings.keys_dir()


def _root() -> Path:
    from commonforge.settings import apply

    return apply().root


def signer_from_args(args: argparse.Namespace):
    from trust.keys import load_signer, read_passphrase

    return load_signer(_keys_dir(args), args.key, read_passphrase(args.passphrase_file))


def _release(root: Path, ref: str) -> Release:
    from commonforge.errors import InputError
    from registry.catalog import Registry
    from registry.refs import Ref

    parsed = Ref.parse(ref, default_kind="model")
    if not parsed.pinned or parsed.kind != "model":
        raise InputError(f"{ref} does not name one release", hint="sign a pinned ref, e.g. model/forge-small@1.0.0")
    return Registry(root).release(str(parsed))


# --- keys -------------------------------------------------------------------------------------


def _print_key(info) -> None:
    print(f"{info.keyid}  {info.keytype:7}  {info.name} ({info.affiliation})"
          + ("  [passphrase]" if info.encrypted else ""))


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from trust.keys import generate, read_passphrase

    info = generate(_keys_dir(args), args.name, args.affiliation, args.type, read_passphrase(args.passphrase_file))
    _print_key(info)
    print(f"kept in {_keys_dir(args)} (0600); share `commonforge keys export {info.keyid[:12]}` with the forge",
          file=sys.stderr)
    return 0


def cmd_keys_import(args: argparse.Namespace) -> int:
    from trust.keys import import_openssh, read_passphrase

    _print_key(import_openssh(_keys_dir(args), args.path, args.name, args.affiliation,
                              read_passphrase(args.passphrase_file)))
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from trust.keys import list_keys

    found = list_keys(_keys_dir(args))
    for info in found:
        _print_key(info)
    if not found:
        print(f"no keys in {_keys_dir(args)}; `commonforge keys generate --name N --affiliation A` makes one",
              file=sys.stderr)
    return 0


def cmd_keys_export(args: argparse.Namespace) -> int:
    from trust.keys import find_key

    print(find_key(_keys_dir(args), args.selector).public().model_dump_json(indent=2))
    return 0


# --- statements about a release ---------------------------------------------------------------


def _print_status(status) -> None:
    print("\n".join(status.explain()))


def cmd_status(args: argparse.Namespace) -> int:
    from trust.policy import user_pins
    from trust.status import resolve

    _, status = resolve(_root(), args.ref, pins=user_pins())
    _print_status(status)
    return 0


def _sign_and_show(args: argparse.Namespace, done: str, sign) -> int:
    """Sign a statement about ``args.ref`` with ``sign(root, release, signer, info, chain)``, then show the status."""
    from trust.policy import load_chain, user_pins
    from trust.status import release_status

    root = _root()
    release = _release(root, args.ref)
    chain = load_chain(root, pins=user_pins())
    signer, info = signer_from_args(args)
    path = sign(root, release, signer, info, chain)
    print(f"{done} {release.ref} as {info.name} ({info.affiliation}): {path.relative_to(root)}", file=sys.stderr)
    _print_status(release_status(root, release, chain=chain))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from trust.status import approve

    return _sign_and_show(args, "approved", lambda root, release, signer, info, chain: approve(
        root, release, signer, info, comment=args.comment, chain=chain))


def cmd_attest(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError
    from trust.policy import load_chain, user_pins
    from trust.status import attest_build, attest_rebuild

    root = _root()
    release = _release(root, args.ref)
    signer, info = signer_from_args(args)
    if args.what == "build":
        path = attest_build(root, release, signer, info)
    else:
        if not args.rebuilt_digest:
            raise InputError("attest rebuild needs --rebuilt-digest: the digest your rebuild produced",
                             hint="`commonforge reproduce REF --key K` rebuilds and signs in one step")
        path = attest_rebuild(root, release, signer, info, chain=load_chain(root, pins=user_pins()),
                              rebuilt_digest=args.rebuilt_digest)
    print(f"signed the {args.what} statement of {release.ref}: {path.relative_to(root)}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from trust.policy import load_chain, user_pins
    from trust.status import publish

    root = _root()
    release = _release(root, args.ref)
    signer, info = signer_from_args(args)
    chain = load_chain(root, pins=user_pins())
    op = _operator(root, args, chain)  # before signing: a wrong log key refuses before anything is written
    path, status = publish(root, release, signer, info, chain=chain)
    print(f"signed the publication of {release.ref}: {path.relative_to(root)}", file=sys.stderr)
    if chain.current is not None and chain.current.log is not None:
        from trust.status import log_statement, release_status

        print(log_statement(root, path, op, chain=chain), file=sys.stderr)
        status = release_status(root, release, chain=chain)
    _print_status(status)
    if status.status == "published" and not args.no_card:
        from commonforge.settings import apply
        from pipelines.card import publication_card
        from registry.catalog import Registry

        record = publication_card(root, release, store_dir=apply().store_dir)
        Registry(root).save_record(release, "card", record)
        print(f"card rendered with its governance as of publication: {record.path}", file=sys.stderr)
    elif status.status == "draft" and status.publishable:
        print("it counts as published once the log holds the publication and enough witnesses cosigned "
              "(`commonforge log append`, `commonforge log witness`); its card keeps the draft's governance",
              file=sys.stderr)
    print("commit the statement (and the card) so that others see the publication", file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from trust.status import revoke

    def sign(root, release, signer, info, chain):
        path = revoke(root, release, signer, info, reason=args.reason, severity=args.severity, chain=chain)
        _logged(root, path, args, chain)
        return path

    return _sign_and_show(args, "signed a revocation of", sign)


# --- policy -----------------------------------------------------------------------------------


def _members(args: argparse.Namespace) -> list[Maintainer]:
    import json

    from pydantic import TypeAdapter, ValidationError

    from commonforge.errors import InputError
    from registry.schema import Timestamp
    from trust.keys import PublicKey
    from trust.policy import member

    files = list(dict.fromkeys([*args.maintainer, *args.rebuilder]))
    if files and not args.not_after:
        raise InputError("new keys need --not-after", hint="e.g. --not-after 2028-01-01T00:00:00Z")
    try:
        not_after = TypeAdapter(Timestamp).validate_python(args.not_after) if files else ""
    except ValidationError:
        raise InputError(f"--not-after {args.not_after!r} is not a time", hint="e.g. 2028-01-01T00:00:00Z") from None
    found = []
    for path in files:
        try:
            key = PublicKey.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
            key.sslib_key()
        except (OSError, ValueError) as err:
            raise InputError(f"{path} is not an exported public key: {err}",
                             hint="make it with `commonforge keys export KEY > FILE`") from None
        holders: tuple[tuple[Role, list[str]], ...] = (("maintainer", args.maintainer), ("rebuilder", args.rebuilder))
        roles = [r for r, given in holders if path in given]
        found.append(member(key, roles, not_after))
    return found


def _proposed(root: Path, path: Path, policy) -> int:
    print(f"proposed policy {policy.version} (sha256:{policy.digest}): {path.relative_to(root)}")
    print(f"maintainers sign it with `commonforge policy sign {policy.version} --key KEY`, then `commonforge policy apply`")
    return 0


def cmd_policy_init(args: argparse.Namespace) -> int:
    from trust.policy import founding, propose

    root = _root()
    policy = founding(root, _members(args), log=_log_spec(args))
    return _proposed(root, propose(root, policy), policy)


def cmd_policy_propose(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError
    from trust.policy import changed, load_chain, propose, user_pins

    root = _root()
    current = load_chain(root, pins=user_pins()).current
    if current is None:
        raise InputError("the forge has no policy yet", hint="founders start with `commonforge policy init`")
    compromised = {}
    for item in args.compromised:
        keyid, sep, since = item.partition("=")
        if not sep:
            raise InputError(f"--compromised {item!r}: write KEYID=TIME", hint="e.g. ab12...=2026-11-30T00:00:00Z")
        compromised[keyid] = since
    from_entry = {}
    for item in args.compromised_from_entry:
        keyid, sep, entry = item.partition("=")
        if not sep or not entry.isdigit():
            raise InputError(f"--compromised-from-entry {item!r}: write KEYID=N", hint="N: a log entry number")
        from_entry[keyid] = int(entry)
    try:
        policy = changed(current, add=_members(args), remove=args.remove, compromised=compromised,
                         compromised_from_entry=from_entry, log=_log_spec(args, current))
    except ValueError as err:
        raise InputError(f"bad proposal: {err}") from None
    return _proposed(root, propose(root, policy), policy)


def cmd_policy_sign(args: argparse.Namespace) -> int:
    from trust.policy import load_chain, sign_proposal, user_pins

    root = _root()
    load_chain(root, pins=user_pins())  # never sign on top of a rolled-back or replaced chain
    signer, info = signer_from_args(args)
    path = sign_proposal(root, signer, args.version)
    print(f"signed policy {args.version} as {info.name} ({info.affiliation}): {path.relative_to(root)}")
    return 0


def cmd_policy_apply(args: argparse.Namespace) -> int:
    from trust.policy import apply, load_chain, user_pins

    root = _root()
    before = load_chain(root, pins=user_pins())  # this checkout's chain is not older than what you accepted before
    if getattr(args, "log_signer", None):  # a wrong log key refuses before anything changes
        from commonforge.errors import InputError
        from trust.log import forge as log_forge
        from trust.policy import proposal

        spec = proposal(root).log or (before.current.log if before.current else None)
        if spec is None:
            raise InputError("--log-signer was given but the policy names no transparency log",
                             hint="name one with `commonforge policy propose --log-origin … --log-key …`")
        log_forge.operator(spec, log_forge.load_note_key(args.log_signer), args.log)
    policy = apply(root)
    chain = load_chain(root, pins=user_pins())  # verify the whole chain again and remember the new version
    print(f"policy {policy.version} (sha256:{policy.digest}) is now the forge's policy")
    if chain.current is not None and chain.current.log is not None:
        op = _operator(root, args, chain)
        if op is None:
            print(f"its signatures go into log {chain.current.log.origin} when the operator runs "
                  "`commonforge log append`", file=sys.stderr)
        else:
            from trust.log import forge as log_forge
            from trust.status import loggable

            new = log_forge.append(op, [st for st in loggable(root, chain=chain) if st.kind == "policy"])
            print(f"logged {len(new)} policy signature(s) in {chain.current.log.origin}", file=sys.stderr)
    return 0


def cmd_policy_show(args: argparse.Namespace) -> int:
    from trust.policy import load_chain, user_pins

    current = load_chain(_root(), pins=user_pins()).current
    if current is None:
        print("policy 0: the bootstrap (no maintainers); `commonforge policy init` makes version 1")
        return 0
    r = current.rules
    print(f"policy {current.version}  sha256:{current.digest}")
    for m in current.maintainers:
        flag = f"  compromised since {m.compromised_since}" if m.compromised_since else ""
        if m.compromised_from_entry is not None:
            flag += f"  compromised from log entry {m.compromised_from_entry}"
        print(f"  {m.keyid}  {m.name} ({m.affiliation})  {', '.join(m.roles)}  not after {m.not_after}{flag}")
    for action in ("publish", "revoke", "policy"):
        rule = getattr(r, action)
        extra = f", {rule.identical_rebuilds} identical rebuild(s)" if action == "publish" else ""
        print(f"  {action}: {rule.signatures} signatures, at most {rule.max_per_affiliation} per affiliation, "
              f"{rule.affiliations} affiliations{extra}")
    if current.log is None:
        print("  log: none named (publication does not go through a transparency log)")
    else:
        print(f"  log: {current.log.origin}  key {current.log.key}")
        print(f"       {current.log.witnesses_required} of {len(current.log.witnesses)} witnesses must cosign")
        for w in current.log.witnesses:
            print(f"       witness {w.name} ({w.affiliation})  {w.key}")
    return 0
