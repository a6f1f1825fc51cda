"""How the transparency log scales: appending up to a million entries, bytes on disk, proof sizes and times.

    python benchmarks/log_scale.py                          # 1,000,000 entries, batches of 1,000
    python benchmarks/log_scale.py --max-entries 100000     # stop at 10^5
    python benchmarks/log_scale.py --entry-bytes 600 --batch 1000 --samples 200 --dir /var/tmp/log

Appends pseudo-random entries (``--entry-bytes``, default 600: about a DSSE-signed statement;
seeded, so every run logs the same bytes) to a :class:`trust.log.tiles.TileLog` in a temporary
directory (``--dir`` to choose the file system; it must not exist or be empty), ``--batch``
entries per append. Every append signs its checkpoint with an Ed25519 note key
(``note.generate_key``, ``checkpoint.sign_checkpoint``) and writes every file atomically
(fsync'd), exactly as ``commonforge log append`` would. The append time counts only the appends.

When the log reaches 10^3, 10^4, 10^5 and 10^6 entries (and the last size, if it is none of
those) it measures, on that tree:

* **bytes on disk**: entry bundles, hash tiles and the checkpoint (apparent sizes), the files'
  allocated size, and the file count. Partial tiles and bundles are never deleted (the spec
  lets a client still fetch the ones an older checkpoint needs), so a log appended in small
  batches carries one partial file per append per tile level beside its full tiles. With
  ``--batch 1`` (one statement per append, the forge's own rhythm) the partial bundles dominate:
  each append rewrites its bundle's entries so far, about 128 entries on average;
* **inclusion proofs** for ``--samples`` random entries: hashes (median and maximum, against
  ``ceil(log2 n)``), bytes (32 per hash), time to build one (median: ``warm`` from one open
  ``TileLog`` whose tiles stay cached in memory; ``cold`` from a freshly opened one, so the
  checkpoint and every tile are read from the files, with the OS page cache warm), and time to
  verify one with ``merkle.verify_inclusion`` (leaf hash given);
* **consistency proofs** from ``--samples`` random older sizes to this one: the same figures, and
  the proof from exactly half the size; verified with ``merkle.verify_consistency`` (the older
  roots are computed beforehand, untimed);
* **checkpoint**: time to read the ``checkpoint`` file and verify its Ed25519 signature and body
  with ``checkpoint.open_checkpoint`` (no witnesses: each cosignature adds one more Ed25519
  verification).

It prints a table and appends one row per measured size to ``benchmarks/results/log_scale.csv``
(``--csv``) with the machine, CPU, core count, file system and git commit.

Published figures to compare with (found with this project's search tools; nothing else is
claimed):

* **Proof sizes.** RFC 9162 §2.1.3 (RFC 6962 §2.1.1 before it) builds an inclusion proof from one
  sibling hash per level between the leaf and the root, so at most ``ceil(log2 n)`` SHA-256
  hashes of 32 bytes (Chromium's ``CalculateAuditPathLength`` in net/cert/merkle_audit_proof.cc
  counts exactly that); a consistency proof is likewise about ``log2 n`` hashes. At 10^6 entries
  that is 20 hashes, 640 bytes. Our proofs are the RFC's by construction; the run checks the
  bound is met and reached (column ``log2_ceil`` beside the measured maximum).
* **Tiles.** C2SP tlog-tiles (c2sp.org/tlog-tiles): "Full tiles MUST be exactly 256 hashes wide,
  or 8,192 bytes"; each hash of a level-1+ tile is the root of a full tile below, so a tile level
  spans 8 Merkle levels. Russ Cox, "Transparent Logs for Skeptical Clients"
  (research.swtch.com/tlog, the design behind the Go checksum database): with height-8 tiles a
  proof in a log of 100 million records needs three full tiles, about 24 kB, plus one partial
  tile for the top; the whole sequence of trees fits in about 2N stored hashes, and in 1.06N
  with tiles. Our tiles store N + N/256 + ... = about 1.004N hashes (full tiles only; partial
  tiles come on top, see the ``partial_bytes`` column). Filippo Valsorda's Sunlight design
  (filippo.io/a-different-CT-log): a client gets a proof from at most five tile fetches, 32 B x
  256 x 5 = 40 kB, even at 30x the 2023 certificate issuance rate; at 10^6 entries our tree has 3
  tile levels.
* **Bytes on disk.** The Sunlight README (github.com/FiloSottile/sunlight) tells operators to plan
  for 5 to 10 GB per million certificates: CT entries are whole certificate chains (several KB,
  plus issuer bundles), against about 0.6 KB per statement here, so the figures differ by
  entry size, not by layout.
* **Throughput.** No published append-throughput figure for Rekor or a CT log, at a known entry
  size and hardware, was found with the search tools, so none is compared here.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import resultlog  # noqa: E402  (the repository is on sys.path from here)
from trust.log import checkpoint as cpmod  # noqa: E402
from trust.log import merkle, note  # noqa: E402
from trust.log.tiles import TileLog  # noqa: E402

ORIGIN = "bench.commonforge.invalid/log-scale"
MILESTONES = (1_000, 10_000, 100_000, 1_000_000)
FIELDS = ["when", "commit", "machine", "cpu", "cores", "fs", "entries", "entry_bytes", "batch", "appends",
          "append_s", "entries_per_s", "ms_per_append", "bundle_bytes", "tile_bytes", "partial_bytes",
          "checkpoint_bytes", "allocated_bytes", "files", "samples", "log2_ceil",
          "incl_hashes_median", "incl_hashes_max", "incl_bytes_max", "incl_build_us", "incl_build_cold_us",
          "incl_verify_us", "cons_half_hashes", "cons_hashes_median", "cons_hashes_max", "cons_bytes_max",
          "cons_build_us", "cons_verify_us", "checkpoint_open_us"]


def entries_for(rng: random.Random, count: int, size: int) -> list[bytes]:
    return [rng.randbytes(size) for _ in range(count)]


def disk_usage(directory: Path) -> dict[str, int]:
    """Apparent bytes of entry bundles, hash tiles (full ones), partial files and the checkpoint,
    the allocated bytes of all of them, and the file count."""
    out = {"bundle_bytes": 0, "tile_bytes": 0, "partial_bytes": 0, "checkpoint_bytes": 0, "allocated_bytes": 0,
           "files": 0}
    for dirpath, _, names in os.walk(directory):
        rel = Path(dirpath).relative_to(directory)
        for name in names:
            if name == ".lock" or name.startswith("."):
                continue
            st = os.stat(Path(dirpath) / name)
            out["files"] += 1
            out["allocated_bytes"] += st.st_blocks * 512
            parts = rel.parts
            if not parts and name == "checkpoint":
                out["checkpoint_bytes"] += st.st_size
            elif any(p.endswith(".p") for p in parts):
                out["partial_bytes"] += st.st_size
            elif len(parts) >= 2 and parts[1] == "entries":
                out["bundle_bytes"] += st.st_size
            else:
                out["tile_bytes"] += st.st_size
    return out


def _median_us(times_ns: list[int]) -> float:
    return round(statistics.median(times_ns) / 1000, 1)


def measure(directory: Path, size: int, verifier: note.Verifier, samples: int, seed: int) -> dict:
    """Proof sizes and times on the log at ``size`` entries (its committed size)."""
    rng = random.Random(seed * 7919 + size)
    log = TileLog(directory)
    assert log.size == size, (log.size, size)
    root = log.root()
    if root != log.checkpoint_root:
        raise SystemExit(f"the log's tiles hash to {root.hex()}, its checkpoint names {log.checkpoint_root.hex()}")
    row: dict = {"entries": size, "samples": samples, "log2_ceil": math.ceil(math.log2(size)) if size > 1 else 0}

    # Inclusion proofs.
    indices = [rng.randrange(size) for _ in range(samples)]
    leaves = [merkle.leaf_hash(log.read_entry(i)) for i in indices]
    lengths, build, cold, verify = [], [], [], []
    for i in indices:
        started = time.perf_counter_ns()
        TileLog(directory).inclusion_proof(i)
        cold.append(time.perf_counter_ns() - started)
    for i, leaf in zip(indices, leaves, strict=True):
        started = time.perf_counter_ns()
        proof = log.inclusion_proof(i)
        build.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        merkle.verify_inclusion(leaf, i, size, proof, root)
        verify.append(time.perf_counter_ns() - started)
        lengths.append(len(proof))
    row.update(incl_hashes_median=statistics.median(lengths), incl_hashes_max=max(lengths),
               incl_bytes_max=max(lengths) * merkle.HASH_SIZE, incl_build_us=_median_us(build),
               incl_build_cold_us=_median_us(cold), incl_verify_us=_median_us(verify))

    # Consistency proofs from random older sizes, and from exactly half.
    if size > 1:
        olds = [rng.randrange(1, size) for _ in range(samples)]
        old_roots = {m: log.root(m) for m in {*olds, size // 2}}
        half = log.consistency_proof(size // 2)
        merkle.verify_consistency(size // 2, size, old_roots[size // 2], root, half)
        lengths, build, verify = [], [], []
        for m in olds:
            started = time.perf_counter_ns()
            proof = log.consistency_proof(m)
            build.append(time.perf_counter_ns() - started)
            started = time.perf_counter_ns()
            merkle.verify_consistency(m, size, old_roots[m], root, proof)
            verify.append(time.perf_counter_ns() - started)
            lengths.append(len(proof))
        row.update(cons_half_hashes=len(half), cons_hashes_median=statistics.median(lengths),
                   cons_hashes_max=max(lengths), cons_bytes_max=max(lengths) * merkle.HASH_SIZE,
                   cons_build_us=_median_us(build), cons_verify_us=_median_us(verify))

    # Opening the checkpoint: read the file, verify the log's signature, parse the body.
    opened = []
    for _ in range(samples):
        started = time.perf_counter_ns()
        cp = cpmod.open_checkpoint((directory / "checkpoint").read_bytes(), verifier, origin=ORIGIN).checkpoint
        opened.append(time.perf_counter_ns() - started)
        if (cp.size, cp.root_hash) != (size, root):
            raise SystemExit(f"the checkpoint names size {cp.size}, the log is at {size}")
    row["checkpoint_open_us"] = _median_us(opened)
    return row


def run(directory: Path, max_entries: int, entry_bytes: int, batch: int, samples: int, seed: int) -> list[dict]:
    signer_text, verifier_text = note.generate_key(ORIGIN)
    signer, verifier = note.parse_signer(signer_text), note.parse_verifier(verifier_text)
    log = TileLog(directory)
    rng = random.Random(seed)
    marks = sorted({m for m in MILESTONES if m <= max_entries} | {max_entries})
    rows: list[dict] = []
    size, appends, append_ns = 0, 0, 0
    for mark in marks:
        while size < mark:
            chunk = entries_for(rng, min(batch, mark - size), entry_bytes)
            started = time.perf_counter_ns()
            size, _ = log.append(chunk, lambda n, r: cpmod.sign_checkpoint(cpmod.Checkpoint(ORIGIN, n, r), signer))
            append_ns += time.perf_counter_ns() - started
            appends += 1
        append_s = append_ns / 1e9
        row = {"entry_bytes": entry_bytes, "batch": batch, "appends": appends, "append_s": round(append_s, 2),
               "entries_per_s": round(size / append_s), "ms_per_append": round(append_s * 1000 / appends, 2),
               **disk_usage(directory), **measure(directory, size, verifier, samples, seed)}
        rows.append(row)
        print(_line(row), flush=True)
    return rows


HEADER = (f"{'entries':>9} {'append s':>9} {'entries/s':>9} {'bundles MB':>10} {'tiles MB':>8} {'partial MB':>10} "
          f"{'on disk MB':>10} {'files':>6} | {'log2':>4} {'incl h':>6} {'B':>4} {'build us':>8} {'cold us':>7} "
          f"{'verify us':>9} | {'half h':>6} {'cons h':>6} {'build us':>8} {'verify us':>9} | {'ckpt us':>7}")


def _line(r: dict) -> str:
    mb = 1e6
    return (f"{r['entries']:>9,} {r['append_s']:>9.2f} {r['entries_per_s']:>9,} {r['bundle_bytes'] / mb:>10.2f} "
            f"{r['tile_bytes'] / mb:>8.3f} {r['partial_bytes'] / mb:>10.2f} {r['allocated_bytes'] / mb:>10.1f} "
            f"{r['files']:>6,} | {r['log2_ceil']:>4} {r['incl_hashes_max']:>6} {r['incl_bytes_max']:>4} "
            f"{r['incl_build_us']:>8.1f} {r['incl_build_cold_us']:>7.0f} {r['incl_verify_us']:>9.1f} | "
            f"{r.get('cons_half_hashes', 0):>6} {r.get('cons_hashes_max', 0):>6} {r.get('cons_build_us', 0):>8.1f} "
            f"{r.get('cons_verify_us', 0):>9.1f} | {r['checkpoint_open_us']:>7.1f}")


def _fs_type(path: Path) -> str:
    try:
        done = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True, timeout=10)
        return done.stdout.split()[-1] if done.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-entries", type=int, default=1_000_000, help="stop at this many entries")
    parser.add_argument("--entry-bytes", type=int, default=600, help="bytes per entry (a DSSE statement: ~600)")
    parser.add_argument("--batch", type=int, default=1000, help="entries per append (one signed checkpoint each)")
    parser.add_argument("--samples", type=int, default=200, help="random proofs per measured size")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--dir", type=Path, help="where to build the log (default: a fresh temporary directory)")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "results" / "log_scale.csv",
                        help="append the rows here")
    args = parser.parse_args(argv)
    if args.max_entries < 1 or args.batch < 1 or args.samples < 1:
        parser.error("--max-entries, --batch and --samples must be at least 1")
    if not 1 <= args.entry_bytes <= 0xFFFF:
        parser.error("--entry-bytes must be between 1 and 65535 (an entry bundle's uint16 length)")
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        parser.error(f"--dir {args.dir} is not empty")
    directory = args.dir or Path(tempfile.mkdtemp(prefix="log-scale-"))
    from commonforge.machine import machine_info

    print(f"log in {directory}: up to {args.max_entries:,} entries of {args.entry_bytes} bytes, "
          f"{args.batch:,} per append, {args.samples} proofs per size")
    print(HEADER, flush=True)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fs = _fs_type(directory)
        rows = run(directory, args.max_entries, args.entry_bytes, args.batch, args.samples, args.seed)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    info = machine_info()
    common = {"when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": resultlog.git_commit(ROOT),
              "machine": platform.node(), "cpu": info.get("cpu", ""), "cores": os.cpu_count(), "fs": fs}
    resultlog.append_rows(args.csv, FIELDS, [{**common, **r} for r in rows])
    print(f"{len(rows)} rows appended to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
