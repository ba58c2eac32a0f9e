"""int4's and int8's transformer on onnxruntime: `StepGraph`, every layer and the output layer as one graph.

A decoding step at batch 1 pushes one position through every layer. In torch's eager mode that is about 30 small
ops per layer, each with its own dispatch, and torch's 4-bit CPU kernel converts activations to bf16 and unpacks
weights without VNNI. onnxruntime runs the same layers as one graph: its 4- or 8-bit product (`MatMulNBits`, the bias
fused in, activations quantised to int8 per block of `block` inputs so the products use int8 dot products) and its
attention over a key/value cache (`GroupQueryAttention`, not causal, with an additive mask) that reads and writes
`KVCache`'s own buffers in place (the cache's fp32 tensors are bound to the graph's past and present inputs, no
copy). LayerNorms and residual sums are fused by onnxruntime's graph optimiser. The codes, scales and zero
points come from onnxruntime's own block quantiser (`block_quantize`), one block of `block` inputs per
scale and zero point.

The same graph takes any number of rows and positions with any mask, so every pass of an int4 model runs on it:
the first pass over text and prompt (the prefix mask), decoding steps, batches of several rows (their padded text
keys masked) and teacher forcing. The graph ends with the output layer in fp32 (a plain `MatMul`), so a call
returns logits: no torch op with threads runs between two steps, and torch's idle threads leave the cores to the
graph's. What stays in torch: embeddings, the BERT projection and sampling.

The session is made with the graph, with the threads torch has then (`torch.get_num_threads()`): set threads
before converting the model. onnxruntime fixes a session's threads when it is made, so where jobs split the cores
between them (`gsv serve --max-jobs auto`) each graph also gets a session for each share a job may get
(`also_make_sessions_for`), and a call runs on the session for the calling thread's torch thread count.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from gsvkit.models.s1.attention import KVCache

OPSET = 18  # the ONNX opset of every graph gsvkit builds or exports (`gsvkit.inference.onnx.export` too)


_EXTRA_SESSIONS: tuple[int, ...] = ()  # see also_make_sessions_for


def also_make_sessions_for(*threads: int) -> None:
    """From now on every graph made also gets a session of each of `threads` intra-op threads, besides torch's
    count when it is made, and a call takes the session for the calling thread's torch count (`StepGraph.session`).
    For a process whose jobs split the cores between them: each session holds its own copy of the packed weights
    (about 80 MB for an official-size int8 s1)."""
    global _EXTRA_SESSIONS
    if any(t < 1 for t in threads):
        raise ValueError(f"thread counts must be >= 1 (got {threads})")
    _EXTRA_SESSIONS = tuple(sorted(set(threads)))


def available() -> bool:
    """Whether onnx and onnxruntime are installed (the `onnx` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def block_quantize(weight: np.ndarray, block: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weight [K, N] fp32 -> `MatMulNBits`'s codes [N, K/block, block*bits/8] uint8, scales [N, K/block] fp32 and
    zero points [N, ceil(K/block / (8/bits))] uint8 (asymmetric, one scale and zero point per `block` inputs; K is
    zero-padded to a whole block). The arithmetic is onnxruntime's own block quantiser: the C++ function its
    `DefaultWeightOnlyQuantizer.qbits_block_quant` calls, taken from onnxruntime's core module because importing the
    Python package around it (`onnxruntime.quantization`, with sympy and onnx's reference evaluator) keeps ~48 MB
    in every process that converts a model."""
    from onnxruntime.capi import _pybind_state as ort_c

    k, n = weight.shape
    per_byte = 8 // bits
    blocks = -(-k // block)
    padded = np.ascontiguousarray(weight, np.float32)  # no copy when it already is
    if blocks * block != k:
        padded = np.pad(padded, ((0, blocks * block - k), (0, 0)))
    codes = np.zeros((n, blocks, -(-block // per_byte)), np.uint8)
    zero_points = np.zeros((n, -(-blocks // per_byte)), np.uint8)
    scales = np.zeros((n, blocks), np.float32)
    quantize = ort_c.quantize_matmul_8bits if bits == 8 else ort_c.quantize_matmul_4bits
    quantize(codes, padded, scales, zero_points, block, n, k, False)  # False: asymmetric (zero points)
    return codes, scales, zero_points


def matmul_nbits(inputs: list[str], output: str, k: int, n: int, bits: int, block: int) -> Any:
    """The `MatMulNBits` node of x [.., K] @ W [K, N] from `block_quantize`'s codes, scales and zero points (then an
    optional bias) in `inputs`: activations quantised to int8 per block, so the products use int8 dot products
    (accuracy level 4). Every graph gsvkit quantises uses this one node."""
    from onnx import helper

    return helper.make_node("MatMulNBits", inputs, [output], name=output, domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=4)  # fmt: skip


def quantize_matmuls(model: Any, block: int, bits: int = 8) -> Any:
    """The ONNX model `model` (an `onnx.ModelProto`) with every `MatMul` whose second input is a 2-D fp32 weight
    [K, N] replaced by `matmul_nbits` over that weight's `block_quantize`d form (in place; returned). Other nodes,
    and weights that other nodes also read, stay as they are."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    nodes, dropped = [], set()
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT or readers[w.name] != 1:
            nodes.append(node)
            continue
        k, n = (int(d) for d in w.dims)
        codes, scales, zero_points = block_quantize(numpy_helper.to_array(w), block, bits)
        arrays = (codes, scales.reshape(-1), zero_points.reshape(-1))  # as `_GraphBuilder.linear` gives them
        names = [f"{w.name}.{part}" for part in ("q", "s", "z")]
        graph.initializer.extend(numpy_helper.from_array(a, nm) for a, nm in zip(arrays, names, strict=True))
        nodes.append(matmul_nbits([node.input[0], *names], node.output[0], k, n, bits, block))
        dropped.add(w.name)
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


class _GraphBuilder:
    """Nodes of the step graph, one layer at a time, with its constants kept as arrays outside the graph (each one a
    placeholder there, given to the session as an external initialiser: no serialised copy of the weights)."""

    def __init__(self, block: int, bits: int):
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.block, self.bits = block, bits

    def const(self, name: str, value: torch.Tensor | np.ndarray) -> str:
        from onnx import TensorProto, helper

        array = value.detach().float().numpy().copy() if isinstance(value, torch.Tensor) else value
        array = np.ascontiguousarray(array)  # its own memory: the torch layer may be converted afterwards
        placeholder = TensorProto(name=name, dims=array.shape, data_location=TensorProto.EXTERNAL)
        placeholder.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        for key, val in (("location", "external"), ("offset", "0"), ("length", str(array.nbytes))):
            entry = placeholder.external_data.add()
            entry.key, entry.value = key, val
        self.inits.append(placeholder)
        self.arrays[name] = array
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], domain: str = "", **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], domain=domain, **attrs))
        return outputs[0]

    def linear(self, name: str, x: str, weight: torch.Tensor, bias: torch.Tensor | None) -> str:
        """x [.., K] @ weight[N, K]^T + bias, with `bits`-bit weights (`matmul_nbits`)."""
        n, k = weight.shape
        w = np.ascontiguousarray(weight.detach().float().t().numpy())  # [K, N]
        packed, scales, zero_points = block_quantize(w, self.block, self.bits)  # [N, K/b, b*bits/8], [N, K/b], ..
        inputs = [x, self.const(f"{name}.q", packed), self.const(f"{name}.s", scales.reshape(-1))]
        inputs += [self.const(f"{name}.z", zero_points.reshape(-1)), ""]  # no g_idx
        if bias is not None:
            inputs.append(self.const(f"{name}.b", bias))
        self.nodes.append(matmul_nbits(inputs, f"{name}.y", k, n, self.bits, self.block))
        return f"{name}.y"


