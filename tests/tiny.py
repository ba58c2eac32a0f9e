"""Tiny models and generated assets the tests share: random s1/s2 pairs, a HuBERT stand-in, a speaker encoder,
speech-like audio and a fake text front end. Session-scoped fixtures over them live in conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gsvkit.models.sv import SpeakerEncoder, SpeakerEncoderConfig

TEXT = "Hello world. This is a small test of the speech pipeline."


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced-sounding signal: harmonics of a wandering pitch, amplitude-modulated like syllables."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.3 * wav * env / 2 + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def build_models(root: Path, version: str = "v2", seed: int = 0) -> tuple[Path, Path]:
    from gsvkit.checkpoint import save_checkpoint
    from gsvkit.config import load_config
    from gsvkit.models.s1 import Text2SemanticDecoder
    from gsvkit.models.s2 import SynthesizerTrn

    configs = Path(__file__).resolve().parent.parent / "configs" / "tiny"
    c1, c2 = load_config(configs / "s1.yaml"), load_config(configs / "s2.yaml")
    if version != "v2":
        c1 = c1.model_copy(update={"model": c1.model.model_copy(update={"version": version})})
        c2 = c2.model_copy(update={"model": c2.model.model_copy(update={"version": version})})
    torch.manual_seed(seed)
    s1 = Text2SemanticDecoder(c1.model).eval()
    s2 = SynthesizerTrn(c2.model).eval()
    root.mkdir(parents=True, exist_ok=True)
    p1, p2 = root / "s1.safetensors", root / "s2.safetensors"
    save_checkpoint(p1, s1.state_dict(), c1, {"epoch": 1})
    save_checkpoint(p2, s2.state_dict(), c2, {"epoch": 1})
    return p1, p2


def build_hubert(root: Path) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    HubertModel(cfg).eval().save_pretrained(root)
    return root


def fake_text(text: str, language: str) -> dict:
    """One v2 phone per letter; enough to exercise the text stage without the real frontend's models."""
    from gsvkit.text.symbols import phones_to_ids, symbols

    table = [s for s in symbols("v2") if s.isalpha() and s.isupper()]
    phones = [table[ord(c.lower()) % len(table)] for c in text if c.isalpha()] or ["."]
    return {"norm_text": text.lower(), "phones": phones, "phone_ids": phones_to_ids(phones), "word2ph": None}


TINY_SV = SpeakerEncoderConfig(m_channels=2, num_blocks=(1, 1, 1, 1), base_width=32, scale=2, expansion=2, feat_dim=16)


def build_sv(path: Path, seed: int = 0) -> Path:
    """A tiny ERes2NetV2 saved as upstream's sv checkpoint is: a plain torch.save'd state dict."""
    torch.manual_seed(seed)
    enc = SpeakerEncoder(TINY_SV)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong use of them would show
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.9, 1.2)
    sd = enc.state_dict()
    # Upstream's file also holds the unused x-vector head; its input width is how feat_dim is read back.
    sd["seg_1.weight"], sd["seg_1.bias"] = torch.randn(192, 2 * TINY_SV.dim), torch.zeros(192)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path
