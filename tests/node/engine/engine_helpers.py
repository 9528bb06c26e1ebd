"""Shared helpers of the engine tests: tiny real runner, engine factory, stream collectors."""

from __future__ import annotations

import asyncio

from engine_fakes import ToyTokenizer

from node.engine.batch import ForwardChunk
from node.engine.engine import Engine, EngineConfig, GenerateRequest
from node.engine.runner import tiny_runner
from node.engine.sampling import SamplingParams
from node.engine.sequence import EngineLimits
from node.engine.speculative import PromptLookupConfig

SALT_A = b"tenant-A-salt-000"
SALT_B = b"tenant-B-salt-000"
VOCAB = 512


def make_engine(num_blocks=64, block_size=4, *, cache=True, spec=False, budget=64, clock=None,
                eos=(), max_seqs=16, ttl=30.0):
    runner = tiny_runner(num_blocks=num_blocks, block_size=block_size)
    cfg = EngineConfig(
        limits=EngineLimits(max_model_len=256, max_tokens_cap=128, max_num_seqs=max_seqs,
                            max_num_batched_tokens=budget, max_draft_tokens=4),
        enable_prefix_cache=cache, cache_ttl=ttl,
        speculative=PromptLookupConfig() if spec else None, eos_token_ids=tuple(eos),
        vocab_size=VOCAB)
    kwargs = {"clock": clock} if clock is not None else {}
    return Engine(runner, ToyTokenizer(), cfg, **kwargs)


def req(prompt, max_tokens=8, **kw):
    kw.setdefault("ignore_eos", True)
    return GenerateRequest(tuple(prompt), SamplingParams(max_tokens=max_tokens, **kw))


async def collect(stream):
    return [d async for d in stream]


def text_of(deltas):
    return "".join(d.text for d in deltas)


def tokens_of(deltas):
    """The toy tokenizer's words back to ids."""
    return [int(w[1:]) for w in text_of(deltas).split()]


def generate(engine, prompt, salt=SALT_A, **kw):
    async def go():
        out = await collect(engine.submit(req(prompt, **kw), salt))
        await engine.close()
        return out
    return asyncio.run(go())


def reference_greedy(prompt, max_tokens):
    """Greedy decoding with the plain runner: whole prompt, then one token at a time."""
    runner = tiny_runner(num_blocks=64, block_size=4)
    table = tuple(range(64))
    toks = list(prompt)
    logits = runner.forward([ForwardChunk(tuple(toks), 0, table, 1)])[0]
    out = []
    for _ in range(max_tokens):
        t = int(logits[-1].argmax())
        out.append(t)
        logits = runner.forward([ForwardChunk((t,), len(toks), table, 1)])[0]
        toks.append(t)
    return out
