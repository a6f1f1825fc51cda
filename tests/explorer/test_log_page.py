"""The Log page under Streamlit's AppTest, over the trust tests' forge (real keys, real statements)
whose policy names a transparency log: the operator appends, two witnesses cosign, and the page
reads the copy at COMMONFORGE_LOG with the client state at COMMONFORGE_LOG_STATE.

Attacks mounted: a copy whose entry bundle was rewritten after it was signed, and an older copy
shown after a newer one was accepted (a rollback): both refused in red, showing nothing; and a hash
tile rewritten under entries that still verify: the page refuses the entry's inclusion proof.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from commonforge.settings import PRIVACY_ENV
from tests.trust.conftest import TrustForge, forge, trust_forge  # noqa: F401 - fixtures used below
from tests.trust.log.test_forge import Logged, name_log
from trust import status as trust_status
from trust.log import merkle

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import explorer  # noqa: E402

APP = Path(explorer.__file__).resolve().parent / "app.py"
RELEASE = "model/sample@1.0.0"


def point_at(checkout: TrustForge, tmp_path: Path, monkeypatch, log: Path, state: Path) -> None:
    """This process (the AppTest) pointed at ``checkout``, its log copy ``log`` and client state ``state``."""
    for key, value in PRIVACY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COMMONFORGE_ROOT", str(checkout.root))
    monkeypatch.setenv("COMMONFORGE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("COMMONFORGE_EXPLORER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COMMONFORGE_TRUST_PINS", str(checkout.pins_path))
    monkeypatch.setenv("COMMONFORGE_LOG", str(log))
    monkeypatch.setenv("COMMONFORGE_LOG_STATE", str(state))


def page_text(at: AppTest) -> str:
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [str(m.proto.body) for m in at.metric]
    out += [str(c.value) for c in at.code]
    return "\n".join(out)


def open_log(**query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("app_pages/log.py")
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def logged(forge, tmp_path, monkeypatch) -> Logged:  # noqa: F811 - the trust tests' forge fixture
    """The forge with a named log, every loggable statement appended and cosigned by both witnesses."""
    found = name_log(forge, tmp_path, required=1)
    found.append()
    found.cosign()
    point_at(forge, tmp_path, monkeypatch, found.log_dir, found.state.path)
    return found


def test_shows_the_checkpoint_its_cosignatures_the_entries_and_a_verified_proof(logged: Logged) -> None:
    view = logged.view()  # what the page must show, read by the library itself
    cp = view.opened.checkpoint
    about = view.about(RELEASE)
    index = max(e.index for e in about if e.statement.kind == "publication")
    at = open_log(release=RELEASE, entry=str(index))
    text = page_text(at)
    assert "does not verify" not in text
    assert cp.origin in text and str(cp.size) in text and cp.root_hash.hex() in text
    witnesses = at.dataframe[0].value
    assert list(witnesses["witness"]) == ["Wa", "Wb"] and list(witnesses["affiliation"]) == ["Witness a", "Witness b"]
    # Entries about the release only, named by the policy's maintainers.
    entries = at.dataframe[1].value
    assert sorted(entries["index"]) == sorted(e.index for e in about)
    assert set(entries["subject"]) == {RELEASE}
    assert {"approval", "rebuild", "publication"} <= set(entries["kind"])
    signers = set(entries["signer"])
    assert {"cat (Cyan)", "bob (Beta)"} <= signers, signers
    assert f"What the log says about {RELEASE}" in text and "published by cat (Cyan)" in text
    # The proof: the hashes the library returns, and they verify against the signed root here too.
    proof = list(at.dataframe[2].value["hash"])
    assert proof == [h.hex() for h in view.prove(index)]
    merkle.verify_inclusion(merkle.leaf_hash(view.entries[index].data), index, cp.size,
                            [bytes.fromhex(h) for h in proof], cp.root_hash)
    assert f"Entry {index}" in text and "leads to the signed root" in text

    # Every entry, and the filter back to all of them.
    at.selectbox[0].set_value("every entry").run()
    assert not at.exception
    assert len(at.dataframe[1].value) == cp.size


def test_a_tampered_copy_of_the_log_is_refused_in_red(logged: Logged) -> None:
    bundle = max((p for p in (logged.log_dir / "tile" / "entries").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    data = bytearray(bundle.read_bytes())
    data[40] ^= 1
    bundle.write_bytes(bytes(data))
    at = open_log()
    errors = "\n".join(str(e.value) for e in at.error)
    assert "This copy of the log does not verify: do not trust it." in errors
    assert "does not hold the tree its checkpoint signs" in errors
    assert "fork" in page_text(at) and "rollback" in page_text(at)
    assert not at.dataframe  # nothing from the copy is shown


def test_a_proof_from_a_rewritten_hash_tile_is_refused_not_shown(logged: Logged) -> None:
    # The entries still hash to the signed root (the copy opens), but the hash tile the audit path
    # is read from has the chosen entry's sibling rewritten: the page must check the path, not echo it.
    index = 3
    tile = max((p for p in (logged.log_dir / "tile" / "0").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(tile.read_bytes())
    data[(index ^ 1) * 32] ^= 1
    tile.write_bytes(bytes(data))
    at = open_log(entry=str(index))
    errors = "\n".join(str(e.value) for e in at.error)
    assert f"The inclusion proof of entry {index} does not verify: do not trust this copy." in errors
    assert "leads to the signed root" not in page_text(at)
    assert len(at.dataframe) == 2  # the cosignatures and the entries; no proof table


def test_an_older_copy_after_a_newer_one_was_accepted_is_a_rollback(logged: Logged, tmp_path: Path) -> None:
    old = tmp_path / "old-log"
    shutil.copytree(logged.log_dir, old)
    tf = logged.forge
    for who in ("bob", "cat"):
        trust_status.revoke(tf.root, tf.releases["published"], tf.signer(who), tf.keys[who],
                            reason="the weights leak a training document", severity="high")
    logged.append()
    logged.cosign()
    assert not open_log().error  # the newer copy verifies; its checkpoint is now the accepted one
    shutil.rmtree(logged.log_dir)
    shutil.copytree(old, logged.log_dir)  # a mirror serves the log from before the revocations
    errors = "\n".join(str(e.value) for e in open_log().error)
    assert "do not trust it" in errors and "rollback" in errors


def test_a_policy_without_a_log_says_so(forge, tmp_path, monkeypatch) -> None:  # noqa: F811
    point_at(forge, tmp_path, monkeypatch, tmp_path / "log", tmp_path / "state.json")
    at = open_log()
    assert "The policy names no transparency log." in "\n".join(str(e.value) for e in at.info)
    assert not at.error
