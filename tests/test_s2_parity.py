"""s2 at the official v2 size against upstream's own outputs (tests/fixtures/gsv_v2_parity, synthetic weights).

One model is built per module from `synth_state_dict`; intermediates are captured with forward hooks.
Every `s2_decode_case*.npz` present is checked, with its speed from manifest.json and all its `refer_*` arrays.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gsvkit.config import official_config
from gsvkit.errors import CheckpointError
from gsvkit.models.s2 import MultiPeriodDiscriminator, SynthesizerTrn
from parity import FIXTURES, assert_close, load_case, manifest_keys, synth_state_dict

MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
DECODE_CASES = sorted(p.name for p in FIXTURES.glob("s2_decode_case*.npz"))


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return synth_state_dict("manifest_s2_v2.json")


@pytest.fixture(scope="module")
def model(weights):
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # 1 vs 2 threads differs by < 6e-6 (fixture README §5); 1 is steadier on busy CPUs
    torch.use_deterministic_algorithms(True)
    yield SynthesizerTrn.from_upstream_state_dict(weights, version="v2")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def _refs(case: dict[str, np.ndarray]) -> list[torch.Tensor]:
    names = [k for k in case if k.startswith("refer_") and not k.startswith("refer_wav")]
    names.sort(key=lambda k: int(k.removeprefix("refer_")))
    return [torch.from_numpy(case[k]) for k in names]


class Capture:
    """Forward hooks collecting upstream's named intermediates of one decode."""

    def _conv_post(self, module, inputs, out: torch.Tensor) -> None:
        # The decoder runs in the [B, C, 1, T] layout (gsvkit.models.modules.conv); upstream's tensor is [B, 1, T].
        self.out["dec_pre_tanh"] = out.squeeze(2) if out.dim() == 4 else out

    def __init__(self, model: SynthesizerTrn) -> None:
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [
            model.enc_p.register_forward_hook(self._enc_p),
            model.flow.register_forward_hook(lambda m, i, o: self.out.__setitem__("z", o)),
            model.dec.register_forward_pre_hook(self._dec, with_kwargs=True),
            model.dec.conv_post.register_forward_hook(self._conv_post),
        ]

    def _enc_p(self, module, inputs, output) -> None:
        self.out.update(zip(("enc_p_x", "m_p", "logs_p", "y_mask"), output, strict=True))

    def _dec(self, module, args, kwargs) -> None:
        self.out["ge"] = kwargs["g"]

    def __enter__(self) -> dict[str, torch.Tensor]:
        return self.out

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------------------------------- structure
def test_generator_keys_and_shapes_equal_manifest() -> None:
    with torch.device("meta"):
        model = SynthesizerTrn(official_config("s2", "v2").model)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = manifest_keys("manifest_s2_v2.json")
    assert list(got) == list(expected)  # same keys, same order (buffers included)
    assert got == expected
    assert len(got) == 776


def test_discriminator_keys_and_shapes_equal_manifest() -> None:
    with torch.device("meta"):
        disc = MultiPeriodDiscriminator(official_config("s2", "v2").model)
    got = {k: list(v.shape) for k, v in disc.state_dict().items()}
    assert got == manifest_keys("manifest_s2D_v2.json")


def test_v1_build_sizes() -> None:
    with torch.device("meta"):
        model = SynthesizerTrn(official_config("s2", "v1").model)
    assert model.enc_p.text_embedding.weight.shape == (322, 192)
    assert model.ref_enc.spectral[0].fc.weight.shape == (128, 1025)  # ref_enc sees all 1025 bins in v1
    v2 = manifest_keys("manifest_s2_v2.json")
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert set(got) == set(v2)
    assert {k for k in got if got[k] != v2[k]} == {"enc_p.text_embedding.weight", "ref_enc.spectral.0.fc.weight"}


# --------------------------------------------------------------------------------------------- parity
def test_extract_latent_parity(model) -> None:
    case = load_case("s2_extract_latent_case0.npz")
    ssl = torch.from_numpy(case["ssl"])
    codes = model.extract_latent(ssl)
    assert codes.dtype == torch.long and codes.shape == case["codes"].shape
    assert np.array_equal(codes.numpy(), case["codes"])
    with torch.inference_mode():
        assert_close(model.ssl_proj(ssl), case["ssl_proj_out"], "ssl_proj_out")
        assert_close(model.quantizer.decode(torch.from_numpy(case["codes"]).transpose(0, 1)), case["quantized"])


def test_extract_latent_odd_length_drops_last_frame(model) -> None:
    ssl = torch.from_numpy(load_case("s2_extract_latent_case0.npz")["ssl"])
    assert np.array_equal(model.extract_latent(ssl[:, :, :99]).numpy(), model.extract_latent(ssl[:, :, :98]).numpy())


@pytest.mark.parametrize("name", DECODE_CASES)
def test_decode_parity(model, name: str) -> None:
    case = load_case(name)
    params = MANIFEST["files"][name]["params"]
    refs = _refs(case)
    with Capture(model) as got:
        wav = model.decode(
            torch.from_numpy(case["codes"]),
            torch.from_numpy(case["text"]),
            refs,
            noise_scale=float(params.get("noise_scale", 0.0)),
            speed=float(params["speed"]),
        )
    assert_close(wav, case["wav"], "wav")
    for key in ("ge", "enc_p_x", "m_p", "logs_p", "y_mask", "z", "dec_pre_tanh"):
        assert_close(got[key], case[key], key)


