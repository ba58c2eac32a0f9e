"""The one s1 decoding rule (`sampling.next_token`): its behaviour, and that the torch and ONNX paths both use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gsvkit.config import load_config
from gsvkit.inference.onnx import runtime
from gsvkit.models.s1 import Text2SemanticDecoder, gpt, sampling
from gsvkit.models.s1.sampling import MIN_NEW_TOKENS, make_generator, next_token

TINY = Path(__file__).parent.parent / "configs" / "tiny" / "s1.yaml"
V = 8
EOS = V - 1


def _raw(**scores: float) -> torch.Tensor:
    raw = torch.zeros(1, V)
    for tok, s in scores.items():
        raw[0, int(tok[1:])] = s
    return raw


def test_eos_is_masked_for_the_first_steps_then_stops():
    raw = _raw(t7=9.0, t2=1.0)  # EOS far ahead
    history = torch.zeros(1, 0, dtype=torch.long)
    for step in range(MIN_NEW_TOKENS):
        tok, ended = next_token(raw, history, step, EOS, make_generator(0), top_k=1)
        assert (tok, ended) == (2, False)
    tok, ended = next_token(raw, history, MIN_NEW_TOKENS, EOS, make_generator(0), top_k=1)
    assert ended and tok == EOS


def test_argmax_of_penalised_logits_at_eos_ends_even_when_draw_is_not_eos():
    raw = _raw(t7=2.0, t3=1.9)  # top_k=2 keeps 3 and EOS; some seed draws 3
    history = torch.zeros(1, 0, dtype=torch.long)
    outcomes = {next_token(raw, history, 20, EOS, make_generator(s), top_k=2) for s in range(40)}
    assert (3, True) in outcomes and (EOS, True) in outcomes
    assert all(ended for _, ended in outcomes)


def test_repetition_penalty_covers_the_history():
    raw = _raw(t4=2.0, t5=1.8)
    seen = torch.tensor([[4]])
    assert next_token(raw, seen, 0, EOS, None, top_k=1, repetition_penalty=1.35)[0] == 5
    assert next_token(raw, seen, 0, EOS, None, top_k=1, repetition_penalty=1.0)[0] == 4


def test_top_p_comes_before_temperature():
    # top-p on untempered probabilities keeps only id 1 (p ≈ 0.88); a high temperature applied first would keep more.
    raw = _raw(t1=3.0, t2=1.0)
    history = torch.zeros(1, 0, dtype=torch.long)
    toks = {
        next_token(raw, history, 0, EOS, make_generator(s), top_k=0, top_p=0.5, temperature=50.0)[0] for s in range(30)
    }
    assert toks == {1}


class _Spy:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kw):
        self.calls += 1
        return next_token(*args, **kw)


def test_torch_path_chooses_every_token_by_the_shared_rule(monkeypatch):
    cfg = load_config(TINY).model
    torch.manual_seed(0)
    model = Text2SemanticDecoder(cfg).eval()
    spy = _Spy()
    monkeypatch.setattr(gpt, "next_token", spy)
    steps = list(
        model.decode_steps(
            torch.zeros(1, 5, dtype=torch.long),
            torch.zeros(1, cfg.bert_dim, 5),
            torch.ones(1, 3, dtype=torch.long),
            max_new_tokens=14,
            seed=1,
        )
    )
    assert spy.calls == len(steps) > 0


class _FakeSession:
    """Stands in for an onnxruntime session: fixed logits, empty caches."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw

    def run(self, _names, _feeds):
        return self.raw, np.zeros(1, np.float32), np.zeros(1, np.float32)


def test_onnx_path_chooses_every_token_by_the_shared_rule(monkeypatch):
    cfg = load_config(TINY).model
    o1 = runtime.OrtS1.__new__(runtime.OrtS1)
    o1.cfg, o1.eos = cfg, cfg.eos
    raw = np.zeros((1, cfg.vocab_size), np.float32)
    raw[0, 3], raw[0, cfg.eos] = 5.0, 9.0  # EOS wins as soon as it is allowed
    o1.prefill = o1.step = _FakeSession(raw)
    o1._pe = gpt.SinePositionalEmbedding(cfg.embedding_dim)
    spy = _Spy()
    monkeypatch.setattr(sampling, "next_token", spy)
    toks = list(
        o1.generate_iter(
            torch.zeros(1, 5, dtype=torch.long),
            torch.zeros(1, cfg.bert_dim, 5),
            torch.ones(1, 3, dtype=torch.long),
            top_k=1,
            repetition_penalty=1.0,
            max_new_tokens=40,
        )
    )
    assert toks == [3] * MIN_NEW_TOKENS
    assert spy.calls == MIN_NEW_TOKENS + 1


@pytest.mark.parametrize("seed", [0, 5])
def test_both_paths_agree_on_the_same_logits(seed):
    """Same raw logits per step, same seed → same tokens from the torch loop and the ONNX loop."""
    cfg = load_config(TINY).model
    torch.manual_seed(seed)
    model = Text2SemanticDecoder(cfg).eval()
    phones, bert, prompt = (
        torch.zeros(1, 5, dtype=torch.long),
        torch.zeros(1, cfg.bert_dim, 5),
        torch.ones(1, 3, dtype=torch.long),
    )
    kw = {"top_k": 5, "temperature": 0.9, "max_new_tokens": 30, "seed": seed}
    steps = list(model.decode_steps(phones, bert, prompt, **kw))
    logits = iter([s.logits[None].numpy() for s in steps])

    class Replay:
        def run(self, _names, _feeds):
            return next(logits), np.zeros(1, np.float32), np.zeros(1, np.float32)

    o1 = runtime.OrtS1.__new__(runtime.OrtS1)
    o1.cfg, o1.eos = cfg, cfg.eos
    o1.prefill = o1.step = Replay()
    o1._pe = gpt.SinePositionalEmbedding(cfg.embedding_dim)
    assert list(o1.generate_iter(phones, bert, prompt, **kw)) == [s.token for s in steps if not s.is_eos]
