"""Pull throughput on loopback (issue 14, "Benchmark"): a ~200 MB release from 1 and from 3 peers, against
``cp`` of the same files and against libtorrent, with the cost of verification.

    python benchmarks/pull_throughput.py                       # 180 MB + 20 MB, 3 repetitions each
    python benchmarks/pull_throughput.py --model-mb 18 --other-mb 2 --reps 5

It builds, in a temporary directory (``--work`` to choose the file system), a published forge the
way ``tests/sharing/conftest.py`` does (three maintainers with real keys, policy 2 naming a
transparency log and a witness, ``model/sample@1.0.0`` built, approved by all three, rebuilt,
published, every statement logged and cosigned), except that its two artifacts are random bytes
of ``--model-mb`` (``model.safetensors``) and ``--other-mb`` (``tokenizer.json``) MB. A maintainer
shares it over BitTorrent (``sharing.seed.share``: the v2 torrent beside the release, a signed
sharing statement, logged). Then, each ``--reps`` times, interleaved, into a fresh destination
deleted afterwards (so no run finds the blobs already there), it times:

* ``cp``: ``shutil.copyfile`` of each artifact's store object, then ``fsync``: the physical limit
  for moving these bytes on this disk;
* ``sha256``: ``hashlib.sha256`` over the same files (1 MiB reads): one verification pass;
* ``pull 1 peer`` / ``pull 3 peers``: ``sharing.pull.pull`` from one, then three HTTP peers
  (``sharing.peer.build_server``, each in its own forked process, all serving the same forge root and
  store), with a fresh client state, pins and user registry every time;
* ``pull libtorrent``: the same pull with ``blobs=sharing.seed.torrent_blobs``: the registry from
  one HTTP peer whose store is empty, every artifact byte from one libtorrent seeding session (its
  own forked process) on 127.0.0.1; the client's libtorrent session is a fresh one per pull.

A pull's total is split (by wrapping ``sharing.pull.download_from``, ``pull._commit`` and the
``blobs`` transport with timers; the real functions run) into ``prepare`` (index, governance,
release, log and status: everything before the first artifact byte is asked for), ``transfer``
(the artifacts, with the checks the transport does itself), ``commit`` (blobs into the store,
hashed again, then the registry files) and ``finish`` (pins, final status). ``verify_share`` is
one sha256 pass over the artifacts as a share of the pull's total.

Every method reads the source files from the OS page cache alike (dropping the caches needs
root); the peers, the seeder and the client share this machine's cores. One warm-up pull per pull
method runs first, untimed (Python imports, the peers' first requests). A row per method (medians,
min and max) goes to ``benchmarks/results/pull_throughput.csv`` (``--csv``) with the machine, CPU,
core count, git commit and the 1-minute load average before and after the run (others' work shows).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import resultlog  # noqa: E402  (the repository is on sys.path from here)

FIELDS = ["when", "commit", "machine", "cpu", "cores", "method", "peers", "files", "bytes", "reps", "median_s",
          "min_s", "max_s", "mb_s", "vs_cp", "sha256_s", "verify_share", "prepare_s", "transfer_s", "commit_s",
          "finish_s", "load1_before", "load1_after"]
METHODS = ["cp", "sha256", "pull 1 peer", "pull 3 peers", "pull libtorrent"]
PHASES = ["prepare", "transfer", "commit", "finish"]
REF = "model/sample@1.0.0"


# --- the forge ------------------------------------------------------------------------------------


def build_forge(base: Path, sizes: tuple[int, int]):
    """A published, logged and shared forge as ``tests.sharing.conftest.shared_forge`` builds it, with
    artifacts of ``sizes`` bytes; returns the conftest's ``SharedForge``."""
    from registry.catalog import Registry
    from registry.schema import BuildManifest, Release
    from registry.store import Store
    from sharing import seed as seeding
    from tests.helpers import make_registry, sample, write_yaml
    from tests.sharing.conftest import publish_with_log

    root = make_registry(base / "forge")
    store = Store(base / "store")
    manifest = sample("manifest")
    manifest["recipe"]["sha256"] = Registry(root).recipe("recipe/sample@1").digest
    for artifact, size in zip(manifest["artifacts"], sizes, strict=True):
        artifact["sha256"], artifact["size"] = store.put_bytes(os.urandom(size))
    release = Release.from_manifest(BuildManifest.model_validate(manifest))
    write_yaml(root / "registry" / "entries" / "models" / "sample" / "1.0.0.yaml",
               release.model_dump(mode="json", exclude_none=True))
    forge = publish_with_log(root, base / "store", base / "log", base, release)
    cat = forge.signers["cat"]
    seeding.share(root, store, release, *cat)  # the torrent beside the release and a maintainer's statement
    forge.log_all()
    return forge


# --- peers and the seeder, each in its own process ----------------------------------------------------


