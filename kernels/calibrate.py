"""Choosing the integers for every targeted linear layer of a model: RTN, or GPTQ with calibration.

GPTQ needs each layer's input Hessian under the *quantized* model seen so far, so it runs layer by
layer over a decoder stack (`model.model.layers` for Llama-family models):

    calibration batches --embed--> inputs of layer 0 (captured with a pre-hook, then stop)
    for each decoder layer:
        for each stage of linears that read the same input (q/k/v, then o, then gate/up, then down):
            run the layer on all cached inputs, accumulating H for the stage's linears;
            GPTQ them, and write their dequantized weights back (later stages see the rounding)
        run the layer once more: its outputs are the next layer's inputs
    linears outside the decoder stack (lm_head when it is not ignored): one more full pass.

Running the captured positional and keyword arguments of layer 0 through every layer (attention
mask, rotary position embeddings, position ids) keeps this independent of the model's internals.
The float model is modified in place (its targeted weights become their dequantized values).
Every token of a batch counts in the Hessians, padding included: pass unpadded token batches
(e.g. fixed-length windows of the training split).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from kernels.errors import SchemeError, ShapeError
from kernels.packing import QuantizedWeight
from kernels.quantize import HessianAccumulator, quantize_gptq, quantize_rtn
from kernels.scheme import QuantScheme


class _StopForward(Exception):
    """Raised by the capture hook once layer 0's inputs are recorded."""


def target_linears(model: nn.Module, scheme: QuantScheme) -> dict[str, nn.Linear]:
    """The nn.Linear modules `scheme` quantizes, by qualified name, in model order."""
    found = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and scheme.matches(name, m)}
    for name, m in found.items():
        if scheme.group_size and m.in_features % scheme.group_size:
            raise ShapeError(
                f"{name}: in_features {m.in_features} is not divisible by group_size {scheme.group_size}; "
                f"add {name!r} to the scheme's ignore list or pick a smaller group size"
            )
    return found


def quantize_weights(
    model: nn.Module, scheme: QuantScheme, calibration: Iterable | None = None
) -> dict[str, QuantizedWeight]:
    """QuantizedWeight for every targeted linear (RTN, or GPTQ over `calibration`)."""
    targets = target_linears(model, scheme)
    if not targets:
        raise SchemeError(f"scheme {scheme.name!r} matches no linear layer of this model")
    if scheme.method == "rtn":
        return {name: quantize_rtn(m.weight, scheme) for name, m in targets.items()}
    if calibration is None:
        raise SchemeError("GPTQ needs calibration batches (token ids from the training split)")
    batches = [_as_model_inputs(b, model) for b in calibration]
    if not batches:
        raise SchemeError("GPTQ needs at least one calibration batch")
    return _gptq_model(model, scheme, targets, batches)


def _as_model_inputs(batch, model: nn.Module) -> dict[str, torch.Tensor]:
    """A calibration item -> keyword arguments of model.forward (token ids [B, T] at least)."""
    device = next(model.parameters()).device
    if isinstance(batch, Mapping):
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    else:
        inputs = {"input_ids": torch.as_tensor(batch).to(device)}
    ids = inputs.get("input_ids")
    if ids is None or ids.dtype not in (torch.int64, torch.int32) or ids.numel() == 0:
        raise ShapeError("calibration batches must be non-empty integer token ids [B, T] (or dicts with input_ids)")
    if ids.ndim == 1:
        inputs = {k: v.unsqueeze(0) for k, v in inputs.items()}
    return inputs


def _decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    for prefix in ("model.layers", "model.decoder.layers", "transformer.h"):
        try:
            layers = model.get_submodule(prefix)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList) and len(layers):
            return prefix, layers
    raise SchemeError("GPTQ needs a decoder-layer stack (model.model.layers); this model has none")


