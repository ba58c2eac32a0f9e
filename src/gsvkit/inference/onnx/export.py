"""`gsv export onnx`: the inference graphs as ONNX files, for `TTS(backend="onnx")` (onnxruntime).

Files written to the output folder (with `onnx.json` describing them and the configs):

| file              | inputs -> outputs                                                                 |
|-------------------|-----------------------------------------------------------------------------------|
| hubert.onnx       | wav16k [1, S] -> ssl [1, C, T50]                                                  |
| s2_latent.onnx    | ssl [1, C, T] -> codes [1, 1, T/2]                          (reference -> prompt) |
| s2_ref.onnx       | refer [1, bins, F] (+ sv_emb [1, sv_dim] for v2Pro) -> ge [1, gin, 1] (timbre)    |
| s2_decode.onnx    | codes [1, 1, N], phones [1, L], ge, noise [1, C, 2N], noise_scale [] -> wav [1,1,S] |
| s1_prefill.onnx   | phones [1, Tx], bert [1, 1024, Tx], prompt [1, Tp], text_pe [Tx, D], audio_pe [Tp, D] |
|                   |   -> logits [1, V], keys/values [layers, 1, heads, Tx+Tp, head_dim]               |
| s1_step.onnx      | token [1, 1], pe [1, D], keys, values -> logits [1, V], keys, values (one longer)  |

The graphs hold no randomness and no sampling: s2's prior noise comes in as an input (drawn in Python from the
same generator the torch path uses) and s1's sampling stays in Python (`gsvkit.models.s1.sampling`), so every
sampling parameter works and a seed gives the torch backend's tokens whenever the logits agree to the argmax.
The sine position tables come in as inputs too (`SinePositionalEmbedding.table`), which keeps the graphs free of
Python-side caching. `speed` other than 1 is not exported (s2's length rule is a Python integer expression).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gsvkit.models.s1.step_graph import OPSET

ONNX_MANIFEST = "onnx.json"


class _ConcatCache:
    """A `KVCache` stand-in for export: keys/values grow by concatenation, so a step is a pure function."""

    def __init__(self, n_layers: int, past_k: torch.Tensor | None = None, past_v: torch.Tensor | None = None):
        self.past_k, self.past_v = past_k, past_v
        self.k: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]
        self.v: list[torch.Tensor] = [None] * n_layers  # type: ignore[list-item]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.past_k is not None:
            k = torch.cat([self.past_k[layer], k], dim=2)  # [B, H, S+T, hd]
            v = torch.cat([self.past_v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def advance(self, n: int) -> None:
        pass


class S1Prefill(nn.Module):
    """Text + prompt through every layer: the first step's logits and the whole key/value cache."""

    def __init__(self, s1: Any) -> None:
        super().__init__()
        self.s1 = s1

    def forward(self, phones, bert, prompt, text_pe, audio_pe):  # noqa: ANN001, ANN201
        from gsvkit.models.s1.gpt import prefix_mask

        s1 = self.s1
        mask = prefix_mask(phones.shape[1], prompt.shape[1], phones.device)  # [S, S]
        x = s1.ar_text_embedding(phones) + s1.bert_proj(bert.transpose(1, 2))  # [1, Tx, D]
        x = x + s1.ar_text_position.alpha * text_pe
        y = s1.ar_audio_embedding(prompt) + s1.ar_audio_position.alpha * audio_pe  # [1, Tp, D]
        cache = _ConcatCache(len(s1.h.layers))
        hidden = s1.h(torch.cat([x, y], dim=1), mask, cache)[:, -1]  # [1, D]
        return s1.ar_predict_layer(hidden), torch.stack(cache.k), torch.stack(cache.v)


