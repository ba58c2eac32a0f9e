"""s1 batched decoding: B rows of different phone lengths after one shared prompt, each row as if decoded alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsvkit.config import load_config
from gsvkit.models.s1 import KVCache, Text2SemanticDecoder, gpt
from gsvkit.models.s1.gpt import pad_rows
from gsvkit.models.s1.sampling import next_token

TINY = Path(__file__).parent.parent / "configs" / "tiny" / "s1.yaml"
LENGTHS = (7, 12, 4)  # phones per row (prompt text included, as the pipeline feeds them)
GREEDY = {"top_k": 1, "max_new_tokens": 60}


@pytest.fixture(scope="module")
def cfg():
    return load_config(TINY).model


@pytest.fixture(scope="module")
def model(cfg):
    torch.manual_seed(0)
    return Text2SemanticDecoder(cfg).eval()


def _rows(cfg, lengths=LENGTHS, seed=1):
    g = torch.Generator().manual_seed(seed)
    rows = [
        (torch.randint(0, cfg.phone_vocab, (n,), generator=g), torch.randn(cfg.bert_dim, n, generator=g))
        for n in lengths
    ]
    prompt = torch.randint(0, cfg.eos, (1, 5), generator=g)
    return [p for p, _ in rows], [b for _, b in rows], prompt


def _alone(model, phones, bert, prompt, **kw):
    return [list(model.decode_steps(p[None], b[None], prompt, **kw)) for p, b in zip(phones, bert, strict=True)]


def _batched(model, phones, bert, prompt, **kw):
    padded, lens, padded_bert = pad_rows(phones, bert)
    steps = list(model.decode_steps(padded, padded_bert, prompt, lens, **kw))
    return [[s for s in steps if s.row == r] for r in range(len(phones))]


@pytest.mark.parametrize("with_prompt", [True, False])
def test_greedy_batch_equals_each_row_alone(model, cfg, with_prompt):
    phones, bert, prompt = _rows(cfg)
    prompt = prompt if with_prompt else None
    alone = _alone(model, phones, bert, prompt, **GREEDY)
    batched = _batched(model, phones, bert, prompt, **GREEDY)
    for a, b in zip(alone, batched, strict=True):
        assert [s.token for s in b] == [s.token for s in a]
        assert [s.is_eos for s in b] == [s.is_eos for s in a]
        torch.testing.assert_close(torch.stack([s.logits for s in b]), torch.stack([s.logits for s in a]),
                                   atol=1e-4, rtol=1e-4)  # fmt: skip
    assert model.generate_batch(phones, bert, prompt, **GREEDY) == [[s.token for s in a if not s.is_eos] for a in alone]


def test_one_row_ends_early_and_leaves_the_batch(model, cfg):
    phones, bert, prompt = _rows(cfg)
    widths: list[int] = []
    hook = model.h.register_forward_hook(lambda _m, args, _out: widths.append(args[0].shape[0]))
    try:
        batched = _batched(model, phones, bert, prompt, **GREEDY)
    finally:
        hook.remove()
    lengths = [len(r) for r in batched]
    assert batched[0][-1].is_eos and lengths[0] < GREEDY["max_new_tokens"]  # row 0 ends on EOS
    assert lengths[1:] == [GREEDY["max_new_tokens"]] * 2 and not any(s.is_eos for r in batched[1:] for s in r)
    # prefill and every step run all three rows until row 0's EOS; after it only two
    assert widths == [3] * lengths[0] + [2] * (GREEDY["max_new_tokens"] - lengths[0])


def test_padding_is_never_read(model, cfg):
    phones, bert, prompt = _rows(cfg)
    padded, lens, padded_bert = pad_rows(phones, bert)
    junk_phones, junk_bert = padded.clone(), padded_bert.clone()
    for i, n in enumerate(lens.tolist()):
        junk_phones[i, n:] = cfg.phone_vocab - 1
        junk_bert[i, :, n:] = 100.0
    kw = {"top_k": 1, "max_new_tokens": 20}
    clean = list(model.decode_steps(padded, padded_bert, prompt, lens, **kw))
    junk = list(model.decode_steps(junk_phones, junk_bert, prompt, lens, **kw))
    assert [s.token for s in junk] == [s.token for s in clean]
    torch.testing.assert_close(torch.stack([s.logits for s in junk]), torch.stack([s.logits for s in clean]))


def test_every_row_token_comes_from_the_shared_rule(model, cfg, monkeypatch):
    calls = []

    def spy(*args, **kw):
        calls.append(args[0].shape)
        return next_token(*args, **kw)

    monkeypatch.setattr(gpt, "next_token", spy)
    phones, bert, prompt = _rows(cfg)
    steps = [s for row in _batched(model, phones, bert, prompt, **GREEDY) for s in row]
    assert len(calls) == len(steps) and set(calls) == {(1, cfg.vocab_size)}


def test_int8_torch_copy_decodes_batched(model, cfg):
    phones, bert, prompt = _rows(cfg)
    q = model.quantize_int8(step_graph=False)  # torch's dynamic int8 layers
    # Rows of one length: the per-tensor activation scales equal the row's own, so the tokens are the row's own.
    same = q.generate_batch([phones[1]] * 3, [bert[1]] * 3, prompt, **GREEDY)
    assert same == [q.generate(phones[1][None], bert[1][None], prompt, **GREEDY)[0].tolist()] * 3
    # Rows of different lengths: dynamic int8 scales activations per tensor, over every row of the batch, so a row
    # is within int8's error of itself decoded alone, not equal to it.
    _assert_rows_near_alone(q, phones, bert, prompt, 0.25)


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_graph_copy_decodes_batched(model, cfg, precision):
    phones, bert, prompt = _rows(cfg)
    q = model.with_precision(precision)
    # On onnxruntime (`StepGraph`) activations are quantised per block of one row's inputs, nothing per batch, so a
    # padded row stays close to itself decoded alone (measured: first-step logits within 1 % of their largest).
    _assert_rows_near_alone(q, phones, bert, prompt, 0.05)


def test_bf16_copy_decodes_batched(model, cfg):
    phones, bert, prompt = _rows(cfg)
    _assert_rows_near_alone(model.with_precision("bf16"), phones, bert, prompt, 0.05)


def _assert_rows_near_alone(model, phones, bert, prompt, bound: float) -> None:
    """Each padded row's first-step logits (fp32) are within `bound` of their largest when decoded alone, and its
    greedy run has tokens up to its end (no EOS before the last step)."""
    alone = _alone(model, phones, bert, prompt, **GREEDY)
    batched = _batched(model, phones, bert, prompt, **GREEDY)
    for a, b in zip(alone, batched, strict=True):
        first = a[0].logits
        assert b[0].logits.dtype == torch.float32
        assert (b[0].logits - first).abs().max() < bound * first.abs().max()
        assert 0 < len(b) <= GREEDY["max_new_tokens"] and all(not s.is_eos for s in b[:-1])


def test_bad_phone_lengths_are_refused(model, cfg):
    phones, bert, prompt = _rows(cfg)
    padded, lens, padded_bert = pad_rows(phones, bert)
    with pytest.raises(ValueError, match="phone_lens"):
        next(model.decode_steps(padded, padded_bert, prompt, lens + 1))
    with pytest.raises(ValueError, match="prompt must be"):
        next(model.decode_steps(padded, padded_bert, prompt.expand(3, -1), lens))


def test_kv_cache_keeps_chosen_rows():
    cache = KVCache(n_layers=2, batch=3, heads=2, head_dim=3, capacity=8, like=torch.zeros(1))
    k = torch.randn(3, 2, 5, 3)
    for layer in range(2):
        cache.update(layer, k, -k)
    cache.advance(5)
    cache.keep([0, 2])
    new = torch.randn(2, 2, 1, 3)
    got_k, got_v = cache.update(0, new, -new)
    want = torch.cat([k[[0, 2]], new], dim=2)
    assert got_k.shape == (2, 2, 6, 3) and torch.equal(got_k, want) and torch.equal(got_v, -want)
