"""int4's decoding step on onnxruntime (`StepGraph`): the same function as the torch layers, the KV cache extended
in place (and followed when it grows), single rows on the graph and padded batches on torch."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from gsvkit.config import ConfigError, load_config  # noqa: E402
from gsvkit.models.s1 import KVCache, Text2SemanticDecoder  # noqa: E402
from gsvkit.models.s1 import step_graph as graph  # noqa: E402
from gsvkit.models.s1.gpt import pad_rows  # noqa: E402
from gsvkit.models.s1.step_graph import StepGraph  # noqa: E402

CONFIGS = Path(__file__).parent.parent / "configs"
GREEDY = dict(top_k=1, max_new_tokens=16, seed=0)
SENTINEL = 123.0


@pytest.fixture(scope="module")
def model() -> Text2SemanticDecoder:
    torch.manual_seed(0)
    return Text2SemanticDecoder(load_config(CONFIGS / "tiny" / "s1.yaml").model).eval()


def _graph(model: Text2SemanticDecoder) -> StepGraph:
    return StepGraph.from_layers(model.h.layers, model.ar_predict_layer, model.cfg.head, 32)


def _prefilled(model: Text2SemanticDecoder, length: int, capacity: int, seed: int = 0) -> KVCache:
    """A cache after a torch pass over `length` random positions, with `capacity` rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, length, model.cfg.hidden_dim, generator=g)
    cache = KVCache(len(model.h.layers), 1, model.cfg.head, model.cfg.hidden_dim // model.cfg.head, capacity, x)
    for buf in (*cache.k, *cache.v):
        buf.fill_(SENTINEL)  # the free rows: a step must leave all but its own alone
    with torch.inference_mode():
        model.h(x, None, cache)
    return cache


def _torch_step(model, x, cache) -> torch.Tensor:
    with torch.inference_mode():
        return model.ar_predict_layer(model.h(x, None, cache)[:, -1])  # [1, V]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_graph_step_is_the_layers_step_in_4_bits_and_extends_the_cache_in_place(model):
    step = _graph(model)
    ref_cache, cache = _prefilled(model, 7, 16), _prefilled(model, 7, 16)
    k_before = [k.clone() for k in cache.k]
    x = torch.randn(1, 1, model.cfg.hidden_dim, generator=torch.Generator().manual_seed(1))
    ref = _torch_step(model, x, ref_cache)
    got = step.run(x, cache)
    assert got.shape == ref.shape == (1, model.cfg.vocab_size)
    assert 0 < _rel(got, ref) < 0.08  # 4-bit weights and int8 activation blocks; measured 0.028
    other = Text2SemanticDecoder(model.cfg).eval()  # different weights: far from it
    assert _rel(_graph(other).run(x, _prefilled(model, 7, 16)), ref) > 0.5  # measured 1.85
    assert cache.length == ref_cache.length == 8
    for layer in range(len(model.h.layers)):
        for new, ref_kv in ((cache.k, ref_cache.k), (cache.v, ref_cache.v)):  # the step's key/value, from the graph
            assert 0 < _rel(new[layer][:, :, 7], ref_kv[layer][:, :, 7]) < 0.2  # measured 0.06-0.095
        assert torch.equal(cache.k[layer][:, :, :7], k_before[layer][:, :, :7])  # the past is read, not moved
        assert bool((cache.k[layer][:, :, 8:] == SENTINEL).all())  # nothing written beyond
        assert bool((cache.v[layer][:, :, 8:] == SENTINEL).all())


def test_graph_follows_the_cache_when_it_grows(model):
    step = _graph(model)
    ref_cache, cache = _prefilled(model, 5, 6), _prefilled(model, 5, 6)
    g = torch.Generator().manual_seed(2)
    for i in range(12):  # capacity 6 -> 12 -> 24: the buffers are replaced twice
        x = torch.randn(1, 1, model.cfg.hidden_dim, generator=g)
        assert _rel(step.run(x, cache), _torch_step(model, x, ref_cache)) < 0.08, f"step {i}"
    assert cache.capacity >= 17 and cache.length == 17


def test_session_takes_torch_threads_at_the_first_step_and_then_holds_no_second_copy(model):
    step, threads = _graph(model), torch.get_num_threads()
    x = torch.randn(1, 1, model.cfg.hidden_dim, generator=torch.Generator().manual_seed(3))
    try:
        torch.set_num_threads(2)
        got_two = step.run(x, _prefilled(model, 7, 16))
        session = step.session()
        assert session.get_session_options().intra_op_num_threads == 2
        assert step._constants is None  # onnxruntime copied the weights into the session: ours are gone
        torch.set_num_threads(1)
        got_one = step.run(x, _prefilled(model, 7, 16))
        assert step.session() is session  # the one session, whatever torch's threads are now
        torch.testing.assert_close(got_one, got_two, rtol=1e-4, atol=1e-5)  # the torch prefill differs by threads
    finally:
        torch.set_num_threads(threads)


def test_int4_decodes_single_rows_on_the_graph_and_padded_batches_on_torch(model, monkeypatch):
    q = model.quantize_int4()
    assert isinstance(q.step_graph, StepGraph) and model.step_graph is None
    assert copy.deepcopy(q).step_graph is q.step_graph  # copies share the (immutable) graph
    calls: list[int] = []
    real = StepGraph.run

    def spy(self, x, cache):
        calls.append(x.shape[0])
        return real(self, x, cache)

    monkeypatch.setattr(StepGraph, "run", spy)
    g = torch.Generator().manual_seed(4)
    phones = torch.randint(0, model.cfg.phone_vocab, (1, 12), generator=g)
    bert = torch.randn(1, model.cfg.bert_dim, 12, generator=g)
    prompt = torch.randint(0, model.eos, (1, 10), generator=g)
    steps = list(q.decode_steps(phones, bert, prompt, **GREEDY))
    assert len(calls) == len(steps) - 1 > 0  # every step after the first pass ran on the graph
    calls.clear()
    rows = [phones[0], phones[0, :7]]
    padded_phones, lens, padded_bert = pad_rows(rows, [bert[0], bert[0, :, :7]])
    steps = list(q.decode_steps(padded_phones, padded_bert, prompt, lens, **GREEDY))
    assert len(steps) > 2 and not calls  # two rows, one padded: the torch layers (int8) with the key mask
    assert "quantized" in type(q.h.layers[0].linear1).__module__
    off = model.quantize_int4(step_graph=False)
    assert off.step_graph is None
    list(off.decode_steps(phones, bert, prompt, **GREEDY))
    assert not calls


def test_int4_without_onnxruntime_names_the_extra(model, monkeypatch):
    monkeypatch.setattr(graph, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"gsvkit\[onnx\].*step_graph=False"):
        model.quantize_int4()
    assert model.quantize_int4(step_graph=False).step_graph is None
