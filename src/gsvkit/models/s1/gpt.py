"""GPT-SoVITS's s1 model: `Text2SemanticDecoder`, a decoder-only transformer from phones (+BERT) to semantic codes.

The sequence fed to the transformer is `[text ; audio]`:

- text  = `ar_text_embedding(phones) + bert_proj(bert)` plus `alpha_text * pe[0:Tx]`,
- audio = `ar_audio_embedding(codes)` plus `alpha_audio * pe[0:Ty]` (audio positions restart at 0).

Text attends to text only (bidirectionally); audio attends to all text and to earlier audio (causally). The stack is
post-norm (`x = LN(x + attn(x)); x = LN(x + W2 relu(W1 x))`). There is no BOS: the hidden state at the last text
position predicts the first code, and the hidden state at audio position j predicts code j+1; EOS ends the sequence.

Parameter names equal upstream's (`h.layers.0.self_attn.in_proj_weight`, `ar_text_position.alpha`, ...) without
the Lightning `model.` prefix, so official weights load key for key.

Inference uses a per-layer key/value cache, preallocated and grown by doubling: one new token per step reads every
weight once (fp32 decoding at batch 1 is bound by memory bandwidth), so several texts after the same prompt decode
together for little more than one (`generate_batch`; `decode_steps` takes B rows of different phone lengths).
`with_precision("bf16" | "int8" | "int4")` gives faster, approximate variants of the same model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gsvkit.config import ConfigError, S1ModelConfig
from gsvkit.errors import CheckpointError
from gsvkit.models.modules.int8 import int8_linear
from gsvkit.models.s1.attention import KVCache, SelfAttention
from gsvkit.models.s1.dropout import Dropout
from gsvkit.models.s1.sampling import MIN_NEW_TOKENS as MIN_NEW_TOKENS
from gsvkit.models.s1.sampling import Sampling, next_token
from gsvkit.models.s1.step_graph import StepGraph

IGNORE_INDEX = -100
PRECISIONS = ("auto", "fp32", "bf16", "int8", "int4")  # s1 weights for inference; `resolve_precision` maps auto
INT4_GROUP = 32  # inputs per 4-bit scale (`quantize_int4`)
# Inputs per 8-bit scale on onnxruntime (`quantize_int8`): at 128 whole generations ran 0.86x int4's speed at 32
# (2 threads, `benchmarks/models.py --alternate 3`), and greedy tokens stay with fp32's far longer than int4's
# (`benchmarks/vs_upstream.py`; figures in the README's Limits).
INT8_BLOCK = 128


# ------------------------------------------------------------------------------------------------ building blocks
class TokenEmbedding(nn.Module):
    """Lookup table (`word_embeddings`) followed by dropout."""

    def __init__(self, vocab_size: int, dim: int, dropout: float = 0.0):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.dropout = Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, D]
        return self.dropout(self.word_embeddings(ids))


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """`PRECISIONS` -> the format s1 runs in. "auto" is "int8" on a CPU: there it makes 5-6x fp32's tokens per second
    (onnxruntime's graph; torch's int8 layers, about 3x, without the `onnx` extra), and the mel distance of its
    audio to fp32's is a tenth (a quarter on torch's layers) of the distance between two sampling seeds of fp32
    (the README's *Limits*; the bounds: `tests/test_precision.py`).
    On a GPU "auto" is fp32 (int8 and int4 are CPU formats here). Any other precision is itself."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "int8" if torch.device(device).type == "cpu" else "fp32"
    return precision


class SinePositionalEmbedding(nn.Module):
    """Adds `alpha * pe[offset : offset+T]` (transformer sine table, learnable scalar alpha), then dropout.

    The table is not a parameter or buffer (upstream stores none), so it is rebuilt on demand per device/dtype.
    """

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.ones(1))
        self.dropout = Dropout(dropout)
        self._table: torch.Tensor | None = None

    def table(self, length: int, like: torch.Tensor) -> torch.Tensor:
        """Rows [0, length) of the sine table, [length, D], on `like`'s device and dtype."""
        t = self._table
        if t is None or t.shape[0] < length or t.device != like.device or t.dtype != like.dtype:
            n = max(length, 4000 if t is None else 2 * t.shape[0])
            # fp32 maths as upstream, cast once: pe[p, 2i] = sin(p * w_i), pe[p, 2i+1] = cos(p * w_i)
            position = torch.arange(n, dtype=torch.float32).unsqueeze(1)
            freq = torch.exp(torch.arange(0, self.dim, 2, dtype=torch.float32) * -(math.log(10000.0) / self.dim))
            pe = torch.zeros(n, self.dim)
            pe[:, 0::2] = torch.sin(position * freq)
            pe[:, 1::2] = torch.cos(position * freq)
            self._table = t = pe.to(device=like.device, dtype=like.dtype)
        return t[:length]

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:  # [B, T, D]
        pe = self.table(offset + x.shape[1], x)[offset:]  # [T, D]
        return self.dropout(x + self.alpha * pe)


