"""Shared helpers of the engine tests: tiny real runner, engine factory, stream collectors."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from node.engine.batch import ForwardChunk
from node.engine.engine import Delta, Engine, EngineConfig, GenerateRequest, RequestStream
from node.engine.runner import PagedRunner, tiny_runner
from node.engine.sampling import SamplingParams
from node.engine.sequence import EngineLimits
from node.engine.speculative import PromptLookupConfig
from tests.node.engine.engine_fakes import ToyTokenizer

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from node.engine.batch import ModelRunner
    from node.engine.detokenize import Decoder

SALT_A = b"tenant-A-salt-000"
SALT_B = b"tenant-B-salt-000"
VOCAB = 512


class TinyEngine(Engine):
    """An Engine whose runner is known to be the tiny `PagedRunner` (for typed pool checks)."""

    runner: PagedRunner


def make_engine(
    num_blocks: int = 64, block_size: int = 4, *, cache: bool = True, spec: bool = False,
    budget: int = 64, clock: Callable[[], float] | None = None, eos: Sequence[int] = (),
    max_seqs: int = 16, ttl: float = 30.0, attention: str | None = None,
    overlap: bool | None = None, runner: ModelRunner | None = None,
    tokenizer: Decoder | None = None,
) -> TinyEngine:
    runner = runner or tiny_runner(num_blocks=num_blocks, block_size=block_size,
                                   attention=attention)
    cfg = EngineConfig(
        limits=EngineLimits(max_model_len=256, max_tokens_cap=128, max_num_seqs=max_seqs,
                            max_num_batched_tokens=budget, max_draft_tokens=4),
        enable_prefix_cache=cache, cache_ttl=ttl,
        speculative=PromptLookupConfig() if spec else None, eos_token_ids=tuple(eos),
        vocab_size=VOCAB, overlap=overlap)
    if clock is not None:
        return TinyEngine(runner, tokenizer or ToyTokenizer(), cfg, clock=clock)
    return TinyEngine(runner, tokenizer or ToyTokenizer(), cfg)


def req(prompt: Sequence[int], max_tokens: int = 8, **kw: Any) -> GenerateRequest:
    kw.setdefault("ignore_eos", True)
    return GenerateRequest(tuple(prompt), SamplingParams(max_tokens=max_tokens, **kw))


async def collect(stream: RequestStream) -> list[Delta]:
    return [d async for d in stream]


def text_of(deltas: Sequence[Delta]) -> str:
    return "".join(d.text for d in deltas)


def tokens_of(deltas: Sequence[Delta]) -> list[int]:
    """The toy tokenizer's words back to ids."""
    return [int(w[1:]) for w in text_of(deltas).split()]


def generate(engine: Engine, prompt: Sequence[int], salt: bytes = SALT_A,
             **kw: Any) -> list[Delta]:
    async def go() -> list[Delta]:
        out = await collect(engine.submit(req(prompt, **kw), salt))
        await engine.close()
        return out
    return asyncio.run(go())


def greedy_decode(runner: PagedRunner, prompt: Sequence[int], max_tokens: int,
                  eos: int | None = None) -> list[int]:
    """Greedy decoding with the plain runner: whole prompt, then one token at a time.

    Uses every block of the pool as one table; stops after `eos` (kept) when one is given.
    """
    table = tuple(range(runner.num_blocks))
    toks = list(prompt)
    logits = runner.forward([ForwardChunk(tuple(toks), 0, table, 1)])[0]
    out = []
    for _ in range(max_tokens):
        t = int(logits[-1].argmax())
        out.append(t)
        if t == eos:
            break
        logits = runner.forward([ForwardChunk((t,), len(toks), table, 1)])[0]
        toks.append(t)
    return out


def reference_greedy(prompt: Sequence[int], max_tokens: int) -> list[int]:
    """Greedy decoding of the tiny model with a fresh plain runner."""
    return greedy_decode(tiny_runner(num_blocks=64, block_size=4), prompt, max_tokens)
