"""E8: requests over the limits are rejected in `submit`, before any allocation, without content."""

from __future__ import annotations

import asyncio

import pytest

from hushcc.errors import ProtocolError
from node.engine.engine import GenerateRequest
from node.engine.sampling import SamplingParams
from node.engine.sequence import EngineLimits, check_request
from tests.node.engine.engine_helpers import SALT_A, collect, make_engine, req

CANARY = 4242 % 512


@pytest.mark.parametrize(
    ("prompt_len", "max_tokens", "num_blocks"),
    [
        pytest.param(250, 8, 256, id="prompt-plus-output-over-max-model-len"),
        pytest.param(300, 1, 256, id="prompt-over-max-model-len"),
        pytest.param(10, 129, 256, id="max-tokens-over-cap"),
        pytest.param(40, 30, 16, id="more-blocks-than-the-pool"),
        pytest.param(0, 8, 256, id="empty-prompt"),
    ],
)
def test_rejected_before_allocation(prompt_len: int, max_tokens: int, num_blocks: int) -> None:
    eng = make_engine(num_blocks=num_blocks)
    prompt = [CANARY] * prompt_len
    with pytest.raises(ProtocolError) as info:
        eng.submit(req(prompt, max_tokens=max_tokens), SALT_A)
    assert str(CANARY) not in str(info.value)
    assert eng.idle
    assert eng.scheduler.blocks.num_free == num_blocks


def test_token_ids_outside_the_vocabulary_are_rejected() -> None:
    eng = make_engine()
    with pytest.raises(ProtocolError):
        eng.submit(GenerateRequest((1, 512), SamplingParams(max_tokens=2)), SALT_A)
    with pytest.raises(ProtocolError):
        eng.submit(GenerateRequest((-1, 5), SamplingParams(max_tokens=2)), SALT_A)


def test_request_exactly_at_the_limits_is_served() -> None:
    async def go() -> None:
        eng = make_engine(num_blocks=64)  # 64 blocks x 4 = 256 = max_model_len
        out = await collect(eng.submit(req([CANARY] * 128, max_tokens=128), SALT_A))
        assert out[-1].finish_reason == "length"
        assert out[-1].completion_tokens == 128
        await eng.close()
    asyncio.run(go())


def test_check_request_is_pure_and_bounds_memory() -> None:
    limits = EngineLimits(max_model_len=64, max_tokens_cap=16)
    check_request(48, 16, limits, block_size=4, num_blocks=16)
    with pytest.raises(ProtocolError):
        check_request(49, 16, limits, block_size=4, num_blocks=16)
    with pytest.raises(ProtocolError):
        check_request(48, 16, limits, block_size=4, num_blocks=15)