def test_decode_accepts_a_single_tensor(model) -> None:
    case = load_case("s2_decode_case0.npz")
    codes, text = torch.from_numpy(case["codes"][..., :12]), torch.from_numpy(case["text"][:, :9])
    ref = torch.from_numpy(case["refer_0"])
    a = model.decode(codes, text, ref, noise_scale=0.0)
    b = model.decode(codes, text, [ref], noise_scale=0.0)
    assert a.shape == (1, 1, 24 * 640)
    assert torch.equal(a, b)


def test_multi_reference_averages_ge(model) -> None:
    c0, c1 = load_case("s2_decode_case0.npz"), load_case("s2_decode_case1.npz")
    r0, r1 = torch.from_numpy(c0["refer_0"]), torch.from_numpy(c1["refer_0"])  # 100 and 155 frames
    codes, text = torch.from_numpy(c0["codes"][..., :10]), torch.from_numpy(c0["text"][:, :8])
    with torch.inference_mode():
        ge0, ge1 = model.reference_embedding(r0), model.reference_embedding(r1)
    with Capture(model) as got:
        model.decode(codes, text, [r0, r1], noise_scale=0.0)
    assert_close(got["ge"], ((ge0 + ge1) / 2).numpy(), "averaged ge")
    assert_close(ge0, c0["ge"], "ge of refer_0")
    # The same reference twice is that reference.
    same = model.decode(codes, text, [r0, r0], noise_scale=0.0)
    assert_close(same, model.decode(codes, text, r0, noise_scale=0.0).numpy(), "two equal refs")


@pytest.mark.parametrize("speed", [0.75, 1.0, 1.3])
def test_speed_length_rule(model, speed: float) -> None:
    case = load_case("s2_decode_case0.npz")
    n = 11
    wav = model.decode(
        torch.from_numpy(case["codes"][..., :n]), torch.from_numpy(case["text"][:, :7]),
        [torch.from_numpy(case["refer_0"])], noise_scale=0.0, speed=speed,
    )  # fmt: skip
    frames = 2 * n if speed == 1.0 else int(2 * n / speed) + 1
    assert wav.shape == (1, 1, frames * 640)


def test_noise_is_drawn_even_at_zero_scale_and_generator_is_reproducible(model) -> None:
    case = load_case("s2_decode_case0.npz")
    args = (torch.from_numpy(case["codes"][..., :8]), torch.from_numpy(case["text"][:, :6]))
    ref = [torch.from_numpy(case["refer_0"])]
    torch.manual_seed(7)
    model.decode(*args, ref, noise_scale=0.0)
    after_decode = torch.rand(3)
    torch.manual_seed(7)
    assert not torch.equal(torch.rand(3), after_decode)  # the global stream moved on
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    w1 = model.decode(*args, ref, noise_scale=0.6, generator=g1)
    w2 = model.decode(*args, ref, noise_scale=0.6, generator=g2)
    w0 = model.decode(*args, ref, noise_scale=0.0)
    assert torch.equal(w1, w2)
    assert not torch.allclose(w1, w0)


# -------------------------------------------------------------------------------------------- loading
def test_export_style_weights_load(model, weights) -> None:
    export = {k: v.half() for k, v in weights.items() if "enc_q" not in k}  # what process_ckpt.savee writes
    loaded = SynthesizerTrn.from_upstream_state_dict(export, version="v2")
    assert loaded.enc_q is None and not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert not any(t.is_meta for t in loaded.state_dict().values())
    assert not loaded.dec.ups[0].weight.is_meta  # the weight-norm attribute is refreshed after loading
    key = "enc_p.text_embedding.weight"
    assert torch.equal(loaded.state_dict()[key], weights[key].half().float())
    assert set(loaded.state_dict()) == {k for k in manifest_keys("manifest_s2_v2.json") if not k.startswith("enc_q.")}
    with pytest.raises(RuntimeError, match="posterior encoder"):
        loaded.train()(None, None, torch.zeros(1, 1025, 4), torch.tensor([4]), torch.zeros(1, 3).long(), None)
    loaded.add_posterior_encoder()
    assert loaded.enc_q is not None


def test_bad_state_dicts_raise_checkpoint_error(weights) -> None:
    broken = dict(weights)
    del broken["dec.conv_post.weight"]
    broken["dec.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing: dec\.conv_post\.weight.*unexpected: dec\.extra\.weight"):
        SynthesizerTrn.from_upstream_state_dict(broken)
    reshaped = dict(weights)
    reshaped["dec.cond.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"wrong shape: dec\.cond\.bias"):
        SynthesizerTrn.from_upstream_state_dict(reshaped)
    with pytest.raises(CheckpointError, match="version='v2'"):
        SynthesizerTrn.from_upstream_state_dict(weights, version="v1")
    with pytest.raises(CheckpointError, match="v2Pro"):
        SynthesizerTrn.from_upstream_state_dict(weights, version="v2Pro")
