"""A forge founded with a transparency log, from the command line only: the log and witness keys
from ``log keygen``, the policy naming them, approvals that count once the operator logged them,
a publication appended with ``publish --log-signer``, a witness's cosignature, ``verify REF``
proving every counted statement, and a revocation that a checkout lost still found in the log."""

from __future__ import annotations

from pathlib import Path

from registry.refs import Ref
from tests.trust.test_cli import REF, cli, make_keys  # noqa: F401 - cli is the fixture
from trust.statements import statements_dir

ORIGIN = "forge.test/log"
NOT_AFTER = "2100-01-01T00:00:00Z"


def real_artifacts(root: Path, store: Path) -> None:
    """Give model/sample@1.0.0 artifacts that are in the store, so that `verify` gets past them."""
    from registry.catalog import Registry
    from registry.schema import BuildManifest, Release
    from registry.store import Store
    from tests.helpers import sample, write_yaml

    manifest = sample("manifest")
    manifest["recipe"]["sha256"] = Registry(root).recipe("recipe/sample@1").digest
    for artifact in manifest["artifacts"]:
        data = f"the bytes of {artifact['path']}".encode()
        artifact["sha256"], artifact["size"] = Store(store).put_bytes(data)
    rel = Release.from_manifest(BuildManifest.model_validate(manifest))
    write_yaml(root / "registry" / "entries" / "models" / "sample" / "1.0.0.yaml", rel.model_dump(mode="json",
                                                                                                 exclude_none=True))


def test_a_release_goes_through_the_log_from_the_command_line(cli) -> None:  # noqa: F811
    tmp = cli("keys", "list").tmp
    real_artifacts(cli("keys", "list").root, tmp / "state" / "store")
    founders = make_keys(cli)
    keys = tmp / "config" / "commonforge" / "keys"
    log_vkey = cli("log", "keygen", ORIGIN).out.strip()
    witness_vkey = cli("log", "keygen", "w1.test", "--witness").out.strip()
    log_key, witness_key = keys / "forge.test_log.note-key", keys / "w1.test.note-key"
    assert log_key.stat().st_mode & 0o777 == 0o600 and witness_key.is_file()

    cli("policy", "init", *founders, "--rebuilder", str(tmp / "bob.json"), "--not-after", NOT_AFTER,
        "--log-origin", ORIGIN, "--log-key", log_vkey, "--witness", f"W1,Witness One,{witness_vkey}",
        "--witnesses-required", "1")
    for who in ("ann", "bob", "cat"):
        cli("policy", "sign", "1", "--key", who)
    applied = cli("policy", "apply", "--log-signer", str(log_key))
    assert "logged 3 policy signature(s) in forge.test/log" in applied.err
    shown = cli("policy", "show").out
    assert f"log: {ORIGIN}  key {log_vkey}" in shown and "1 of 1 witnesses must cosign" in shown

    cli("attest", "build", REF, "--key", "ann")
    for who in ("ann", "bob", "cat"):
        cli("approve", REF, "--key", who)
    digest = cli("status", REF).out.splitlines()[0].split("sha256:")[1]
    cli("attest", "rebuild", REF, "--key", "bob", "--rebuilt-digest", digest)
    waiting = cli("status", REF).out
    assert "0 of 3 approvals counted" in waiting and "not in the transparency log yet" in waiting
    refused = cli("publish", REF, "--key", "cat", ok=False)
    assert refused.code == 1 and "0 of 3 approvals counted" in refused.err  # nothing logged: nothing counts

    cli("log", "append", "--key", str(log_key))
    uncosigned = cli("publish", REF, "--key", "cat", ok=False).err
    assert "no verified copy of log forge.test/log" in uncosigned and "0 of the 1 required witness" in uncosigned
    cli("log", "witness", "--key", str(witness_key))
    published = cli("publish", REF, "--key", "cat", "--log-signer", str(log_key))
    assert "of log forge.test/log" in published.err and "entry #" in published.err
    assert "status: draft" in published.out and "0 of the 1 required witness cosignatures" in published.out
    cli("log", "witness", "--key", str(witness_key))
    status = cli("status", REF).out
    assert "status: published  (policy 1)" in status and "✓ log: log forge.test/log" in status

    verified = cli("verify", REF).out
    assert verified.count("inclusion proof:") == 5  # 3 approvals, the rebuild, the publication
    assert "publication is entry #" in verified

    for who in ("bob", "cat"):
        cli("revoke", REF, "--key", who, "--severity", "high", "--log-signer", str(log_key),
            "--reason", "The data's license turned out not to allow training.")
    cli("log", "witness", "--key", str(witness_key))
    # A remote drops the revocations from the repository: the log still has them.
    for path in statements_dir(Path(cli("keys", "list").root), Ref("model", "sample", "1.0.0")).glob("revocation-*"):
        path.unlink()
    assert "status: revoked" in cli("status", REF).out
    failed = cli("verify", REF, ok=False)
    assert failed.code == 1 and "is revoked" in failed.err
