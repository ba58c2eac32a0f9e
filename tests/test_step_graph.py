"""int4's layers on onnxruntime (`StepGraph`): the same function as the torch layers for steps, masked first passes
and padded batches, the KV cache extended in place (and followed when it grows), every pass of an int4 copy on it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from gsvkit.config import ConfigError, load_config  # noqa: E402
from gsvkit.models.s1 import KVCache, Text2SemanticDecoder  # noqa: E402
from gsvkit.models.s1 import step_graph as graph  # noqa: E402
from gsvkit.models.s1.gpt import batch_mask, pad_rows  # noqa: E402
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
    got = step.run(x, cache)[:, -1]
    assert got.shape == ref.shape == (1, model.cfg.vocab_size)
    assert 0 < _rel(got, ref) < 0.08  # 4-bit weights and int8 activation blocks; measured 0.028
    other = Text2SemanticDecoder(model.cfg).eval()  # different weights: far from it
    assert _rel(_graph(other).run(x, _prefilled(model, 7, 16))[:, -1], ref) > 0.5  # measured 1.85
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
        assert _rel(step.run(x, cache)[:, -1], _torch_step(model, x, ref_cache)) < 0.08, f"step {i}"
    assert cache.capacity >= 17 and cache.length == 17


def test_session_takes_torch_threads_when_built_and_then_holds_no_second_copy(model):
    threads = torch.get_num_threads()
    x = torch.randn(1, 1, model.cfg.hidden_dim, generator=torch.Generator().manual_seed(3))
    try:
        torch.set_num_threads(2)
        step = _graph(model)
        session = step.session()
        assert session.get_session_options().intra_op_num_threads == 2
        assert step._constants is None  # onnxruntime copied the weights into the session: ours are gone
        got_two = step.run(x, _prefilled(model, 7, 16))
        torch.set_num_threads(1)
        got_one = step.run(x, _prefilled(model, 7, 16))
        assert step.session() is session  # the one session, whatever torch's threads are now
        torch.testing.assert_close(got_one, got_two, rtol=1e-4, atol=1e-5)  # the torch prefill differs by threads
    finally:
        torch.set_num_threads(threads)


def test_a_graph_gets_a_session_per_share_and_a_call_takes_its_threads_one(model, monkeypatch):
    """With `also_make_sessions_for(1)` a graph built at 2 threads has a 2-thread and a 1-thread session; a thread
    on 1 torch thread decodes on the 1-thread one, and a cache moving between them mid-decode is bound again."""
    import threading

    from gsvkit.utils.cores import use_threads

    threads = torch.get_num_threads()
    monkeypatch.setattr(graph, "_EXTRA_SESSIONS", ())  # restored after the test
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(1, 1, model.cfg.hidden_dim, generator=g) for _ in range(4)]
    try:
        torch.set_num_threads(2)
        alone = _graph(model)
        graph.also_make_sessions_for(1)
        step = _graph(model)
        assert alone.session(1) is alone.session(2)  # made before: one session, whatever the count asked
        two, one = step.session(2), step.session(1)
        assert two is not one and step.session(8) is two  # the largest made for no more than asked
        intra = [s.get_session_options().intra_op_num_threads for s in (two, one)]
        assert intra == [2, 1]
        used: list[int] = []
        run_with_iobinding = type(two).run_with_iobinding

        def spy(session, io, *a):
            used.append(session.get_session_options().intra_op_num_threads)
            return run_with_iobinding(session, io, *a)

        monkeypatch.setattr(type(two), "run_with_iobinding", spy)
        ref_cache, cache = _prefilled(model, 7, 16), _prefilled(model, 7, 16)
        ref = [_torch_step(model, x, ref_cache) for x in xs]
        got: list[torch.Tensor] = []

        def steps(counts: list[int]) -> None:
            for n in counts:
                use_threads(n)  # this thread's count only
                got.append(step.run(xs[len(got)], cache)[:, -1])

        worker = threading.Thread(target=steps, args=([1, 1, 2, 1],))
        worker.start()
        worker.join()
        assert used == [1, 1, 2, 1]
        for i, (a, b) in enumerate(zip(got, ref, strict=True)):
            assert _rel(a, b) < 0.08, f"step {i}"
        assert cache.length == 11
    finally:
        torch.set_num_threads(threads)


def test_a_graph_built_in_a_one_thread_worker_still_gets_the_lone_jobs_session(model, monkeypatch):
    """As `gsv serve` sets it (the shared cores and 1): a model switch loads in a worker thread whose torch count is
    its last job's share, and the graph still gets the session a lone job runs on."""
    import threading

    from gsvkit.utils.cores import use_threads

    monkeypatch.setattr(graph, "_EXTRA_SESSIONS", ())
    graph.also_make_sessions_for(2, 1)
    made: list[StepGraph] = []

    def load() -> None:
        use_threads(1)
        made.append(_graph(model))

    worker = threading.Thread(target=load)
    worker.start()
    worker.join()
    assert sorted(made[0]._sessions) == [1, 2]


