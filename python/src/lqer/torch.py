"""PyTorch helpers: LQER layers in place of nn.Linear, on the CPU.

    import lqer.torch as lt
    stats = lt.calibrate(model, batches)                  # {name: ActivationStats}, forward hooks
    lt.quantize(model, stats, rank=32, policy="mean_abs") # every selected nn.Linear -> LQERLinear
    model(input_ids)                                       # now runs lqer's fused W4A8 kernel

LQERLinear computes in float32 on the CPU (its input is converted when it is
not); it is for inference (no autograd through the kernel).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

import lqer

__all__ = ["LQERLinear", "calibrate", "quantize", "linear_names", "save", "load_into"]

LayerSelector = Union[None, Sequence[str], Callable[[str, nn.Module], bool]]


class LQERLinear(nn.Module):
    """An nn.Linear replacement running an LQER layer through lqer's fused
    kernel: y = Q8(x)·Wqᵀ + Q8(Q8(x)·A)·B + bias, float32 in and out.

    Build one with from_linear (factorize a module's weight) or from_layer (a
    Layer from lqer.factorize or lqer.load). The bias is kept (stored in the
    layer). act_format and reference are lqer.Linear's.
    """

    def __init__(self, layer: lqer.Layer, act_format: Optional[str] = None, reference: Optional[str] = None) -> None:
        super().__init__()
        self.layer = layer
        self.kernel = lqer.Linear(layer, act_format=act_format, reference=reference)
        self.in_features = layer.in_features
        self.out_features = layer.out_features

    @classmethod
    def from_layer(cls, layer: lqer.Layer, act_format: Optional[str] = None, reference: Optional[str] = None) -> "LQERLinear":
        return cls(layer, act_format=act_format, reference=reference)

    @classmethod
    def from_linear(
        cls,
        module: nn.Linear,
        stats: Optional[lqer.ActivationStats],
        rank: int = 32,
        policy: str = "mean_abs",
        act_format: Optional[str] = None,
        reference: Optional[str] = None,
        **factorize_options: Any,
    ) -> "LQERLinear":
        """Factorizes module.weight (with `stats` of its input; see
        lqer.factorize for the policies, formats and solver options)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"from_linear: expected an nn.Linear, got {type(module).__name__}")
        w = module.weight.detach().to(torch.float32).cpu().contiguous()
        bias = None if module.bias is None else module.bias.detach().to(torch.float32).cpu()
        layer = lqer.factorize(w, stats, rank=rank, policy=policy, bias=bias, **factorize_options)
        return cls(layer, act_format=act_format, reference=reference)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, device = x.dtype, x.device
        xin = x.detach()
        if xin.device.type != "cpu" or xin.dtype != torch.float32:
            xin = xin.to(device="cpu", dtype=torch.float32)
        y = self.kernel(xin)
        if y.dtype != dtype or y.device != device:
            y = y.to(device=device, dtype=dtype)
        return y

    def extra_repr(self) -> str:
        l = self.layer
        return (
            f"in_features={l.in_features}, out_features={l.out_features}, W {l.weight_format}, "
            f"x {self.kernel.act_format}, A/B {l.lowrank_format}, rank={l.rank}, policy={l.policy}, "
            f"{self.kernel.mode}"
        )


def _selected(model: nn.Module, layers: LayerSelector) -> List[str]:
    names = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        if layers is None:
            names.append(name)
        elif callable(layers):
            if layers(name, mod):
                names.append(name)
        elif any(fnmatch.fnmatchcase(name, pat) for pat in layers):
            names.append(name)
    return names


def linear_names(model: nn.Module, layers: LayerSelector = None) -> List[str]:
    """The names of the nn.Linear modules `layers` selects: None for all, a
    list of fnmatch patterns ("model.layers.*.mlp.*"), or a predicate
    (name, module) -> bool."""
    return _selected(model, layers)