class S1Step(nn.Module):
    """One new token through every layer with the cached keys/values."""

    def __init__(self, s1: Any) -> None:
        super().__init__()
        self.s1 = s1

    def forward(self, token, pe, keys, values):  # noqa: ANN001, ANN201
        s1 = self.s1
        x = s1.ar_audio_embedding(token) + s1.ar_audio_position.alpha * pe  # [1, 1, D]
        cache = _ConcatCache(len(s1.h.layers), keys, values)
        hidden = s1.h(x, None, cache)[:, -1]
        return s1.ar_predict_layer(hidden), torch.stack(cache.k), torch.stack(cache.v)


class S2Latent(nn.Module):
    def __init__(self, s2: Any) -> None:
        super().__init__()
        self.s2 = s2

    def forward(self, ssl):  # noqa: ANN001, ANN201
        return self.s2.quantizer.encode(self.s2.ssl_proj(ssl)).transpose(0, 1)  # [1, 1, T/2]


class S2Ref(nn.Module):
    def __init__(self, s2: Any) -> None:
        super().__init__()
        self.s2 = s2

    def forward(self, refer, sv_emb=None):  # noqa: ANN001, ANN201
        return self.s2._one_reference(refer, sv_emb)  # [1, gin, 1]; v2Pro: with the speaker embedding, PReLU'd


class S2Decode(nn.Module):
    """`SynthesizerTrn.decode` at speed 1, with its noise as an input (the same steps, in the same order)."""

    def __init__(self, s2: Any) -> None:
        super().__init__()
        self.s2 = s2

    def forward(self, codes, phones, ge, noise, noise_scale):  # noqa: ANN001, ANN201
        s2 = self.s2
        quantized = s2.quantizer.decode(codes.transpose(0, 1))  # [1, D, N]
        if s2.semantic_frame_rate == "25hz":
            quantized = quantized.repeat_interleave(2, dim=2)  # nearest x2, as F.interpolate(size=2N)
        y_lengths = torch.ones(1, dtype=torch.long) * quantized.shape[2]
        text_lengths = torch.ones(1, dtype=torch.long) * phones.shape[1]
        _, m_p, logs_p, y_mask = s2.enc_p(quantized, y_lengths, phones, text_lengths, s2._mrte_ge(ge), 1.0)
        z_p = m_p + noise * torch.exp(logs_p) * noise_scale
        z = s2.flow(z_p, y_mask, g=ge, reverse=True)
        return s2.dec(z * y_mask, g=ge)


class HubertGraph(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, wav):  # noqa: ANN001, ANN201
        return self.model(wav).last_hidden_state.transpose(1, 2)  # [1, C, T]



def _export(module: nn.Module, args: tuple, path: Path, names_in: list[str], names_out: list[str],
            dynamic: dict[str, dict[int, Any]]) -> Path:  # fmt: skip
    module.eval()
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=names_in,
            output_names=names_out,
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    program.save(str(path))
    return path


