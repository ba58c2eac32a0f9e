"""The pieces of `gsv demo` that make it learn something: the k-means codebook, the token count, the curve line;
and the check that names the models a voice needs."""

from __future__ import annotations

import torch

from gsvkit.models.s2.quantizer import ResidualVectorQuantizer
from gsvkit.training.demo import format_curve


def test_kmeans_init_gives_a_frozen_random_quantizer_varied_codes():
    torch.manual_seed(0)
    q = ResidualVectorQuantizer(dimension=8, n_q=1, bins=16).eval()
    frames = torch.cat([torch.randn(50, 8) + 4 * torch.randn(1, 8) for _ in range(16)])  # 16 clusters, [800, 8]
    x = frames.T[None]  # [1, 8, 800]
    assert q.encode(x).unique().numel() == 1  # an un-initialised codebook is all zeros: every frame gets code 0
    q.kmeans_init(frames, torch.Generator().manual_seed(0))
    codes = q.encode(x)[0, 0]  # [800]
    assert codes.unique().numel() >= 12
    # Frames of one cluster share a code far more often than frames of different clusters.
    same = (codes.view(16, 50) == codes.view(16, 50).mode(dim=1).values[:, None]).float().mean()
    assert same > 0.8
    assert bool(q.vq.layers[0]._codebook.inited)


def test_format_curve_keeps_first_and_last_epoch_and_at_most_twelve():
    curve = [(e, 5.0 - e / 100) for e in range(1, 201)]
    line = format_curve(curve, "val/loss")
    epochs = [int(part.split(":")[0]) for part in line.split("by epoch:")[1].split(",")]
    assert len(epochs) == 12 and epochs[0] == 1 and epochs[-1] == 200
    assert format_curve(curve[:3], "val/loss").endswith("1: 4.990, 2: 4.980, 3: 4.970")


def test_models_needed_names_hubert_and_the_chinese_bert(tmp_path):
    from gsvkit.inference.voice import PROMPT_FILE, Provenance, ReferenceInfo, Voice, VoiceInfo, models_needed

    def voice(languages, text="Hello.", **kw):
        info = VoiceInfo(name="v", version="v2", reference=ReferenceInfo(audio="reference.wav", text=text,
                         language="en"), languages=languages,
                         provenance=Provenance(consent="test", created="2026-01-01T00:00:00+00:00", tool="t"), **kw)
        return Voice(root=tmp_path, info=info)

    (need,) = models_needed(voice(["en"]))
    assert "HuBERT" in need and "--hubert" in need
    assert models_needed(voice(["en"], text="")) == []  # reference-free: no prompt tokens to compute
    assert models_needed(voice(["en"], hubert=str(tmp_path))) == []
    needs = models_needed(voice(["en", "zh"], hubert=str(tmp_path)))
    assert len(needs) == 1 and "chinese-roberta" in needs[0] and "--bert" in needs[0]
    assert models_needed(voice(["zh"], hubert=str(tmp_path), bert=str(tmp_path))) == []
    (tmp_path / PROMPT_FILE).write_bytes(b"")  # stored prompt tokens: HuBERT is not needed
    assert models_needed(voice(["en"])) == []
