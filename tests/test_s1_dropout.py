"""s1 regularisation as upstream trains: dropout 0.1 by default. On CPU, attention dropout runs in
`dropout_attention`, which never keeps the [B, H, T, S] attention weights for the backward pass (it recomputes
them, dropout mask included, per chunk of query rows), and the other dropouts keep bool masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import gsvkit.models.s1.attention as attention
from gsvkit.config import S1ModelConfig, official_config
from gsvkit.models.s1 import Text2SemanticDecoder
from gsvkit.models.s1.attention import SelfAttention, dropout_attention
from gsvkit.models.s1.dropout import Dropout


def _qkv(b=2, h=2, t=300, hd=8, grad=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, t, hd, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(3)]


def _padded_mask(b: int, t: int) -> torch.Tensor:
    """[B, 1, T, T] causal mask whose second item has its last 40 keys padded out."""
    mask = torch.ones(t, t, dtype=torch.bool).tril()[None, None].repeat(b, 1, 1, 1)
    mask[1:, ..., t - 40 :] = False
    mask[1:, ..., 0] = True  # every row keeps a key
    return mask


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass while `fn()` runs its forward pass."""
    storages: dict[int, int] = {}

    def pack(t):
        storages.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def _assert_same_grads(out, ref, inputs) -> None:
    go = torch.randn_like(out)
    grads, ref_grads = torch.autograd.grad(out, inputs, go), torch.autograd.grad(ref, inputs, go)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, g_ref, atol=1e-10)


def test_default_dropout_is_upstreams():
    assert S1ModelConfig().dropout == 0.1 and official_config("s1").model.dropout == 0.1
    cfg = S1ModelConfig(n_layer=2, embedding_dim=32, hidden_dim=32, head=2, linear_units=64)
    m = Text2SemanticDecoder(cfg)
    assert m.h.layers[0].self_attn.dropout == 0.1 and m.ar_text_position.dropout.p == 0.1
    assert m.h.layers[0].dropout1.p == 0.1 and m.ar_text_embedding.dropout.p == 0.0  # as upstream


def test_dropout_attention_equals_plain_attention_without_dropout(monkeypatch):
    b, t = 2, 300
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", b * 2 * t * 64)  # 64 query rows per chunk: 5 chunks
    q, k, v = _qkv(b=b, t=t)
    mask = _padded_mask(b, t)
    out = dropout_attention(q, k, v, mask, 0.0)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(out, ref, atol=1e-12)
    _assert_same_grads(out, ref, (q, k, v))


def test_backward_uses_the_forward_dropout_mask(monkeypatch):
    """Gradients equal those of an explicit reference that applies the same mask to the softmax weights."""
    b, h, t, p = 2, 2, 200, 0.3
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", b * h * t * 48)  # 48 rows per chunk: 5 chunks
    q, k, v = _qkv(b=b, h=h, t=t)
    mask = _padded_mask(b, t)
    # The dropout mask depends on the seed and the weights' shape only: with v = identity the output is the
    # dropped-out weight matrix itself, so its non-zero entries are the kept weights.
    torch.manual_seed(3)
    dropped = dropout_attention(q.detach(), k.detach(), torch.eye(t, dtype=q.dtype).expand(b, h, t, t), mask, p)
    keep = dropped != 0
    allowed = mask.expand(b, h, t, t)
    assert abs(keep[allowed].float().mean().item() - (1 - p)) < 0.01  # each weight kept with probability 1-p
    assert not keep[allowed].all()
    torch.manual_seed(3)
    out = dropout_attention(q, k, v, mask, p)
    weights = torch.softmax((q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~mask, float("-inf")), -1)
    ref = (weights * keep / (1 - p)) @ v
    assert torch.allclose(out, ref, atol=1e-12)
    _assert_same_grads(out, ref, (q, k, v))


