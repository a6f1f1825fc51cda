"""The governance commands end to end through ``commonforge.cli.main``, in this process.

Until ``commonforge/cli/__init__.py`` lists ``trust_cmds``, the ``cli`` fixture adds its parsers to
the real parser (and stops doing so once it is listed): everything else is the real ``main``.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

import commonforge.cli as forge_cli
from commonforge.cli import trust_cmds
from tests.helpers import forge_env, make_registry


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    root = make_registry(tmp_path / "forge")
    real = forge_cli.build_parser

    def build_parser():
        parser = real()
        sub = next(a for a in parser._actions if a.dest == "command")
        if "approve" not in sub.choices:
            trust_cmds.add_parsers(sub)
        return parser

    monkeypatch.setattr(forge_cli, "build_parser", build_parser)
    saved = dict(os.environ)
    env = forge_env(tmp_path, COMMONFORGE_ROOT=str(root), XDG_CONFIG_HOME=str(tmp_path / "config"))
    for name in ("COMMONFORGE_KEYS", "COMMONFORGE_TRUST_PINS"):  # tests/conftest.py's; here: under XDG
        env.pop(name, None)

    def run(*args: str, ok: bool = True) -> SimpleNamespace:
        os.environ.clear()
        os.environ.update(env)
        capsys.readouterr()
        code = forge_cli.main(list(args))
        out = capsys.readouterr()
        result = SimpleNamespace(code=code, out=out.out, err=out.err, root=root, tmp=tmp_path)
        assert (code == 0) == ok, f"commonforge {' '.join(args)} exited {code}:\n{out.out}\n{out.err}"
        return result

    monkeypatch.chdir(root)
    yield run
    os.environ.clear()
    os.environ.update(saved)


REF = "model/sample@1.0.0"
PEOPLE = [("ann", "Acme", "ecdsa"), ("amy", "Acme", "ecdsa"), ("bob", "Beta", "ed25519"), ("cat", "Cyan", "ecdsa")]


def make_keys(cli) -> list[str]:
    """Everyone's key generated and exported; returns ``policy init``'s maintainer arguments."""
    tmp = cli("keys", "list").tmp
    for name, aff, ktype in PEOPLE:
        line = cli("keys", "generate", "--name", name, "--affiliation", aff, "--type", ktype).out
        assert line.split()[1:3] == [ktype, name]
        (tmp / f"{name}.json").write_text(cli("keys", "export", name).out)
    return [a for n, _, _ in PEOPLE for a in ("--maintainer", str(tmp / f"{n}.json"))]


def test_a_forge_founded_approved_rebuilt_published_and_revoked_from_the_command_line(cli):
    founders = make_keys(cli)
    tmp = cli("keys", "list").tmp
    listed = cli("keys", "list").out
    assert [line.split()[2] for line in listed.splitlines()] == ["amy", "ann", "bob", "cat"]
    assert (tmp / "config" / "commonforge" / "keys").is_dir()

    assert "not a time" in cli("policy", "init", *founders, "--not-after", "soon", ok=False).err
    out = cli("policy", "init", *founders, "--rebuilder", str(tmp / "bob.json"), "--not-after", "2100-01-01T00:00:00Z").out
    assert "proposed policy 1" in out
    for who in ("ann", "bob"):
        cli("policy", "sign", "1", "--key", who)
    failed = cli("policy", "apply", ok=False)
    assert failed.code == 1 and "2 of 3 signatures of policy 1's maintainers on policy 1 counted" in failed.err
    cli("policy", "sign", "1", "--key", "cat")
    assert "policy 1 (sha256:" in cli("policy", "apply").out
    shown = cli("policy", "show").out
    assert "publish: 3 signatures, at most 1 per affiliation, 3 affiliations, 1 identical rebuild(s)" in shown
    assert "bob (Beta)  maintainer, rebuilder" in shown

    cli("attest", "build", REF, "--key", "ann")
    for who in ("ann", "amy", "bob"):
        cli("approve", REF, "--key", who, "--comment", f"{who} read the card")
    status = cli("status", "sample").out
    assert "status: draft  (policy 1)" in status
    assert ("✗ approvals: 2 of 3 approvals counted; affiliation Acme signed 2 times, counted once; "
            "2 of 3 distinct affiliations") in status
    refused = cli("publish", REF, "--key", "ann", ok=False)
    assert refused.code == 1 and "cannot be published under policy 1: 2 of 3 approvals counted" in refused.err
    assert "not a rebuilder in policy 1" in cli("attest", "rebuild", REF, "--key", "ann", "--rebuilt-digest",
                                                 "0" * 64, ok=False).err
    digest = status.splitlines()[0].split("sha256:")[1]
    cli("attest", "rebuild", REF, "--key", "bob", "--rebuilt-digest", digest)
    cli("approve", REF, "--key", "cat")
    done = cli("publish", REF, "--key", "cat")
    published = done.out
    assert "status: published  (policy 1)" in published
    assert "✓ rebuilds: 1 of 1 identical rebuilds by another party (bob, Beta)" in published
    # The card, rendered again at publication, records who vouched as of then, and says so.
    card = (done.root / "model_cards" / "published" / "sample" / "1.0.0" / "README.md").read_text()
    assert "## Governance (as of publication)" in card and "under governance policy 1" in card
    assert "| approved by | amy (Acme)" in card or "| approved by | ann (Acme)" in card
    assert "| rebuilt identically by | bob (Beta)" in card and "| published by | cat (Cyan)" in card
    from registry.catalog import Registry
    from registry.digest import sha256_bytes

    assert Registry(done.root).card(Registry(done.root).release(REF)).sha256 == sha256_bytes(card.encode())

    revoked = cli("revoke", REF, "--key", "bob", "--severity", "high",
                  "--reason", "A source's license turned out not to allow redistribution.").out
    assert "status: published" in revoked and "1 of 2 revocations counted" in revoked
    cli("revoke", REF, "--key", "cat", "--severity", "high", "--reason", "Confirmed: the license does not allow it.")
    assert "status: revoked" in cli("status", REF).out
    assert cli("status", "sample", ok=False).code == 2  # the only release is revoked: a bare name finds none


def test_refusals_are_messages_with_exit_codes(cli):
    assert cli("approve", "sample", "--key", "x", ok=False).code == 2  # a bare name is not one release
    missing = cli("approve", REF, "--key", "nobody", ok=False)
    assert missing.code == 2 and "not found: key nobody" in missing.err
    cli("keys", "generate", "--name", "eve", "--affiliation", "Eve Corp")
    outsider = cli("approve", REF, "--key", "eve", ok=False)
    assert outsider.code == 1 and "is not a maintainer in the bootstrap policy" in outsider.err
    assert "no policy yet" in cli("status", REF).out
    assert "`commonforge policy init` makes version 1" in cli("policy", "show").out


def test_a_differing_rebuild_is_signed_and_never_counts(cli):
    from registry.refs import Ref
    from trust.statements import read_all, statements_dir

    founders = make_keys(cli)
    bob_json = founders[5]  # --maintainer ann, --maintainer amy, --maintainer bob, ...
    root = cli("policy", "init", *founders, "--rebuilder", bob_json, "--not-after", "2100-01-01T00:00:00Z").root
    for who in ("ann", "bob", "cat"):
        cli("policy", "sign", "1", "--key", who)
    cli("policy", "apply")
    refused = cli("attest", "rebuild", REF, "--key", "bob", ok=False)
    assert refused.code == 2 and "needs --rebuilt-digest" in refused.err and "reproduce REF --key K" in refused.err
    cli("attest", "rebuild", REF, "--key", "bob", "--rebuilt-digest", "f" * 64)
    (statement,), _ = read_all(statements_dir(root, Ref("model", "sample", "1.0.0")))
    assert statement.kind == "rebuild"
    assert statement.predicate.result == "different" and statement.predicate.rebuilt_digest == "f" * 64
    assert "bob's rebuild differs (sha256:ffffffffffff" in cli("status", REF).out
