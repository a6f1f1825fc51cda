"""``commonforge log`` end to end through ``commonforge.cli.main``, in this process: keys made by
``log keygen`` are named in a real policy change of the test forge (tests/trust/conftest.py), the
operator appends, witnesses cosign, clients show, prove and verify; forks, impostor keys and a
tampered copy are refused by the commands a user runs."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import commonforge.cli as forge_cli
from registry.digest import sha256_bytes
from registry.refs import Ref
from registry.schema import utc_now
from tests.helpers import forge_env
from trust import policy as trust_policy
from trust import statements as st
from trust.log import merkle
from trust.log.forge import load_note_key
from trust.log.merkle import LogError
from trust.log.operator import LogOperator
from trust.log.tiles import TileLog

ORIGIN = "forge.test/log"
REF = "model/sample@1.0.0"


@pytest.fixture
def cli(forge, tmp_path, capsys):
    """``cli(*args, code=0)`` runs ``commonforge *args`` on a copy of the test forge, with the
    user's keys, log, log state and policy pins under ``tmp_path``."""
    env = forge_env(tmp_path, COMMONFORGE_ROOT=str(forge.root), COMMONFORGE_TRUST_PINS=str(forge.pins_path),
                    COMMONFORGE_KEYS=str(tmp_path / "keys"), COMMONFORGE_LOG=str(tmp_path / "log"),
                    COMMONFORGE_LOG_STATE=str(tmp_path / "state" / "log-state.json"),
                    XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_STATE_HOME=str(tmp_path / "state"))
    saved = dict(os.environ)

    def run(*args: str, code: int = 0) -> SimpleNamespace:
        os.environ.clear()
        os.environ.update(env)
        capsys.readouterr()
        got = forge_cli.main(list(args))
        out = capsys.readouterr()
        assert got == code, f"commonforge {' '.join(args)} exited {got}, not {code}:\n{out.out}\n{out.err}"
        return SimpleNamespace(out=out.out, err=out.err)

    run.forge, run.tmp = forge, tmp_path
    yield run
    os.environ.clear()
    os.environ.update(saved)


def keygen(cli, name: str, *extra: str) -> str:
    """``log keygen``'s verifier key (stdout's one line)."""
    out = cli("log", "keygen", name, *extra).out.strip()
    assert out.startswith(name + "+") and "\n" not in out
    return out


def name_log(cli, required: int = 1) -> dict[str, Path]:
    """Keys from ``log keygen`` (the log's, witnesses wa and wb, and an outsider's), and policy 2
    naming the log with wa and wb; returns the private key files."""
    keys = cli.tmp / "keys"
    log_key = keygen(cli, ORIGIN)
    wa, wb = keygen(cli, "wa.test", "--witness"), keygen(cli, "wb.test", "--witness")
    keygen(cli, "wx.test", "--witness")
    spec = trust_policy.LogSpec(origin=ORIGIN, key=log_key, witnesses_required=required, witnesses=[
        trust_policy.WitnessSpec(name="Wa", affiliation="Witness A", key=wa),
        trust_policy.WitnessSpec(name="Wb", affiliation="Witness B", key=wb)])
    forge = cli.forge
    forge.change_policy(trust_policy.changed(forge.chain().current, log=spec), ["ann", "bob", "cat"])
    files = {n: keys / f"{n}.note-key" for n in ("wa.test", "wb.test", "wx.test")}
    files["log"] = keys / "forge.test_log.note-key"
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files.values())
    return files


def size_of(appended: str) -> int:
    return int(re.search(r"size (\d+) \(was", appended).group(1))


