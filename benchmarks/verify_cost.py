"""What checking signatures adds to ``commonforge verify`` of forge-small: status vs. re-hashing.

    python benchmarks/verify_cost.py                  # 20 rounds
    python benchmarks/verify_cost.py --rounds 50

``verify`` does two things: re-hash every artifact against the manifest (``Store.verify_release``)
and compute the release's status from its signed statements (``trust.status.release_status``:
the policy chain verified from version 1, every statement's DSSE signature checked). This
measures both for the committed forge-small@1.0.0 release, in a throwaway copy of the registry:

* ``status``: a four-maintainer, three-affiliation policy 1 founded with freshly generated keys
  (ECDSA P-256), and beside the release a build statement, four approvals, an identical rebuild
  and a publication: what a published release carries. Timed: ``release_status`` (policy chain
  and statements read, parsed and verified; nothing cached between rounds).
* ``hash``: a store holding files of exactly forge-small's artifact sizes (random bytes: the
  release's own weights are not needed to time sha256 over that many bytes), verified with
  ``Store.verify_release`` against a manifest naming their digests, in the same process. The OS
  page cache is warm after the first round, as it is for a user who just downloaded the files.

Rows go to ``benchmarks/results/verify_cost.csv`` with the machine and the git commit.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import resultlog  # noqa: E402  (the repository is on sys.path from here)
from trust.policy import Role  # noqa: E402

REF = "model/forge-small@1.0.0"
PEOPLE: dict[str, tuple[str, list[Role]]] = {"ann": ("Acme", ["maintainer"]), "amy": ("Acme", ["maintainer"]),
          "bob": ("Beta", ["maintainer", "rebuilder"]), "cat": ("Cyan", ["maintainer"])}
FIELDS = ["when", "commit", "machine", "cpu", "cores", "what", "statements", "artifact_bytes", "rounds",
          "median_ms", "min_ms", "max_ms"]


def _forge(work: Path):
    """A copy of the registry with a founded policy and a published-release's statements."""
    from registry.catalog import Registry
    from trust import keys as trust_keys
    from trust import policy as tp
    from trust import status as ts

    root = work / "forge"
    shutil.copytree(ROOT / "registry", root / "registry")
    shutil.rmtree(root / "registry" / "local_sources")  # not needed to compute a status
    keys_dir = work / "keys"
    signers = {}
    for name, (affiliation, _) in PEOPLE.items():
        trust_keys.generate(keys_dir, name, affiliation, "ecdsa", None)
        signers[name] = trust_keys.load_signer(keys_dir, name, None)
    founders = [tp.member(signers[n][1].public(), roles, "2100-01-01T00:00:00Z") for n, (_, roles) in PEOPLE.items()]
    tp.propose(root, tp.founding(root, founders))
    for signer, _ in signers.values():
        tp.sign_proposal(root, signer, 1)
    tp.apply(root)
    release = Registry(root).release(REF)
    ts.attest_build(root, release, *signers["ann"])
    for name in PEOPLE:
        ts.approve(root, release, *signers[name])
    ts.attest_rebuild(root, release, *signers["bob"], rebuilt_digest=release.release_digest)
    ts.publish(root, release, *signers["cat"])
    return root, release


def _timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    from commonforge.machine import machine_info
    from registry.schema import Artifact, BuildManifest
    from registry.store import Store
    from trust.status import release_status

    work = Path(tempfile.mkdtemp(prefix="verify-cost-"))
    try:
        root, release = _forge(work)
        status = release_status(root, release)
        assert status.status == "published", status.explain()
        n_statements = len(list((root / "registry" / "entries" / "models" / "forge-small").glob("1.0.0.statements/*")))
        status_ms = _timed(lambda: release_status(root, release), args.rounds)

        store = Store(work / "store")
        artifacts = []
        for a in release.manifest.artifacts:
            path = work / "files" / a.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(a.size))
            artifacts.append(Artifact(path=a.path, sha256=store.put_file(path)[0], size=a.size, stage=a.stage,
                                      variant=a.variant))
        manifest = BuildManifest.model_validate({**release.manifest.model_dump(mode="json", exclude_none=True),
                                                 "artifacts": [x.model_dump(mode="json", exclude_none=True)
                                                               for x in artifacts]})
        total = sum(a.size for a in artifacts)
        hash_ms = _timed(lambda: store.verify_release(manifest), args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    info = machine_info()
    rows = []
    for what, times in (("status (signatures)", status_ms), ("re-hash artifacts", hash_ms)):
        rows.append({"when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": resultlog.git_commit(),
                     "machine": platform.node(), "cpu": info.get("cpu", ""), "cores": os.cpu_count(), "what": what,
                     "statements": n_statements, "artifact_bytes": total, "rounds": args.rounds,
                     "median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2),
                     "max_ms": round(max(times), 2)})
        print(f"{what:22} median {statistics.median(times):9.2f} ms  (min {min(times):.2f}, max {max(times):.2f}; "
              f"{n_statements} statements, {total / 1e6:.1f} MB of artifacts, {args.rounds} rounds)")
    resultlog.append_rows(ROOT / "benchmarks" / "results" / "verify_cost.csv", FIELDS, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
