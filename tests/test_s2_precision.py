"""s2 precisions (auto | fp32 | bf16) as settings of one model: what bf16 changes, and by how much.

bf16 runs the HiFi-GAN decoder (about 95 % of s2's time at official size) in bfloat16, on fixed windows of
`DECODE_WINDOWS` frames (`decode_window` picks one; a short input is zero-padded to it). Bounds are the
log-mel L1
distance of the decoded waveform to fp32's (same codes, same noise), measured on the untrained weights used here
and stated with a margin, beside the distance that s2's own noise makes (fp32, the same codes, another noise seed):

    weights                 bf16 vs fp32   other noise seed   mean |wave error| / mean |wave|
    tiny, 40 tokens         0.047          0.29               0.4 %
    official v2, 25-100     0.146-0.158    0.25-0.27          1.4 %
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsvkit.config import ConfigError, load_config
from gsvkit.eval.mel import mel_distance
from gsvkit.models.s2 import S2_PRECISIONS, SynthesizerTrn, native_bf16, resolve_s2_precision, sovits

CONFIGS = Path(__file__).parent.parent / "configs"
BOUNDS = {"tiny": (0.1, 0.35), "official": (0.2, 0.75)}  # (mel distance, fraction of the other-noise distance)


def _inputs(cfg, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, cfg.codebook_size, (1, 1, tokens), generator=g)
    phones = torch.randint(0, cfg.symbols, (1, 20), generator=g)
    refer = torch.rand(1, cfg.spec_channels, 120, generator=g)
    return codes, phones, refer


def _decode(model, x, noise_seed: int = 0):
    return model.decode(*x[:2], [x[2]], 0.5, generator=torch.Generator().manual_seed(noise_seed))[0, 0].numpy()


def _mel(a, b, sr):
    return mel_distance(a, b, sr=sr, ref_sr=sr).distance


def _pair(cfg):
    torch.manual_seed(0)
    base = SynthesizerTrn(cfg).eval()
    fast = SynthesizerTrn(cfg).eval()
    fast.load_state_dict(base.state_dict())
    return base, fast.set_precision("bf16")


def _bounds(cfg, tokens: int, size: str) -> None:
    base, fast = _pair(cfg)
    assert fast.dec.conv_pre.weight.dtype == torch.bfloat16 and fast.precision == "bf16"
    assert base.dec.conv_pre.weight.dtype == torch.float32 and base.precision == "fp32"
    assert fast.enc_p.proj.weight.dtype == torch.float32  # only the decoder changes format
    x = _inputs(cfg, tokens)
    ref, got = _decode(base, x), _decode(fast, x)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert not (got == ref).all()  # the setting takes effect
    d = _mel(got, ref, 32000)
    other_noise = _mel(_decode(base, x, noise_seed=1), ref, 32000)
    bound, fraction = BOUNDS[size]
    assert 0 < d < bound and d < fraction * other_noise, (d, other_noise)


def test_tiny_bf16_decoder_within_bounds():
    _bounds(load_config(CONFIGS / "tiny" / "s2.yaml").model, tokens=40, size="tiny")


@pytest.mark.slow
def test_official_size_bf16_decoder_within_bounds():
    torch.set_num_threads(2)
    _bounds(load_config(CONFIGS / "s2-v2.yaml").model, tokens=25, size="official")


def test_fp32_leaves_the_model_alone_and_bf16_is_one_way():
    cfg = load_config(CONFIGS / "tiny" / "s2.yaml").model
    base, fast = _pair(cfg)
    keys = set(base.state_dict())
    assert base.set_precision("fp32") is base and set(base.state_dict()) == keys
    assert "dec.conv_pre.weight" in fast.state_dict() and not any(".weight_g" in k for k in fast.state_dict()
                                                                   if k.startswith("dec."))  # fmt: skip
    with pytest.raises(ConfigError, match="load the file again"):
        fast.set_precision("fp32")
    with pytest.raises(ConfigError, match="auto"):
        base.set_precision("auto")


def test_window_choice_computes_the_fewest_frames():
    ctx = 14  # the official v2 decoder's context
    assert sovits.DECODE_WINDOWS == (32, 48, 160, 512)
    # (input frames -> window): the smallest that holds a short input; for a long one the fewest frames computed
    # (500: one 512-frame call, not four of 160 = 640; 800: six of 160 = 960, not two of 512 = 1024; 1000: eight
    # of 160 = 1280, not three of 512)
    cases = {20: 32, 28: 32, 40: 48, 100: 160, 160: 160, 250: 160, 500: 512, 512: 512, 800: 160, 1000: 160}
    assert {t: sovits.decode_window(t, ctx) for t in cases} == cases
    assert sovits.decode_window(20, 20) == 48  # a window must exceed twice the context


def test_bf16_decodes_on_the_chosen_window(monkeypatch):
    cfg = load_config(CONFIGS / "tiny" / "s2.yaml").model
    _, fast = _pair(cfg)
    widths: list[int] = []
    real = type(fast.dec).forward

    def spy(self, x, g=None):
        widths.append(x.shape[-1])
        return real(self, x, g)

    monkeypatch.setattr(type(fast.dec), "forward", spy)
    ctx = fast.dec.context_frames()
    for tokens in (10, 20, 60, 250):  # two frames per token
        widths.clear()
        wav = _decode(fast, _inputs(cfg, tokens))
        assert len(wav) == tokens * 2 * fast.dec.hop
        w = sovits.decode_window(2 * tokens, ctx)
        calls = 1 if 2 * tokens <= w else 1 + -(-(2 * tokens - w) // (w - 2 * ctx))
        assert widths == [w] * calls, (tokens, widths)
    assert widths == [512]  # 500 frames in one call


def test_auto_picks_bf16_only_where_the_cpu_computes_it(monkeypatch):
    assert S2_PRECISIONS == ("auto", "fp32", "bf16")
    assert resolve_s2_precision("auto") == ("bf16" if native_bf16() else "fp32")
    monkeypatch.setattr(sovits, "native_bf16", lambda device="cpu": False)
    assert resolve_s2_precision("auto") == "fp32"
    monkeypatch.setattr(sovits, "native_bf16", lambda device="cpu": True)
    assert resolve_s2_precision("auto") == "bf16"
    assert resolve_s2_precision("auto", hifigan=False) == "fp32"  # v3/v4: no HiFi-GAN decoder
    assert resolve_s2_precision("fp32") == "fp32" and resolve_s2_precision("bf16") == "bf16"
    assert not native_bf16("cuda")
    with pytest.raises(ConfigError, match="v3/v4"):
        resolve_s2_precision("bf16", hifigan=False)
    with pytest.raises(ConfigError, match="'fp16' is not one of auto, fp32, bf16"):
        resolve_s2_precision("fp16")


@pytest.mark.parametrize("config", ["tiny/s2.yaml", "s2-v2.yaml"])
def test_decoder_windows_reproduce_the_whole_sequence(config):
    torch.manual_seed(0)
    dec = SynthesizerTrn(load_config(CONFIGS / config).model).eval().dec
    ctx, hop = dec.context_frames(), dec.hop
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, dec.conv_pre.in_channels, 150, generator=g)
    ge = torch.randn(1, dec.cond.in_channels, 1, generator=g)
    with torch.inference_mode():
        whole = dec(x, ge)
        for window in (64, 149):
            got = dec.forward_windows(x, ge, window)
            assert got.shape == whole.shape and torch.allclose(got, whole, atol=1e-5), window
        # the smallest window (one new frame each) over a shorter stretch: one window per frame is slow at full size
        part = x[..., : 2 * ctx + 8]
        got = dec.forward_windows(part, ge, 2 * ctx + 1)
        assert got.shape == (1, 1, part.shape[-1] * hop) and torch.allclose(got, dec(part, ge), atol=1e-5)
        # context_frames is a true bound: a change at frame 75 moves no output sample beyond 75 +- ctx frames
        bumped = x.clone()
        bumped[..., 75] += 1.0
        moved = (dec(bumped, ge) - whole).abs()[0, 0] > 0
        assert moved[(75 - ctx) * hop : (76 + ctx) * hop].any() and not moved[: (75 - ctx) * hop].any()
        assert not moved[(76 + ctx) * hop :].any()
        short = dec.forward_windows(x[..., :40], ge, 64)  # shorter than a window: zero-padded, exact up to the tail
        assert short.shape == (1, 1, 40 * hop)
        assert torch.allclose(short[..., : (40 - ctx) * hop], dec(x[..., :40], ge)[..., : (40 - ctx) * hop], atol=1e-5)
    with pytest.raises(ValueError, match="window must exceed"):
        dec.forward_windows(x, ge, 2 * ctx)


def _held_bytes(model: torch.nn.Module) -> int:
    """Bytes of every tensor the modules hold: parameters, buffers and plain tensor attributes (a weight-normed
    layer keeps the weight it computes as one)."""
    seen: dict[int, int] = {}
    for m in model.modules():
        for t in [*m._parameters.values(), *m._buffers.values(), *vars(m).values()]:
            if isinstance(t, torch.Tensor):
                seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def test_for_inference_folds_weight_norm_and_drops_the_posterior_encoder_with_the_same_audio():
    cfg = load_config(CONFIGS / "tiny" / "s2.yaml").model
    base, lean = _pair(cfg)[0], SynthesizerTrn(cfg).eval()
    lean.load_state_dict(base.state_dict())
    assert lean.for_inference() is lean and lean.enc_q is None and not lean.training
    names = [n for n, _ in lean.named_parameters()]
    assert not any(n.endswith(("weight_g", "weight_v")) for n in names)
    assert any(n.endswith("weight_v") for n, _ in base.named_parameters() if n.startswith(("flow.", "dec.")))
    assert _held_bytes(lean) < 0.75 * _held_bytes(base)  # measured 0.64; official v2 size: 347 -> 169 MB (0.49)
    x = _inputs(cfg, 30)
    torch.testing.assert_close(torch.from_numpy(_decode(lean, x)), torch.from_numpy(_decode(base, x)),
                               rtol=0, atol=1e-6)  # fmt: skip
    lean.set_precision("bf16")  # bf16 after it: the decoder is already folded
    assert lean.precision == "bf16"


def test_the_synthesis_bundle_loads_s2_for_inference(tmp_path):
    from gsvkit.checkpoint import save_checkpoint
    from gsvkit.config import S1Config, S2Config
    from gsvkit.inference.bundle import load_bundle
    from gsvkit.models.s1 import Text2SemanticDecoder

    c1, c2 = load_config(CONFIGS / "tiny" / "s1.yaml"), load_config(CONFIGS / "tiny" / "s2.yaml")
    assert isinstance(c1, S1Config) and isinstance(c2, S2Config)
    save_checkpoint(tmp_path / "s1.safetensors", Text2SemanticDecoder(c1.model).state_dict(), c1, {})
    save_checkpoint(tmp_path / "s2.safetensors", SynthesizerTrn(c2.model).state_dict(), c2, {})
    s2 = load_bundle(tmp_path / "s1.safetensors", tmp_path / "s2.safetensors", s2_precision="fp32").s2
    assert s2.enc_q is None and not any(n.endswith("weight_v") for n, _ in s2.named_parameters())


def test_an_s2_file_without_a_posterior_encoder_loads_without_one(tmp_path):
    from gsvkit.checkpoint import load_s2, save_checkpoint
    from gsvkit.config import S2Config

    c2 = load_config(CONFIGS / "tiny" / "s2.yaml")
    assert isinstance(c2, S2Config)
    full = SynthesizerTrn(c2.model).state_dict()
    save_checkpoint(tmp_path / "full.safetensors", full, c2, {})
    save_checkpoint(tmp_path / "export.safetensors", {k: v for k, v in full.items() if not k.startswith("enc_q.")},
                    c2, {})  # fmt: skip
    assert load_s2(tmp_path / "full.safetensors").enc_q is not None
    assert load_s2(tmp_path / "export.safetensors").enc_q is None
