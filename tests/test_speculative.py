"""Speculative decoding by prompt lookup on a tiny Glm4: greedy output identical to generate(), sampling unbiased."""

from __future__ import annotations

import collections
import random
from typing import ClassVar

import pytest
import torch
from conftest import greedy_reference as reference
from conftest import varied_model

from rumination.backends import attention
from rumination.backends.decode import Decoder, sampler
from rumination.backends.lookup import PromptLookup, SpeculationMeter

GREEDY = sampler(0.0, 1.0)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return varied_model(tiny_model_dir, attention.PACKED_SDPA)


class Oracle:
    """Drafts the true continuation with a wrong token at random places: every acceptance length happens."""

    truth: ClassVar[list[int]] = []

    def __init__(self, ids: list[int], seed: int = 0):
        self.seq, self.random = list(ids), random.Random(seed)

    def add(self, token: int) -> None:
        self.seq.append(token)

    def draft(self, most: int) -> list[int]:
        if self.seq != self.truth[: len(self.seq)]:
            raise AssertionError("the decoder emitted a token the model did not choose")
        guess = self.truth[len(self.seq) : len(self.seq) + most]
        return [t if self.random.random() < 0.8 else (t + 1) % 700 for t in guess]


def test_prompt_lookup_drafts_what_followed_the_latest_match():
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 8])
    lookup.add(2)
    assert lookup.draft(3) == []  # (8, 2) never occurred
    lookup.add(3)
    assert lookup.draft(3) == [7, 8, 2]  # (2, 3) last occurred before 7, 8, ...
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3])
    assert lookup.draft(2) == [4, 5]  # the longer match (1, 2, 3) wins over the later (2, 3)
    lookup = PromptLookup([5, 6, 7, 5, 6, 7, 5, 6])
    assert lookup.draft(7) == [7, 5, 6, 7, 5, 6, 7]  # a loop repeats with its period
    assert PromptLookup([1]).draft(4) == [] and PromptLookup([]).draft(4) == []


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("draft", [1, 4, 9])
def test_greedy_speculation_matches_generate_over_multi_turn_crops(model, prompt, kind, draft):
    decoder = Decoder(model, kind, 1024, prefill_chunk=7, first_window=32, draft=draft)
    ids, verified = prompt, 0
    for turn in range(3):
        with torch.inference_mode():
            decoded = decoder.generate(ids, 60, GREEDY, [])
        assert decoded.ids == reference(model, ids, 60), f"turn {turn}"
        assert decoder.cached_tokens == len(ids) + 59 and decoder.ids == (ids + decoded.ids)[:-1]
        verified += decoded.drafted
        ids = ids + decoded.ids[:10] + prompt[:25]  # the next turn drops part of the answer: a crop
    assert verified > 0  # the repeated prompt gives n-gram matches


@pytest.mark.parametrize("kind", ["static", "dynamic", "fp8"])
def test_drafts_right_and_wrong_are_kept_exactly_while_right(model, prompt, kind):
    with torch.inference_mode():  # an FP8 cache is lossy: the truth is its own greedy text
        truth = Decoder(model, kind, 1024).generate(prompt, 80, GREEDY, []).ids
    if kind != "fp8":
        assert truth == reference(model, prompt, 80)
    Oracle.truth = prompt + truth
    decoder = Decoder(model, kind, 1024, first_window=32, draft=5, drafter=Oracle, meter=SpeculationMeter(True))
    with torch.inference_mode():
        decoded = decoder.generate(prompt, 80, GREEDY, [])
    assert decoded.ids == truth
    assert 0 < decoded.accepted < decoded.drafted
    assert decoder.cached_tokens == len(prompt) + 79


def test_stops_inside_an_accepted_draft_keep_the_cache_exact(model, prompt):
    truth = reference(model, prompt, 40)
    Oracle.truth = prompt + truth + [0] * 20
    decoder = Decoder(model, "static", 1024, first_window=32, draft=8, drafter=Oracle, meter=SpeculationMeter(True))
    stop = truth[17]
    with torch.inference_mode():
        stopped = decoder.generate(prompt, 40, GREEDY, [stop])
        assert stopped.ids == truth[: truth.index(stop) + 1]
        assert decoder.ids == prompt + stopped.ids[:-1]
        seen: list[int] = []
        cut = decoder.generate(prompt, 40, GREEDY, [], on_token=lambda t: seen.append(t) or len(seen) < 11)
        assert cut.ids == seen == truth[:11] and decoder.ids == prompt + truth[:10]
        short = decoder.generate(prompt, 6, GREEDY, [])
        assert short.ids == truth[:6] and decoder.cached_tokens == len(prompt) + 5
        follow = prompt + truth[:6] + prompt[:9]  # the next turn reuses exactly what the cache holds
        Oracle.truth = follow + reference(model, follow, 10)
        again = decoder.generate(follow, 10, GREEDY, [])
        assert again.ids == Oracle.truth[len(follow) :] and again.reused == len(prompt) + 5