class TransformerLayer(nn.Module):
    """Post-norm encoder layer: LN(x + attn(x)), then LN(x + FFN(x)) with a ReLU FFN; LayerNorm eps 1e-5."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.dropout = Dropout(dropout)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:  # [B, T, D]
        x = self.norm1(x + self.dropout1(self.self_attn(x, attn_mask, cache, layer)))
        # relu(dropout(h)) == dropout(relu(h)) (the kept scale is positive); in this order relu's saved output is
        # linear2's saved input, so the FFN dropout adds only its bool mask to what the backward pass keeps.
        return self.norm2(x + self.dropout2(self.linear2(F.relu(self.dropout(self.linear1(x))))))


class Transformer(nn.Module):
    """The layer stack (`h.layers.N`), with optional stochastic depth while training.

    `layer_drop` is the skip probability of the deepest layer; layer i (0-based) of L is skipped with probability
    `layer_drop * (i + 1) / L` (the linear rule of stochastic depth). Skipping is per batch and only in training.
    """

    def __init__(
        self, n_layers: int, dim: int, heads: int, ffn_dim: int, dropout: float = 0.0, layer_drop: float = 0.0
    ):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, ffn_dim, dropout) for _ in range(n_layers))
        self.layer_drop = layer_drop

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        n = len(self.layers)
        drop = self.layer_drop if (self.training and cache is None) else 0.0
        for i, layer in enumerate(self.layers):
            # A skipped post-norm block is the identity, so the residual stream passes through untouched.
            if drop > 0.0 and float(torch.rand(())) < drop * (i + 1) / n:
                continue
            x = layer(x, attn_mask, cache, i)
        if cache is not None:
            cache.advance(x.shape[1])
        return x


# ------------------------------------------------------------------------------------------------------- outputs
@dataclass
class DecodeStep:
    """One decoding step of one row: the drawn `token`, the raw `ar_predict_layer` logits [V] (before EOS masking
    and penalty) and whether the step ended the row's sequence (`is_eos`: then `token` is not part of the output)."""

    index: int
    token: int
    logits: torch.Tensor
    is_eos: bool
    row: int = 0  # the input row, when several decode together


@dataclass
class S1TrainOutput:
    """Training forward result.

    - `loss`: summed cross-entropy over every target (codes then one EOS per item; padding ignored), as upstream.
    - `top3_acc`: top-3 accuracy over the code targets (EOS and padding excluded, as upstream's metric).
    - `loss_mean`: `loss / n_targets`, for logging.
    - `item_loss`: [B] summed loss per item.

    Unpacks as `(loss, top3_acc)`: `loss, acc = model(...)`.
    """

    loss: torch.Tensor
    top3_acc: torch.Tensor
    loss_mean: torch.Tensor
    item_loss: torch.Tensor
    n_targets: torch.Tensor

    def __iter__(self):
        return iter((self.loss, self.top3_acc))


# ------------------------------------------------------------------------------------------------------- masks
def prefix_mask(text_len: int, audio_len: int, device: torch.device) -> torch.Tensor:
    """[S, S] bool (True = may attend), S = text_len + audio_len: text↔text bidirectional, audio → text + past audio."""
    s = text_len + audio_len
    mask = torch.ones(s, s, dtype=torch.bool, device=device)
    mask[:text_len, text_len:] = False  # text never sees audio
    mask[text_len:, text_len:] = torch.ones(audio_len, audio_len, dtype=torch.bool, device=device).tril()
    return mask


def batch_mask(text_lens: torch.Tensor, audio_lens: torch.Tensor, text_len: int, audio_len: int) -> torch.Tensor:
    """[B, 1, S, S] bool: `prefix_mask` with each item's padded keys (text and audio) masked out.

    Padded query rows still see their item's real keys, so no row is empty (no NaN) and real rows are exact.
    """
    device = text_lens.device
    valid_text = torch.arange(text_len, device=device)[None] < text_lens[:, None]  # [B, Tx]
    valid_audio = torch.arange(audio_len, device=device)[None] < audio_lens[:, None]  # [B, Ty]
    key_valid = torch.cat([valid_text, valid_audio], dim=1)  # [B, S]
    return prefix_mask(text_len, audio_len, device)[None, None] & key_valid[:, None, None, :]


