"""Quantization schemes: what to quantize, to how many bits, in which groups, by which method.

A `QuantScheme` is the typed record that crosses the boundary between a recipe (which names a
variant such as ``"int4-g128"``) and the code that quantizes, exports and loads it. The names
follow compressed-tensors' presets so that a published variant means the same thing to vLLM:

    name               bits  group  zero point  compressed-tensors preset
    int4-g{32,64,128}   4    32..   symmetric   W4A16 (group_size=128 is the preset)
    int4-g128-asym      4    128    per group   W4A16_ASYM
    int8                8    chan.  symmetric   W8A16 (per output channel)

Module selection uses compressed-tensors' own matching rules, so the `targets`/`ignore` we write
into `config.json` select exactly the modules we quantized: a pattern is either a class name
(``"Linear"``), an exact module name (``"lm_head"``), or a regex on the module name prefixed with
``"re:"`` (``"re:.*mlp.*"``). Embeddings are never quantized (there is no quantized embedding
kernel); `lm_head` is quantized only if it is left out of `ignore`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

from kernels.errors import SchemeError

INT4_GROUP_SIZES = (32, 64, 128)
DEFAULT_TARGETS = ("Linear",)
DEFAULT_IGNORE = ("lm_head",)


@dataclasses.dataclass(frozen=True)
class QuantScheme:
    """How a model's linear layers are quantized (weights only; activations stay fp16/bf16).

    bits/group_size/symmetric fix the storage format; method/damp/act_order/block_size only
    change how the integers are chosen (GPTQ knobs are ignored by RTN).
    """

    name: str  # e.g. "int4-g128", "int4-g32-asym", "int8"
    bits: int  # 4 (group-wise) or 8 (per output channel)
    group_size: int | None  # 32, 64 or 128 input features per scale; None = one scale per output row
    symmetric: bool  # True: q = round(w / s); False: q = round(w / s) + zero point per group
    method: Literal["rtn", "gptq"] = "rtn"
    targets: tuple[str, ...] = DEFAULT_TARGETS  # class names, module names or "re:<regex>"
    ignore: tuple[str, ...] = DEFAULT_IGNORE  # same syntax; wins over targets
    damp_percent: float = 0.01  # GPTQ: added to diag(H) as a fraction of its mean
    act_order: bool = False  # GPTQ: process columns by decreasing Hessian diagonal
    block_size: int = 128  # GPTQ: columns per lazy-update block

    def __post_init__(self) -> None:
        if self.bits == 4:
            if self.group_size not in INT4_GROUP_SIZES:
                raise SchemeError(
                    f"scheme {self.name!r}: int4 needs group_size in {INT4_GROUP_SIZES}, got "
                    f"{self.group_size!r}; pick one of those (128 is the usual choice)"
                )
        elif self.bits == 8:
            if self.group_size is not None or not self.symmetric:
                raise SchemeError(
                    f"scheme {self.name!r}: int8 is per-output-channel and symmetric only "
                    "(group_size=None, symmetric=True)"
                )
        else:
            raise SchemeError(f"scheme {self.name!r}: bits must be 4 or 8, got {self.bits!r}")
        if self.method not in ("rtn", "gptq"):
            raise SchemeError(f"scheme {self.name!r}: method must be 'rtn' or 'gptq', got {self.method!r}")
        if not 0.0 <= self.damp_percent < 1.0:
            raise SchemeError(f"scheme {self.name!r}: damp_percent must be in [0, 1), got {self.damp_percent}")
        if self.block_size <= 0 or (self.group_size and self.block_size % self.group_size):
            raise SchemeError(
                f"scheme {self.name!r}: block_size ({self.block_size}) must be a positive multiple "
                f"of group_size ({self.group_size})"
            )
        if any(_is_embedding_pattern(p) for p in self.targets):
            raise SchemeError(
                f"scheme {self.name!r}: embeddings cannot be quantized (no quantized embedding "
                "kernel); remove 'Embedding' from targets"
            )
        for pattern in (*self.targets, *self.ignore):
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise SchemeError(f"scheme {self.name!r}: bad regex {pattern!r}: {exc}") from exc

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @classmethod
    def from_name(cls, name: str, **overrides) -> QuantScheme:
        """Parse ``int4-g{32,64,128}[-asym|-sym]`` or ``int8``; keyword overrides win.

        >>> QuantScheme.from_name("int4-g128", method="gptq").group_size
        128
        """
        m = re.fullmatch(r"int4-g(\d+)(-asym|-sym)?", name)
        fields: dict[str, Any]
        if m:
            fields = dict(bits=4, group_size=int(m.group(1)), symmetric=m.group(2) != "-asym")
        elif name == "int8":
            fields = dict(bits=8, group_size=None, symmetric=True)
        else:
            raise SchemeError(
                f"unknown quantization scheme name {name!r}; use 'int4-g32', 'int4-g64', "
                "'int4-g128' (add '-asym' for a zero point per group) or 'int8'"
            )
        fields.update(overrides)
        return cls(name=name, **fields)

    def matches(self, module_name: str, module) -> bool:
        """Whether `module` (named `module_name` in the model) is quantized by this scheme."""
        if any(_pattern_matches(p, module_name, module) for p in self.ignore):
            return False
        return any(_pattern_matches(p, module_name, module) for p in self.targets)


def _pattern_matches(pattern: str, module_name: str, module) -> bool:
    if pattern.startswith("re:"):
        return re.match(pattern[3:], module_name) is not None
    # like compressed-tensors: any class in the module's MRO counts ("Linear" matches subclasses)
    return pattern == module_name or any(cls.__name__ == pattern for cls in type(module).__mro__)


def _is_embedding_pattern(pattern: str) -> bool:
    return pattern in ("Embedding", "embed_tokens") or "embed" in pattern.lower()