def test_no_draft_past_the_end_of_the_cache(model, prompt):
    Oracle.truth = prompt + reference(model, prompt, 200 - len(prompt) + 1)
    # Compiled, a draft is padded to its full length whatever is left to generate: only the cache check stops it.
    options = {"backend": lambda graph, example_inputs: graph.forward}
    decoder = Decoder(model, "static", 200, compile_step=True, compile_options=options, draft=9, drafter=Oracle)
    decoder.meter = SpeculationMeter(True)
    with torch.inference_mode():
        exact = decoder.generate(prompt, 200 - len(prompt) + 1, GREEDY, [])
    assert exact.ids == Oracle.truth[len(prompt) :] and decoder.cached_tokens == 200


def test_compiled_verify_step_is_one_graph_per_window_made_at_warm_up(model, prompt):
    graphs = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    lengths: list[int] = []

    class Short(PromptLookup):  # at most 2 tokens, one time in three none: drafts shorter than the graph's 4
        def draft(self, most: int) -> list[int]:
            lengths.append(len(self.seq) % 3)
            return super().draft(most)[: lengths[-1]]

    options, meter = {"backend": counting}, SpeculationMeter(True)
    decoder = Decoder(model, "static", 512, compile_step=True, first_window=48, compile_options=options, draft=4)
    decoder.meter, decoder.drafter = meter, Short
    assert decoder.warm_up() is None and decoder.cached_tokens == 0
    assert len(graphs) == 6  # a one-token step and a five-token verify step for each of the 3 windows
    with torch.inference_mode():
        decoded = decoder.generate(prompt, 90, GREEDY, [])
    assert decoded.ids == reference(model, prompt, 90) and 0 < decoded.drafted < 4 * meter.verifies
    assert len(graphs) == 6  # drafts of 1 and 2 tokens were padded to the compiled shape: nothing recompiled


def test_sampled_tokens_follow_the_models_distribution_whatever_the_drafts(model, prompt):
    """Chi-square of 3-token samples against the exact probabilities; the drafted second token is sometimes kept."""
    pick = sampler(1.0, 1.0, top_k=3)

    def warped(ids: list[int]) -> dict[int, float]:
        with torch.inference_mode():
            logits = model(torch.tensor([ids])).logits[0, -1]
        top = torch.topk(logits, 3)
        return dict(zip(top.indices.tolist(), torch.softmax(top.values, -1).tolist(), strict=True))

    exact: dict[tuple[int, ...], float] = {}
    for a, pa in warped(prompt).items():
        for b, pb in warped([*prompt, a]).items():
            for c, pc in warped([*prompt, a, b]).items():
                exact[(a, b, c)] = pa * pb * pc

    class Guess:  # drafts the likeliest next token (with 3 tokens wanted, a draft of one)
        def __init__(self, ids: list[int]):
            self.seq = list(ids)

        def add(self, token: int) -> None:
            self.seq.append(token)

        def draft(self, most: int) -> list[int]:
            return [max(warped(self.seq).items(), key=lambda kv: kv[1])[0], 5][:most]

    decoder = Decoder(model, "dynamic", 1024, draft=2, drafter=Guess, meter=SpeculationMeter(True))
    torch.manual_seed(1234)
    samples = 1500
    with torch.inference_mode():
        drawn = collections.Counter(tuple(decoder.generate(prompt, 3, pick, []).ids) for _ in range(samples))
    assert set(drawn) <= set(exact)
    chi2 = sum((drawn[k] - samples * p) ** 2 / (samples * p) for k, p in exact.items())
    assert chi2 < 54.05  # the 0.001 critical value for 26 degrees of freedom
    likeliest = {a: max(warped([*prompt, a]).items(), key=lambda kv: kv[1])[0] for a in warped(prompt)}
    accepted_second = sum(n for (a, b, _), n in drawn.items() if b == likeliest[a])
    assert 0 < accepted_second < samples  # both the accepted and the rejected branch were taken