def _child(kind: str, paths: list[str], conn) -> None:
    """In a forked process: a peer (``serve``: root, store, log) or the seeder (``seed``: root, store).
    Sends its port on ``conn``, runs until told to stop."""
    if kind == "serve":
        from sharing.peer import build_server

        started = threading.Event()
        where: dict[str, int] = {}

        def ready(host: str, port: int) -> None:
            where["port"] = port
            started.set()

        # A benchmark client asks for many ranges in a row: no rate limit gets in its way.
        server = build_server(Path(paths[0]), Path(paths[1]), Path(paths[2]), port=0, on_started=ready,
                              rate=1e6, burst=1_000_000)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        if not started.wait(30):
            conn.send(None)
            return
        conn.send(where["port"])
        conn.recv()
        server.should_exit = True
        thread.join(10)
        return
    from registry.catalog import Registry
    from registry.store import Store
    from sharing import seed as seeding
    from sharing import torrent

    root, store = Path(paths[0]), Store(Path(paths[1]))
    release = Registry(root).release(REF)
    data = seeding.torrent_path(root, release).read_bytes()
    session = torrent.session("127.0.0.1:0")
    torrent.seed(session, data, seeding.seed_directory(root, store, release), timeout=600)
    conn.send(session.listen_port())
    conn.recv()


class Children:
    """The peers and the seeder, each a forked process (so the client's GIL is its own, and the imports
    done here once are not paid again), started together and stopped by a message."""

    def __init__(self, specs: list[list[str]]) -> None:
        import multiprocessing

        import uvicorn  # noqa: F401

        import sharing.peer  # noqa: F401 - imported before the fork: the children start at once
        import sharing.torrent  # noqa: F401

        ctx = multiprocessing.get_context("fork")
        self.procs, self.conns, self.ports = [], [], []
        for kind, *paths in specs:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_child, args=(kind, paths, theirs), daemon=True)
            proc.start()
            self.procs.append(proc)
            self.conns.append(mine)
        for proc, conn in zip(self.procs, self.conns, strict=True):
            port = conn.recv() if conn.poll(60) else None
            if not port:
                self.close()
                raise RuntimeError(f"a peer or seeder did not start (exit code {proc.exitcode})")
            self.ports.append(port)

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send("stop")
            except OSError:
                pass  # it is gone already
        for proc in self.procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
                proc.join()


# --- the measurements --------------------------------------------------------------------------------


def copy_files(sources: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True)
    for i, src in enumerate(sources):
        target = dest / f"{i}-{src.name}"
        shutil.copyfile(src, target)
        with open(target, "rb+") as f:
            os.fsync(f.fileno())


def sha256_files(sources: list[Path]) -> list[str]:
    out = []
    for src in sources:
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        out.append(h.hexdigest())
    return out


