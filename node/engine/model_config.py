"""Llama-family model description: the config the runner needs, parsed from Hugging Face.

Covers the configs the runner implements (Llama, Mistral, Qwen2, SmolLM2): RMSNorm, RoPE per
the config (`default`, `linear`, `llama3`, `yarn`, `dynamic`; anything else raises
ConfigError), grouped-query attention, optional tied embeddings, Qwen2's q/k/v bias, SiLU-gated
MLP. The weights and their loaders are in `model.py`.

Invariants:
* `ModelConfig` is a frozen value parsed once from a Hugging Face config; unsupported features
  raise `ConfigError` instead of being silently ignored.
* The RoPE frequencies follow transformers' own computation for each rope type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
SUPPORTED_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn", "dynamic"})


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The architecture facts the runner needs, parsed from a Hugging Face config."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_params: tuple[tuple[str, float], ...] = ()
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        """Reject shapes the runner cannot compute.

        Raises:
            ConfigError: on non-positive sizes, heads not divisible, or an unknown RoPE type.
        """
        sizes = (self.vocab_size, self.hidden_size, self.intermediate_size, self.num_layers,
                 self.num_heads, self.num_kv_heads, self.head_dim, self.max_position_embeddings)
        if min(sizes) <= 0:
            raise ConfigError("model config has a non-positive size")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ConfigError("head_dim must be even for RoPE")
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ConfigError(f"unsupported rope_type {self.rope_type!r}")

    @classmethod
    def from_hf(cls, hf: Any) -> ModelConfig:  # noqa: ANN401 - any transformers PretrainedConfig
        """Parse a transformers config object (LlamaConfig, MistralConfig, Qwen2Config).

        Args:
            hf: the transformers configuration.

        Returns:
            The parsed config.

        Raises:
            ConfigError: for an unsupported model type or feature.
        """
        model_type = getattr(hf, "model_type", "")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"unsupported model type {model_type!r}")
        if getattr(hf, "use_sliding_window", False):
            raise ConfigError("sliding-window attention is not supported")
        if getattr(hf, "hidden_act", "silu") != "silu":
            raise ConfigError("only SiLU MLPs are supported")
        if getattr(hf, "mlp_bias", False) or (
            model_type != "qwen2" and getattr(hf, "attention_bias", False)
        ):
            raise ConfigError("bias on these projections is not supported")
        rope = _rope_dict(hf)
        heads = int(hf.num_attention_heads)
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // heads
        max_pos = int(hf.max_position_embeddings)
        window = getattr(hf, "sliding_window", None) if model_type == "mistral" else None
        if window:  # attention is full up to the window: cap the length instead of windowing
            max_pos = min(max_pos, int(window))
        eos = hf.eos_token_id
        eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
        numeric = {k: float(v) for k, v in rope.items()
                   if k not in {"rope_type", "type", "rope_theta"} and isinstance(v, (int, float))}
        rope_type = str(rope.get("rope_type", rope.get("type", "default")))
        if rope_type == "yarn":  # its ramp is placed by the pre-training length (default: ours)
            numeric.setdefault("original_max_position_embeddings",
                               float(hf.max_position_embeddings))
        return cls(
            vocab_size=int(hf.vocab_size),
            hidden_size=int(hf.hidden_size),
            intermediate_size=int(hf.intermediate_size),
            num_layers=int(hf.num_hidden_layers),
            num_heads=heads,
            num_kv_heads=int(getattr(hf, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(hf.rms_norm_eps),
            rope_theta=float(rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))),
            rope_type=rope_type,
            rope_params=tuple(sorted(numeric.items())),
            max_position_embeddings=max_pos,
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2",
            eos_token_ids=tuple(int(e) for e in eos_ids),
        )

    def inv_freq(self) -> torch.Tensor:
        """RoPE inverse frequencies `[head_dim // 2]` (fp32) for this config's RoPE type.

        `dynamic` (NTK) rescales only for positions past `max_position_embeddings`, which the
        runner never computes (it caps `max_model_len` there), so its frequencies are the default.

        Raises:
            ConfigError: when a scaling parameter the type needs is missing.
        """
        d = self.head_dim
        inv = 1.0 / (self.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        p = dict(self.rope_params)
        if self.rope_type in {"linear", "yarn"} and "factor" not in p:
            raise ConfigError(f"{self.rope_type} rope scaling needs a factor")
        if self.rope_type == "linear":
            inv = inv / p["factor"]
        elif self.rope_type == "llama3":
            inv = _llama3_inv_freq(inv, p)
        elif self.rope_type == "yarn":
            inv = _yarn_inv_freq(inv, p, d, self.rope_theta)
        return inv.float()

    def rope_attention_scaling(self) -> float:
        """The factor RoPE's cos/sin are multiplied by (YaRN's attention factor; else 1)."""
        if self.rope_type != "yarn":
            return 1.0
        p = dict(self.rope_params)
        if "attention_factor" in p:
            return p["attention_factor"]
        factor = p["factor"]
        if p.get("mscale") and p.get("mscale_all_dim"):
            return _yarn_mscale(factor, p["mscale"]) / _yarn_mscale(factor, p["mscale_all_dim"])
        return _yarn_mscale(factor)

    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        q = self.num_heads * self.head_dim
        per_layer = h * (q + 2 * kv) + q * h + 3 * h * self.intermediate_size + 2 * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.num_layers * per_layer + self.vocab_size * h + head + h


def _rope_dict(hf: Any) -> dict[str, Any]:  # noqa: ANN401 - transformers config
    rope = getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {}
    if not isinstance(rope, dict):
        raise ConfigError("per-layer RoPE parameters are not supported")
    return dict(rope)


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _yarn_inv_freq(inv: torch.Tensor, p: Mapping[str, float], dim: int, base: float
                   ) -> torch.Tensor:
    """YaRN (arXiv 2309.00071) as transformers' `_compute_yarn_parameters` computes it.

    Dimensions rotating more than `beta_fast` times over the pre-training length keep their
    frequency, those rotating fewer than `beta_slow` times are interpolated by `factor`, and a
    linear ramp blends the ones between.
    """
    factor, old_len = p["factor"], p["original_max_position_embeddings"]
    beta_fast, beta_slow = p.get("beta_fast") or 32.0, p.get("beta_slow") or 1.0

    def correction_dim(rotations: float) -> float:
        return dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", 1.0):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as transformers does, to avoid dividing by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1 where the original frequency is kept (extrapolation)
    return inv / factor * (1 - keep) + inv * keep


def _llama3_inv_freq(inv: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    """Llama 3.1 frequency smoothing (transformers `_compute_llama3_parameters`)."""
    try:
        factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
        old_len = p["original_max_position_embeddings"]
    except KeyError as exc:
        raise ConfigError("llama3 rope scaling is missing a parameter") from exc
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_medium, smoothed, scaled)