@torch.no_grad()
def _gptq_model(
    model: nn.Module, scheme: QuantScheme, targets: dict[str, nn.Linear], batches: list[dict]
) -> dict[str, QuantizedWeight]:
    prefix, layers = _decoder_layers(model)
    results: dict[str, QuantizedWeight] = {}

    # --- capture what layer 0 receives for every batch: (args, kwargs)
    captured: list[tuple[tuple, dict]] = []

    def capture(_module, args, kwargs):
        captured.append((args, dict(kwargs)))
        raise _StopForward

    handle = layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        for inputs in batches:
            try:
                model(**inputs, use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()

    for index, layer in enumerate(layers):
        layer_prefix = f"{prefix}.{index}."
        in_layer = {n[len(layer_prefix):]: m for n, m in targets.items() if n.startswith(layer_prefix)}
        for stage in _stages(layer, in_layer, captured):
            hessians = _accumulate(stage, lambda layer=layer, captured=captured: _run_layer(layer, captured))
            for local_name, linear in stage.items():
                results[layer_prefix + local_name] = _gptq_linear(linear, hessians[local_name], scheme)
        outputs = _run_layer(layer, captured)
        captured = [_with_hidden_states(call, out) for call, out in zip(captured, outputs)]

    # --- targets outside the decoder stack (e.g. lm_head): one pass of the whole model
    rest = {n: m for n, m in targets.items() if n not in results}
    if rest:
        hessians = _accumulate(rest, lambda: [model(**inputs, use_cache=False) for inputs in batches])
        for name, linear in rest.items():
            results[name] = _gptq_linear(linear, hessians[name], scheme)
    return {name: results[name] for name in targets}


def _with_hidden_states(call: tuple[tuple, dict], hidden: torch.Tensor) -> tuple[tuple, dict]:
    """The same layer call with its hidden states (first positional or `hidden_states=`) replaced."""
    args, kwargs = call
    if args:
        return (hidden, *args[1:]), kwargs
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": hidden}
    raise SchemeError("GPTQ: cannot find the hidden states among the decoder layer's arguments")


def _run_layer(layer: nn.Module, captured: list[tuple[tuple, dict]]) -> list[torch.Tensor]:
    outputs = []
    for args, kwargs in captured:
        out = layer(*args, **kwargs)
        outputs.append(out[0] if isinstance(out, (tuple, list)) else out)
    return outputs


def _stages(layer: nn.Module, linears: dict[str, nn.Linear], captured) -> list[dict[str, nn.Linear]]:
    """Group the layer's target linears by the input tensor they read, in call order."""
    if not linears:
        return []
    first_input: dict[str, torch.Tensor] = {}  # holding the tensors keeps identity checks valid
    order: list[str] = []

    def make_hook(name):
        def hook(_module, args):
            if name not in first_input:
                first_input[name] = args[0]
                order.append(name)

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in linears.items()]
    try:
        _run_layer(layer, captured[:1])
    finally:
        for h in handles:
            h.remove()
    stages: list[dict[str, nn.Linear]] = []
    last_input = None
    for name in order:
        if first_input[name] is not last_input:
            stages.append({})
            last_input = first_input[name]
        stages[-1][name] = linears[name]
    # linears never called on the calibration data still get quantized (with an empty Hessian)
    missing = {n: m for n, m in linears.items() if n not in first_input}
    if missing:
        stages.append(missing)
    return stages


def _accumulate(linears: dict[str, nn.Linear], run) -> dict[str, HessianAccumulator]:
    """Run `run()` with input hooks on `linears`; return their Hessian accumulators."""
    acc = {n: HessianAccumulator(m.in_features, m.weight.device) for n, m in linears.items()}
    handles = [
        m.register_forward_pre_hook(lambda _m, args, a=acc[n]: a.add_batch(args[0])) for n, m in linears.items()
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return acc


def _gptq_linear(linear: nn.Linear, hessian: HessianAccumulator, scheme: QuantScheme) -> QuantizedWeight:
    qw = quantize_gptq(linear.weight, hessian.hessian, scheme)
    # later stages and layers must see this layer's rounding, as the quantized model will
    linear.weight.copy_(qw.dequantize(linear.weight.dtype))
    return qw