def export_onnx(
    out_dir: str | os.PathLike,
    s1_path: str | os.PathLike,
    s2_path: str | os.PathLike,
    hubert_path: str | os.PathLike | None = None,
) -> Path:
    """Write the ONNX graphs of s1, s2 (and HuBERT, when given) to `out_dir`; returns the manifest path."""
    from torch.export import Dim

    from gsvkit.checkpoint import load_s1, load_s2, read_header
    from gsvkit.inference.bundle import check_pair
    from gsvkit.models.modules.weight_norm import fold_weight_norm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h1, h2 = read_header(s1_path), read_header(s2_path)
    check_pair(h1.config.model, h2.config.model, s1_path, s2_path)
    # weight norm is folded into plain weights: its hook caches by data pointer, which tracing cannot follow
    s1, s2 = load_s1(s1_path).float().eval(), fold_weight_norm(load_s2(s2_path).float().eval())
    c1, c2 = h1.config.model, h2.config.model
    d, layers, heads = c1.embedding_dim, c1.n_layer, c1.head
    hd = d // heads

    tx, tp = Dim("tx", min=2, max=4096), Dim("tp", min=1, max=4096)
    phones = torch.randint(0, c1.phone_vocab, (1, 17))
    bert = torch.randn(1, c1.bert_dim, 17)
    prompt = torch.randint(0, c1.vocab_size - 1, (1, 9))
    text_pe = s1.ar_text_position.table(17, bert).clone()
    audio_pe = s1.ar_audio_position.table(9, bert).clone()
    _export(S1Prefill(s1), (phones, bert, prompt, text_pe, audio_pe), out / "s1_prefill.onnx",
            ["phones", "bert", "prompt", "text_pe", "audio_pe"], ["logits", "keys", "values"],
            {"phones": {1: tx}, "bert": {2: tx}, "prompt": {1: tp}, "text_pe": {0: tx},
             "audio_pe": {0: tp}})  # fmt: skip
    past = Dim("past", min=1, max=8192)
    keys = torch.randn(layers, 1, heads, 26, hd)
    _export(S1Step(s1), (torch.tensor([[3]]), audio_pe[:1].clone(), keys, keys.clone()), out / "s1_step.onnx",
            ["token", "pe", "keys", "values"], ["logits", "keys_out", "values_out"],
            {"token": None, "pe": None, "keys": {3: past}, "values": {3: past}})  # fmt: skip

    t_ssl, n, ln, f = Dim("t_ssl", min=4, max=4096), Dim("n", min=4, max=4096), Dim("l", min=2, max=2048), None
    _export(S2Latent(s2), (torch.randn(1, c2.ssl_dim, 40),), out / "s2_latent.onnx", ["ssl"], ["codes"],
            {"ssl": {2: t_ssl}})  # fmt: skip
    f = Dim("frames", min=8, max=8192)
    # v2Pro: the speaker-verification branch is in the graph; the ERes2NetV2 encoder is not (a voice stores the
    # embeddings of its clips, and any other clip is embedded in torch).
    sv = (torch.randn(1, c2.sv_dim),) if c2.is_pro else ()
    _export(S2Ref(s2), (torch.rand(1, c2.spec_channels, 60), *sv), out / "s2_ref.onnx",
            ["refer", *(["sv_emb"] if sv else [])], ["ge"],
            {"refer": {2: f}, **({"sv_emb": None} if sv else {})})  # fmt: skip
    codes = torch.randint(0, c2.codebook_size, (1, 1, 12))
    ge = s2._one_reference(torch.rand(1, c2.spec_channels, 60), *sv)
    noise = torch.randn(1, c2.inter_channels, 24)
    _export(S2Decode(s2), (codes, torch.randint(0, c2.symbols, (1, 9)), ge, noise, torch.tensor(0.5)),
            out / "s2_decode.onnx", ["codes", "phones", "ge", "noise", "noise_scale"], ["wav"],
            {"codes": {2: n}, "phones": {1: ln}, "ge": None, "noise": {2: 2 * n}, "noise_scale": None})  # fmt: skip
    files = ["s1_prefill.onnx", "s1_step.onnx", "s2_latent.onnx", "s2_ref.onnx", "s2_decode.onnx"]
    if hubert_path is not None:
        from gsvkit.audio.features import HubertFeaturizer

        hub = HubertFeaturizer(hubert_path)
        _export(HubertGraph(hub.model.float()), (torch.randn(1, 16000),), out / "hubert.onnx", ["wav"], ["ssl"],
                {"wav": {1: Dim("samples", min=4000, max=16000 * 60)}})  # fmt: skip
        files.append("hubert.onnx")
    manifest = {
        "format": "gsvkit-onnx",
        "format_version": 1,
        "opset": OPSET,
        "s1": str(Path(s1_path).resolve()),
        "s2": str(Path(s2_path).resolve()),
        "hubert": str(Path(hubert_path).resolve()) if hubert_path else None,
        "s1_config": h1.config.model_dump(mode="json"),
        "s2_config": h2.config.model_dump(mode="json"),
        "files": files,
    }
    from gsvkit.utils.io import atomic_write_text

    atomic_write_text(out / ONNX_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return out / ONNX_MANIFEST
