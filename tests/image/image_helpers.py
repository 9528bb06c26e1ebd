"""Inputs for image tests, made in code: a tiny GGUF model and a tiny pure-Python wheel."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import gguf
import numpy as np


def make_tiny_gguf(path: Path) -> Path:
    """A one-layer Llama GGUF (float32, a 32-token byte-level BPE vocabulary), fixed weights.

    The build converts it to safetensors with transformers, as it does the default model.
    """
    h, i, heads = 16, 32, 2
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>",
              *(chr(c) for c in range(ord("a"), ord("z") + 1)), "\u0120", "ab", "\u0120a"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(h)
    writer.add_block_count(1)
    writer.add_feed_forward_length(i)
    writer.add_rope_dimension_count(h // heads)
    writer.add_head_count(heads)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(["a b", "\u0120 a"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(2)
    rng = np.random.default_rng(7)
    shapes = {"token_embd.weight": (len(tokens), h), "output_norm.weight": (h,),
              "blk.0.attn_norm.weight": (h,), "blk.0.ffn_norm.weight": (h,),
              "blk.0.attn_q.weight": (h, h), "blk.0.attn_k.weight": (h // heads, h),
              "blk.0.attn_v.weight": (h // heads, h), "blk.0.attn_output.weight": (h, h),
              "blk.0.ffn_gate.weight": (i, h), "blk.0.ffn_up.weight": (i, h),
              "blk.0.ffn_down.weight": (h, i)}
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, name: str = "tinydep", version: str = "1.0") -> Path:
    """A pure-Python wheel (PEP 427) with one module, written with fixed zip timestamps."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'"""{name}: a dependency made for the image tests."""\n'
                               "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hushcc-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
        f"{dist}/top_level.txt": f"{name}\n",
    }
    record = "".join(f"{p},{_record_hash(c.encode())},{len(c.encode())}\n"
                     for p, c in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, text)
    return wheel
