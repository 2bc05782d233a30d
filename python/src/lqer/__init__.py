"""lqer: 4-bit block-format weights made nearly lossless by a low-rank error
correction (LQER, arXiv 2402.02446), with a fused W4A8 + correction kernel.

    import lqer
    stats = lqer.ActivationStats(in_features=4096)
    stats.add(x)                                   # calibration activations [..., 4096]
    layer = lqer.factorize(W, stats, rank=32)      # W [out, in], float32
    y = lqer.Linear(layer)(x)                      # the fused kernel
    layer.save("layer.lqer.safetensors")
    same = lqer.load("layer.lqer.safetensors")

Arrays: numpy arrays and torch tensors (or anything with DLPack) of float32 on
the CPU go in without a copy when their rows are evenly spaced with contiguous
elements (C-contiguous, or a column slice of such an array); other layouts are
copied once. Other dtypes are converted (a copy). Results are new numpy arrays,
or torch tensors when the input was a torch tensor.

Threads: the fused kernels run on a pool of get_num_threads() threads
(set_num_threads changes it); every long call releases the GIL.

PyTorch: lqer.torch has LQERLinear (an nn.Linear replacement), calibrate and
quantize (whole models).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from . import _lqer
from ._lqer import (
    ActivationStats,
    FileFormatError,
    Layer,
    format_help,
    format_names,
    get_num_threads,
    kernel_paths,
    layer_names,
    set_num_threads,
)

__version__ = _lqer.__version__

__all__ = [
    "ActivationStats",
    "FileFormatError",
    "Layer",
    "Linear",
    "factorize",
    "fake_quantize",
    "format_help",
    "format_info",
    "format_names",
    "get_num_threads",
    "kernel_paths",
    "layer_names",
    "load",
    "load_all",
    "save",
    "set_num_threads",
]

ArrayLike = Any  # numpy.ndarray, torch.Tensor, or any DLPack CPU array


def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch")


def _in(x: ArrayLike) -> Any:
    """x as the core takes it: a torch tensor detached (DLPack refuses one
    that requires grad), anything that is not a float32 array converted."""
    if _is_torch(x):
        x = x.detach()
        if x.dtype != _torch().float32:
            x = x.float()
        return x
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        return x
    return np.asarray(x, dtype=np.float32)


def _out(y: np.ndarray, like: Any) -> Any:
    return _torch().from_numpy(y) if _is_torch(like) else y


def _torch():
    import torch

    return torch


def fake_quantize(
    x: ArrayLike,
    format: str,
    block: Optional[int] = None,
    rule: Optional[str] = None,
    scheme: Optional[str] = None,
    scale: Optional[str] = None,
    axis: int = -1,
) -> Any:
    """Quantizes x in `format` and dequantizes it (same shape, float32).

    Blocks run along `axis` (default: the last; a weight [out, in] is blocked
    along `in`). format: one of format_names() — mxint2/3/4/8 (rule 'ocp',
    the default, block 32; or 'lqer', block 16), int4/int8 (scheme 'sym' or
    'asym', scale 'f32' or 'f16', block 8–128 or 0 for one scale per row),
    q4_0/q4_1/q8_0 (llama.cpp's, block 32). Options that do not apply to the format
    are an error, as in `lqer quantize`; format_help() lists them.
    """
    xin = _in(x)
    nd = len(xin.shape)
    if nd == 0:
        raise ValueError("fake_quantize: x must have at least one dimension")
    ax = axis + nd if axis < 0 else axis
    if not 0 <= ax < nd:
        raise ValueError(f"fake_quantize: axis {axis} is out of range for {nd} dimensions")
    if ax != nd - 1:
        xin = np.moveaxis(np.asarray(xin), ax, -1)
    y, _, _ = _lqer._fake_quantize_rows(xin, format, block, rule, scheme, scale)
    if ax != nd - 1:
        y = np.ascontiguousarray(np.moveaxis(y, -1, ax))
    return _out(y, x)


def format_info(
    format: str,
    block: Optional[int] = None,
    rule: Optional[str] = None,
    scheme: Optional[str] = None,
    scale: Optional[str] = None,
) -> Tuple[str, float]:
    """(the format's full name, its bits per weight) for fake_quantize's options,
    e.g. ('mxint4_b16_lqer', 4.5)."""
    _, name, bits = _lqer._fake_quantize_rows(np.zeros((1, 128), np.float32), format, block, rule, scheme, scale)
    return name, bits


def factorize(
    w: ArrayLike,
    stats: Optional[ActivationStats] = None,
    rank: int = 32,
    policy: str = "mean_abs",
    solver: str = "randomized",
    w_format: str = "mxint4",
    lr_format: str = "mxint8",
    block: int = 16,
    rule: str = "lqer",
    lr_rule: Optional[str] = None,
    bias: Optional[ArrayLike] = None,
    damping: float = 1e-4,
    whiten_factorization: str = "cholesky",
    oversampling: Optional[int] = None,
    power_iterations: Optional[int] = None,
) -> Layer:
    """LQER: Wq = Q(W), then A·B ≈ the activation-scaled error, by one SVD.

    w: the weight [out, in] (nn.Linear's layout), float32. stats: the
    calibration statistics of the layer's input (None only for policy
    'identity'; 'whiten' needs ActivationStats(gram=True)). policy: 'identity'
    (LQER), 'mean_abs' (L²QER, the paper's), 'rms', 'whiten' (the activation
    Gram matrix's Cholesky factor). solver: 'randomized' or 'exact'.
    w_format: mxint2/3/4/8; lr_format (A and B): mxint8; block 16 or 32 for
    all of them; rule 'lqer' (the LQER reference's exponent rule) or 'ocp'.
    Or llama.cpp's formats: w_format 'q4_0' or 'q4_1' with lr_format 'q8_0'
    and block 32 (fp16 scales, no rule): an LQER correction on top of Q4_0
    or Q4_1, Wq exactly llama.cpp's encoding of w.
    bias [out] passes through to the layer. oversampling and
    power_iterations tune the randomized solver (None: lqer's defaults, 10
    and 3, the C++ side's). Returns a Layer (its .report says what was
    measured).
    """
    if stats is None and policy != "identity":
        raise ValueError(f"factorize: policy '{policy}' needs calibration statistics (stats=...)")
    b = None
    if bias is not None:
        b = np.ascontiguousarray(np.asarray(bias.detach() if _is_torch(bias) else bias, dtype=np.float32)).ravel()
        b = b.tolist()
    return _lqer._factorize_2d(
        _in(w),
        stats,
        int(rank),
        policy,
        solver,
        w_format,
        lr_format,
        int(block),
        rule,
        lr_rule or "",
        float(damping),
        whiten_factorization,
        None if oversampling is None else int(oversampling),
        None if power_iterations is None else int(power_iterations),
        b,
    )


def save(path: Union[str, "os.PathLike[str]"], layers: Union[Layer, Mapping[str, Layer]], name: str = "layer") -> None:
    """Writes one layer (named `name`) or a {name: layer} mapping to an LQER
    checkpoint (safetensors: codes and scales as stored, a SHA-256 per
    tensor; docs/checkpoint.md), atomically. The C++ side reads the same file
    (lqer::load, `lqer inspect`, `lqer forward`)."""
    if isinstance(layers, Layer):
        items = [(name, layers)]
    else:
        items = list(layers.items())
    _lqer._save(str(path), items)


def load(path: Union[str, "os.PathLike[str]"], name: Optional[str] = None, verify: bool = True) -> Layer:
    """Reads one layer of a checkpoint: `name`, or the only one. verify=False
    skips the SHA-256 checks."""
    layers = _lqer._load(str(path), name, verify)
    if name is None and len(layers) != 1:
        names = ", ".join(n for n, _ in layers[:8])
        raise ValueError(f"{path}: holds {len(layers)} layers ({names}); give name=")
    return layers[0][1]


def load_all(path: Union[str, "os.PathLike[str]"], verify: bool = True) -> Dict[str, Layer]:
    """Every layer of a checkpoint, by name."""
    return dict(_lqer._load(str(path), None, verify))


class Linear:
    """A factorized layer as a callable: y = layer(x) for x [..., in] float32.

    The fused W4A8 kernel by default: x is quantized to `act_format` (mxint8,
    or mxint4, of the weight's block and rule; q8_0 for q4_0 and q4_1
    weights; None: mxint8, or q8_0 for q4_0 and q4_1 weights), and
    Q(x)·Wqᵀ + Q(Q(x)·A)·B +
    bias is computed in one pass. reference='fused' runs lqer's scalar
    reference of the same computation (bit for bit the kernel's result);
    reference='paper' the LQER paper's simulation (A·B's product rounded on
    its own).
    """

    def __init__(self, layer: Layer, act_format: Optional[str] = None, reference: Optional[str] = None) -> None:
        self._impl = _lqer._Linear(layer, act_format or "", reference or "")
        self.layer = layer

    @property
    def in_features(self) -> int:
        return self._impl.in_features

    @property
    def out_features(self) -> int:
        return self._impl.out_features

    @property
    def act_format(self) -> str:
        return self._impl.act_format

    @property
    def mode(self) -> str:
        """'kernel', 'reference_fused' or 'reference_paper'."""
        return self._impl.mode

    def __call__(self, x: ArrayLike) -> Any:
        return _out(self._impl(_in(x)), x)

    def __repr__(self) -> str:
        return (
            f"lqer.Linear(in={self.in_features}, out={self.out_features}, W {self.layer.weight_format}, "
            f"x {self.act_format}, A/B {self.layer.lowrank_format}, rank {self.layer.rank}, {self.mode})"
        )
