"""`hushcc node serve --device / --dtype`: the engine is built where asked, or one error line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import torch

from app.cli import build_parser
from hushcc.errors import ConfigError
from node.cli import options_from
from node.engine.runner import resolve_device
from node.model_files import tiny_model
from node.service import build_engine
from tests.node.node_client import CHAT, inner, open_whole, seal
from tests.node.node_process import post_sync, serve_refused, start_node

if TYPE_CHECKING:
    from pathlib import Path

    from node.service import NodeOptions

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (none here)")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def parsed(*args: str) -> NodeOptions:
    return options_from(build_parser().parse_args(["node", "serve", *args]))


@no_cuda
def test_cuda_asked_where_there_is_none_is_one_line(tmp_path: Path) -> None:
    """(The other bad values are rows of tests/app/test_cli_inputs.py.)"""
    done = serve_refused("--tiny-model", "--device", "cuda", cwd=tmp_path)
    assert done.returncode == 1
    assert "listening on" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert lines == ["hushcc: error: no CUDA device is available here"]  # before any audit line


@pytest.mark.parametrize(("toml", "message"), [
    ('device = "gpu"', "device: not a device"),
    ("device = 0", "device must be a string"),
    ('dtype = "fp8"', "dtype: not a dtype"),
])
def test_bad_device_in_the_config_is_refused(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "node.toml"
    config.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        parsed("--tiny-model", "--config", str(config))


def test_device_and_dtype_reach_the_engine_flags_over_toml(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('device = "cpu"\ndtype = "float16"\n')
    options = parsed("--tiny-model", "--config", str(config), "--dtype", "bfloat16")
    assert (options.device, options.dtype) == ("cpu", "bfloat16")
    engine = build_engine(tiny_model(), options)
    assert engine.runner.device == torch.device("cpu")  # type: ignore[attr-defined]
    assert engine.runner.dtype == torch.bfloat16  # type: ignore[attr-defined]
    assert not engine.overlap  # the CPU default
    assert engine.runner.attention == "grouped"  # type: ignore[attr-defined]
    default = build_engine(tiny_model(), parsed("--tiny-model"))
    assert default.runner.dtype == torch.float32  # type: ignore[attr-defined]


def test_resolve_device_names_what_is_here() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "cpu:1", "meta", "cuda:-1"):
        with pytest.raises(ConfigError, match="not a device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            resolve_device("cuda")


@pytest.mark.gpu
@needs_cuda
def test_node_engine_on_cuda_is_bf16_overlapped_and_never_compiled() -> None:
    engine = build_engine(tiny_model(), parsed("--tiny-model", "--device", "cuda"))
    assert engine.runner.device.type == "cuda"  # type: ignore[attr-defined]
    assert engine.runner.dtype == torch.bfloat16  # type: ignore[attr-defined]
    assert engine.runner.attention == "padded"  # type: ignore[attr-defined]
    assert engine.runner.graphs is not None  # type: ignore[attr-defined]
    assert engine.overlap


@pytest.mark.gpu
@needs_cuda
def test_node_serves_from_cuda(tmp_path: Path) -> None:
    node = start_node(tmp_path / "run", "--tiny-model", "--device", "cuda")
    try:
        body, ctx = seal(node.key_config(), inner(CHAT, {
            "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8,
            "temperature": 0}), chunked=False)
        answer = post_sync(node, body, "message/ohttp-req")
        assert answer.status == 200
        doc = json.loads(open_whole(ctx, b"".join(answer.chunks)).content)
        assert doc["usage"]["completion_tokens"] >= 1
    finally:
        assert node.stop() == 0