def test_keygen_append_witness_show_prove_verify_and_the_release_is_published(cli) -> None:
    keys = name_log(cli)
    assert "exists; a key is never overwritten" in cli("log", "keygen", "wa.test", "--witness", code=2).err
    assert "status: draft" in cli("status", REF).out

    appended = cli("log", "append", "--key", str(keys["log"])).out
    size = size_of(appended)
    lines = [ln for ln in appended.splitlines() if ln.startswith("#")]
    assert len(lines) == size and re.match(r"#0 +policy +policy/1 ", lines[0])
    assert any("publication" in ln and REF in ln and "cat (Cyan)" in ln for ln in lines)
    assert "nothing new" in cli("log", "append", "--key", str(keys["log"])).out
    assert "status: draft" in cli("status", REF).out  # no witness has cosigned yet

    cosigned = cli("log", "witness", "--key", str(keys["wa.test"])).out
    assert f"cosigned log {ORIGIN} at size {size}" in cosigned and "1 of the 1 cosignatures" in cosigned
    assert "status: published" in cli("status", REF).out

    shown = cli("log", "show", "--entries").out
    root = TileLog(cli.tmp / "log").root()
    assert f"size  {size}" in shown and f"root  {root.hex()}" in shown
    assert re.search(r"Wa \(Witness A\)  wa\.test\+[0-9a-f]{8}  at \d{4}-\d\d-\d\dT", shown)
    assert re.search(r"model/sample@1\.0\.0 .*published by cat \(Cyan\) under policy 1 with approvals from", shown)

    # Every proof printed is one the test checks itself, against the files the checkout holds.
    proved = json.loads(cli("log", "prove", REF, "--json").out)
    assert proved["root"] == root.hex() and proved["size"] == size and proved["cosigned_by"] == ["wa.test"]
    files = {sha256_bytes(p.read_bytes()): p.read_bytes()
             for p in st.statements_dir(cli.forge.root, Ref("model", "sample", "1.0.0")).glob("*.json")}
    kinds = sorted(r["kind"] for r in proved["entries"])
    assert kinds == ["approval"] * 4 + ["build", "publication", "rebuild"]
    for r in proved["entries"]:
        data = files[r["entry_sha256"]]
        proof = [bytes.fromhex(h) for h in r["proof"]]
        merkle.verify_inclusion(merkle.leaf_hash(data), r["index"], size, proof, root)
        forged = [bytes(32)] + proof[1:]
        with pytest.raises(LogError):
            merkle.verify_inclusion(merkle.leaf_hash(data), r["index"], size, forged, root)
    one = cli("log", "prove", "0").out
    assert "#0  policy 1 signed by" in one and "1 proof(s) verified" in one
    assert "has no entry" not in cli("log", "prove", "policy/2").err
    assert "there is no entry" in cli("log", "prove", str(size), code=2).err
    assert "holds no entry about model/other@1.0.0" in cli("log", "prove", "model/other@1.0.0", code=1).err

    verified = cli("log", "verify").out
    assert f"log {ORIGIN}: size {size}" in verified and f"{size} entries" in verified
    for version in (1, 2):
        got, total = map(int, re.search(rf"policy {version}: (\d+) of (\d+) signatures logged", verified).groups())
        assert got == total >= 3
    assert re.search(r"model/sample@1\.0\.0: published; counted statements logged: 5 \(#", verified)
    assert "model/sample@1.1.0: draft" in verified


def test_a_witness_or_an_operator_key_the_policy_does_not_name_is_refused(cli) -> None:
    keygen(cli, "early.test/log", "--out", str(cli.tmp / "early.key"))
    refused = cli("log", "append", "--key", str(cli.tmp / "early.key"), code=2)
    assert "policy 1 of" in refused.err and "names no transparency log" in refused.err
    keys = name_log(cli)
    impostor = keygen(cli, ORIGIN, "--out", str(cli.tmp / "impostor.key"))
    assert impostor != cli.forge.chain().current.log.key  # the log's very name, another key
    err = cli("log", "append", "--key", str(cli.tmp / "impostor.key"), code=2).err
    assert "is not the log key the policy names" in err
    assert not (cli.tmp / "log" / "checkpoint").exists()
    size = size_of(cli("log", "append", "--key", str(keys["log"])).out)
    err = cli("log", "witness", "--key", str(keys["wx.test"]), code=2).err
    assert "is not one of the witnesses of log forge.test/log" in err and "Wa (wa.test+" in err
    err = cli("log", "witness", "--key", str(keys["log"]), code=2).err  # the log's own key is no witness
    assert "is not one of the witnesses" in err
    shown = cli("log", "show").out
    assert f"size  {size}" in shown and "cosignatures: 0 of the 1" in shown
    assert "0 of the 1 required witness cosignatures" in cli("log", "verify", code=1).err


