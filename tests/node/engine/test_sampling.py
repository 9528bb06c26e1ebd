"""Sampling: greedy, temperature, top-k, top-p, per-request seeds, limits, stop strings."""

from __future__ import annotations

import pytest
import torch

from hushcc.errors import ProtocolError
from node.engine.sampling import (
    SamplingLimits,
    SamplingParams,
    find_stop,
    sample,
    seeded_uniform,
    stop_holdback,
)

LOGITS = torch.tensor([0.0, 3.0, 2.9, 1.0, -1.0, 2.0])
PINNED_DRAWS = [0.686666279284, 0.124032569944, 0.287456286793]  # seed 7, counters 0..2


def draw(params: SamplingParams, n: int = 200, seed: int = 0) -> list[int]:
    return [sample(LOGITS, params, seeded_uniform(seed, i)) for i in range(n)]


def test_greedy_is_argmax():
    assert sample(LOGITS, SamplingParams(), 0.5) == 1
    assert sample(-LOGITS, SamplingParams(), 0.5) == 4


def test_seeded_uniform_is_a_pinned_counter_stream():
    # pinned values: the stream must never change, or seeded requests change their output
    assert seeded_uniform(0, 0) == seeded_uniform(0, 0)
    assert [round(seeded_uniform(7, i), 12) for i in range(3)] == PINNED_DRAWS
    draws = [seeded_uniform(3, i) for i in range(4000)]
    assert all(0.0 <= u < 1.0 for u in draws)
    assert len(set(draws)) == len(draws)
    assert abs(sum(draws) / len(draws) - 0.5) < 0.02  # uniform-ish: mean 1/2, sd 0.0046
    assert sum(u < 0.1 for u in draws) in range(320, 480)
    assert seeded_uniform(8, 0) != seeded_uniform(7, 0)
    assert seeded_uniform(2**63 - 1, 2**40) != seeded_uniform(2**63 - 1, 2**40 + 1)


def test_inverse_cdf_follows_the_draw():
    p = SamplingParams(temperature=1.0)
    assert sample(LOGITS, p, 0.0) == 0  # the first token with mass
    assert sample(LOGITS, p, 1.0 - 2**-53) == 5  # the last one
    mass = torch.softmax(LOGITS.double(), -1).cumsum(-1)
    assert sample(LOGITS, p, float(mass[1]) * 0.999) == 1
    assert sample(LOGITS, p, float(mass[1]) * 1.001) == 2


def test_same_seed_same_output_different_seed_differs():
    p = SamplingParams(temperature=1.0, seed=7)
    assert draw(p, seed=7) == draw(p, seed=7)
    assert draw(p, seed=7) != draw(p, seed=8)


def test_top_k_restricts_support():
    got = set(draw(SamplingParams(temperature=5.0, top_k=2)))
    assert got == {1, 2}
    assert len(set(draw(SamplingParams(temperature=5.0)))) > 2  # twin: without top-k it spreads


def test_top_p_restricts_support():
    got = set(draw(SamplingParams(temperature=1.0, top_p=0.5)))
    assert got <= {1, 2}
    assert 1 in got
    assert set(draw(SamplingParams(temperature=1.0, top_p=0.01))) == {1}
    assert len(set(draw(SamplingParams(temperature=1.0, top_p=1.0)))) > 2


def test_low_temperature_concentrates():
    assert set(draw(SamplingParams(temperature=0.01))) == {1}


@pytest.mark.parametrize("kwargs", [
    pytest.param({"max_tokens": 0}, id="max-tokens-zero"),
    pytest.param({"temperature": -1.0}, id="negative-temperature"),
    pytest.param({"temperature": float("nan")}, id="nan-temperature"),
    pytest.param({"top_k": -1}, id="negative-top-k"),
    pytest.param({"top_p": 0.0}, id="top-p-zero"),
    pytest.param({"top_p": 1.5}, id="top-p-over-one"),
    pytest.param({"seed": -1}, id="negative-seed"),
    pytest.param({"stop": ("",)}, id="empty-stop"),
    pytest.param({"stop": ["x"]}, id="stop-not-tuple"),
])
def test_invalid_params_rejected(kwargs):
    with pytest.raises(ProtocolError):
        SamplingParams(**kwargs)


def test_limits():
    limits = SamplingLimits(max_tokens=100, max_stop_strings=2, max_stop_len=4, max_top_k=10)
    SamplingParams(max_tokens=100, top_k=10, stop=("ab", "abcd")).check_limits(limits)
    for bad in ({"max_tokens": 101}, {"top_k": 11}, {"stop": ("a", "b", "c")},
                {"stop": ("abcde",)}):
        with pytest.raises(ProtocolError):
            SamplingParams(**bad).check_limits(limits)


def test_stop_strings():
    assert find_stop("hello world", ("wor", "lo")) == 3
    assert find_stop("hello", ("xyz",)) == -1
    assert stop_holdback("hello wo", ("world",)) == 2
    assert stop_holdback("hello", ("world",)) == 0
    assert stop_holdback("ab", ("abc", "bx")) == 2


@pytest.mark.parametrize("kwargs", [
    pytest.param({"temperature": 1e-42}, id="tiny-temperature"),
    pytest.param({"temperature": 1.0, "top_p": 1e-50}, id="tiny-top-p"),
    pytest.param({"temperature": 1e-300, "top_p": 1e-50, "top_k": 2}, id="all-three"),
    pytest.param({"temperature": 5e-324}, id="smallest-double"),
])
def test_degenerate_distribution_samples_the_top_token(kwargs):
    assert set(draw(SamplingParams(**kwargs), 20)) == {1}
    wide = SamplingParams(temperature=1.0)  # positive twin: an ordinary temperature varies
    assert len(set(draw(wide, 50))) > 1


@pytest.mark.parametrize(("logits", "expected"), [
    pytest.param([float("nan"), 1.0, float("nan"), 0.5], 1, id="nan-logits"),
    pytest.param([0.0, float("inf"), 1.0], 1, id="inf-logit"),
    pytest.param([float("-inf")] * 4, 0, id="all-minus-inf"),
    pytest.param([float("nan")] * 3, 0, id="all-nan"),
])
def test_broken_logits_never_raise(logits, expected):
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=2)
    assert sample(torch.tensor(logits), params, seeded_uniform(1, 0)) == expected
