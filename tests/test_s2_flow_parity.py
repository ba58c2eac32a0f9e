"""v3/v4 parity with upstream GPT-SoVITS on synthetic weights (tests/fixtures/gsv_v3v4_parity/README.md).

Weights are regenerated from key names (`synth_param`); the fixtures hold inputs and upstream's outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gsvkit.config import FlowDecoderConfig, official_config
from gsvkit.models.s2.flow import SynthesizerTrnV3
from gsvkit.models.s2.lora import merge_lora
from gsvkit.models.vocoders import load_vocoder
from gsvkit.models.vocoders.bigvgan import BigVGAN
from gsvkit.models.vocoders.mel import flow_mel, norm_mel
from parity import assert_close, synth_param

FIX = Path(__file__).parent / "fixtures" / "gsv_v3v4_parity"
REDUCED = FlowDecoderConfig(dim=64, depth=2, heads=2, dim_head=64, ff_mult=2, conv_layers=1)
KEEP = ("inv_freq", ".filter")  # buffers keep the model's own values (README)


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(FIX / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a))


def synth_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone() if k.endswith(KEEP) else torch.from_numpy(synth_param(k, v.shape)).to(v.dtype)
        for k, v in model.state_dict().items()
    }


def noise(seed: int, shape) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def reduced_config(version: str):
    cfg = official_config("s2", version).model
    return cfg.model_copy(update={"flow": REDUCED})


@pytest.fixture(scope="module")
def models() -> dict[str, SynthesizerTrnV3]:
    with torch.device("meta"):
        layout = SynthesizerTrnV3(reduced_config("v4"))
    own = {k: v for k, v in SynthesizerTrnV3(reduced_config("v4")).state_dict().items() if k.endswith(KEEP)}
    # v3 and v4 share every key: one set of synthetic weights serves both.
    sd = {k: own[k] if k in own else torch.from_numpy(synth_param(k, v.shape)) for k, v in layout.state_dict().items()}
    return {v: SynthesizerTrnV3.from_upstream_state_dict(sd, version=v, config=reduced_config(v)) for v in ("v3", "v4")}


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    return load("inputs")


def _refer(inputs) -> torch.Tensor:
    from gsvkit.audio.spectrogram import spectrogram
    from gsvkit.config import S2DataConfig

    return spectrogram(t(inputs["wav32"]), S2DataConfig())


def test_mels_match_upstream():
    ref = load("mel")
    assert_close(flow_mel(t(ref["wav24"]), "v3"), ref["mel_v3"], "mel v3")
    assert_close(flow_mel(t(load("inputs")["wav32"]), "v4"), ref["mel_v4"], "mel v4")


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_decode_encp(models, inputs, version):
    ref = load(f"decode_encp_{version}")
    m, refer = models[version], _refer(inputs)
    fea_ref, ge = m.decode_encp(t(inputs["codes_ref"]), t(inputs["text_ref"]), refer)
    assert_close(ge, ref["ge"], "ge")
    assert_close(fea_ref, ref["fea_ref"], "fea_ref")
    fea_todo, _ = m.decode_encp(t(inputs["codes"]), t(inputs["text"]), refer, ge, 1.0)
    assert_close(fea_todo, ref["fea_todo"], "fea_todo")
    fea_fast, _ = m.decode_encp(t(inputs["codes"])[:, :, :40], t(inputs["text"])[:, :12], refer, None, 1.25)
    assert_close(fea_fast, ref["fea_fast"], "fea_fast (speed 1.25)")


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_estimator_and_four_step_sample(models, version):
    enc, ref = load(f"decode_encp_{version}"), load(f"cfm_{version}")
    mel2 = norm_mel(t(load("mel")["mel_v3" if version == "v3" else "mel_v4"]))
    t_min = int(ref["t_min"])
    fea = torch.cat([t(enc["fea_ref"])[:, :, :t_min], t(enc["fea_todo"])[:, :, :60]], 2)
    x0 = noise(100, (1, 100, fea.size(2)))
    est = models[version].cfm.estimator
    cond = torch.zeros_like(x0)
    cond[..., :t_min] = mel2[..., :t_min]
    xin = x0.clone()
    xin[..., :t_min] = 0
    lens = torch.tensor([fea.size(2)])
    with torch.no_grad():
        v = est(xin, cond, lens, torch.tensor([0.25]), torch.tensor([0.25]), fea)
    assert_close(v, ref["velocity"], "one estimator call")
    x4 = models[version].cfm.sample(fea, lens, mel2[..., :t_min], 4, noise=x0.clone())
    assert_close(x4, ref["sample4"], "4-step sample")
    # The injected noise is what is sampled from: another x0 gives another mel.
    other = models[version].cfm.sample(fea, lens, mel2[..., :t_min], 4, noise=noise(101, x0.shape))
    assert float((other - t(ref["sample4"])).abs().max()) > 1e-2


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_chunked_driver(models, version):
    enc, ref = load(f"decode_encp_{version}"), load(f"chunked_{version}")
    mel2 = norm_mel(t(load("mel")["mel_v3" if version == "v3" else "mel_v4"]))
    seen: list[tuple[int, ...]] = []

    def chunk_noise(shape):
        seen.append(shape)
        return noise(200 + len(seen) - 1, shape)

    mel = models[version].sample_mel(t(enc["fea_ref"]), mel2, t(enc["fea_todo"]), 2, noises=chunk_noise)
    assert len(seen) == int(ref["n_chunks"]) >= 2
    assert_close(mel, ref["mel"], "chunked mel")


def test_lora_merge_matches_peft(models):
    manifest = json.loads((FIX / "manifest.json").read_text())
    m = models["v4"]
    base = m.state_dict()
    lora = {k: torch.from_numpy(synth_param(k, _lora_shape(k, base))) for k in manifest["lora_keys"]}
    merged = merge_lora(base, lora, rank=4)
    ref = load("lora_merge_v4")
    assert ref, "fixture holds the merged projections"
    for key, value in ref.items():
        name = key.replace("__", ".")
        assert_close(merged[name], value, name)
    changed = [k for k in merged if not torch.equal(merged[k], base[k])]
    assert changed and all(".attn.to_" in k and k.endswith("weight") for k in changed)


def _lora_shape(key: str, base: dict[str, torch.Tensor]) -> tuple[int, int]:
    module = key.replace("base_model.model.", "").split(".lora_")[0]
    out_f, in_f = base[module + ".weight"].shape
    return (4, in_f) if ".lora_A." in key else (out_f, 4)


def test_v4_vocoder_matches_upstream():
    ref = load("vocoder_v4")
    shapes = {k: v.shape for k, v in load_vocoder_shapes("v4").items()}
    voc = load_vocoder({k: torch.from_numpy(synth_param(k, s)) for k, s in shapes.items()}, "v4")
    with torch.no_grad():
        wav = voc(t(ref["mel"]))
    assert_close(wav, ref["wav"], "v4 vocoder")
    assert wav.shape[-1] == 480 * ref["mel"].shape[-1]


@pytest.mark.slow
def test_bigvgan_matches_upstream():
    ref = load("bigvgan_v3")
    with torch.device("meta"):
        shapes = BigVGAN().state_dict()
    own = BigVGAN().state_dict()  # the sinc filters are computed, not synthetic
    sd = {k: own[k] if k.endswith(KEEP) else torch.from_numpy(synth_param(k, v.shape)) for k, v in shapes.items()}
    sd = {k: v * 0.5 if k.endswith("weight_g") else v for k, v in sd.items()}  # the fixture's gain (README)
    voc = load_vocoder(sd, "v3")
    with torch.no_grad():
        wav = voc(t(ref["mel"]))
    assert_close(wav, ref["wav"], "BigVGAN v3")


@pytest.mark.slow
def test_official_size_dit_one_call():
    from gsvkit.models.cfm import DiT

    ref = load("dit_official")
    n = int(ref["T"])
    dit = DiT(FlowDecoderConfig())
    dit.load_state_dict(synth_weights(dit))
    dit.eval()
    x, cond, mu = noise(300, (1, 100, n)), noise(301, (1, 100, n)) * 0.5, noise(302, (1, 512, n))
    cond[..., 20:] = 0
    x[..., :20] = 0
    with torch.no_grad():
        v = dit(x, cond, torch.tensor([n]), torch.tensor([0.5]), torch.tensor([0.125]), mu)
    assert_close(v, ref["velocity"], "official-size DiT")


def load_vocoder_shapes(version: str) -> dict[str, torch.Tensor]:
    from gsvkit.models.vocoders import build_vocoder

    with torch.device("meta"):
        return build_vocoder(version).state_dict()
