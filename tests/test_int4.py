"""4-bit weight-only linear layers (`Int4Linear`) and the one-query attention of a decoding step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gsvkit.config import ConfigError, S1ModelConfig
from gsvkit.models.modules.int4 import WIDE_ROWS, Int4Linear, unpack_int4
from gsvkit.models.s1 import Text2SemanticDecoder
from gsvkit.models.s1.attention import one_query_attention


def _linear(n=48, k=64, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(k, n)


@pytest.mark.parametrize("group", [32, 64])
def test_weights_are_rounded_to_their_group_grid(group):
    lin = _linear()
    q = Int4Linear.from_linear(lin, group)
    got = unpack_int4(q)  # [N, K], what the kernel multiplies by
    w = lin.weight.detach().reshape(48, 64 // group, group)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    step = (hi - lo) / 15
    err = (got.reshape_as(w) - w).abs()
    # Round to nearest on a 16-level grid: at most half a step, plus bf16 storage of scale and offset.
    assert bool((err <= step / 2 + 0.01 * (hi - lo)).all())
    assert float(err.mean()) > 0  # it is 4-bit: not the float weights
    codes = ((got.reshape_as(w) - lo) / step).round()
    assert int(codes.min()) >= 0 and int(codes.max()) <= 15 and len(torch.unique(codes)) > 8


def test_output_is_the_product_with_the_rounded_weights():
    lin = _linear()
    q = Int4Linear.from_linear(lin)
    x = torch.randn(2, 3, 64)  # any leading shape
    y = q(x)
    assert y.shape == (2, 3, 48) and y.dtype == torch.float32
    exact = F.linear(x.bfloat16().float(), unpack_int4(q), lin.bias.detach())
    assert torch.allclose(y, exact, atol=0.02, rtol=0.01)  # bf16 activations and output rounding only
    assert float((y - lin(x).detach()).abs().max()) > 1e-3  # and not the float layer


def test_wide_layer_takes_many_rows_in_int8_and_few_in_4_bits():
    lin = _linear()
    narrow, wide = Int4Linear.from_linear(lin), Int4Linear.from_linear(lin, wide=True)
    assert narrow.wide is None and wide.wide is not None and "int8 from" in repr(wide)
    few, many = torch.randn(WIDE_ROWS - 1, 64), torch.randn(2, WIDE_ROWS // 2, 64)  # rows counted over any shape
    assert torch.equal(wide(few), narrow(few))  # below WIDE_ROWS: the 4-bit kernel, bit for bit
    got = wide(many)
    assert got.shape == (2, WIDE_ROWS // 2, 48) and torch.equal(got, wide.wide(many))  # from WIDE_ROWS: int8
    exact = lin(many).detach()
    # int8 per-channel weights are closer to the float layer than 4-bit groups: the copy is not the 4-bit product
    assert float((got - exact).abs().mean()) < 0.5 * float((narrow(many) - exact).abs().mean())


def test_shapes_the_kernel_cannot_take_are_refused():
    with pytest.raises(ValueError, match="multiple|% 16"):
        Int4Linear.from_linear(_linear(n=40))  # 40 outputs: not a multiple of 16
    with pytest.raises(ValueError, match="group size 48"):
        Int4Linear.from_linear(_linear(), group=48)
    cfg = S1ModelConfig(version="v2", vocab_size=65, embedding_dim=24, hidden_dim=24, head=2, linear_units=48,
                        n_layer=1, eos=64, bert_dim=1024)  # fmt: skip
    with pytest.raises(ConfigError, match="hidden_dim \\(24\\).*use int8"):
        Text2SemanticDecoder(cfg).with_precision("int4")


def test_int4_copy_uses_4_bit_layers_and_leaves_the_model_alone():
    cfg = S1ModelConfig(version="v2", vocab_size=65, embedding_dim=32, hidden_dim=32, head=2, linear_units=64,
                        n_layer=2, eos=64, bert_dim=1024)  # fmt: skip
    torch.manual_seed(0)
    model = Text2SemanticDecoder(cfg).eval()
    q = model.quantize_int4(step_graph=False)  # the torch 4-bit layers (int4's default decodes on onnxruntime)
    layer = q.h.layers[0]
    assert isinstance(layer.linear1, Int4Linear) and isinstance(layer.self_attn.qkv_quantized, Int4Linear)
    assert all(m.wide is not None for m in q.modules() if isinstance(m, Int4Linear))  # prompts' passes in int8
    assert "quantized" in type(q.ar_predict_layer).__module__  # the 65-row output layer stays int8
    assert type(model.h.layers[0].linear1) is nn.Linear  # the float model is unchanged
    assert isinstance(model.h.layers[0].self_attn.in_proj_weight, nn.Parameter)
    packed = sum(b.numel() * b.element_size() for n, b in q.h.named_buffers() if n.endswith("packed"))
    floats = sum(p.numel() * 4 for n, p in model.h.named_parameters() if "weight" in n and "norm" not in n)
    assert packed * 8 == floats  # 4 bits per weight instead of 32


@pytest.mark.parametrize("masked", [False, True])
def test_one_query_attention_equals_torch_attention(masked):
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 4, 1, 8, generator=g), torch.randn(2, 4, 9, 8, generator=g), torch.randn(2, 4, 9, 8)
    mask = None
    if masked:
        mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
        mask[1, ..., :3] = False  # row 1's first keys are padding
    got = one_query_attention(q, k, v, mask)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(got, want, atol=1e-6)
    if masked:
        assert not torch.allclose(got, F.scaled_dot_product_attention(q, k, v), atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decoding_steps_use_the_fused_kernel_in_fp32_and_two_products_in_bf16(dtype, monkeypatch):
    import gsvkit.models.s1.attention as attention

    calls = {"one_query": 0, "fused_one_row": 0}
    real_one, real_sdpa = attention.one_query_attention, F.scaled_dot_product_attention

    def one(q, k, v, mask):
        calls["one_query"] += 1
        return real_one(q, k, v, mask)

    def fused(q, k, v, attn_mask=None, dropout_p=0.0):
        calls["fused_one_row"] += q.shape[2] == 1
        return real_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)

    monkeypatch.setattr(attention, "one_query_attention", one)
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", fused)
    cfg = S1ModelConfig(version="v2", vocab_size=65, embedding_dim=32, hidden_dim=32, head=2, linear_units=64,
                        n_layer=2, eos=64, bert_dim=1024)  # fmt: skip
    torch.manual_seed(0)
    model = Text2SemanticDecoder(cfg).eval().to(dtype)
    steps = model.decode_steps(torch.randint(0, 50, (1, 5)), torch.zeros(1, 1024, 5, dtype=dtype), None,
                               max_new_tokens=4, top_k=1)  # fmt: skip
    assert len(list(steps)) >= 2
    one_row = calls["fused_one_row"] if dtype == torch.float32 else calls["one_query"]
    assert one_row >= 2 * cfg.n_layer  # every layer of every step after the first pass
    assert calls["one_query" if dtype == torch.float32 else "fused_one_row"] == 0
