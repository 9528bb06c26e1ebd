"""Prompt lookup: drafts from the request's own history; verification is exact greedy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ConfigError
from node.engine.speculative import PromptLookupConfig, accept, propose

CFG = PromptLookupConfig(num_draft=3, max_ngram=3)


def test_proposes_continuation_of_latest_match():
    assert propose([1, 2, 3, 4, 5, 9, 1, 2, 3], CFG) == [4, 5, 9]
    assert propose([7, 8, 1, 2, 6, 1, 2, 5, 0, 1, 2], CFG) == [5, 0, 1]  # most recent match
    assert propose([1, 2, 3], CFG) == []
    assert propose([], CFG) == []
    assert propose([4], CFG) == []


def test_window_limits_the_search():
    hist = [1, 2, 3, 4] + [0] * 20 + [5, 1, 2]
    assert propose(hist, CFG) == [3, 4, 0]
    assert propose(hist, PromptLookupConfig(num_draft=3, max_window=10)) == []


def test_accept_longest_matching_prefix_plus_model_token():
    assert accept([4, 5, 6], [4, 5, 6, 7]) == [4, 5, 6, 7]
    assert accept([4, 5, 6], [4, 8, 6, 7]) == [4, 8]
    assert accept([4, 5, 6], [2, 5, 6, 7]) == [2]
    assert accept([], [3]) == [3]
    with pytest.raises(ConfigError):
        accept([1, 2], [1])


def test_bad_config():
    with pytest.raises(ConfigError):
        PromptLookupConfig(min_ngram=3, max_ngram=2)


@settings(max_examples=200)
@given(hist=st.lists(st.integers(0, 5), max_size=40))
def test_drafts_always_follow_a_real_occurrence(hist):
    drafts = propose(hist, CFG)
    assert len(drafts) <= CFG.num_draft
    if drafts:
        n = len(drafts)
        spans = [hist[i:i + n] for i in range(len(hist) - n + 1)]
        assert drafts in spans