def test_dropout_masks_differ_between_chunks_and_calls(monkeypatch):
    b, h, t = 1, 1, 256
    monkeypatch.setattr(attention, "CHUNK_ELEMENTS", t * 128)  # two chunks of 128 rows
    q, k, _ = _qkv(b=b, h=h, t=t, grad=False)
    eye = torch.eye(t, dtype=q.dtype)[None, None]
    a = dropout_attention(q, k, eye, None, 0.5) != 0
    assert not torch.equal(a[..., :128, :], a[..., 128:, :])  # each chunk draws its own mask
    assert not torch.equal(a, dropout_attention(q, k, eye, None, 0.5) != 0)  # and each call


def test_attention_layer_keeps_no_attention_matrix_for_backward():
    """One attention layer at p > 0 keeps O(B·H·T·hd) for the backward pass, not O(B·H·T·S)."""
    b, t, dim, heads = 2, 512, 32, 4  # hd 8: B·H·T·S is 64x B·H·T·hd
    layer = SelfAttention(dim, heads, dropout=0.1).train()
    x = torch.randn(b, t, dim, requires_grad=True)
    mask = _padded_mask(b, t)
    per_head = b * heads * t * (dim // heads) * 4  # bytes of one [B, H, T, hd] fp32 tensor
    full = b * heads * t * t * 4  # bytes of one layer's attention weights [B, H, T, S]
    saved = _saved_bytes(lambda: layer(x, mask).sum().backward())
    assert saved <= 8 * per_head < full / 4  # input, q/k/v, output, out_proj input, row log-sum-exps
    # The same measurement on torch's CPU kernel with dropout, which keeps the weights (three times over).
    layer.dropout = 0.0
    plain = _saved_bytes(lambda: F.scaled_dot_product_attention(
        *(torch.randn(b, heads, t, dim // heads, requires_grad=True) for _ in range(3)), attn_mask=mask,
        dropout_p=0.1).sum().backward())  # fmt: skip
    assert plain >= 3 * full


def _step_saved_bytes(dropout: float) -> int:
    cfg = S1ModelConfig(n_layer=2, embedding_dim=32, hidden_dim=32, head=4, linear_units=128, dropout=dropout)
    torch.manual_seed(0)
    model = Text2SemanticDecoder(cfg).train()
    b, tx, ts = 2, 100, 300
    args = (torch.randint(1, 100, (b, tx)), torch.tensor([tx, tx - 10]), torch.zeros(b, 1024, tx),
            torch.randint(0, 1024, (b, ts)), torch.tensor([ts, ts - 30]))  # fmt: skip
    return _saved_bytes(lambda: model(*args).loss.backward())


def test_dropout_adds_only_bool_masks_to_what_a_training_step_keeps():
    """A whole s1 step at dropout 0.1 keeps about what it keeps at 0: no attention matrices, no fp32 noise."""
    without, with_dropout = _step_saved_bytes(0.0), _step_saved_bytes(0.1)
    b, t, h = 2, 400, 4
    assert with_dropout < without + b * h * t * t * 4 / 4  # less than a quarter of one layer's weights more
    assert with_dropout < 1.2 * without


def test_dropout_keeps_a_bool_mask_and_uses_it_in_backward():
    drop = Dropout(0.25).train()
    x = torch.randn(100_000, dtype=torch.float64).abs().add_(0.1).requires_grad_(True)
    out: list[torch.Tensor] = []
    saved = _saved_bytes(lambda: out.append(drop(x)))
    assert saved <= x.numel()  # one byte per element (nn.Dropout keeps fp32 noise on the CPU)
    y = out[0]
    kept = y.detach() != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    assert torch.allclose(y.detach()[kept], x.detach()[kept] / 0.75)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, kept.to(x.dtype) / 0.75)
    assert drop.eval()(x) is x


def test_dropout_attention_takes_bf16_inputs_and_returns_bf16_grads():
    q, k, v = _qkv(t=200, dtype=torch.float32)
    mask = _padded_mask(2, 200)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    low = [x.detach().bfloat16().requires_grad_(True) for x in (q, k, v)]
    out = dropout_attention(*low, mask, 0.0)
    assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() < 0.03
    out.float().sum().backward()
    ref.sum().backward()
    for x, x_low in zip((q, k, v), low, strict=True):
        assert x_low.grad.dtype == torch.bfloat16 and (x_low.grad.float() - x.grad).abs().max() < 0.05
