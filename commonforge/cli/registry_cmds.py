"""``list``, ``show``, ``validate``, ``verify``: the registry from the terminal."""

from __future__ import annotations

import argparse

from commonforge.cli.command import add_command

# typing.TYPE_CHECKING without importing typing, which would cost `commonforge --help` more
# than the rest of this module; type checkers read the name itself.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from registry import Registry
    from registry.schema import Dataset, Recipe, Release


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "list", cmd_list, "list registry entries (datasets, recipes, conversions, models)")
    kinds = ["dataset", "recipe", "conversion", "model"]
    p.add_argument("kind", nargs="?", choices=kinds + [f"{k}s" for k in kinds], help="only this kind")

    p = add_command(sub, "show", cmd_show, "show one entry: what it is, where it came from, digests, status",
                    "Show one entry. REF is kind/name@version; a model ref may leave out the version "
                    "(newest published, else newest draft), and a bare name means a model.")
    p.add_argument("ref", metavar="REF", help="e.g. model/forge-small@1.0.0, recipe/forge-tiny@1, forge-small")

    add_command(sub, "validate", cmd_validate,
                "validate every registry entry and every cross-reference (exit 2 on problems)")

    p = add_command(sub, "verify", cmd_verify,
                    "re-hash every artifact of a release in the local store against its manifest (exit 1 on mismatch)")
    p.add_argument("ref", metavar="MODEL_REF", help="e.g. model/forge-small@1.0.0 or forge-small")


def _registry() -> Registry:
    from commonforge.settings import apply
    from registry import Registry

    return Registry(apply().root)


def cmd_list(args: argparse.Namespace) -> int:
    from commonforge.cli.output import console, table
    from registry import Registry
    from registry.layers import layer_name, layer_roots
    from registry.schema import Conversion, Dataset, Recipe, Release
    from trust.policy import load_chain, user_pins
    from trust.status import release_status

    top = _registry()
    kind = args.kind.rstrip("s") if args.kind else None
    out = console()
    roots = layer_roots(top.root)
    t = table(None, "ref", "status", "title / digest", "license", *(["in"] if len(roots) > 1 else []))
    n = 0
    for root in roots:  # the checkout, then the user's own registry (pulled releases)
        reg, chain = Registry(root), None
        where = [layer_name(root)] if len(roots) > 1 else []
        for entry in reg.iter_entries(kind):
            n += 1
            if isinstance(entry, Release):
                chain = chain or load_chain(reg.root, pins=user_pins())
                status = release_status(reg.root, entry, chain=chain).status
                # a fine-tune on the user's own data: never shared
                label = f"{status} · private" if entry.manifest.private else status
                t.add_row(entry.ref, label, f"sha256:{entry.release_digest}", entry.manifest.license, *where)
            else:
                assert isinstance(entry, (Dataset, Recipe, Conversion)), (
                    "registry entries are datasets, recipes, conversions or releases (schema.ENTRY_TYPES)")
                t.add_row(entry.ref, "", entry.title, entry.license, *where)
    if n == 0:
        out.print(f"no {kind or 'entrie'}s in {' or '.join(str(Registry(r).entries_dir) for r in roots)}")
        return 0
    out.print(t)
    return 0


def _show_dataset(out, reg: Registry, d: Dataset) -> None:
    from commonforge.cli.output import table
    from registry.lineage import derived_releases

    out.print(f"[bold]{d.ref}[/bold]  {d.title}")
    out.print(f"license: {d.license}    languages: {', '.join(d.language)}")
    out.print(d.description)
    t = table("sources", "id", "kind", "artifact", "sha256", "license")
    for s in d.sources:
        artifact = s.url or s.path or f"{s.package}=={s.version} ({s.file})"
        t.add_row(s.id, s.kind, artifact, s.sha256, s.license)
    out.print(t)
    p = d.processing
    out.print(
        f"processing: {p.normalize}, min {p.min_chars} chars, split seed {p.split.seed} "
        f"(validation {p.split.validation:.0%}, test {p.split.test:.0%}), "
        f"dedup exact={p.dedup.exact} near={p.dedup.near} (threshold {p.dedup.threshold})"
    )
    models = derived_releases(reg, d.ref)
    out.print("models trained on it: " + (", ".join(models) if models else "none yet"))