def test_session_counts_are_checked():
    with pytest.raises(ValueError, match=">= 1"):
        graph.also_make_sessions_for(0)


def test_masked_first_pass_of_a_padded_batch_is_the_layers_pass(model):
    step, (b, tx, tp) = _graph(model), (2, 9, 6)
    lens = torch.tensor([9, 5])  # row 1: 4 padded phones, masked as keys
    mask = batch_mask(lens, torch.full_like(lens, tp), tx, tp)  # [B, 1, S, S]: text both ways, audio causal
    x = torch.randn(b, tx + tp, model.cfg.hidden_dim, generator=torch.Generator().manual_seed(5))
    hd = model.cfg.hidden_dim // model.cfg.head
    ref_cache, cache = (KVCache(len(model.h.layers), b, model.cfg.head, hd, 32, x) for _ in range(2))
    with torch.inference_mode():
        ref = model.ar_predict_layer(model.h(x, mask, ref_cache))  # [B, S, V]
    got = step.run(x, cache, mask)
    assert got.shape == ref.shape and cache.length == tx + tp
    assert 0 < _rel(got, ref) < 0.08  # measured 0.027
    unmasked = step.run(x, KVCache(len(model.h.layers), b, model.cfg.head, hd, 32, x), torch.ones(1, dtype=torch.bool))
    assert _rel(unmasked, ref) > 0.1  # the mask is applied: without it the rows see other keys (measured 0.3)
    for layer in range(len(model.h.layers)):
        assert _rel(cache.v[layer][:, :, : tx + tp], ref_cache.v[layer][:, :, : tx + tp]) < 0.2
    with pytest.raises(ValueError, match="need a mask"):
        step.run(x, cache)


def test_int4_runs_every_pass_on_the_graph_and_keeps_no_torch_layers(model, monkeypatch):
    q = model.quantize_int4()
    assert isinstance(q.step_graph, StepGraph) and model.step_graph is None
    assert not any(p.dim() == 2 and p.shape[0] >= model.cfg.hidden_dim for p in q.h.parameters())
    with pytest.raises(ConfigError, match="onnxruntime"):
        q.h(torch.zeros(1, 1, model.cfg.hidden_dim))
    assert copy.deepcopy(q).step_graph is q.step_graph  # copies share the (immutable) graph
    calls: list[tuple[int, int]] = []
    real = StepGraph.run

    def spy(self, x, cache, mask=None):
        calls.append(tuple(x.shape[:2]))
        return real(self, x, cache, mask)

    monkeypatch.setattr(StepGraph, "run", spy)
    g = torch.Generator().manual_seed(4)
    phones = torch.randint(0, model.cfg.phone_vocab, (1, 12), generator=g)
    bert = torch.randn(1, model.cfg.bert_dim, 12, generator=g)
    prompt = torch.randint(0, model.eos, (1, 10), generator=g)
    steps = list(q.decode_steps(phones, bert, prompt, **GREEDY))
    assert calls == [(1, 22)] + [(1, 1)] * (len(steps) - 1)  # the first pass, then one call per step
    calls.clear()
    padded_phones, lens, padded_bert = pad_rows([phones[0], phones[0, :7]], [bert[0], bert[0, :, :7]])
    steps = list(q.decode_steps(padded_phones, padded_bert, prompt, lens, **GREEDY))
    assert calls[0] == (2, 22) and calls[1] == (2, 1) and len(calls) == max(s.index for s in steps) + 1
    calls.clear()
    assert q.logits(phones, bert, prompt).shape == (1, 11, model.cfg.vocab_size) and calls == [(1, 22)]
    off = model.quantize_int4(step_graph=False)
    assert off.step_graph is None
    calls.clear()
    list(off.decode_steps(phones, bert, prompt, **GREEDY))
    assert not calls


