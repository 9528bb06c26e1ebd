"""Linear maps of the runner: weights prepacked once for oneDNN on CPU, `F.linear` elsewhere.

Why: torch's default CPU GEMM is MKL, which takes a slow generic path on AMD processors (on the
development machine, an AVX-512 EPYC, MKL sgemm reaches ~190 GFLOP/s on 2 threads where oneDNN
reaches ~460). oneDNN ships inside every CPU build of torch; `torch.ops.mkldnn` exposes its
linear with a weight reordered once into the blocked layout its kernels read, so a step neither
repacks nor re-reads an unfriendly layout. That is the fast path for every projection and the LM
head. It is an internal torch op, so its use is guarded: `PackedLinear.probe` runs it once on a
small random problem at start-up and compares it with `F.linear`; any error or mismatch means
`F.linear` everywhere (and CUDA always uses `F.linear`: cuBLAS needs no prepacking).

Invariants:
* A `Linear` computes `x @ weight.T + bias` exactly as `F.linear` does, to fp32 rounding.
* Packing copies model weights only; no request data is ever held here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence


class Linear(Protocol):
    """`x [T, in] -> [T, out]`."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map."""
        ...


class PlainLinear:
    """`F.linear` over the weight as given (CUDA, or CPU without a usable oneDNN)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Keep `weight [out, in]` and the optional `bias [out]`."""
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map."""
        return F.linear(x, self.weight, self.bias)


class PackedLinear:
    """oneDNN linear over a weight reordered once into its blocked layout (CPU only)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Reorder `weight [out, in]` for oneDNN; the original is not kept."""
        self.packed: torch.Tensor = torch.ops.mkldnn._reorder_linear_weight(weight, None)  # noqa: SLF001
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the map (no activation fused: "none")."""
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(  # noqa: SLF001
            x, self.packed, self.bias, "none", [], "")
        return out

    @staticmethod
    def probe(dtype: torch.dtype) -> bool:
        """True when oneDNN's prepacked linear runs here and agrees with `F.linear`."""
        if dtype != torch.float32 or not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
            return False
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(48, 40, generator=gen)
        b = torch.randn(48, generator=gen)
        try:
            linear = PackedLinear(w, b)
            for rows in (1, 7, 33):
                x = torch.randn(rows, 40, generator=gen)
                got = linear(x)
                if got.shape != (rows, 48) or not torch.allclose(got, F.linear(x, w, b),
                                                                 rtol=1e-4, atol=1e-4):
                    return False
        except (RuntimeError, AttributeError):  # op missing or unsupported in this torch build
            return False
        return True


def make_linears(
    weights: Sequence[tuple[torch.Tensor, torch.Tensor | None]], *, device: torch.device,
    dtype: torch.dtype, prepack: bool | None = None,
) -> list[Linear]:
    """One `Linear` per `(weight, bias)`: packed when `prepack` (default: CPU and the probe passes).

    Raises:
        ConfigError: when `prepack=True` is asked for where oneDNN's linear does not work.
    """
    usable = prepack is not False and device.type == "cpu" and PackedLinear.probe(dtype)
    if prepack and not usable:
        raise ConfigError("oneDNN prepacked linear is not usable on this device/dtype")
    if usable:
        return [PackedLinear(w, b) for w, b in weights]
    return [PlainLinear(w, b) for w, b in weights]