def _show_recipe(out, reg: Registry, r: Recipe) -> None:
    from commonforge.cli.output import table

    out.print(f"[bold]{r.ref}[/bold]  {r.title}    sha256:{r.digest}")
    out.print(f"datasets: {', '.join(r.datasets)}    model license: {r.license}")
    a, tr = r.architecture, r.training
    t = table("architecture", "field", "value")
    for k, v in a.model_dump().items():
        t.add_row(k, str(v))
    t.add_row("vocab_size (tokenizer)", str(r.tokenizer.vocab_size))
    out.print(t)
    out.print(
        f"training: {tr.steps} steps x {tr.batch_size} x {tr.seq_len} tokens, lr {tr.learning_rate} "
        f"({tr.schedule}, warmup {tr.warmup_steps}), seed {tr.seed}, {tr.threads} threads"
    )
    if r.quantization:
        out.print("variants: " + ", ".join(q.name for q in r.quantization))
    if r.evaluation.tasks:
        out.print("evaluation: " + ", ".join(f"{k} ({n} items)" for k, n in r.evaluation.tasks.items()))


def _show_conversion(out, c) -> None:
    from pipelines.convert import release_version

    s = c.source
    artifact = s.url or s.path or f"{s.package}=={s.version} ({s.file})"
    out.print(f"[bold]{c.ref}[/bold]  {c.title}    sha256:{c.digest}", highlight=False)
    out.print(f"publisher: {c.publisher}    license: {c.license}" + (f"    {c.homepage}" if c.homepage else ""))
    out.print(c.description)
    out.print(f"checkpoint: {s.format} from {s.kind} {artifact} (sha256:{s.sha256})"
              + (f", member {s.member}" if s.member else "") + f" sha256:{s.member_sha256}", highlight=False)
    out.print(f"lossless variant: {c.lossless_variant}    threads: {c.threads}")
    if c.evaluation.tasks:
        out.print("evaluation: " + ", ".join(f"{k} ({n} items)" for k, n in c.evaluation.tasks.items()))
    out.print(f"release: model/{c.name}@{release_version(c)} once `commonforge convert {c.ref}` has run")


def _entry(reg: Registry, ref: str):
    """A pinned ref as it is; a bare model name by verified status (trust), a bare dataset or recipe: newest."""
    from registry.refs import Ref
    from trust.policy import user_pins
    from trust.status import locate

    parsed = Ref.parse(ref, default_kind="model")
    if parsed.kind == "model":
        return locate(reg.root, parsed, pins=user_pins())  # the checkout, then the user's own registry
    return reg.resolve(parsed), None


