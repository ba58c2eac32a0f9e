"""s1 regularisation as upstream trains: dropout 0.1 by default, and on CPU attention dropout runs in checkpointed
query chunks, so the full [B, H, T, S] attention weights are never kept for the backward pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gsvkit.config import S1ModelConfig, official_config
from gsvkit.models.s1 import Text2SemanticDecoder
from gsvkit.models.s1.attention import ATTENTION_CHUNK, chunked_dropout_attention


def _qkv(b=2, h=2, t=300, hd=8, grad=True):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, t, hd, generator=g, requires_grad=grad) for _ in range(3)]


def test_default_dropout_is_upstreams():
    assert S1ModelConfig().dropout == 0.1 and official_config("s1").model.dropout == 0.1
    cfg = S1ModelConfig(n_layer=2, embedding_dim=32, hidden_dim=32, head=2, linear_units=64)
    m = Text2SemanticDecoder(cfg)
    assert m.h.layers[0].self_attn.dropout == 0.1 and m.ar_text_position.dropout.p == 0.1
    assert m.h.layers[0].dropout1.p == 0.1 and m.ar_text_embedding.dropout.p == 0.0  # as upstream


def test_chunked_attention_equals_plain_attention_without_dropout():
    q, k, v = _qkv()
    mask = torch.ones(300, 300, dtype=torch.bool).tril()
    a = chunked_dropout_attention(q, k, v, mask, 0.0)
    b = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(a, b, atol=1e-6)


def test_backward_sees_the_forward_dropout_mask():
    # With v = identity the output *is* the dropped-out attention matrix A'; d sum(out) / dv = A'^T 1.
    t = 2 * ATTENTION_CHUNK + 7
    q, k, _ = _qkv(b=1, h=1, t=t, hd=t, grad=False)
    v = torch.eye(t)[None, None].requires_grad_(True)
    torch.manual_seed(1)
    out = chunked_dropout_attention(q, k, v, torch.ones(t, t, dtype=torch.bool).tril(), 0.5)
    assert (out == 0).float().mean() > 0.2  # dropout acted
    out.sum().backward()
    col_sums = out.detach().sum(dim=-2)  # [1, 1, S]
    assert torch.allclose(v.grad, col_sums[..., :, None].expand_as(v.grad), atol=1e-5)


def _largest_saved_4d(model, args) -> int:
    """Elements of the largest per-head tensor ([B, H, T, *]) autograd keeps for the backward pass of one step."""
    largest = {"n": 0}

    def pack(t):
        if t.dim() == 4 and t.shape[1] == model.cfg.head:
            largest["n"] = max(largest["n"], t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(*args).loss.backward()
    return largest["n"]


def test_cpu_dropout_attention_keeps_no_full_attention_matrix(monkeypatch):
    import gsvkit.models.s1.attention as attention

    cfg = S1ModelConfig(n_layer=2, embedding_dim=32, hidden_dim=32, head=4, linear_units=64, dropout=0.1)
    model = Text2SemanticDecoder(cfg).train()
    b, tx, ts = 2, 100, 300
    args = (torch.randint(1, 100, (b, tx)), torch.full((b,), tx), torch.zeros(b, 1024, tx),
            torch.randint(0, 1024, (b, ts)), torch.full((b,), ts))
    full = b * cfg.head * (tx + ts) ** 2  # one layer's attention weights [B, H, T, T]
    monkeypatch.setattr(attention, "FULL_ATTENTION_MAX", full // 2)  # this size counts as large (official sizes are)
    assert _largest_saved_4d(model, args) < full / 10  # only q/k/v-sized inputs of the chunks are stored
    # The plain kernel on CPU, for comparison: it stores the whole weight matrix (and its dropout mask).
    monkeypatch.setattr(attention, "chunked_dropout_attention",
                        lambda q, k, v, m, p: F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=p))
    assert _largest_saved_4d(model, args) >= full


def test_small_attention_with_dropout_uses_torchs_kernel(monkeypatch):
    """Below FULL_ATTENTION_MAX weights per layer the chunks' overhead is not worth it: torch's kernel runs."""
    import gsvkit.models.s1.attention as attention

    def refuse(*a):
        raise AssertionError("chunked attention used for a small attention matrix")

    monkeypatch.setattr(attention, "chunked_dropout_attention", refuse)
    cfg = S1ModelConfig(n_layer=2, embedding_dim=32, hidden_dim=32, head=2, linear_units=64, dropout=0.1)
    model = Text2SemanticDecoder(cfg).train()
    b, tx, ts = 2, 20, 30
    args = (torch.randint(1, 100, (b, tx)), torch.full((b,), tx), torch.zeros(b, 1024, tx),
            torch.randint(0, 1024, (b, ts)), torch.full((b,), ts))
    assert b * cfg.head * (tx + ts) ** 2 <= attention.FULL_ATTENTION_MAX
    model(*args).loss.backward()
    assert attention.attention_is_large(torch.zeros(1, 16, 800, 32), torch.zeros(1, 16, 800, 32))  # official, 1 item
