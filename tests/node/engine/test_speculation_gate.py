"""Prompt lookup that never loses (issue 16): a sequence drafts only while its measured acceptance
says drafting pays; scripted models make drafts always right or almost always wrong."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

import torch

from node.engine.engine import Engine, EngineConfig
from node.engine.runner import tiny_runner
from node.engine.sequence import EngineLimits
from node.engine.speculative import PromptLookupConfig
from tests.node.engine.engine_fakes import ToyTokenizer
from tests.node.engine.engine_helpers import SALT_A, VOCAB, collect, req, tokens_of

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from node.engine.batch import ForwardChunk

Rule = "Callable[[int, int], int]"  # (position of the fed token, fed token) -> next token


def successor(pos: int, tok: int) -> int:
    """Continues the cycle 10 11 12 13: exactly what prompt lookup drafts from such a prompt."""
    return 10 + (tok - 9) % 4


def scrambled(pos: int, tok: int) -> int:
    """A token of 10..17 that depends only on the position: lookup drafts are mostly wrong."""
    return 10 + random.Random(pos).randrange(8)


class ScriptedRunner:
    """The tiny real runner (KV pool, zeroing) whose logits follow a scripted rule."""

    def __init__(self, rule: Callable[[int, int], int]) -> None:
        self.real = tiny_runner(num_blocks=64, block_size=4)
        self.rule = rule
        self.block_size, self.num_blocks = self.real.block_size, self.real.num_blocks
        self.zero_blocks, self.clear_scratch = self.real.zero_blocks, self.real.clear_scratch
        self.kv_pool_is_zero = self.real.kv_pool_is_zero

    def forward(self, chunks: Sequence[ForwardChunk]) -> list[torch.Tensor]:
        outs = self.real.forward(chunks)
        scripted = []
        for c, out in zip(chunks, outs, strict=True):
            n, k = len(c.token_ids), c.num_logits
            rows = [self.rule(c.start_pos + i, c.token_ids[i]) for i in range(n - k, n)]
            scripted.append(torch.nn.functional.one_hot(torch.tensor(rows, dtype=torch.long),
                                                        out.shape[-1]).float() * 10)
        return scripted


def scripted_output(rule: Callable[[int, int], int], prompt: Sequence[int], n: int) -> list[int]:
    toks = list(prompt)
    for _ in range(n):
        toks.append(rule(len(toks) - 1, toks[-1]))
    return toks[len(prompt):]


def run(rule: Callable[[int, int], int], prompt: Sequence[int], n: int,
        **lookup: Any) -> tuple[list[int], int, int, int]:
    """Generate `n` tokens alone; returns (tokens, steps, draft tokens, accepted drafts)."""
    cfg = EngineConfig(
        limits=EngineLimits(max_model_len=256, max_tokens_cap=128, max_num_seqs=4,
                            max_num_batched_tokens=64, max_draft_tokens=4),
        enable_prefix_cache=False, speculative=PromptLookupConfig(**lookup), vocab_size=VOCAB)

    async def go() -> tuple[list[int], int, int, int]:
        eng = Engine(ScriptedRunner(rule), ToyTokenizer(), cfg)
        out = await collect(eng.submit(req(prompt, max_tokens=n), SALT_A))
        st = eng.stats()
        assert eng.runner.kv_pool_is_zero()
        await eng.close()
        return tokens_of(out), st.steps, st.draft_tokens, st.accepted_drafts

    return asyncio.run(go())


def test_sequence_whose_drafts_are_rejected_stops_drafting() -> None:
    prompt = list(range(10, 18)) * 3
    toks, _, drafted, accepted = run(scrambled, prompt, 80, probe_drafts=16, min_acceptance=0.5)
    assert toks == scripted_output(scrambled, prompt, 80)  # speculation never changes output
    assert accepted < 0.5 * drafted
    assert 16 <= drafted < 16 + 4  # the probe, then nothing more
    # the twin: without the rule the same sequence drafts all along
    toks, _, drafted, accepted = run(scrambled, prompt, 80, min_acceptance=0.0)
    assert toks == scripted_output(scrambled, prompt, 80)
    assert drafted > 100
    assert accepted < 0.5 * drafted


def test_sequence_whose_drafts_are_accepted_keeps_drafting() -> None:
    prompt = [10, 11, 12, 13] * 4
    toks, steps, drafted, accepted = run(successor, prompt, 80, probe_drafts=16,
                                         min_acceptance=0.5)
    assert toks == scripted_output(successor, prompt, 80)
    assert drafted > 40  # long after the probe
    assert accepted >= 0.9 * drafted
    assert steps < 30  # 80 tokens, up to 5 a step (plus the prefill)