def _show_release(out, reg: Registry, rel: Release, status) -> None:
    from commonforge.cli.output import human_bytes, short, table

    m = rel.manifest
    out.print(f"[bold]{rel.ref}[/bold]  status: {status.status}    license: {m.license}    in: {status.layer}"
              + (f" ({status.root})" if status.layer != "checkout" else ""), highlight=False)
    out.print(f"release digest: sha256:{rel.release_digest}")
    if m.provenance == "imported":
        out.print("provenance: IMPORTED (not built by the forge: no recipe, no source commit, never reproducible)")
    elif m.provenance == "converted":
        assert m.conversion is not None, "BuildManifest's validator requires a conversion pin for a converted release"
        out.print(f"provenance: CONVERTED from a pinned checkpoint by {m.conversion.ref} "
                  f"(sha256:{m.conversion.sha256}); checkpoint sha256:{m.conversion.checkpoint_sha256}")
        out.print(f"source commit: {m.source_commit}    lock: sha256:{m.lock_sha256}")
    elif m.provenance == "finetuned":
        assert m.finetune is not None, "BuildManifest's validator requires a fine-tune pin for a finetuned release"
        f = m.finetune
        out.print(f"provenance: FINETUNED ({f.method}, {f.objective}) from {m.base_model} (sha256:{f.base_sha256}) on private "
                  f"{f.data_format} data sha256:{f.data_sha256}; PRIVATE: never offered, pushed, logged or committed")
        out.print("settings: " + ", ".join(f"{k}={v}" for k, v in f.settings.model_dump().items()))
        rec = reg.record(rel, "finetune")
        if rec is not None:
            fr = rec.model_dump()
            before, after = fr.get("heldout_bpb_base"), fr.get("heldout_bpb_finetuned")
            out.print(f"trained on {fr['train_examples']} examples of {fr['data_file']} ({fr['truncated_examples']} "
                      f"cut), {fr['steps']} steps in {fr['seconds']:.1f} s, loss {fr['loss_first']:.3f} -> "
                      f"{fr['loss_last']:.3f}"
                      + (f"; held-out bits per byte {before:.4f} -> {after:.4f} ({fr['heldout_examples']} examples)"
                         if before is not None and after is not None else
                         f"; log p(chosen) - log p(rejected) on the {fr['margin_split']} pairs "
                         f"{fr['preference_margin_base']:.3f} -> {fr['preference_margin_finetuned']:.3f}"
                         if fr.get("preference_margin_base") is not None else "; no held-out split"))
    else:
        assert m.recipe is not None, "BuildManifest's validator requires a recipe for a built release"
        out.print(f"recipe: {m.recipe.ref} (sha256:{m.recipe.sha256})")
        lock = f"    lock: sha256:{m.lock_sha256}" if m.lock_sha256 else ""  # manifest schema 1
        out.print(f"source commit: {m.source_commit}{lock}")
        for d in m.datasets:
            splits = ", ".join(f"{k} {v.documents} docs sha256:{short(v.sha256)}" for k, v in d.splits.items())
            out.print(f"dataset {d.ref}: {splits}")
    env = m.environment
    if env is not None:
        versions = env.package_versions()
        digest = f" (sha256:{short(env.packages_sha256)})" if env.packages_sha256 else ""
        out.print(f"environment: python {env.python}, {len(versions)} packages{digest}: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
        out.print("determinism: " + ", ".join(f"{k}={v}" for k, v in sorted(env.determinism.items())))
    if m.base_model:
        out.print(f"derived from: {m.base_model}")
    t = table("artifacts", "path", "variant", "size", "sha256")
    for a in m.artifacts:
        t.add_row(a.path, a.variant or "full", human_bytes(a.size), a.sha256)
    out.print(t)
    prov = reg.provenance(rel)
    if prov:
        out.print(f"built by {prov.built_by} at {prov.created_at} on {prov.machine.get('hostname', '?')} "
                  f"({prov.machine.get('cpu', '?')})")
    ev = reg.evaluation(rel)
    if ev:
        t = table(f"evaluation ({ev.harness})", "variant", "task", "metric", "value", "± stderr", "items")
        for r in ev.results:
            err = f"{r.stderr:.4f}" if r.stderr is not None else "-"
            t.add_row(r.variant, r.task + ("" if r.subset == "all" else " (clean)"), r.metric,
                      f"{r.value:.4f}", err, str(r.items))
        out.print(t)
    card = reg.card(rel)
    if card:
        out.print(f"card: {card.path}")
    gov = status.governance()
    for b in gov["builders"]:
        out.print(f"built (signed) by {b['name']} ({b['affiliation'] or 'not a maintainer'}, key {short(b['keyid'])})")
    for a in gov["approvals"]:
        out.print(f"approved by {a['name']} ({a['affiliation']}, key {short(a['keyid'])}) at {a['signed_at']}")
    for r in gov["rebuilds"]:
        out.print(f"rebuilt identically by {r['name']} ({r['affiliation']}, key {short(r['keyid'])}) at {r['signed_at']}")
    for line in gov["revocations"]:
        out.print(f"[red]revoked[/red] by {line}")
    for need in gov["needs"]:
        out.print(f"not published yet: {need}", markup=False, highlight=False)
    out.print(f"governance: policy {gov['policy_version']}; `commonforge status {rel.ref}` explains every statement")


def cmd_show(args: argparse.Namespace) -> int:
    from commonforge.cli.output import console
    from registry import Registry
    from registry.schema import Conversion, Dataset, Recipe, Release

    reg = _registry()
    entry, status = _entry(reg, args.ref)
    if status is not None and status.root is not None:
        reg = Registry(status.root)  # its records are beside it, in its layer
    out = console()
    if isinstance(entry, Dataset):
        _show_dataset(out, reg, entry)
    elif isinstance(entry, Recipe):
        _show_recipe(out, reg, entry)
    elif isinstance(entry, Conversion):
        _show_conversion(out, entry)
    else:
        assert isinstance(entry, Release), "registry entries are datasets, recipes, conversions or releases"
        _show_release(out, reg, entry, status)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from commonforge.cli.output import console
    from commonforge.errors import InputError
    from pipelines.workspace import Params
    from trust.policy import user_pins
    from trust.status import statement_problems

    reg = _registry()
    problems = reg.validate()
    if (reg.root / "params.yaml").is_file():
        problems += Params.load(reg.root).problems(reg)
    # The signed statements beside releases and the policy chain (registry cannot verify signatures).
    problems += statement_problems(reg.root, pins=user_pins())
    out = console()
    if problems:
        for p in problems:
            out.print(f"[red]✗[/red] {p}")
        raise InputError(
            f"{len(problems)} problem(s) in {reg.entries_dir}",
            hint="fix the entries above; nothing was changed",
        )
    n = len(reg.refs())
    out.print(f"[green]✓[/green] {n} entries valid, every cross-reference resolves, every signed statement verifies")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from commonforge.cli.output import console, table
    from commonforge.errors import InputError, VerificationError
    from commonforge.settings import apply
    from registry import Registry, Store
    from registry.refs import Ref
    from registry.schema import Release

    settings = apply()
    reg = Registry(settings.root)
    parsed = Ref.parse(args.ref, default_kind="model")
    if parsed.kind != "model":
        raise InputError(f"{args.ref} is not a model release", hint="verify takes a model ref")
    rel, status = _entry(reg, args.ref)
    assert isinstance(rel, Release)
    checks = Store(settings.layer(status.root).store_dir).verify_release(rel.manifest)
    out = console()
    t = table(f"{rel.ref} (sha256:{rel.release_digest})", "artifact", "status", "expected sha256", "actual")
    for c in checks:
        colour = "green" if c.ok else "red"
        t.add_row(c.artifact.path, f"[{colour}]{c.status}[/{colour}]", c.artifact.sha256,
                  "" if c.ok else (c.actual or "(not in the store)"))
    out.print(t)
    bad = [c for c in checks if not c.ok]
    if bad:
        raise VerificationError(
            f"{len(bad)} of {len(checks)} artifacts of {rel.ref} failed verification: "
            + ", ".join(f"{c.artifact.path} ({c.status})" for c in bad),
            hint="restore them with `commonforge build` (a rebuild) or from a peer; never use this copy",
        )
    out.print(f"[green]✓[/green] all {len(checks)} artifacts match the manifest")
    counted = len(status.approvals.counted) if status.approvals else 0
    out.print(f"status: {status.status} under policy {status.policy.version if status.policy else 0} "
              f"({counted} approval(s), {len(status.rebuilds)} independent rebuild(s) verified; "
              f"`commonforge status` explains)", highlight=False)
    _verify_logged(out, status)
    return 0


def _verify_logged(out, status) -> None:
    """The release's statements in the policy's transparency log: each counted one proven included
    in the accepted checkpoint; a logged revocation or an unverifiable copy is a failure."""
    from commonforge.errors import VerificationError

    policy = status.policy
    if policy is None or policy.log is None:
        out.print("log: the policy names no transparency log", highlight=False)
        return
    if status.log is None:
        raise VerificationError(f"{status.ref}: {status.check('log').detail}",
                                hint="fetch a copy of the forge's log (COMMONFORGE_LOG) and verify again")
    kinds = {st.digest: st.kind for _, st in [*status.approvals.counted, *status.rebuilds,
                                              *status.revocations.counted]}
    if status.publication is not None:
        kinds[status.publication[1].digest] = "publication"
    for digest, index in sorted(status.logged.items(), key=lambda item: item[1]):
        proof = status.log.prove(index)  # verified against the accepted root before it is returned
        out.print(f"[green]✓[/green] {kinds.get(digest, 'statement')} is entry #{index} of {status.log.describe()}"
                  f" (inclusion proof: {len(proof)} hashes)", highlight=False)
    revoked = [st for _, st in status.revocations.counted if st.digest in status.logged]
    if status.status == "revoked" or revoked:
        raise VerificationError(f"{status.ref} is revoked: " + "; ".join(status.revocation_reasons),
                                hint="the log holds the revocation; do not use this release")
    if status.publication is not None and status.publication[1].digest not in status.logged:
        raise VerificationError(f"{status.ref}: its publication is not in log {policy.log.origin}",
                                hint="the operator runs `commonforge log append`; until then it is not published")