def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    layers: LayerSelector = None,
    gram: bool = False,
    forward: Optional[Callable[[nn.Module, Any], Any]] = None,
) -> Dict[str, lqer.ActivationStats]:
    """Runs the model on every batch (under torch.no_grad) and collects, for
    every selected nn.Linear, the statistics of its input with a forward
    pre-hook. gram=True also keeps the Gram matrices (for policy='whiten';
    O(in²) memory per layer). forward(model, batch) runs one batch (default:
    model(batch), or model(**batch) for a dict). Returns {name: stats}."""
    names = _selected(model, layers)
    if not names:
        raise ValueError("calibrate: no nn.Linear module is selected")
    modules = dict(model.named_modules())
    stats: Dict[str, lqer.ActivationStats] = {}
    hooks = []

    def hook_for(name: str):
        def hook(mod: nn.Module, args: Any) -> None:
            x = args[0].detach()
            if x.device.type != "cpu" or x.dtype != torch.float32:
                x = x.to(device="cpu", dtype=torch.float32)
            stats[name].add(x.reshape(-1, x.shape[-1]))

        return hook

    for n in names:
        stats[n] = lqer.ActivationStats(modules[n].in_features, gram=gram)
        hooks.append(modules[n].register_forward_pre_hook(hook_for(n)))
    try:
        with torch.no_grad():
            for batch in batches:
                if forward is not None:
                    forward(model, batch)
                elif isinstance(batch, dict):
                    model(**batch)
                else:
                    model(batch)
    finally:
        for h in hooks:
            h.remove()
    return stats


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize(
    model: nn.Module,
    stats: Optional[Dict[str, lqer.ActivationStats]],
    rank: int = 32,
    policy: str = "mean_abs",
    layers: LayerSelector = None,
    act_format: Optional[str] = None,
    reference: Optional[str] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
    **factorize_options: Any,
) -> nn.Module:
    """Replaces every selected nn.Linear of `model` by an LQERLinear
    factorized with the statistics of its input (stats[name], from
    calibrate; None for policy='identity'). A layer selected but absent from
    stats is an error. Tied weights are factorized per module. Returns the
    model (changed in place)."""
    names = _selected(model, layers)
    if not names:
        raise ValueError("quantize: no nn.Linear module is selected")
    modules = dict(model.named_modules())
    for i, n in enumerate(names):
        s = None
        if policy != "identity":
            if stats is None or n not in stats:
                raise ValueError(f"quantize: no statistics for layer '{n}' (policy '{policy}' needs them)")
            s = stats[n]
        new = LQERLinear.from_linear(
            modules[n], s, rank=rank, policy=policy, act_format=act_format, reference=reference, **factorize_options
        )
        _set_module(model, n, new)
        if progress is not None:
            progress(i + 1, len(names), n)
    return model


def save(model: nn.Module, path: str) -> None:
    """Writes every LQERLinear of `model` to one LQER checkpoint, each layer
    under its module name (lqer.load_all reads them back; so does C++)."""
    layers = {name: mod.layer for name, mod in model.named_modules() if isinstance(mod, LQERLinear)}
    if not layers:
        raise ValueError("save: the model has no LQERLinear")
    lqer.save(path, layers)


def load_into(model: nn.Module, path: str, act_format: Optional[str] = None, verify: bool = True) -> nn.Module:
    """Replaces the modules named in checkpoint `path` by LQERLinear layers
    read from it (the inverse of save: no float weights or statistics are
    needed). Each named module must exist and have the layer's shape."""
    layers = lqer.load_all(path, verify=verify)
    modules = dict(model.named_modules())
    for name, layer in layers.items():
        mod = modules.get(name)
        if mod is None:
            raise ValueError(f"{path}: layer '{name}' names no module of the model")
        inf, outf = getattr(mod, "in_features", None), getattr(mod, "out_features", None)
        if (inf, outf) != (layer.in_features, layer.out_features):
            raise ValueError(
                f"{path}: layer '{name}' is {layer.out_features}×{layer.in_features}, the module {outf}×{inf}"
            )
        _set_module(model, name, LQERLinear(layer, act_format=act_format))
    return model