def test_int4_without_onnxruntime_names_the_extra(model, monkeypatch):
    monkeypatch.setattr(graph, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"gsvkit\[onnx\].*step_graph=False"):
        model.quantize_int4()
    assert model.quantize_int4(step_graph=False).step_graph is None


def test_8_bit_graph_is_far_closer_to_the_layers_than_4_bit(model):
    x = torch.randn(1, 1, model.cfg.hidden_dim, generator=torch.Generator().manual_seed(6))
    ref = _torch_step(model, x, _prefilled(model, 7, 16))
    errors = {}
    for bits in (4, 8):
        step = StepGraph.from_layers(model.h.layers, model.ar_predict_layer, model.cfg.head, 32, bits=bits)
        assert step.bits == bits
        errors[bits] = _rel(step.run(x, _prefilled(model, 7, 16))[:, -1], ref)
    assert 0 < errors[8] < errors[4] / 4  # measured 0.0025 against 0.028


def test_int8_runs_on_the_graph_with_onnxruntime_and_on_torch_layers_without(model, monkeypatch):
    q = model.quantize_int8()
    assert isinstance(q.step_graph, StepGraph) and (q.step_graph.bits, q.step_graph.block) == (8, 128)
    assert model.step_graph is None and not any(p.dim() == 2 for p in q.h.parameters())
    phones, bert, prompt = (torch.randint(0, model.cfg.phone_vocab, (1, 12)), torch.randn(1, model.cfg.bert_dim, 12),
                            torch.randint(0, model.eos, (1, 10)))  # fmt: skip
    with torch.no_grad():
        ref, got = model.logits(phones, bert, prompt), q.logits(phones, bert, prompt)
    assert 0 < _rel(got, ref) < 0.03  # measured 0.004
    off = model.quantize_int8(step_graph=False)
    assert off.step_graph is None and "quantized" in type(off.h.layers[0].linear1).__module__
    monkeypatch.setattr(graph, "available", lambda: False)
    assert model.quantize_int8().step_graph is None  # without onnxruntime: torch's int8 layers
    with pytest.raises(ConfigError, match=r"gsvkit\[onnx\]"):
        model.quantize_int8(step_graph=True)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k", [64, 80])  # 80: not a whole number of blocks, zero-padded
def test_block_quantize_is_onnxruntimes_quantiser(bits, k):
    import numpy as np
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    w = np.random.default_rng(0).standard_normal((k, 48)).astype(np.float32)
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False, bits=bits)
    expected = DefaultWeightOnlyQuantizer(config).qbits_block_quant(w)
    got = graph.block_quantize(w, 32, bits)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_converting_does_not_import_onnxruntimes_quantization_package():
    """The package costs ~48 MB of imports (sympy, onnx's reference evaluator) in every process that converts."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from gsvkit.config import load_config\n"
        "from gsvkit.models.s1 import Text2SemanticDecoder\n"
        f"m = Text2SemanticDecoder(load_config({str(CONFIGS / 'tiny' / 's1.yaml')!r}).model).eval()\n"
        "assert m.quantize_int8().step_graph is not None and m.quantize_int4().step_graph is not None\n"
        "print(sorted(n for n in sys.modules if n.startswith(('onnxruntime.quantization', 'sympy'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"
