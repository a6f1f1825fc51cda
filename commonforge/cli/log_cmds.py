"""``log``: the forge's transparency log from the terminal (keygen, append, witness, show, prove, verify, monitor).

Wiring only: the log is :mod:`trust.log` (tiles, checkpoints, witnesses, the monitor) and its
bridge to the forge is :mod:`trust.log.forge`; a witness, which holds no log key, adds its
cosignature with :func:`trust.log.operator.add_cosignature`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from commonforge.cli.command import add_command

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see registry_cmds)
if TYPE_CHECKING:
    from trust.log.checkpoint import OpenedCheckpoint
    from trust.log.forge import LogEntry, LogView
    from trust.log.note import Signer
    from trust.policy import Chain, LogSpec, Policy

LOG_HELP = """\
The forge's append-only transparency log (docs/trust.md): every policy signature, build, approval,
rebuild, publication and revocation the forge vouches for, in the C2SP tlog-tiles layout, with a
checkpoint signed by the log's Ed25519 note key and cosigned by witnesses. The governance policy
names the log (origin, key, witnesses, quorum); a release is published only once its statements
are logged in a verified, cosigned copy.

  operator   log keygen ORIGIN, then `log append --key FILE` after each merge
  witness    log keygen NAME --witness, then `log witness --key FILE` after each append
  anyone     log show, log prove REF, log verify, log monitor DIR...