def build_step_graph(
    layers: Sequence[Any],  # TransformerLayer
    head: nn.Linear,
    heads: int,
    block: int,
    then: Callable[[nn.Module], None] | None = None,
    bits: int = 4,
) -> tuple[bytes, dict[str, np.ndarray]]:
    """The serialised graph of one decoding step through `layers` (`TransformerLayer`s with float weights), and
    its constants by name (the graph holds placeholders for them; `StepGraph` gives them to its session).
    `then(layer)` is called once a layer's weights have been read: a caller that converts the layers in place
    frees each float layer before the next one is quantised, so the float model and its quantised copy never coexist.

    Inputs: `x` [B, S, D] (the embedded positions after the cached ones), `seqlens_k` [B] int32 (cached + S - 1),
    `total_len` [] int32 (cached + S), `bias` [B, 1, S, cached + S] (0 where a position may attend, -inf where
    not), and per layer `past_k{i}`, `past_v{i}` [B, H, capacity, hd] fp32. Outputs: `logits` [B, S, V] (`head`,
    the output layer, in fp32) and `present_k{i}`, `present_v{i}` (bound to the past buffers, which each call
    extends in place).
    """
    from onnx import TensorProto, helper

    dim = int(layers[0].norm1.weight.shape[0])
    hd = dim // heads
    g = _GraphBuilder(block, bits)
    kv_shape: list[str | int | None] = ["rows", heads, "capacity", hd]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", "positions", dim]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["rows"]),
              helper.make_tensor_value_info("total_len", TensorProto.INT32, []),
              helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["rows", 1, "positions", "keys"])]  # fmt: skip
    outputs = []
    x = "x"
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        pk, pv = f"past_k{i}", f"past_v{i}"
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_shape) for n in (pk, pv)]
        present = (f"present_k{i}", f"present_v{i}")
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_shape) for n in present]
        # q's rows carry the softmax scale 1/sqrt(hd), so the attention runs at scale 1: onnxruntime then takes its
        # one-row product without packing the keys (about 20 us less per layer and step at 1 thread)
        qkv_w, qkv_b = _scaled_q(attn.in_proj_weight, attn.in_proj_bias, dim, hd)
        qkv = g.linear(f"l{i}.qkv", x, qkv_w, qkv_b)  # [B, S, 3D] packed q (scaled), k, v
        a = g.node("GroupQueryAttention", [qkv, "", "", pk, pv, "seqlens_k", "total_len", "", "", "", "bias"],
                   [f"l{i}.attn", *present], domain="com.microsoft", num_heads=heads, kv_num_heads=heads,
                   causal=0, scale=1.0)  # fmt: skip
        a = g.linear(f"l{i}.out", a, attn.out_proj.weight, attn.out_proj.bias)
        x = _add_norm(g, f"l{i}.n1", x, a, layer.norm1)
        f = g.node("Relu", [g.linear(f"l{i}.ffn1", x, layer.linear1.weight, layer.linear1.bias)], [f"l{i}.relu"])
        x = _add_norm(g, f"l{i}.n2", x, g.linear(f"l{i}.ffn2", f, layer.linear2.weight, layer.linear2.bias),
                      layer.norm2)  # fmt: skip
        if then is not None:
            then(layer)
    vocab = int(head.weight.shape[0])
    g.node("MatMul", [x, g.const("head.w", head.weight.t())], ["logits"])  # fp32, as the torch path's is not
    outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", "positions", vocab]))
    graph = helper.make_graph(g.nodes, "s1_step", inputs, outputs, initializer=g.inits)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString(), g.arrays


