"""Prompt lookup: drafts from the request's own history; verification is exact greedy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ConfigError
from node.engine.speculative import DraftRecord, PromptLookupConfig, accept, propose

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
    for bad in ({"min_ngram": 3, "max_ngram": 2}, {"min_acceptance": 1.5},
                {"min_acceptance": -0.1}, {"probe_drafts": -1}, {"decay": 1.5}):
        with pytest.raises(ConfigError):
            PromptLookupConfig(**bad)


def test_draft_record_probes_then_follows_its_decayed_acceptance_rate():
    cfg = PromptLookupConfig(probe_drafts=8, min_acceptance=0.5, decay=1.0)
    rec = DraftRecord()
    assert rec.pays(cfg)
    rec = rec.record(4, [9], cfg).record(3, [9], cfg)  # two verifications, nothing accepted
    assert rec == DraftRecord(7.0, 0.0, 7)
    assert rec.pays(cfg)  # still probing
    assert not rec.record(4, [1, 9], cfg).pays(cfg)  # 1 of 11 accepted: stops
    good = DraftRecord().record(4, [1, 2, 3, 4, 5], cfg).record(4, [1, 2, 3, 9], cfg)
    assert good == DraftRecord(8.0, 7.0, 8)
    assert good.pays(cfg)  # 7 of 8 accepted: keeps drafting after the probe
    assert DraftRecord(10.0, 5.0, 10).pays(cfg)  # exactly the threshold pays
    assert DraftRecord(100.0, 0.0, 100).pays(PromptLookupConfig(min_acceptance=0.0))  # rule off
    decayed = DraftRecord(10.0, 0.0, 10).record(2, [5, 6, 7], PromptLookupConfig(decay=0.5))
    assert decayed == DraftRecord(7.0, 2.0, 12)  # the past weighs half


def test_shadow_drafts_turn_drafting_back_on_when_they_would_hit():
    cfg = PromptLookupConfig(num_draft=2, max_ngram=2, probe_drafts=4, min_acceptance=0.5)
    off = DraftRecord(8.0, 0.0, 8)
    history = [1, 2, 3, 1, 2]
    drafts, rec = off.plan(history, cfg)
    assert drafts == []  # not sent: drafting does not pay ...
    assert rec.shadow == 3  # ... but the lookup's first token is checked against the model's
    missed = rec.record(0, [4], cfg)
    assert missed.shadow is None
    assert missed.accepted == 0.0
    assert missed.drafted > off.drafted * cfg.decay
    rec_on = rec
    for _ in range(20):  # the text turned repetitive: every shadow draft hits
        rec_on = rec_on.record(0, [3], cfg)
        _, rec_on = rec_on.plan(history, cfg)
        if rec_on.pays(cfg):
            break
    assert rec_on.pays(cfg)
    assert rec_on.plan(history, cfg)[0] == [3, 1]  # drafts are sent again
    rec_off = rec
    for _ in range(20):  # the twin: every shadow draft misses, drafting stays off
        rec_off = rec_off.record(0, [4], cfg)
        _, rec_off = rec_off.plan(history, cfg)
    assert not rec_off.pays(cfg)


def simple_propose(history: list[int], cfg: PromptLookupConfig) -> list[int]:
    """The plain-Python lookup (the previous implementation): the oracle of `propose`."""
    hist = list(history[-cfg.max_window:])
    n_hist = len(hist)
    for n in range(min(cfg.max_ngram, n_hist - 1), cfg.min_ngram - 1, -1):
        tail = hist[n_hist - n:]
        for start in range(n_hist - n - 1, -1, -1):
            if hist[start:start + n] == tail:
                return hist[start + n:start + n + cfg.num_draft]
    return []


@settings(max_examples=300)
@given(hist=st.lists(st.sampled_from([0, 1, 2, 256, 257, 65536, 2**24 + 1, 2**31 - 1]),
                     max_size=60),
       window=st.integers(2, 70), ngram=st.integers(1, 4))
def test_propose_equals_the_plain_python_lookup(hist, window, ngram):
    # ids whose bytes overlap (256, 65536, ...) make unaligned byte matches the search must skip
    cfg = PromptLookupConfig(num_draft=3, max_ngram=ngram, max_window=window)
    assert propose(hist, cfg) == simple_propose(hist, cfg)


@settings(max_examples=200)
@given(hist=st.lists(st.integers(0, 5), max_size=40))
def test_drafts_always_follow_a_real_occurrence(hist):
    drafts = propose(hist, CFG)
    assert len(drafts) <= CFG.num_draft
    if drafts:
        n = len(drafts)
        spans = [hist[i:i + n] for i in range(len(hist) - n + 1)]
        assert drafts in spans