Where things are: --log DIR (default $COMMONFORGE_LOG, else $XDG_DATA_HOME/commonforge/log);
--state FILE, the newest checkpoint you accepted (default $COMMONFORGE_LOG_STATE, else
$XDG_STATE_HOME/commonforge/log-state.json).
"""

KEYGEN_HELP = """\
Generate an Ed25519 note key: the log's own (type 0x01, named by its origin by convention, e.g.
forge.example/log) or, with --witness, a witness's cosignature/v1 key (type 0x04). The private
key is written to FILE (mode 0600, never overwritten); the verifier key printed on stdout is what
the governance policy names (`commonforge policy propose --log-origin ORIGIN --log-key KEY`, or
`--witness` for a witness's key).
"""

APPEND_HELP = """\
The log's operator: append every statement of this checkout that the verified policy chain lets
count (policy signatures by version, then the releases' statements) and is not logged yet, in one
crash-safe commit with a newly signed checkpoint. Refused unless the current policy names a log
and --key is the log key it names. The witnesses cosign the new checkpoint next.
"""

WITNESS_HELP = """\
A witness: cosign the log's current checkpoint, only after its log signature verifies and it is
proven to extend the last checkpoint this witness cosigned (a fork or a rollback is refused and
nothing is signed), then add the cosignature to the log's checkpoint file. Refused unless --key
is one of the witnesses the current policy names (by name and key ID). The witness's memory is
--witness-state (default: witness-<keyname>.json beside the log state file).
"""

SHOW_HELP = """\
Show the log's checkpoint: origin, size, root hash, and the cosignatures of the policy's witnesses
with their times (the log's signature is checked; consistency with what you accepted is not:
that is `log verify`). With --entries, what each entry claims, in words.
"""

PROVE_HELP = """\
Inclusion proofs, each verified against the checkpoint you accept before it is printed. INDEX:
that entry's proof. A ref (model/x@1.0.0, or policy/N): every logged entry about it, each with its
proof. The copy is verified as `log verify` does first. Exit 1 when nothing about REF is logged.
"""

VERIFY_HELP = """\
Verify a copy of the log: the checkpoint's log signature and the policy's quorum of witness
cosignatures, consistency with the newest checkpoint you accepted (a rollback or a fork is refused;
the new one is accepted), and every entry against the root. Then, per policy version, whether its
signatures are logged, and per release, which of its counted statements are. Exit 1 when the copy
does not verify.
"""

MONITOR_HELP = """\
Monitor copies of the log (log directories): each one's checkpoint, tiles and new entries, every
pair of them for one history, and each against the checkpoint accepted on the last run (--state);
lists the new entries in words. Exit 0 when all is well, 1 on a problem with a source, 3 when the
log equivocated (two checkpoints signed by its key that cannot both be true: both are printed).
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    log = add_command(sub, "log", cmd_help, "the transparency log: keygen, append, witness, show, prove, verify, monitor",
                      LOG_HELP)
    lsub = log.add_subparsers(dest="log_command", metavar="ACTION", required=True)

    p = add_command(lsub, "keygen", cmd_keygen, "generate a log or witness note key", KEYGEN_HELP)
    p.add_argument("name", metavar="NAME", help="the key's name: the log's origin (e.g. forge.example/log), or the "
                                                "witness's name (e.g. witness.example.org)")
    p.add_argument("--witness", action="store_true", help="a witness's cosignature/v1 key (default: a log key)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="where the private key goes (default: <keys dir>/<NAME>.note-key, '/' written as '_')")

    p = add_command(lsub, "append", cmd_append, "the operator: append the statements that count and are not logged",
                    APPEND_HELP)
    p.add_argument("--key", type=Path, required=True, metavar="FILE", help="the log's private note key file")
    _log_option(p)

    p = add_command(lsub, "witness", cmd_witness, "a witness: cosign the log's checkpoint if it extends the last one",
                    WITNESS_HELP)
    p.add_argument("--key", type=Path, required=True, metavar="FILE", help="the witness's private note key file")
    _log_option(p)
    p.add_argument("--witness-state", type=Path, metavar="FILE",
                   help="the newest checkpoint this witness cosigned (default: witness-<keyname>.json beside the "
                        "log state file)")

    p = add_command(lsub, "show", cmd_show, "the log's checkpoint and cosignatures (--entries: what it holds)", SHOW_HELP)
    _log_option(p)
    p.add_argument("--entries", action="store_true", help="also list the entries, in words")

    p = add_command(lsub, "prove", cmd_prove, "verified inclusion proofs of an entry, or of every entry about a ref",
                    PROVE_HELP)
    p.add_argument("target", metavar="REF_OR_INDEX", help="an entry index (e.g. 7), or model/x@1.0.0, or policy/2")
    _log_option(p)
    _state_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add_command(lsub, "verify", cmd_verify, "verify a copy of the log, and what of this checkout it holds",
                    VERIFY_HELP)
    _log_option(p)
    _state_option(p)

    p = add_command(lsub, "monitor", cmd_monitor, "check copies of the log for one history (exit 3 on equivocation)",
                    MONITOR_HELP)
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="a log directory (holds `checkpoint`)")
    p.add_argument("--peer", action="append", default=[], metavar="URL",
                   help="a peer's log over HTTP (`commonforge peer serve`), e.g. http://127.0.0.1:8470; repeatable")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds each request to a --peer may take, from connect to last byte (default 10)")
    _state_option(p)
    p.add_argument("--full", action="store_true",
                   help="check every entry again, not only those added since the last accepted checkpoint")


def _log_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", type=Path, metavar="DIR",
                   help="the copy of the log (default: $COMMONFORGE_LOG, else $XDG_DATA_HOME/commonforge/log)")


def _state_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", type=Path, metavar="FILE",
                   help="the newest checkpoint you accepted, per log (default: $COMMONFORGE_LOG_STATE, else "
                        "$XDG_STATE_HOME/commonforge/log-state.json)")


def cmd_help(args: argparse.Namespace) -> int:  # argparse requires an action; never reached
    return 2


# --- where things are -------------------------------------------------------------------------


def _root() -> Path:
    from commonforge.settings import apply

    return apply().root


def _log_dir(args: argparse.Namespace) -> Path:
    from commonforge import settings

    return args.log or settings.log_dir()


def _state(args: argparse.Namespace):
    from commonforge import settings
    from trust.log.client import ClientState

    return ClientState(args.state or settings.log_state())


def _policy_log(root: Path) -> tuple[Chain, Policy, LogSpec]:
    """The verified chain of the checkout, its current policy and the log that policy names
    (``sharing.gossip.policy_log`` refuses a policy that names none)."""
    from sharing.gossip import policy_log
    from trust.policy import load_chain, user_pins

    chain = load_chain(root, pins=user_pins())
    spec = policy_log(chain, where=f" of {root}").spec
    assert chain.current is not None
    return chain, chain.current, spec


def _names(chain: Chain) -> dict[str, tuple[str, str]]:
    from sharing.gossip import maintainer_names

    return maintainer_names(chain)


def _safe(name: str) -> str:
    """A key name as a file name: note key names may hold '/' (an origin line)."""
    return name.replace("/", "_")