def _scaled_q(weight: torch.Tensor, bias: torch.Tensor, dim: int, hd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed q, k, v projection [3D, D] and bias [3D] with q's rows multiplied by 1/sqrt(hd) (new tensors)."""
    scale = torch.ones(3 * dim, 1, dtype=weight.dtype)
    scale[:dim] = hd**-0.5
    return weight.detach() * scale, bias.detach() * scale[:, 0]


def _add_norm(g: _GraphBuilder, name: str, x: str, y: str, norm: nn.LayerNorm) -> str:
    """LayerNorm(x + y) (post-norm residual)."""
    s = g.node("Add", [x, y], [f"{name}.sum"])
    return g.node("LayerNormalization", [s, g.const(f"{name}.w", norm.weight), g.const(f"{name}.b", norm.bias)],
                  [f"{name}.y"], axis=-1, epsilon=norm.eps)  # fmt: skip


class _Binding:
    """One cache's key/value buffers bound to one session (kept while the session and the buffers stay the same)."""

    def __init__(self, session: Any, cache: KVCache):
        import onnxruntime as ort

        self.key = (id(session), *_buffers(cache))
        self.io = io = session.io_binding()
        for i, (k, v) in enumerate(zip(cache.k, cache.v, strict=True)):
            for kind, t in (("k", k), ("v", v)):
                value = ort.OrtValue.ortvalue_from_numpy(t.numpy())  # shares the cache's memory
                io.bind_ortvalue_input(f"past_{kind}{i}", value)
                io.bind_ortvalue_output(f"present_{kind}{i}", value)


def _buffers(cache: KVCache) -> tuple[int, tuple[int, ...]]:
    """What a binding depends on: the first buffer's address and shape (growth and `keep` change them)."""
    return cache.k[0].data_ptr(), tuple(cache.k[0].shape)


class StepGraph:
    """Every layer and the output layer of an int8 or int4 s1 on onnxruntime, for any rows, positions and mask (see
    the module's doc)."""

    def __init__(self, model: bytes, constants: dict[str, np.ndarray], vocab: int, bits: int = 4, block: int = 32):
        self.model, self.vocab = model, vocab
        self.bits, self.block = bits, block  # the weights' format: `bits`-bit codes, one scale per `block` inputs
        self._constants: dict[str, np.ndarray] | None = constants
        self._sessions: dict[int, Any] = {}  # by intra-op threads
        self._lock = threading.Lock()
        self._bindings: weakref.WeakKeyDictionary[KVCache, _Binding] = weakref.WeakKeyDictionary()

    def __deepcopy__(self, memo: dict) -> StepGraph:
        return self  # immutable weights; sessions may be shared

    @classmethod
    def from_layers(
        cls,
        layers: Sequence[Any],
        head: nn.Linear,
        heads: int,
        block: int = 32,
        then: Callable[[nn.Module], None] | None = None,
        bits: int = 4,
    ) -> StepGraph:
        """The step through `layers` and the output layer `head` with `bits`-bit weights (4 or 8), one scale and zero
        point per `block` inputs, its session made now (`session`); `then` as in `build_step_graph`."""
        model, constants = build_step_graph(layers, head, heads, block, then, bits)
        graph = cls(model, constants, int(head.weight.shape[0]), bits, block)
        graph.session()
        return graph

    def session(self, threads: int | None = None) -> Any:
        """The onnxruntime session for `threads` intra-op threads (default: the calling thread's torch count): the
        one made for that count, else the largest made for fewer, else the smallest.

        The sessions are made on the first call, one with torch's thread count then (`torch.get_num_threads()`)
        and one per count given to `also_make_sessions_for`; onnxruntime copies the constants into each session,
        so they are dropped once the sessions exist, and later calls choose among these sessions whatever torch's
        thread count has become (gsvkit's commands set threads before loading models)."""
        with self._lock:
            if not self._sessions:
                assert self._constants is not None
                for count in sorted({torch.get_num_threads(), *_EXTRA_SESSIONS}):
                    self._sessions[count] = self._make_session(count)
                self._constants = None
            sessions = self._sessions
        want = torch.get_num_threads() if threads is None else threads
        fewer = [t for t in sessions if t <= want]
        return sessions[max(fewer) if fewer else min(sessions)]

    def _make_session(self, threads: int) -> Any:
        import onnxruntime as ort

        assert self._constants is not None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Graph threads spin between the step's ops (waking a sleeping thread for each of them costs more than the
        # op: 6.1-7.0 against 4.5-5.0 ms a step at 2 threads) and stop at the end of each run, so they leave the
        # cores to torch (sampling, s2) between steps.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        opts.log_severity_level = 3
        names = list(self._constants)
        opts.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(a) for a in self._constants.values()])
        return ort.InferenceSession(self.model, opts, providers=["CPUExecutionProvider"])

    def run(self, x: torch.Tensor, cache: KVCache, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, S, D] (embedded positions after the `cache.length` cached ones) → logits [B, S, V]; extends `cache`
        by S. `mask`: bool broadcastable to [B, 1, S, cache.length + S], True where a position may attend (as the
        torch layers take it), or None for one position that may attend to every key (a decoding step)."""
        import onnxruntime as ort

        b, t, _ = x.shape
        if mask is None and t > 1:
            raise ValueError("several positions need a mask (the graph's attention is not causal by itself)")
        cache.reserve(t)
        keys = cache.length + t
        session = self.session()
        bound = self._bindings.get(cache)
        if bound is None or bound.key != (id(session), *_buffers(cache)):
            bound = self._bindings[cache] = _Binding(session, cache)  # a new cache or session, or the buffers moved
        bias = np.zeros((b, 1, t, keys), np.float32)
        if mask is not None:
            allowed = mask.expand(b, 1, t, keys).cpu().numpy()
            bias[~allowed] = -np.inf
        logits = np.empty((b, t, self.vocab), np.float32)
        staged = {"x": np.ascontiguousarray(x.detach().float().numpy()), "bias": bias,
                  "seqlens_k": np.full(b, keys - 1, np.int32), "total_len": np.array(keys, np.int32)}  # fmt: skip
        for name, array in staged.items():
            bound.io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        bound.io.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(logits))
        session.run_with_iobinding(bound.io)
        cache.advance(t)
        return torch.from_numpy(logits)