# --------------------------------------------------------------------------------------------------------- model
class Text2SemanticDecoder(nn.Module):
    """GPT-SoVITS s1: phones + BERT features (+ prompt codes) → semantic codes. See the module docstring."""

    step_graph: StepGraph | None = None  # int8's or int4's layers on onnxruntime (`quantize_int8`, `quantize_int4`)

    def __init__(self, cfg: S1ModelConfig, layer_drop: float | None = None):
        super().__init__()
        if cfg.embedding_dim != cfg.hidden_dim:
            raise ConfigError(f"s1 needs embedding_dim == hidden_dim (got {cfg.embedding_dim} and {cfg.hidden_dim})")
        if cfg.eos != cfg.vocab_size - 1:
            raise ConfigError(f"s1 needs eos == vocab_size - 1 (got eos={cfg.eos}, vocab_size={cfg.vocab_size})")
        self.cfg = cfg
        self.eos = cfg.eos
        d = cfg.embedding_dim
        # Upstream hard-codes 0.1 for the positional and transformer (attention, FFN, residual) dropouts, which
        # are cfg.dropout here (default 0.1); its token-embedding dropout is its config's dropout, 0 in every
        # official config, so none here.
        self.bert_proj = nn.Linear(cfg.bert_dim, d)
        self.ar_text_embedding = TokenEmbedding(cfg.phone_vocab, d)
        self.ar_text_position = SinePositionalEmbedding(d, cfg.dropout)
        self.ar_audio_embedding = TokenEmbedding(cfg.vocab_size, d)
        self.ar_audio_position = SinePositionalEmbedding(d, cfg.dropout)
        if layer_drop is None:
            layer_drop = float(getattr(cfg, "layer_drop", 0.0) or 0.0)
        self.h = Transformer(cfg.n_layer, cfg.hidden_dim, cfg.head, cfg.linear_units, cfg.dropout, layer_drop)
        self.ar_predict_layer = nn.Linear(cfg.hidden_dim, cfg.vocab_size, bias=False)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_upstream_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], version: str = "v2", config: S1ModelConfig | None = None
    ) -> Text2SemanticDecoder:
        """Build an eval-mode fp32 model from upstream-named weights (keys with or without Lightning's `model.`).

        `config` defaults to the official architecture of `version` ("v1": 512 phone rows, "v2": 732). Raises
        CheckpointError naming missing, unexpected or mis-shaped keys.
        """
        if config is None:
            if version not in ("v1", "v2"):
                raise CheckpointError(f"s1 weights: unsupported model version {version!r} (expected 'v1' or 'v2')")
            config = S1ModelConfig(version=version)
        sd = {(k[len("model.") :] if k.startswith("model.") else k): v for k, v in state_dict.items()}
        with torch.device("meta"):  # shapes only: no time spent initialising weights that are overwritten
            model = cls(config)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                "s1 weights do not match the GPT architecture: "
                + "; ".join(
                    part
                    for part in (
                        _list_keys("missing", missing),
                        _list_keys("unexpected", unexpected),
                    )
                    if part
                )
                + ". Is this an s1 (GPT) file of a supported version?"
            )
        bad = [
            f"{k}: file {tuple(sd[k].shape)} vs model {tuple(t.shape)}"
            for k, t in expected.items()
            if tuple(sd[k].shape) != tuple(t.shape)
        ]
        if bad:
            hint = ""
            rows = sd["ar_text_embedding.word_embeddings.weight"].shape[0]
            if rows != config.phone_vocab:
                hint = f" (the phone table has {rows} rows: v1 files have 512, v2 files 732 — check `version`)"
            raise CheckpointError("s1 weights have wrong shapes: " + "; ".join(bad[:5]) + hint)
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
        model = model.to_empty(device="cpu")
        model.load_state_dict(sd, strict=True)
        return model.eval()

    # ------------------------------------------------------------------------------------------ pieces
    @property
    def _anchor(self) -> torch.Tensor:
        """A parameter giving the model's device and dtype (embeddings are never quantised)."""
        return self.ar_audio_embedding.word_embeddings.weight

    def _new_cache(self, rows: int, capacity: int, like: torch.Tensor) -> KVCache:
        """An empty KV cache for every layer: `rows` sequences, room for `capacity` positions (it grows past them)."""
        heads = self.cfg.head
        return KVCache(self.cfg.n_layer, rows, heads, self.cfg.hidden_dim // heads, capacity, like)

    def embed_text(self, phones: torch.Tensor, bert: torch.Tensor) -> torch.Tensor:
        """[B, Tx] phone ids + [B, bert_dim, Tx] → [B, Tx, D] (embedding + BERT projection + positions)."""
        x = self.ar_text_embedding(phones) + self.bert_proj(bert.transpose(1, 2).to(self._anchor.dtype))
        return self.ar_text_position(x)

    def embed_audio(self, codes: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """[B, T] codes at audio positions [offset, offset+T) → [B, T, D]."""
        return self.ar_audio_position(self.ar_audio_embedding(codes), offset)

    def _teacher_forced_hidden(
        self,
        phones: torch.Tensor,
        phone_lens: torch.Tensor,
        bert: torch.Tensor,
        semantic: torch.Tensor,
        semantic_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Hidden states at the Ts+1 predicting positions of each item: its last real phone, then every code.

        Returns [B, Ts+1, D]; row j predicts code j (row Ts_b predicts EOS). Items are independent of padding.
        """
        b, tx = phones.shape
        ts = semantic.shape[1]
        audio_valid = torch.arange(ts, device=semantic.device)[None] < semantic_lens[:, None]  # [B, Ts]
        codes = semantic.masked_fill(~audio_valid, 0)  # padding may hold any id; its keys are masked anyway
        xy = torch.cat([self.embed_text(phones, bert), self.embed_audio(codes)], dim=1)  # [B, Tx+Ts, D]
        mask = batch_mask(phone_lens, semantic_lens, tx, ts)
        hidden = self.h(xy, mask)  # [B, Tx+Ts, D]
        last_text = hidden[torch.arange(b, device=hidden.device), phone_lens.long() - 1]  # [B, D]
        return torch.cat([last_text[:, None], hidden[:, tx:]], dim=1)

    # ------------------------------------------------------------------------------------------ training
    def forward(
        self,
        phones: torch.Tensor,  # [B, Tx] long
        phone_lens: torch.Tensor,  # [B]
        bert: torch.Tensor,  # [B, bert_dim, Tx]
        semantic: torch.Tensor,  # [B, Ts] long
        semantic_lens: torch.Tensor,  # [B]
    ) -> S1TrainOutput:
        """Teacher-forced loss: targets are each item's codes followed by EOS; padding positions are ignored."""
        logits = self.ar_predict_layer(self._teacher_forced_hidden(phones, phone_lens, bert, semantic, semantic_lens))
        b, ts = semantic.shape
        pos = torch.arange(ts + 1, device=semantic.device)[None]  # [1, Ts+1]
        lens = semantic_lens[:, None]
        targets = torch.cat([semantic, semantic.new_zeros(b, 1)], dim=1).long()  # [B, Ts+1]
        targets = torch.where(pos < lens, targets, torch.full_like(targets, self.eos))
        targets = torch.where(pos <= lens, targets, torch.full_like(targets, IGNORE_INDEX))
        ce = F.cross_entropy(
            logits.transpose(1, 2).float(), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )  # [B, Ts+1]
        item_loss = ce.sum(dim=1)
        loss = item_loss.sum()
        n_targets = (targets != IGNORE_INDEX).sum()
        with torch.no_grad():
            scored = (targets != IGNORE_INDEX) & (targets != self.eos)
            top3 = logits.topk(min(3, logits.shape[-1]), dim=-1).indices  # [B, Ts+1, 3]
            hit = (top3 == targets[..., None]).any(dim=-1) & scored
            acc = hit.sum().float() / scored.sum().clamp(min=1).float()
        return S1TrainOutput(loss, acc, loss / n_targets.clamp(min=1), item_loss, n_targets)

    def logits(self, phones: torch.Tensor, bert: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [1, Ts+1, V] from the last phone position onward (upstream's `tf_logits`)."""
        if self.step_graph is not None:  # int8/int4: one pass of the graph over text and codes (no gradient)
            tx, ts = phones.shape[1], semantic.shape[1]
            with torch.inference_mode():
                x = torch.cat([self.embed_text(phones, bert), self.embed_audio(semantic)], dim=1)  # [1, Tx+Ts, D]
                cache = self._new_cache(1, tx + ts, x)
                return self.step_graph.run(x, cache, prefix_mask(tx, ts, x.device))[:, tx - 1 :]
        device = phones.device
        phone_lens = torch.tensor([phones.shape[1]], device=device)
        semantic_lens = torch.tensor([semantic.shape[1]], device=device)
        return self.ar_predict_layer(self._teacher_forced_hidden(phones, phone_lens, bert, semantic, semantic_lens))

    # ------------------------------------------------------------------------------------------ inference
    @torch.inference_mode()
    def decode_steps(
        self,
        phones: torch.Tensor,  # [B, Tx] long: each row's phones, then padding
        bert: torch.Tensor,  # [B, bert_dim, Tx]
        prompt: torch.Tensor | None = None,  # [1, Tp] codes every row continues
        phone_lens: torch.Tensor | None = None,  # [B] real phones per row (None: Tx in every row)
        **sampling: Any,
    ) -> Iterator[DecodeStep]:
        """Every decoding step in order, each row's final EOS step included (`is_eos=True`); see `generate`.

        One token per row per step through the KV cache. B rows decode together: a step yields one `DecodeStep`
        per row still running, in row order (`row` names it). Row b's sequence is `[its phone_lens[b] phones ;
        padding ; prompt ; its tokens]`: the padded text keys are masked in the prefill and in every step, and the
        text and audio positions are each row's own (text from 0, audio from 0 at the prompt), so a row decodes
        as it would alone (up to float rounding). A row leaves the batch when it ends (its cache rows are
        dropped). Upstream's rules: EOS is out of reach for the first 11 steps; the repetition penalty covers
        the prompt and every generated token of the row; a row ends when the sampled token or the argmax of the
        penalised logits is EOS, or after `max_new_tokens` tokens. Rows draw from one generator in row order.
        `sampling`: the fields of `Sampling` (top_k, top_p, temperature, repetition_penalty, max_new_tokens,
        seed, generator).
        """
        rule = Sampling(**sampling)
        max_new_tokens = rule.max_new_tokens
        if phones.dim() != 2 or phones.shape[0] < 1:
            raise ValueError(f"phones must be [B, Tx], got {tuple(phones.shape)}")
        b, tx = phones.shape
        if bert.shape != (b, self.cfg.bert_dim, tx):
            raise ValueError(f"bert must be [{b}, {self.cfg.bert_dim}, {tx}], got {tuple(bert.shape)}")
        if prompt is not None and (prompt.dim() != 2 or prompt.shape[0] != 1):
            raise ValueError(f"prompt must be [1, Tp] or None, got {tuple(prompt.shape)}")
        lens = torch.full((b,), tx) if phone_lens is None else phone_lens.long().cpu()
        if lens.shape != (b,) or int(lens.min()) < 1 or int(lens.max()) > tx:
            raise ValueError(f"phone_lens must be [{b}] lengths in 1..{tx}, got {lens.tolist()}")
        if max_new_tokens <= 0:
            return
        device = self._anchor.device
        gen = rule.make_generator(device)
        phones, bert, lens = phones.to(device), bert.to(device), lens.to(device)
        tp = 0 if prompt is None else prompt.shape[1]

        x = self.embed_text(phones, bert)  # [B, Tx, D]
        if tp:
            prompt = prompt.to(device).long()
            x = torch.cat([x, self.embed_audio(prompt).expand(b, -1, -1)], dim=1)  # [B, Tx+Tp, D]
        cache = self._new_cache(b, tx + tp + min(max_new_tokens, 1024), x)
        keys_ok = torch.ones(b, tx + tp + max_new_tokens, dtype=torch.bool, device=device)  # [B, S_max]
        keys_ok[:, :tx] = torch.arange(tx, device=device)[None] < lens[:, None]  # padded phones are never read
        padded = tx * b > int(lens.sum())
        mask = batch_mask(lens, torch.full_like(lens, tp), tx, tp) if padded else prefix_mask(tx, tp, device)
        last = lens - 1 if tp == 0 else torch.full_like(lens, tx + tp - 1)  # position predicting the first code
        if self.step_graph is not None:  # int8/int4: the layers and the output layer on onnxruntime
            raw = self.step_graph.run(x, cache, mask)[torch.arange(b, device=device), last]  # [B, V]
        else:
            out = self.h(x, mask, cache)  # [B, Tx+Tp, D]
            raw = self.ar_predict_layer(out[torch.arange(b, device=device), last]).float()  # [B, V]

        history = torch.zeros(b, tp + max_new_tokens, dtype=torch.long, device=device)  # [B, Tp+N] prompt + tokens
        if tp:
            history[:, :tp] = prompt
        rows = list(range(b))  # the input row of each row still running
        for step in range(max_new_tokens):
            going = []
            for i, row in enumerate(rows):
                tok, is_eos = next_token(
                    raw[i : i + 1], history[i : i + 1, : tp + step], step, self.eos, gen, *rule.rule
                )
                yield DecodeStep(step, tok, raw[i], is_eos, row)
                if not is_eos:
                    history[i, tp + step] = tok
                    going.append(i)
            if not going or step + 1 == max_new_tokens:
                return
            if len(going) < len(rows):  # drop the ended rows: cheaper than decoding them on, masked
                cache.keep(going)
                keep = torch.tensor(going, device=device)
                history, keys_ok = history[keep], keys_ok[keep]
                rows = [rows[i] for i in going]
                padded = not bool(keys_ok[:, :tx].all())
            token = history[:, tp + step : tp + step + 1]  # [B', 1]
            step_mask = keys_ok[:, None, None, : cache.length + 1] if padded else None  # [B', 1, 1, S]
            x = self.embed_audio(token, offset=tp + step)  # [B', 1, D]
            if self.step_graph is not None:
                raw = self.step_graph.run(x, cache, step_mask)[:, -1]  # [B', V]
            else:
                raw = self.ar_predict_layer(self.h(x, step_mask, cache)[:, -1]).float()  # [B', V]

    def generate_iter(self, phones: torch.Tensor, bert: torch.Tensor, prompt: torch.Tensor | None = None, **kw):
        """Yield each new token id (int) as soon as it is drawn; stops before EOS. Arguments as `generate`."""
        for step in self.decode_steps(phones, bert, prompt, **kw):
            if step.is_eos:
                return
            yield step.token

    def generate(
        self,
        phones: torch.Tensor,
        bert: torch.Tensor,
        prompt: torch.Tensor | None = None,
        return_logits: bool = False,
        **sampling: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Generate semantic codes after `prompt` for `phones` [1, Tx] with `bert` [1, bert_dim, Tx].

        Returns the new tokens [1, n] long (EOS excluded; n == max_new_tokens when no EOS comes). `seed` makes the
        draws reproducible through a local torch.Generator (or pass your own `generator`); the global RNG is never
        used. `top_k` None/<=0 and `top_p` >= 1 disable those filters; `top_k=1` is greedy. `sampling`: the fields
        of `Sampling`. With `return_logits`, also returns the raw per-step logits [n_steps, V] (the EOS step
        included).
        """
        steps = list(self.decode_steps(phones, bert, prompt, **sampling))
        device = self._anchor.device
        tokens = torch.tensor([[s.token for s in steps if not s.is_eos]], dtype=torch.long, device=device)
        if not return_logits:
            return tokens
        logits = torch.stack([s.logits for s in steps]) if steps else torch.zeros(0, self.cfg.vocab_size)
        return tokens, logits

    def generate_batch(
        self,
        phones: Sequence[torch.Tensor],
        bert: Sequence[torch.Tensor],
        prompt: torch.Tensor | None = None,
        **sampling: Any,
    ) -> list[list[int]]:
        """Decode B texts together after one shared `prompt` [1, Tp]: `phones[b]` [Tx_b] ids and `bert[b]`
        [bert_dim, Tx_b]. Returns each row's new tokens (EOS excluded). Under greedy decoding (`top_k=1`) each row
        gets the tokens it gets alone; sampled rows draw from one generator in turn, so their tokens differ from
        separate calls with the same seed. Arguments as `generate`."""
        padded_phones, lens, padded_bert = pad_rows(phones, bert)
        tokens: list[list[int]] = [[] for _ in phones]
        for step in self.decode_steps(padded_phones, padded_bert, prompt, lens, **sampling):
            if not step.is_eos:
                tokens[step.row].append(step.token)
        return tokens

    # ------------------------------------------------------------------------------------------ speed variants
    def with_precision(self, precision: str, inplace: bool = False) -> Text2SemanticDecoder:
        """The same model at one of `PRECISIONS`: "fp32" (self), "bf16" (an inference copy in bfloat16), "int8"
        (`quantize_int8`), "int4" (`quantize_int4`, CPU only) or "auto" (`resolve_precision` on the model's
        device). The decoding rule and the logits' dtype (fp32) are the same for all. `inplace=True` converts this
        model itself instead of a copy (no second float copy in memory while converting; the float weights are gone
        afterwards)."""
        precision = resolve_precision(precision, self._anchor.device)
        if precision == "int8":
            return self.quantize_int8(inplace=inplace)
        if precision == "int4":
            return self.quantize_int4(inplace=inplace)
        if precision == "bf16":
            return self._target(inplace).to(torch.bfloat16).eval()
        return self

    def quantize_int8(self, inplace: bool = False, step_graph: bool | None = None) -> Text2SemanticDecoder:
        """An inference-only CPU copy whose transformer layers use int8 weights.

        With `step_graph` (None, the default: when the `onnx` extra is installed) the layers and the output layer
        run on onnxruntime as int4's do (`StepGraph`, 8-bit codes with one scale and zero point per `INT8_BLOCK`
        inputs) for every pass; the copy keeps no torch layers. Otherwise (`step_graph=False`, or onnxruntime
        missing) they are torch's dynamic int8 layers (per-channel scales), about half as fast per token. The BERT
        projection is int8 in torch either way. Approximate: see the README's speed figures (*Limits*) for the
        measured token agreement and mel distance. The copy's state_dict no longer has upstream's layout: keep the
        float model for saving (or pass `inplace=True` to convert this model itself).
        """
        from gsvkit.models.s1 import step_graph as graph

        if step_graph and not graph.available():
            raise ConfigError("step_graph=True needs onnxruntime: install it with `pip install 'gsvkit[onnx]'`")
        if step_graph is None:
            step_graph = graph.available() and self._anchor.device.type == "cpu"
        if step_graph:
            return self._on_graph(INT8_BLOCK, 8, inplace)
        model = self._target(inplace).float().eval()
        for layer in model.h.layers:
            _int8_layer(layer)
        model.bert_proj = int8_linear(model.bert_proj)  # type: ignore[assignment]
        model.ar_predict_layer = int8_linear(model.ar_predict_layer)  # type: ignore[assignment]
        return model

    def _on_graph(self, block: int, bits: int, inplace: bool) -> Text2SemanticDecoder:
        """The copy whose layers and output layer run on a `StepGraph` with `bits`-bit weights, `block` inputs per
        scale; each float layer is freed once the graph has read it."""
        from gsvkit.models.s1 import step_graph as graph

        if self._anchor.device.type != "cpu":
            raise ConfigError(f"precision int{bits} on onnxruntime runs on the CPU only; use bf16 on a GPU")
        model = self._target(inplace).float().eval()
        head = model.ar_predict_layer
        model.step_graph = graph.StepGraph.from_layers(model.h.layers, head, self.cfg.head, block, _free, bits)
        model.h = _LayersOnGraph()  # type: ignore[assignment]
        model.bert_proj = int8_linear(model.bert_proj)  # type: ignore[assignment]
        model.ar_predict_layer = int8_linear(head)  # type: ignore[assignment]
        return model

    def quantize_int4(
        self, group: int = INT4_GROUP, inplace: bool = False, step_graph: bool = True
    ) -> Text2SemanticDecoder:
        """An inference-only CPU copy whose transformer layers use 4-bit weights with one scale and zero point per
        `group` inputs: half the weight bytes of int8 per token.

        With `step_graph` (the default; needs the `onnx` extra) the layers and the output layer run on onnxruntime
        (`StepGraph`: one graph, the 4-bit weights quantised from the float ones by onnxruntime's block quantiser)
        for every pass: the first pass over text and prompt, decoding steps, batches of several rows and teacher
        forcing (`logits`); the copy keeps no torch layers (embeddings and the BERT projection, int8, stay in
        torch). With `step_graph=False` the torch layers are 4-bit (`Int4Linear`; the output layer, 1025 rows, not
        a multiple of 16, stays int8), and calls of many positions at once (`WIDE_ROWS` rows or more) run on an
        int8 copy of each layer, where torch's 4-bit kernel is slow. More approximate than int8: see the README's
        speed figures (*Limits*) for the measured token agreement and mel distance. The copy's state_dict has no
        upstream layout (`inplace=True` converts this model itself).
        """
        from gsvkit.models.modules.int4 import Int4Linear
        from gsvkit.models.s1 import step_graph as graph

        if step_graph and not graph.available():
            raise ConfigError(
                "precision int4 decodes on onnxruntime: install it with `pip install 'gsvkit[onnx]'` (or pass "
                "step_graph=False to decode on torch's 4-bit kernel, about 1.6x slower at 2 threads)"
            )
        if self._anchor.device.type != "cpu":
            raise ConfigError("precision int4 runs on the CPU only; use int8 or bf16 on a GPU")
        first = self.h.layers[0]  # linear1 [ffn, dim] and linear2 [dim, ffn]: their rule covers every layer shape
        if not (Int4Linear.supports(first.linear1, group) and Int4Linear.supports(first.linear2, group)):
            raise ConfigError(
                f"precision int4 needs hidden_dim ({self.cfg.hidden_dim}) and linear_units "
                f"({first.linear1.out_features}) to be multiples of 16 and of the group size {group}; use int8 for "
                "this model"
            )
        if step_graph:
            return self._on_graph(group, 4, inplace)
        model = self._target(inplace).float().eval()
        for layer in model.h.layers:
            attn = layer.self_attn
            attn.qkv_quantized = Int4Linear.from_linear(_take_qkv(attn), group, wide=True)
            attn.out_proj = Int4Linear.from_linear(attn.out_proj, group, wide=True)  # type: ignore[assignment]
            layer.linear1 = Int4Linear.from_linear(layer.linear1, group, wide=True)  # type: ignore[assignment]
            layer.linear2 = Int4Linear.from_linear(layer.linear2, group, wide=True)  # type: ignore[assignment]
        model.ar_predict_layer = int8_linear(model.ar_predict_layer)  # type: ignore[assignment]
        return model

    def _target(self, inplace: bool) -> Text2SemanticDecoder:
        """The model a precision conversion changes: this one (`inplace`) or a deep copy of it."""
        return self if inplace else copy.deepcopy(self)


class _LayersOnGraph(nn.Module):
    """Stands in for the layer stack of an int8 or int4 copy whose layers run on onnxruntime (`step_graph`)."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise ConfigError(
            "this quantised copy runs its layers on onnxruntime (`step_graph`): decode or score it with decode_steps, "
            "generate or logits; train the float model"
        )


def _free(layer: nn.Module) -> None:
    """Drop a layer's weights (they live on in the step graph)."""
    layer.to_empty(device="meta")


def _int8_layer(layer: nn.Module) -> None:
    """A `TransformerLayer`'s linear layers as torch's dynamic int8 layers (`int8_linear`), in place."""
    layer.self_attn.qkv_quantized = int8_linear(_take_qkv(layer.self_attn))
    layer.self_attn.out_proj = int8_linear(layer.self_attn.out_proj)
    layer.linear1 = int8_linear(layer.linear1)
    layer.linear2 = int8_linear(layer.linear2)


def _take_qkv(attn: SelfAttention) -> nn.Linear:
    """`attn`'s packed q/k/v projection as an `nn.Linear` holding the same parameters, which leave `attn` (a
    quantised copy of them takes their place in `qkv_quantized`)."""
    lin = nn.Linear(attn.in_proj_weight.shape[1], attn.in_proj_weight.shape[0])
    lin.weight, lin.bias = attn.in_proj_weight, attn.in_proj_bias
    del attn.in_proj_weight, attn.in_proj_bias
    return lin


def pad_rows(
    phones: Sequence[torch.Tensor], bert: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of [Tx_b] phone ids and [bert_dim, Tx_b] features -> phones [B, Tx], lengths [B], bert [B, bert_dim, Tx]
    (Tx the longest row; padding is 0, and `decode_steps` never reads it)."""
    if not phones or len(phones) != len(bert):
        raise ValueError(f"give one bert per phone row (got {len(phones)} phone rows and {len(bert)} bert rows)")
    lens = torch.tensor([p.shape[-1] for p in phones])  # [B]
    tx = int(lens.max())
    out_phones = torch.zeros(len(phones), tx, dtype=torch.long)  # [B, Tx]
    out_bert = torch.zeros(len(bert), bert[0].shape[0], tx, dtype=bert[0].dtype)  # [B, bert_dim, Tx]
    for i, (p, f) in enumerate(zip(phones, bert, strict=True)):
        if p.dim() != 1 or f.dim() != 2 or f.shape[1] != p.shape[0]:
            raise ValueError(f"row {i}: phones must be [Tx] and bert [bert_dim, Tx], got {tuple(p.shape)}, "
                             f"{tuple(f.shape)}")  # fmt: skip
        out_phones[i, : p.shape[0]] = p
        out_bert[i, :, : p.shape[0]] = f
    return out_phones, lens, out_bert


def _list_keys(what: str, keys: list[str], limit: int = 8) -> str:
    if not keys:
        return ""
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} {what} key(s): " + ", ".join(keys[:limit]) + more