def _witness_names(spec: LogSpec) -> dict[tuple[str, int], str]:
    return {(v.name, v.key_id): f"{w.name} ({w.affiliation})" for w in spec.witnesses for v in [w.verifier()]}


def _time(ts: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _checkpoint_lines(spec: LogSpec, opened: OpenedCheckpoint) -> list[str]:
    cp = opened.checkpoint
    witness = _witness_names(spec)
    lines = [f"log {cp.origin}", f"  size  {cp.size}", f"  root  {cp.root_hash.hex()}",
             f"  signed by the log key {spec.verifier().label}",
             f"  cosignatures: {len(opened.cosignatures)} of the {spec.witnesses_required} the policy requires"]
    for c in opened.cosignatures:
        lines.append(f"    {witness.get((c.name, c.key_id), c.name)}  {c.name}+{c.key_id:08x}  at {_time(c.timestamp)}")
    for s in opened.unverified:
        lines.append(f"    ignored: a signature by {s.label}, a key the policy does not name")
    return lines


# --- keygen -----------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from commonforge import settings
    from trust.log import forge as log_forge
    from trust.log import note

    alg = note.ALG_COSIGNATURE_V1 if args.witness else note.ALG_ED25519
    signer_text, verifier_text = note.generate_key(args.name, alg)
    path = log_forge.save_note_key(args.out or settings.keys_dir() / f"{_safe(args.name)}.note-key", signer_text)
    print(verifier_text)
    if args.witness:
        where = "name it among the policy's witnesses: `commonforge policy propose --witness ...` with this key"
    else:
        where = (f"name it as the policy's log: `commonforge policy propose --log-origin {args.name} "
                 f"--log-key {verifier_text}`")
    print(f"private key kept in {path} (0600); {where}", file=sys.stderr)
    return 0


# --- the operator -----------------------------------------------------------------------------


def cmd_append(args: argparse.Namespace) -> int:
    from trust.log import forge as log_forge
    from trust.status import loggable

    root = _root()
    chain, _, spec = _policy_log(root)
    op = log_forge.operator(spec, log_forge.load_note_key(args.key), _log_dir(args))
    before = op.size
    new = log_forge.append(op, loggable(root, chain=chain))
    if not new:
        print(f"nothing new: log {spec.origin} (size {op.size}) holds every statement the policy lets count")
        return 0
    names = _names(chain)
    for e in new:
        st = e.statement
        assert st is not None  # appended from parsed statements
        who = names.get(st.keyid, ("?", "?"))
        print(f"#{e.index:<5} {st.kind:11}  {st.subject_name}  {st.keyid[:12]} {who[0]} ({who[1]})")
    print(f"log {spec.origin}: size {op.size} (was {before}), {len(new)} new entr{'y' if len(new) == 1 else 'ies'}")
    print("the witnesses cosign next: `commonforge log witness --key FILE`", file=sys.stderr)
    return 0


# --- the witness ------------------------------------------------------------------------------


def _policy_witness(spec: LogSpec, signer: Signer):
    """The policy's WitnessSpec for ``signer``, by name, key ID and public key; else refuse."""
    from commonforge.errors import InputError

    mine = signer.verifier()
    for w in spec.witnesses:
        theirs = w.verifier()
        if (theirs.name, theirs.key_id, theirs.raw_key) == (mine.name, mine.key_id, mine.raw_key):
            return w
    named = ", ".join(f"{w.name} ({w.verifier().label})" for w in spec.witnesses) or "none"
    raise InputError(f"the key {signer.label} is not one of the witnesses of log {spec.origin} (the policy names: {named})",
                     hint="use your witness key as the policy names it; a new witness joins by a policy change")


def cmd_witness(args: argparse.Namespace) -> int:
    from commonforge import settings
    from trust.log import checkpoint as ck
    from trust.log import forge as log_forge
    from trust.log.monitor import open_directory
    from trust.log.note import split
    from trust.log.witness import Witness

    root = _root()
    _, _, spec = _policy_log(root)
    signer = log_forge.load_note_key(args.key)
    member = _policy_witness(spec, signer)
    directory = _log_dir(args)
    state = args.witness_state or settings.log_state().with_name(f"witness-{_safe(signer.name)}.json")
    witness = Witness(state, signer)
    source = open_directory(directory)  # the checkpoint note and the tiles of the same tree
    # The policy's log, by origin and key, before the witness's memory is consulted.
    cp = ck.open_checkpoint(source.note, spec.verifier(), origin=spec.origin).checkpoint
    line = witness.cosign(source.note, spec.verifier(), source.tree.consistency_proof)
    from trust.log.operator import add_cosignature

    add_cosignature(directory, spec.origin, spec.verifier(), line, witness.verifier, cosigned=split(source.note)[0])
    opened = ck.open_checkpoint((directory / "checkpoint").read_bytes(), spec.verifier(), spec.witness_verifiers(),
                                0, origin=spec.origin)
    print(f"cosigned log {cp.origin} at size {cp.size} (root {cp.root_hash.hex()}) as {member.name} "
          f"({member.affiliation}); remembered in {state}")
    print(f"the checkpoint has {len(opened.cosignatures)} of the {spec.witnesses_required} cosignatures the policy "
          "requires")
    return 0


# --- reading ----------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError
    from trust.log import checkpoint as ck
    from trust.log import merkle
    from trust.log.merkle import LogError
    from trust.log.monitor import describe_entries, open_directory

    root = _root()
    chain, _, spec = _policy_log(root)
    directory = _log_dir(args)
    if not (directory / "checkpoint").exists():
        raise InputError(f"no log at {directory}: {directory / 'checkpoint'} does not exist",
                         hint="point --log (or COMMONFORGE_LOG) at a copy of the forge's log; the operator makes "
                              "one with `commonforge log append`")
    source = open_directory(directory)
    opened = ck.open_checkpoint(source.note, spec.verifier(), spec.witness_verifiers(), 0, origin=spec.origin)
    print("\n".join(_checkpoint_lines(spec, opened)))
    if args.entries:
        entries = list(enumerate(source.tree.entries(0, opened.checkpoint.size)))
        computed = merkle.root([merkle.leaf_hash(e) for _, e in entries])
        if computed != opened.checkpoint.root_hash:
            raise LogError(f"the entries at {directory} hash to {computed.hex()}, not the checkpoint's root "
                           f"{opened.checkpoint.root_hash.hex()}",
                           hint="an entry was dropped, reordered or rewritten in this copy; fetch it from another source")
        print(f"entries ({len(entries)}):")
        print("\n".join("  " + line for line in describe_entries(entries, _names(chain))))
    return 0


def _open_view(args: argparse.Namespace, spec: LogSpec) -> LogView:
    """The verified copy of the log, or a VerificationError (exit 1) saying why it is none and
    naming the copy (try_view turns the library's error into its message)."""
    from commonforge.errors import VerificationError
    from trust.log import forge as log_forge

    directory = _log_dir(args)
    view = log_forge.try_view(spec, directory, _state(args))
    if isinstance(view, str):
        raise VerificationError(f"the copy of log {spec.origin} at {directory} does not verify: {view}",
                                hint="do not trust it: fetch the log from another source, and compare copies with "
                                     "`commonforge log monitor DIR...`")
    return view


def _entry_record(view: LogView, e: LogEntry, names: dict[str, tuple[str, str]]) -> dict:
    from trust.log import merkle
    from trust.log.monitor import describe_entry

    proof = view.prove(e.index)  # checked against the accepted root before anything is printed
    st = e.statement
    return {
        "index": e.index,
        "leaf_hash": merkle.leaf_hash(e.data).hex(),
        "entry_sha256": e.digest,
        "kind": st.kind if st else None,
        "subject": st.subject_name if st else None,
        "subject_digest": st.subject_digest if st else None,
        "keyid": st.keyid if st else None,
        "says": describe_entry(e.index, e.data, names),
        "proof": [h.hex() for h in proof],
    }


def cmd_prove(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError, VerificationError
    from registry.refs import Ref
    from trust import statements as st_mod

    root = _root()
    chain, _, spec = _policy_log(root)
    view = _open_view(args, spec)
    target = args.target.strip()
    if target.isdigit():
        index = int(target)
        if index >= view.size:
            raise InputError(f"log {spec.origin} has {view.size} entries (0..{view.size - 1}); there is no entry {index}",
                             hint="`commonforge log show --entries` lists them")
        chosen = [view.entries[index]]
    else:
        if target.startswith("policy/"):
            subject = target
        else:
            ref = Ref.parse(target, default_kind="model")
            if ref.kind != "model" or not ref.pinned:
                raise InputError(f"{target} does not name one release", hint="e.g. model/forge-small@1.0.0, or an index")
            subject = st_mod.release_subject(ref)
        chosen = view.about(subject)
        if not chosen:
            raise VerificationError(f"log {spec.origin} (size {view.size}) holds no entry about {subject}",
                                    hint="its operator logs the statements that count with `commonforge log append`")
    names = _names(chain)
    records = [_entry_record(view, e, names) for e in chosen]
    cp = view.opened.checkpoint
    if args.json:
        print(json.dumps({"origin": cp.origin, "size": cp.size, "root": cp.root_hash.hex(),
                          "cosigned_by": [c.name for c in view.opened.cosignatures],
                          "checkpoint": view.note.decode("utf-8"), "entries": records}, indent=2))
        return 0
    print(view.describe())
    for r in records:
        print(f"#{r['index']}  {r['says']}")
        print(f"  leaf hash {r['leaf_hash']}")
        print(f"  inclusion proof in the tree of size {cp.size} ({len(r['proof'])} hashes):")
        print("\n".join(f"    {h}" for h in r["proof"]))
    print(f"{len(records)} proof(s) verified against root {cp.root_hash.hex()}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from registry.catalog import Registry
    from registry.refs import Ref
    from trust import policy as trust_policy
    from trust import statements as st_mod
    from trust.status import NOT_LOGGED, release_status

    root = _root()
    chain, _, spec = _policy_log(root)
    view = _open_view(args, spec)
    print(view.describe())
    bad = sum(1 for e in view.entries if e.statement is None)
    extra = f" ({bad} not a signed statement)" if bad else ""
    print(f"{len(view.entries)} entries{extra}, each hashed into the checkpoint's root; "
          f"checkpoint accepted into {_state(args).path}")

    # Policy versions: which of their signatures the log holds.
    for version in chain.versions:
        folder = trust_policy.signatures_dir(trust_policy.policy_dir(root), version.version)
        sigs = [s for s in st_mod.read_all(folder)[0]
                if s.kind == "policy" and (s.subject_name, s.subject_digest) == (version.subject, version.digest)]
        at = sorted(p for s in sigs if (p := view.position(s)) is not None)
        where = ", ".join(f"#{p}" for p in at) or "none"
        print(f"policy {version.version}: {len(at)} of {len(sigs)} signatures logged ({where})")

    # Releases with statements: which of the counted ones the log holds, and what waits for an append.
    reg = Registry(root)
    for folder in sorted((root / "registry" / "entries" / "models").glob("*/*.statements")):
        ref = Ref("model", folder.parent.name, folder.name[: -len(".statements")])
        if not folder.with_name(f"{ref.version}.yaml").is_file():
            continue  # statements without their release entry: `commonforge validate` reports them
        status = release_status(root, reg.release(str(ref)), chain=chain, view=view)
        logged = ", ".join(f"#{p}" for p in sorted(status.logged.values())) or "none"
        waiting = [r.source for r in status.rejected if r.reason == NOT_LOGGED]
        line = f"{ref}: {status.status}; counted statements logged: {len(status.logged)} ({logged})"
        if waiting:
            line += f"; not logged yet: {len(waiting)} (`commonforge log append`)"
        print(line)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError
    from sharing import gossip
    from sharing.peers import normalise_url

    if not args.sources and not args.peer:
        raise InputError("nothing to monitor", hint="name log directories (SOURCE...) and/or --peer URL")
    if args.timeout <= 0:
        raise InputError(f"--timeout {args.timeout} is not a positive number of seconds", hint="e.g. --timeout 10")
    urls = list(dict.fromkeys(normalise_url(u) for u in args.peer))  # a bad URL is bad input, before any request
    root = _root()
    chain, _, _ = _policy_log(root)
    log = gossip.policy_log(chain)
    peers, failed = gossip.open_peer_logs(urls, args.timeout)
    report = gossip.monitor_log(log, [*args.sources, *peers], _state(args), failed=failed, full=args.full)
    print("\n".join(report.lines()))
    return report.exit_code()
