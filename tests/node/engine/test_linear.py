"""The runner's linear maps: oneDNN prepacked weights agree with `F.linear`, or are not used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from hushcc.errors import ConfigError
from node.engine.batch import ForwardChunk
from node.engine.linear import PackedLinear, PlainLinear, make_linears
from node.engine.model import ModelConfig, random_weights, tiny_hf_config
from node.engine.runner import PagedRunner

ONEDNN = PackedLinear.probe(torch.float32)
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="oneDNN prepacked linear unusable here")


@needs_onednn
@pytest.mark.parametrize("rows", [1, 3, 64, 300])
@pytest.mark.parametrize("with_bias", [False, True])
def test_packed_matches_f_linear(rows, with_bias):
    gen = torch.Generator().manual_seed(rows)
    w = torch.randn(200, 96, generator=gen)
    b = torch.randn(200, generator=gen) if with_bias else None
    x = torch.randn(rows, 96, generator=gen)
    got = PackedLinear(w, b)(x)
    assert got.shape == (rows, 200)
    assert torch.allclose(got, F.linear(x, w, b), rtol=1e-4, atol=1e-4)
    other = torch.randn(200, 96, generator=gen)  # the twin: another weight gives another result
    assert not torch.allclose(PackedLinear(other, b)(x), got, atol=1e-2)


def test_make_linears_picks_the_path_the_probe_allows():
    ws = [(torch.randn(8, 4), None)]
    auto = make_linears(ws, device=torch.device("cpu"), dtype=torch.float32)
    assert isinstance(auto[0], PackedLinear if ONEDNN else PlainLinear)
    plain = make_linears(ws, device=torch.device("cpu"), dtype=torch.float32, prepack=False)
    assert isinstance(plain[0], PlainLinear)
    # oneDNN packs for the CPU only, and this module keeps it to fp32
    assert not PackedLinear.probe(torch.bfloat16)
    with pytest.raises(ConfigError, match="not usable"):
        make_linears(ws, device=torch.device("cpu"), dtype=torch.bfloat16, prepack=True)
    with pytest.raises(ConfigError, match="not usable"):
        make_linears(ws, device=torch.device("meta"), dtype=torch.float32, prepack=True)


@needs_onednn
def test_runner_packed_and_plain_give_the_same_logits():
    mc = ModelConfig.from_hf(tiny_hf_config(model_type="qwen2"))
    weights = random_weights(mc, seed=3)
    runs = {}
    for prepack in (False, True):
        r = PagedRunner(weights, num_blocks=16, block_size=4, prepack=prepack)
        assert r.prepacked is prepack
        ids = list(range(5, 19))
        first = r.forward([ForwardChunk(ids, 0, [0, 1, 2, 3], 2)])[0]
        step = r.forward([ForwardChunk([7], 14, [0, 1, 2, 3], 1)])[0]
        runs[prepack] = torch.cat([first, step])
    assert torch.allclose(runs[True], runs[False], rtol=1e-4, atol=1e-4)