def test_the_meter_verifies_while_it_pays_and_probes_when_it_does_not():
    meter = SpeculationMeter(probe=4)
    assert meter.wants()  # nothing measured yet: try
    for _ in range(4):
        meter.stepped(0.010)
        meter.verified(0.012, 3)  # 3 tokens in 12 ms beat 1 in 10 ms
    assert meter.wants()
    for _ in range(40):
        meter.verified(0.012, 1)  # nothing accepted any more: 1 token in 12 ms
    choices = []
    for _ in range(15):
        choices.append(meter.wants())
        meter.verified(0.012, 1) if choices[-1] else meter.passed_over()
    assert choices == [False, False, False, False, True] * 3  # after `probe` drafts passed, one is tried
    assert not meter.wants() and meter.wants() is meter.wants()  # asking changes nothing
    assert SpeculationMeter(always=True, steps=9, verifies=9, verify_seconds=1, step_seconds=0.1).wants()
    untimed = SpeculationMeter(verifies=4, verify_seconds=0.012, yield_per_verify=1)
    assert not untimed.wants()  # drafts everywhere so far: one-token steps must be timed before judging


def test_drafts_that_never_pay_are_dropped_even_when_there_is_one_at_every_position(model, prompt):
    class Wrong:
        def __init__(self, ids: list[int]):
            pass

        def add(self, token: int) -> None:
            pass

        def draft(self, most: int) -> list[int]:
            return [0] * most

    meter = SpeculationMeter()  # timed as a step of 10 ms and a verify step of 30 ms, whatever the clock says
    meter.stepped = lambda seconds: SpeculationMeter.stepped(meter, 0.010)
    meter.verified = lambda seconds, tokens: SpeculationMeter.verified(meter, 0.030, tokens)
    decoder = Decoder(model, "dynamic", 1024, draft=4, drafter=Wrong, meter=meter)
    with torch.inference_mode():
        decoded = decoder.generate(prompt, 200, GREEDY, [])
    assert decoded.ids == reference(model, prompt, 200)
    assert meter.steps > 150 and meter.verifies < 20  # timed, found slower, then only probed


def test_the_longest_verify_step_shares_kv_heads_in_sdpa():
    from rumination.config import LocalModelSettings

    most = LocalModelSettings.model_fields["draft_tokens"].metadata
    limit = next(m.le for m in most if hasattr(m, "le"))
    assert limit + 1 <= attention.PACKED_QUERIES


@pytest.mark.parametrize("queries", [1, 5, 17])
def test_packed_sdpa_with_several_queries_equals_repeated_kv_attention(queries):
    class Module(torch.nn.Module):
        num_key_value_groups = 6
        is_causal = True

    torch.manual_seed(queries)
    query, key, value = torch.randn(1, 48, queries, 16), torch.randn(1, 8, 64, 16), torch.randn(1, 8, 64, 16)
    past = 30  # a static cache: queries at positions 30.., keys past the last query are stale
    mask = torch.arange(64)[None, :] <= (past + torch.arange(queries))[:, None]
    packed, _ = attention.packed_sdpa(Module(), query, key, value, mask[None, None], scaling=0.25)
    keys, values = (t.repeat_interleave(6, dim=1) for t in (key, value))
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=0.25)
    assert torch.allclose(packed, expected.transpose(1, 2), atol=1e-5)


def test_a_verify_step_that_cannot_be_compiled_leaves_the_one_token_step_compiled(model, prompt):
    graphs = []

    def fails_after_the_step_graphs(graph, example_inputs):  # the one-token step's three windows compile first
        if len(graphs) == 3:
            raise RuntimeError("out of graph memory")
        graphs.append(graph)
        return graph.forward

    options = {"backend": fails_after_the_step_graphs}
    decoder = Decoder(model, "static", 512, first_window=48, compile_step=True, compile_options=options, draft=4)
    assert "out of graph memory" in decoder.warm_up()
    assert decoder._step is not None and decoder._verify is None and decoder.cached_tokens == 0
    with torch.inference_mode():
        decoded = decoder.generate(prompt, 60, GREEDY, [])
    assert decoded.ids == reference(model, prompt, 60) and decoded.drafted > 0  # verified eagerly, still exact


def test_no_draft_longer_than_the_tokens_still_wanted(model, prompt):
    Oracle.truth = prompt + reference(model, prompt, 10)
    decoder = Decoder(model, "dynamic", 1024, draft=8, drafter=Oracle, meter=SpeculationMeter(True))
    with torch.inference_mode():
        assert decoder.generate(prompt, 1, GREEDY, []).drafted == 0  # the prefill's token is all there is
        three = decoder.generate(prompt, 3, GREEDY, [])
    assert three.ids == Oracle.truth[len(prompt) : len(prompt) + 3] and three.drafted == 1  # 1 fed + 1 drafted
