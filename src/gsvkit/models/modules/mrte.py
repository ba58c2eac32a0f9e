"""MRTE (multi-reference timbre encoder): content frames attend to phones, plus the global style vector."""

from __future__ import annotations

import torch
from torch import nn

from gsvkit.models.modules.attention import MultiHeadAttention

__all__ = ["MRTE"]


class MRTE(nn.Module):
    """c_post(cross_attn(q=c_pre(ssl), kv=text_pre(text)) + c_pre(ssl) + ge).

    ssl_enc [B, C, Ty], text [B, C, Tx], ge [B, hidden, 1] broadcast over time -> [B, out, Ty].
    The cross-attention has no relative positions and masks with -1e4.
    """

    def __init__(
        self, content_enc_channels: int = 192, hidden_size: int = 512, out_channels: int = 192, n_heads: int = 4
    ) -> None:
        super().__init__()
        self.cross_attention = MultiHeadAttention(hidden_size, hidden_size, n_heads)
        self.c_pre = nn.Conv1d(content_enc_channels, hidden_size, 1)
        self.text_pre = nn.Conv1d(content_enc_channels, hidden_size, 1)
        self.c_post = nn.Conv1d(hidden_size, out_channels, 1)

    def forward(
        self,
        ssl_enc: torch.Tensor,
        ssl_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        ge: torch.Tensor | None,
    ) -> torch.Tensor:
        attn_mask = text_mask.unsqueeze(2) * ssl_mask.unsqueeze(-1)  # [B, 1, Ty, Tx]
        ssl_enc = self.c_pre(ssl_enc * ssl_mask)
        text_enc = self.text_pre(text * text_mask)
        x = self.cross_attention(ssl_enc * ssl_mask, text_enc * text_mask, attn_mask) + ssl_enc
        if ge is not None:
            x = x + ge
        return self.c_post(x * ssl_mask)