def timed_pull(urls: list[str], dest: Path, blobs: Callable | None, expected_bytes: int) -> dict[str, float]:
    """One pull into the fresh ``dest``: its total and phases in seconds (see the module's docstring)."""
    import sharing.pull as pull_mod
    from trust import policy as trust_policy
    from trust.log.client import ClientState

    spent = dict.fromkeys(["transfer", "commit"], 0.0)
    first: list[float] = []

    def timer(name: str, fn: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            started = time.perf_counter()
            if name == "transfer" and not first:
                first.append(started)
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        wrapped.__name__ = getattr(fn, "__name__", name)
        return wrapped

    real_download, real_commit = pull_mod.download_from, pull_mod._commit
    pull_mod.download_from, pull_mod._commit = timer("transfer", real_download), timer("commit", real_commit)
    try:
        started = time.perf_counter()
        result = pull_mod.pull(REF, urls, dest_root=dest / "user", state=ClientState(dest / "log-state.json"),
                               pins=trust_policy.Pins(dest / "pins.json"),
                               blobs=timer("transfer", blobs) if blobs is not None else None)
        total = time.perf_counter() - started
    finally:
        pull_mod.download_from, pull_mod._commit = real_download, real_commit
    if result.status.status != "published" or result.bytes != expected_bytes:
        raise RuntimeError(f"the pull brought {result.bytes} bytes, status {result.status.status}")
    prepare = (first[0] - started) if first else 0.0
    return {"total": total, "prepare": prepare, "transfer": spent["transfer"], "commit": spent["commit"],
            "finish": total - prepare - spent["transfer"] - spent["commit"]}


def run(work: Path, sizes: tuple[int, int], reps: int, warmup: int, say: Callable[[str], None]) -> list[dict]:
    """Every method ``reps`` times, interleaved; one summary dict per method."""
    from registry.store import Store
    from sharing.seed import torrent_blobs

    say(f"building the forge ({sum(sizes) / 1e6:.1f} MB of artifacts) in {work}")
    forge = build_forge(work / "origin", sizes)
    store = Store(forge.store)
    sources = [store.object_path(a.sha256) for a in forge.release.manifest.artifacts]
    total = sum(sizes)
    empty_store = work / "no-blobs"
    empty_store.mkdir()
    serve = ["serve", str(forge.root), str(forge.store), str(forge.log_dir)]
    children = Children([serve, serve, serve, ["serve", str(forge.root), str(empty_store), str(forge.log_dir)],
                         ["seed", str(forge.root), str(forge.store)]])
    try:
        urls = [f"http://127.0.0.1:{p}" for p in children.ports[:3]]
        registry_only, seeder = f"http://127.0.0.1:{children.ports[3]}", ("127.0.0.1", children.ports[4])
        pulls: dict[str, Callable[[Path], dict[str, float]]] = {
            "pull 1 peer": lambda d: timed_pull(urls[:1], d, None, total),
            "pull 3 peers": lambda d: timed_pull(urls, d, None, total),
            "pull libtorrent": lambda d: timed_pull([registry_only], d, torrent_blobs([seeder], timeout=600), total),
        }
        for name, fn in pulls.items():
            for i in range(warmup):
                fn(work / f"warmup-{len(name)}-{i}")
                shutil.rmtree(work / f"warmup-{len(name)}-{i}")
        times: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        for rep in range(reps):
            dest = work / f"cp-{rep}"
            started = time.perf_counter()
            copy_files(sources, dest)
            times["cp"].append({"total": time.perf_counter() - started})
            shutil.rmtree(dest)
            started = time.perf_counter()
            digests = sha256_files(sources)
            times["sha256"].append({"total": time.perf_counter() - started})
            assert digests == [a.sha256 for a in forge.release.manifest.artifacts]
            for name, fn in pulls.items():
                dest = work / f"pull-{rep}-{len(times[name])}-{name.replace(' ', '-')}"
                times[name].append(fn(dest))
                shutil.rmtree(dest)
            say(f"repetition {rep + 1}/{reps}: " + ", ".join(f"{m} {times[m][-1]['total']:.2f} s" for m in METHODS))
    finally:
        children.close()

    def median(method: str, key: str) -> float:
        return statistics.median(t[key] for t in times[method])

    cp_s, sha_s = median("cp", "total"), median("sha256", "total")
    rows = []
    for method in METHODS:
        totals = [t["total"] for t in times[method]]
        med = statistics.median(totals)
        row = {"method": method, "peers": {"pull 1 peer": 1, "pull 3 peers": 3, "pull libtorrent": 1}.get(method, ""),
               "files": len(sizes), "bytes": total, "reps": reps, "median_s": round(med, 4),
               "min_s": round(min(totals), 4), "max_s": round(max(totals), 4), "mb_s": round(total / 1e6 / med, 1),
               "vs_cp": round(cp_s / med, 3), "sha256_s": round(sha_s, 4)}
        if method.startswith("pull"):
            row["verify_share"] = round(sha_s / med, 3)
            row.update({f"{p}_s": round(median(method, p), 4) for p in PHASES})
        rows.append(row)
    return rows


HEADER = (f"{'method':16} {'median s':>9} {'min s':>7} {'max s':>7} {'MB/s':>7} {'vs cp':>6} {'sha/total':>9} "
          f"{'prepare':>8} {'transfer':>8} {'commit':>7} {'finish':>7}")


def _line(r: dict) -> str:
    def cell(key: str, width: int) -> str:
        value = r.get(key, "")
        return f"{value:>{width}}" if value != "" else " " * (width - 1) + "-"
    return (f"{r['method']:16} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['max_s']:7.3f} {r['mb_s']:7.1f} "
            f"{r['vs_cp']:6.3f} {cell('verify_share', 9)} {cell('prepare_s', 8)} {cell('transfer_s', 8)} "
            f"{cell('commit_s', 7)} {cell('finish_s', 7)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-mb", type=float, default=180.0, help="size of model.safetensors, MB (10^6 bytes)")
    parser.add_argument("--other-mb", type=float, default=20.0, help="size of tokenizer.json, MB")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of each method (the median is kept)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed pulls per pull method first")
    parser.add_argument("--work", type=Path, help="where to build the forge and pull (default: a temporary directory)")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "results" / "pull_throughput.csv")
    args = parser.parse_args(argv)
    sizes = (int(args.model_mb * 1e6), int(args.other_mb * 1e6))
    if min(sizes) < 1 or args.reps < 1 or args.warmup < 0:
        parser.error("sizes must be at least 1 byte, --reps at least 1, --warmup at least 0")
    from commonforge.machine import machine_info

    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pull-throughput-", dir=args.work))
    load_before = os.getloadavg()[0]  # the machine may be shared: a busy one shows here
    try:
        rows = run(work, sizes, args.reps, args.warmup, lambda s: print(s, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = machine_info()
    common = {"when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": resultlog.git_commit(),
              "machine": platform.node(), "cpu": info.get("cpu", ""), "cores": os.cpu_count(),
              "load1_before": round(load_before, 2), "load1_after": round(os.getloadavg()[0], 2)}
    print(HEADER)
    for r in rows:
        print(_line(r))
    resultlog.append_rows(args.csv, FIELDS, [{**common, **r} for r in rows])
    print(f"{len(rows)} rows appended to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
