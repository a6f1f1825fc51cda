"""The model runner: a Llama-shaped decoder run step by step over a static KV cache of slots.

    runner = SlotRunner(loaded.model, slots=8, max_len=loaded.context_length)
    logits = runner.prefill(slot=0, ids=[5, 17, 3], all_positions=False)   # [1, V] (or [T, V])
    logits = runner.decode(tokens=[9, 4], positions=[3, 11])               # [2, V]: slots 0 and 1

Why its own forward and not ``model(input_ids, cache=...)``: continuous batching needs every
request in the batch at its *own* position with its *own* cache length. transformers' caches
assume one length per batch (left padding and re-padding the cache whenever a request joins).
Here the cache is one static tensor per layer, ``[slots, kv_heads, max_len, head_dim]``; slot
``i`` belongs to the ``i``-th running request, and running requests always occupy slots
``0..B-1`` (when one finishes, the last one's cache is moved into the hole:
:meth:`SlotRunner.move`), so a decode step reads ``cache[:B, :, :L]`` as a view, never a
gather. The forward reuses the model's own modules (embeddings, norms, projections, MLP, the
rotary embedding with its scaling, lm_head), so ``QuantLinear`` layers, RoPE variants and
attention/MLP biases come for free; only the attention and the cache are ours.

Shapes: a prefill is one request, ``T`` tokens (causal attention over its fresh keys, which
are written into its slot); a decode step is ``B`` requests, one token each, attending to keys
``0..pos[b]`` of its slot through a boolean mask ``[B, 1, 1, L]``; ``L`` is the longest
running sequence rounded up to a multiple of ``ATTN_BUCKET`` (so the work grows with the
sequences, not with the context length, and the shapes stay few for CUDA graphs).

On the CPU with bfloat16 activations (the quantized variants' fast path, `kernels.cpu_matmul`), the
q/k/v projections and the MLP's gate/up projections of each layer run as one int4 call each where
all of them are int4 weights of one group size (`kernels.cpu_matmul.concat_int4`): 4 matmul calls
a layer instead of 7, with outputs equal to the separate calls' bit for bit. The fused weights are
built on first use from the layers' own prepacked weights: a runner assumes its model's weights do
not change while it runs (as its KV cache assumes the model does not).

On CUDA, decode steps run as CUDA graphs (one per batch size and attention bucket, captured
on first use after a warm-up step; any capture failure falls back to eager for that shape).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from commonforge.errors import InputError
from kernels.cpu_matmul import Int4CpuWeight, concat_int4, int4_linear

log = logging.getLogger(__name__)

ATTN_BUCKET = 64  # decode attends to keys [0, L) with L a multiple of this (or the cache length)
# Decoders whose layers are Llama-shaped (q/k/v/o projections, two RMSNorms, a gated MLP).
SUPPORTED_TYPES = ("llama", "mistral", "qwen2")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    # q [B, H, T, D], k [B, KV, T, D]; cos/sin [B, T, D] -> broadcast over heads
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """F.scaled_dot_product_attention, computed in float32 for half-precision inputs on the CPU.

    torch's CPU kernel for bfloat16 is several times slower than its float32 one (one query over
    64 / 256 / 1024 keys, SmolLM2's 9 heads over 3: 56 / 203 / 864 us against 19 / 43 / 125 us with
    the casts, 1 thread, /tmp/cf/attn.py of the issue-15 report) and no more accurate against a
    float64 reference (the output's rounding to bfloat16 dominates), so the CPU path casts.
    """
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class _Fused:
    """Several projections of one input as one int4 call; ``__call__`` returns their outputs, split."""

    def __init__(self, weight: Int4CpuWeight, bias: torch.Tensor | None, sizes: list[int]) -> None:
        self.weight, self.bias, self.sizes = weight, bias, sizes

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return int4_linear(x, self.weight, self.bias).split(self.sizes, dim=-1)

    @classmethod
    def of(cls, modules) -> _Fused | None:
        """The fusion of ``modules`` (QuantLinear / BlockQuantLinear on the auto backend whose CPU
        weights are int4 of one K and group size, biases all present or all absent), or None."""
        weights = []
        for m in modules:
            if getattr(m, "backend", None) != "auto" or not hasattr(m, "cpu_weight"):
                return None
            cw = m.cpu_weight()
            if not isinstance(cw, Int4CpuWeight):
                return None
            weights.append(cw)
        fused = concat_int4(weights)
        biases = [m.bias for m in modules]
        if fused is None or (None in biases and any(b is not None for b in biases)):
            return None
        bias = None if biases[0] is None else torch.cat([b.detach().to(torch.bfloat16) for b in biases])
        return cls(fused, bias, [w.out_features for w in weights])


@dataclasses.dataclass(frozen=True)
class _LayerProjections:
    qkv: _Fused | None
    o: _Fused | None
    gate_up: _Fused | None
    down: _Fused | None


NO_PROJECTIONS = _LayerProjections(None, None, None, None)


def check_supported(model) -> None:
    """Refuse models whose layers this runner would compute wrongly."""
    cfg = model.config
    kind = getattr(cfg, "model_type", "?")
    if kind not in SUPPORTED_TYPES:
        raise InputError(
            f"the serving engine runs Llama-shaped decoders ({', '.join(SUPPORTED_TYPES)}), not {kind!r}",
            hint="evaluate such a model in-process with transformers instead",
        )
    window = getattr(cfg, "sliding_window", None)
    if window is not None and getattr(cfg, "use_sliding_window", True) and window < cfg.max_position_embeddings:
        raise InputError(
            f"{kind} with sliding-window attention ({window} < context {cfg.max_position_embeddings}) is not supported",
            hint="serve it with a context no longer than its window",
        )
    attn = model.model.layers[0].self_attn
    if hasattr(attn, "q_norm") or not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")):
        raise InputError(f"{kind}: the attention block is not Llama-shaped", hint="this engine cannot run it")


class SlotRunner:
    def __init__(self, model, *, slots: int, max_len: int, cuda_graphs: bool = True) -> None:
        check_supported(model)
        cfg = model.config
        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers)
        self.slots = slots
        self.max_len = max_len
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = self.layers[0].self_attn.head_dim
        self.vocab_size = cfg.vocab_size
        p = next(model.parameters())
        self.device = p.device
        self.dtype = self.inner.embed_tokens.weight.dtype
        shape = (slots, self.n_kv, max_len, self.head_dim)
        # one K and one V tensor per layer: [slots, kv_heads, max_len, head_dim]
        self.k = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.v = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[tuple[int, int], object] = {}  # (batch, attn_len) -> _Graph, or None if capture failed
        self._fused: list[_LayerProjections] | None = None  # the bf16 CPU path's projections, per layer

    @property
    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    # --- the forward -------------------------------------------------------------------

    def fused_projections(self) -> list[_LayerProjections]:
        """Per layer, the bf16 CPU path's int4 projections (fused q/k/v and gate/up; o and down as
        prepacked calls without the module's checks), None where a layer's weights are not int4
        (those run through their modules); built on first use."""
        if self._fused is None:
            self._fused = []
            for layer in self.layers:
                attn, mlp = layer.self_attn, layer.mlp
                gated = hasattr(mlp, "act_fn")
                self._fused.append(_LayerProjections(
                    _Fused.of([attn.q_proj, attn.k_proj, attn.v_proj]), _Fused.of([attn.o_proj]),
                    _Fused.of([mlp.gate_proj, mlp.up_proj]) if gated else None,
                    _Fused.of([mlp.down_proj]) if gated else None))
        return self._fused

    def _layers(self, h: torch.Tensor, positions: torch.Tensor, attend) -> torch.Tensor:
        # h [B, T, hidden]; positions [B, T]
        cos, sin = self.inner.rotary_emb(h, positions)
        cpu_fast = h.device.type == "cpu" and h.dtype == torch.bfloat16
        projections = self.fused_projections() if cpu_fast else [NO_PROJECTIONS] * len(self.layers)
        for i, (layer, p) in enumerate(zip(self.layers, projections)):
            attn, mlp = layer.self_attn, layer.mlp
            x = layer.input_layernorm(h)
            B, T, _ = x.shape
            q, k, v = p.qkv(x) if p.qkv is not None else (attn.q_proj(x), attn.k_proj(x), attn.v_proj(x))
            q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = k.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = v.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = _rope(q, k, cos, sin)
            o = attend(i, q, k, v, attn.scaling)  # [B, H, T, D]
            o = o.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
            h = h + (p.o(o)[0] if p.o is not None else attn.o_proj(o))
            x = layer.post_attention_layernorm(h)
            if p.gate_up is not None:  # LlamaMLP.forward with one call for gate and up
                g, u = p.gate_up(x)
                y = mlp.act_fn(g) * u
                h = h + (p.down(y)[0] if p.down is not None else mlp.down_proj(y))
            else:
                h = h + mlp(x)
        return self.inner.norm(h)

    @torch.inference_mode()
    def prefill(self, slot: int, ids: Sequence[int], *, all_positions: bool = False) -> torch.Tensor:
        """Run a prompt into ``slot`` (positions 0..T-1); the logits of the last (or every) position, float32."""
        T = len(ids)
        if not 0 < T <= self.max_len:
            raise InputError(f"a prompt of {T} tokens does not fit the cache ({self.max_len} positions)")
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        positions = torch.arange(T, device=self.device).unsqueeze(0)

        def attend(i, q, k, v, scale):
            self.k[i][slot, :, :T] = k[0]
            self.v[i][slot, :, :T] = v[0]
            return _sdpa(q, k, v, is_causal=True, scale=scale, enable_gqa=True)

        h = self._layers(self.inner.embed_tokens(x), positions, attend)[0]  # [T, hidden]
        if not all_positions:
            h = h[-1:]
        return self.model.lm_head(h).float()

    def attn_len(self, positions: Sequence[int]) -> int:
        need = max(positions) + 1
        return min(self.max_len, -(-need // ATTN_BUCKET) * ATTN_BUCKET)

    def _decode_eager(self, tokens: torch.Tensor, positions: torch.Tensor, L: int) -> torch.Tensor:
        # tokens, positions [B] (long, on device): slot b takes tokens[b] at positions[b]
        B = tokens.shape[0]
        rows = torch.arange(B, device=self.device)
        # keys j <= positions[b] are visible to slot b: [B, 1, 1, L]
        mask = (torch.arange(L, device=self.device)[None, :] <= positions[:, None])[:, None, None, :]

        def attend(i, q, k, v, scale):
            self.k[i][rows, :, positions] = k[:, :, 0]
            self.v[i][rows, :, positions] = v[:, :, 0]
            keys, values = self.k[i][:B, :, :L], self.v[i][:B, :, :L]
            return _sdpa(q, keys, values, attn_mask=mask, scale=scale, enable_gqa=True)

        h = self._layers(self.inner.embed_tokens(tokens[:, None]), positions[:, None], attend)
        return self.model.lm_head(h[:, 0]).float()  # [B, V]

    @torch.inference_mode()
    def decode(self, tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        """One step for slots 0..B-1: token b at position b's place; returns logits [B, V] float32."""
        B = len(tokens)
        if not 0 < B <= self.slots:
            raise ValueError(f"a decode step takes 1..{self.slots} tokens, got {B}")
        L = self.attn_len(positions)
        t = torch.tensor(list(tokens), dtype=torch.long, device=self.device)
        p = torch.tensor(list(positions), dtype=torch.long, device=self.device)
        if self.use_graphs:
            graph = self._graph(B, L, t, p)
            if graph is not None:
                return graph.run(t, p)
        return self._decode_eager(t, p, L)

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` cached positions of slot ``src`` into slot ``dst``."""
        if src == dst:
            return
        for k, v in zip(self.k, self.v):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    # --- CUDA graphs --------------------------------------------------------------------

    def _graph(self, B: int, L: int, t: torch.Tensor, p: torch.Tensor):
        key = (B, L)
        if key not in self._graphs:
            try:
                self._graphs[key] = _Graph(self, B, L, t, p)
            except Exception as err:  # noqa: BLE001 - a shape that cannot be captured runs eagerly
                log.warning("CUDA graph capture failed for batch %d, attention length %d (%s); running eagerly",
                            B, L, err)
                torch.cuda.synchronize()
                self._graphs[key] = None
        return self._graphs[key]


class _Graph:
    """One captured decode step for a fixed (batch, attention length)."""

    def __init__(self, runner: SlotRunner, B: int, L: int, t: torch.Tensor, p: torch.Tensor) -> None:
        self.tokens = t.clone()
        self.positions = p.clone()
        # Warm up on a side stream (Triton autotuning, cuBLAS workspaces, lazy caches), then capture.
        # The warm-up writes the same keys the real step writes, so it changes nothing.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):
                runner._decode_eager(self.tokens, self.positions, L)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.logits = runner._decode_eager(self.tokens, self.positions, L)

    def run(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(t)
        self.positions.copy_(p)
        self.graph.replay()
        return self.logits.clone()
