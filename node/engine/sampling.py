"""Sampling parameters, token sampling and stop conditions.

Pure apart from torch arithmetic: randomness comes in as a number, the uniform draw of
`seeded_uniform(seed, counter)` -- a counter-based stream (BLAKE2b of the request's seed and the
index of the token being sampled), so the same seed gives the same output whatever else shares
the step, after a preemption too, and on any device. Nothing here keeps state between requests.

`sample` is the per-row reference; `node/engine/sampler.py` does the same for a whole step's
rows at once on the logits' device (the engine's path; tested equal row for row).

Invariants:
* `SamplingParams` is validated on construction and again by the engine at submit (`check`:
  ProtocolError on a wrong type -- a float or bool where an int belongs, NaN/inf -- or an
  out-of-range value) and against the operator's caps with `check_limits`, before any KV block
  is allocated.
* `sample` never raises on a degenerate distribution (NaN/inf logits, a temperature or top_p so
  small that nothing is left): it falls back to the argmax of the surviving mass.
* temperature == 0 means greedy (argmax); top-k / top-p then have no effect.
* Sampling is an inverse CDF in vocabulary order: the token is the first whose cumulative
  probability exceeds `draw` times the total mass (top-k, then top-p over a stable descending
  sort, decide the mass first). The draw is not secret material: it needs uniformity and
  reproducibility; unseeded requests get their seed from `secrets`.
* Error messages name the field, never a value that could echo request content.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from hushcc.errors import ProtocolError


@dataclass(frozen=True, slots=True)
class SamplingLimits:
    """Operator caps on what a request may ask for."""

    max_tokens: int = 4096
    max_stop_strings: int = 8
    max_stop_len: int = 64
    max_top_k: int = 1000


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one request samples.

    Attributes:
        max_tokens: tokens to generate at most.
        temperature: 0 for greedy, else softmax temperature.
        top_k: keep the k most likely tokens (0 = off).
        top_p: nucleus mass to keep (1.0 = off).
        seed: per-request seed (None: the engine seeds the generator itself).
        stop: strings that end generation (not included in the output).
        ignore_eos: keep going past EOS (benchmarks).
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        """Validate types and ranges (see `check`)."""
        self.check()

    def check(self) -> None:
        """Check every field's type and range; the engine calls this again at `submit`.

        Integers must be `int` (not `bool`, not `float`); real numbers `int` or `float` (not
        `bool`), finite.

        Raises:
            ProtocolError: naming the field, never its value.
        """
        _integer("max_tokens", self.max_tokens, 1, 2**31 - 1)
        if _real("temperature", self.temperature) < 0:
            raise ProtocolError("temperature must be >= 0")
        _integer("top_k", self.top_k, 0, 2**31 - 1)
        if not 0 < _real("top_p", self.top_p) <= 1:
            raise ProtocolError("top_p must be in (0, 1]")
        if self.seed is not None:
            _integer("seed", self.seed, 0, 2**63 - 1)
        if type(self.stop) is not tuple or not all(type(s) is str and s for s in self.stop):
            raise ProtocolError("stop must be a tuple of non-empty strings")
        if type(self.ignore_eos) is not bool:
            raise ProtocolError("ignore_eos must be a boolean")

    def check_limits(self, limits: SamplingLimits) -> None:
        """Check the request against the operator's caps.

        Raises:
            ProtocolError: when a cap is exceeded.
        """
        if self.max_tokens > limits.max_tokens:
            raise ProtocolError("max_tokens over the cap")
        if self.top_k > limits.max_top_k:
            raise ProtocolError("top_k over the cap")
        if len(self.stop) > limits.max_stop_strings:
            raise ProtocolError("too many stop strings")
        if any(len(s) > limits.max_stop_len for s in self.stop):
            raise ProtocolError("stop string too long")

    @property
    def greedy(self) -> bool:
        """True when sampling is argmax."""
        return self.temperature == 0.0


def _integer(name: str, value: object, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise ProtocolError(f"{name} must be an integer")
    if not lo <= value <= hi:
        raise ProtocolError(f"{name} out of range")
    return value


def _real(name: str, value: object) -> float:
    if type(value) is not float and type(value) is not int:
        raise ProtocolError(f"{name} must be a number")
    try:
        x = float(value)
    except OverflowError:  # an int beyond float range
        raise ProtocolError(f"{name} out of range") from None
    if not math.isfinite(x):
        raise ProtocolError(f"{name} must be finite")
    return x


def seeded_uniform(seed: int, counter: int) -> float:
    """The uniform draw in [0, 1) a request seeded `seed` uses for its `counter`-th sampled token.

    Counter-based: BLAKE2b-64 of the two little-endian 64-bit integers (personalised), top 53
    bits. A pure function: no generator state to keep, reproducible after a preemption, the
    same on every device and whatever else shares the batch.

    Args:
        seed: the request's seed (0 <= seed < 2**64).
        counter: tokens the request has sampled before this one (0 <= counter < 2**64).
    """
    digest = hashlib.blake2b(seed.to_bytes(8, "little") + counter.to_bytes(8, "little"),
                             digest_size=8, person=b"hushcc.sampling").digest()
    return (int.from_bytes(digest, "little") >> 11) * 2.0**-53


def sample(logits: torch.Tensor, params: SamplingParams, draw: float) -> int:
    """Pick the next token from one row of logits `[vocab]` (the per-row reference).

    Args:
        logits: float logits (any device).
        params: the request's sampling parameters.
        draw: the request's uniform for this token (`seeded_uniform`; unused when greedy).

    Returns:
        The token id.
    """
    if params.greedy:
        return int(torch.argmax(logits))
    clean = logits.double()  # fp64: a temperature like 1e-42 is a normal number, not fp32 0
    clean = clean.masked_fill(torch.isnan(clean), float("-inf"))
    top = clean.max()
    if not bool(torch.isfinite(top)):  # +inf, or nothing left at all: greedy
        return int(torch.argmax(clean))
    # shift before dividing: the top logit becomes exactly 0 whatever the temperature, so a tiny
    # temperature sends the others to -inf (never inf - inf = NaN) and the softmax sum is >= 1
    x = (clean - top) / params.temperature
    if params.top_k and params.top_k < x.numel():
        kth = torch.topk(x, params.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True, stable=True)
        probs = torch.softmax(sorted_x, dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        x = x.scatter(0, order, sorted_x.masked_fill(drop, float("-inf")))
    probs = torch.softmax(x, dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    if not bool(torch.isfinite(probs).all()) or not bool(cdf[-1] > 0):
        # degenerate: greedy (top-k and top-p always keep the top token, so it survived)
        return int(torch.argmax(clean))
    target = torch.tensor([draw * float(cdf[-1])], dtype=torch.float64, device=cdf.device)
    return min(int(torch.searchsorted(cdf, target, right=True)), x.numel() - 1)


def find_stop(text: str, stop: tuple[str, ...]) -> int:
    """Index where the earliest stop string starts in `text`, or -1."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else -1


def stop_holdback(text: str, stop: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could begin a stop string (must not stream yet)."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