def test_monitor_catches_a_fork_cosigned_by_a_witness_that_saw_only_it(cli) -> None:
    keys = name_log(cli)
    real = cli.tmp / "log"
    size = size_of(cli("log", "append", "--key", str(keys["log"])).out)
    cli("log", "witness", "--key", str(keys["wa.test"]))
    watched = cli("log", "monitor", str(real), "--state", str(cli.tmp / "monitor.json")).out
    assert f"size {size}: {size} new entries" in watched and watched.rstrip().endswith("OK")
    assert re.search(r"model/sample@1\.0\.0 .*published by cat \(Cyan\)", watched)

    # The operator's key signs a second history of the same size: its last entry swapped for another
    # statement, shown to wb only.
    fork = cli.tmp / "fork"
    entries = list(TileLog(real).entries())
    forge = cli.forge
    other = forge.sign("cat", "approval", "other", st.ApprovalPredicate(signed_at=utc_now()))
    LogOperator(fork, ORIGIN, load_note_key(keys["log"])).append([*entries[:-1], other.read_bytes()])
    cli("log", "witness", "--key", str(keys["wb.test"]), "--log", str(fork))
    err = cli("log", "witness", "--key", str(keys["wa.test"]), "--log", str(fork), code=1).err
    assert "fork" in err  # the witness that cosigned the real history refuses the other

    both = cli("log", "monitor", str(real), str(fork), "--state", str(cli.tmp / "monitor.json"), code=3).out
    assert f"EQUIVOCATION between {real} and {fork}" in both
    assert f"size {size}" in both and "nothing accepted" in both and both.rstrip().endswith("NOT OK (exit 3)")
    fresh = cli("log", "monitor", str(fork), str(real), "--state", str(cli.tmp / "fresh.json"), code=3).out
    assert "EQUIVOCATION" in fresh
    # A client that accepted the real log refuses the fork by itself too.
    pending = cli("log", "verify").out  # cat's approval of model/other@1.0.0 is in the checkout, not the log
    assert "model/other@1.0.0: draft; counted statements logged: 0 (none); not logged yet: 1" in pending
    assert "fork" in cli("log", "verify", "--log", str(fork), code=1).err


def test_verify_of_a_tampered_copy_fails_naming_it(cli) -> None:
    keys = name_log(cli)
    cli("log", "append", "--key", str(keys["log"]))
    cli("log", "witness", "--key", str(keys["wa.test"]))
    cli("log", "verify")
    copy = cli.tmp / "mirror"
    shutil.copytree(cli.tmp / "log", copy)
    bundle = max((p for p in (copy / "tile" / "entries").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(bundle.read_bytes())
    data[40] ^= 1
    bundle.write_bytes(bytes(data))
    err = cli("log", "verify", "--log", str(copy), code=1).err
    assert f"at {copy} does not verify" in err and "does not hold the tree its checkpoint signs" in err
    assert "hash to" in cli("log", "show", "--entries", "--log", str(copy), code=1).err
    assert "does not hold the tree" in cli("log", "prove", REF, "--log", str(copy), code=1).err
    assert "PROBLEM" in cli("log", "monitor", str(copy), "--full", "--state", str(cli.tmp / "m.json"), code=1).out
