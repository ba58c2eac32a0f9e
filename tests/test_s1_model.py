"""s1 behaviour on the tiny config: EOS rules, seeding, KV cache, batched training forward, speed variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsvkit.config import load_config
from gsvkit.models.s1 import KVCache, Text2SemanticDecoder
from gsvkit.models.s1.gpt import MIN_NEW_TOKENS

TINY = Path(__file__).parent.parent / "configs" / "tiny" / "s1.yaml"


@pytest.fixture
def cfg():
    return load_config(TINY).model


@pytest.fixture
def model(cfg):
    torch.manual_seed(0)
    return Text2SemanticDecoder(cfg).eval()


def _inputs(cfg, tx=7, tp=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    phones = torch.randint(0, cfg.phone_vocab, (1, tx), generator=g)
    bert = torch.randn(1, cfg.bert_dim, tx, generator=g)
    prompt = torch.randint(0, cfg.eos, (1, tp), generator=g)
    return phones, bert, prompt


def _fix_logits(model, scores: dict[int, float]):
    """Make every step's logits exactly `scores` (0 elsewhere): constant last hidden state, crafted output rows."""
    d = model.cfg.hidden_dim
    c = torch.linspace(-1.0, 1.0, d)
    with torch.no_grad():
        last = model.h.layers[-1].norm2
        last.weight.zero_()
        last.bias.copy_(c)
        w = torch.zeros_like(model.ar_predict_layer.weight)
        for tok, s in scores.items():
            w[tok] = s * c / c.dot(c)
        model.ar_predict_layer.weight.copy_(w)


# ---------------------------------------------------------------------------------------------------------- EOS
@pytest.mark.parametrize("n_distinct", [15, 4])
def test_eos_stops_at_chosen_step_and_is_excluded(model, cfg, n_distinct):
    # Tokens 0..n-1 beat EOS until penalised once (10/1.35 < 9): greedy takes each once, then EOS wins, but
    # never before step 11.
    _fix_logits(model, {**{t: 10.0 - 0.01 * t for t in range(n_distinct)}, cfg.eos: 9.0})
    phones, bert, _ = _inputs(cfg)
    prompt = torch.full((1, 3), 40)  # outside the scored set: penalising it changes nothing
    tokens, logits = model.generate(phones, bert, prompt, top_k=1, repetition_penalty=1.35, return_logits=True)
    n = max(n_distinct, MIN_NEW_TOKENS)
    assert tokens.shape == (1, n)
    assert logits.shape == (n + 1, cfg.vocab_size)  # the EOS step's logits come last
    assert cfg.eos not in tokens[0].tolist()
    assert tokens[0, :n_distinct].tolist() == list(range(n_distinct))


def test_eos_never_in_first_11_steps(model, cfg):
    _fix_logits(model, {cfg.eos: 50.0, 3: 1.0})
    phones, bert, prompt = _inputs(cfg)
    tokens = model.generate(phones, bert, prompt, top_k=15)
    assert tokens.shape == (1, MIN_NEW_TOKENS)
    assert tokens.shape == model.generate(phones, bert, None, top_k=15).shape


def test_sampled_eos_stops_even_when_not_argmax(model, cfg):
    # EOS is never the argmax, but with top_k=2 it is sampled with probability ~0.5 per step once allowed;
    # before that the top two are 7 and 8.
    _fix_logits(model, {7: 5.0, 8: 4.99, cfg.eos: 5.0 - 1e-3})
    phones, bert, prompt = _inputs(cfg)
    steps = list(model.decode_steps(phones, bert, prompt, top_k=2, repetition_penalty=1.0, seed=3))
    assert len(steps) > MIN_NEW_TOKENS and len(steps) < 60
    assert steps[-1].is_eos and steps[-1].token == cfg.eos
    assert not any(s.is_eos for s in steps[:-1])
    assert all(s.token in (7, 8) for s in steps[:MIN_NEW_TOKENS])
    assert all(s.token == 7 for s in steps[MIN_NEW_TOKENS:-1])


def test_exactly_max_new_tokens_without_eos(model, cfg):
    phones, bert, prompt = _inputs(cfg)
    with torch.no_grad():
        model.ar_predict_layer.weight[cfg.eos] = 0.0
        model.h.layers[-1].norm2.bias.zero_()
        model.h.layers[-1].norm2.weight.fill_(1.0)
    for n in (1, 12, 37):
        tokens = model.generate(phones, bert, prompt, top_k=1, repetition_penalty=1.0, max_new_tokens=n)
        assert tokens.shape == (1, n) and tokens.dtype == torch.long
    assert model.generate(phones, bert, prompt, max_new_tokens=0).shape == (1, 0)


# --------------------------------------------------------------------------------------------------------- seeds
def test_seed_reproducible_and_global_rng_untouched(model, cfg):
    phones, bert, prompt = _inputs(cfg)
    kw = dict(top_k=15, top_p=0.9, temperature=1.2, max_new_tokens=30)
    state = torch.get_rng_state()
    a = model.generate(phones, bert, prompt, seed=123, **kw)
    b = model.generate(phones, bert, prompt, seed=123, **kw)
    c = model.generate(phones, bert, prompt, seed=124, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert list(model.generate_iter(phones, bert, prompt, seed=123, **kw)) == a[0].tolist()


# ----------------------------------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("with_prompt", [True, False])
def test_kv_cache_equals_full_recomputation(model, cfg, with_prompt):
    phones, bert, prompt = _inputs(cfg, tx=9, tp=6)
    if not with_prompt:
        prompt = None
    tokens, step_logits = model.generate(
        phones, bert, prompt, top_k=15, temperature=1.0, max_new_tokens=25, seed=7, return_logits=True
    )
    n = tokens.shape[1]
    prefix = tokens if prompt is None else torch.cat([prompt, tokens], 1)
    tp = 0 if prompt is None else prompt.shape[1]
    with torch.no_grad():
        full = model.logits(phones, bert, prefix)[0]  # [Tp+n+1, V]
    torch.testing.assert_close(step_logits[:n], full[tp : tp + n], atol=1e-5, rtol=1e-5)


def test_kv_cache_grows():
    like = torch.zeros(1)
    cache = KVCache(n_layers=2, batch=1, heads=2, head_dim=3, capacity=2, like=like)
    ks = [torch.randn(1, 2, t, 3) for t in (2, 1, 4)]
    for k in ks:
        for layer in range(2):
            got_k, got_v = cache.update(layer, k, -k)
        cache.advance(k.shape[2])
    want = torch.cat(ks, 2)
    assert cache.length == 7 and cache.capacity >= 7
    assert torch.equal(got_k, want) and torch.equal(got_v, -want)


# ---------------------------------------------------------------------------------------------------- training
def _batch(cfg, lens_x=(7, 4, 6), lens_y=(9, 12, 3), seed=5):
    g = torch.Generator().manual_seed(seed)
    b, tx, ty = len(lens_x), max(lens_x), max(lens_y)
    phones = torch.randint(0, cfg.phone_vocab, (b, tx), generator=g)
    bert = torch.randn(b, cfg.bert_dim, tx, generator=g)
    semantic = torch.randint(0, cfg.eos, (b, ty), generator=g)
    for i, (lx, ly) in enumerate(zip(lens_x, lens_y, strict=True)):  # padding holds junk: it must not matter
        phones[i, lx:] = 1
        bert[i, :, lx:] = 100.0
        semantic[i, ly:] = cfg.eos
    return phones, torch.tensor(lens_x), bert, semantic, torch.tensor(lens_y)


def test_training_forward_backward(cfg):
    torch.manual_seed(0)
    model = Text2SemanticDecoder(cfg.model_copy(update={"dropout": 0.1}), layer_drop=0.5).train()
    out = model(*_batch(cfg))
    loss, acc = out
    assert torch.isfinite(loss) and 0.0 <= float(acc) <= 1.0
    assert int(out.n_targets) == (9 + 12 + 3) + 3
    torch.testing.assert_close(out.loss_mean, loss / out.n_targets)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.ar_text_position.alpha.grad is not None


def test_padding_invariance(model, cfg):
    phones, lx, bert, semantic, ly = _batch(cfg)
    with torch.no_grad():
        out = model(phones, lx, bert, semantic, ly)
        for i in range(phones.shape[0]):
            x, y = phones[i : i + 1, : lx[i]], semantic[i : i + 1, : ly[i]]
            one = model(x, lx[i : i + 1], bert[i : i + 1, :, : lx[i]], y, ly[i : i + 1])
            torch.testing.assert_close(out.item_loss[i], one.loss, atol=1e-4, rtol=1e-5)
            # and the same numbers as the teacher-forced logits of one item
            logits = model.logits(x, bert[i : i + 1, :, : lx[i]], y)[0]
            target = torch.cat([y[0], torch.tensor([cfg.eos])])
            ce = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
            torch.testing.assert_close(one.loss, ce, atol=1e-4, rtol=1e-5)


class _Count(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.n = 0

    def forward(self, x, *args):
        self.n += 1
        return x


def test_layer_drop_follows_linear_rule(cfg):
    model = Text2SemanticDecoder(cfg, layer_drop=0.8).train()
    model.h.layers = torch.nn.ModuleList(_Count() for _ in range(4))  # only the skipping rule is under test
    torch.manual_seed(0)
    x = torch.randn(1, 3, cfg.hidden_dim)
    for _ in range(1000):
        model.h(x)
    for i, layer in enumerate(model.h.layers):  # layer i runs with probability 1 - 0.8 * (i + 1) / 4
        assert abs(layer.n / 1000 - (1 - 0.8 * (i + 1) / 4)) < 0.05
    model.eval()
    before = [layer.n for layer in model.h.layers]
    model.h(x)
    assert [layer.n for layer in model.h.layers] == [n + 1 for n in before]


def test_eval_forward_is_deterministic_with_dropout_config(cfg):
    model = Text2SemanticDecoder(cfg.model_copy(update={"dropout": 0.3}), layer_drop=0.5).eval()
    batch = _batch(cfg)
    with torch.no_grad():
        assert torch.equal(model(*batch).loss, model(*batch).loss)


# ---------------------------------------------------------------------------------------------- speed variants
def test_bf16_and_int8_variants_run(model, cfg):
    phones, bert, prompt = _inputs(cfg)
    with torch.no_grad():
        ref = model.logits(phones, bert, prompt)
    q = model.quantize_int8()
    with torch.no_grad():
        got = q.logits(phones, bert, prompt)
    assert got.shape == ref.shape and (got - ref).abs().max() < 0.25 * ref.abs().max()
    assert q.generate(phones, bert, prompt, max_new_tokens=13, seed=0).shape[1] >= MIN_NEW_TOKENS
    half = Text2SemanticDecoder(cfg).to(torch.bfloat16).eval()
    half.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    tokens, logits = half.generate(phones, bert, prompt, max_new_tokens=13, seed=0, return_logits=True)
    assert logits.dtype == torch.float32 and tokens.shape[1] >= MIN_NEW_TOKENS
