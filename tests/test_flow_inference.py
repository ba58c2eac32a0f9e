"""A v4 voice (tiny SoVITS, official-size vocoder) speaks through TTS, `gsv synth` and HTTP; sample_steps is used."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from gsvkit.cli import app
from gsvkit.errors import TextError
from gsvkit.inference.params import ParameterError
from tiny import build_hubert, speechlike

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "tiny"


def build_flow_models(root: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    from gsvkit.checkpoint import save_checkpoint
    from gsvkit.config import load_config
    from gsvkit.models.s1 import Text2SemanticDecoder
    from gsvkit.models.s2.flow import SynthesizerTrnV3
    from gsvkit.models.vocoders import v4_vocoder

    c1, c2 = load_config(CONFIGS / "s1.yaml"), load_config(CONFIGS / "s2-v4.yaml")
    torch.manual_seed(seed)
    s1, s2 = Text2SemanticDecoder(c1.model).eval(), SynthesizerTrnV3(c2.model).eval()
    for p in s2.cfm.parameters():  # the DiT's zero-init gates would make every step size irrelevant
        p.data.normal_(0, 0.05)
    root.mkdir(parents=True, exist_ok=True)
    p1, p2, pv = root / "s1.safetensors", root / "s2.safetensors", root / "vocoder.pth"
    save_checkpoint(p1, s1.state_dict(), c1, {"epoch": 1})
    save_checkpoint(p2, s2.state_dict(), c2, {"epoch": 1})
    torch.save({k: v.half() for k, v in v4_vocoder().state_dict().items()}, pv)  # upstream's vocoder.pth layout
    return p1, p2, pv


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("v4voice")
    s1, s2, vocoder = build_flow_models(root / "run")
    hubert = build_hubert(root / "hubert")
    ref = root / "ref.wav"
    sf.write(ref, speechlike(3.0, sr=32000), 32000)
    voice = root / "voices" / "vera"
    r = runner.invoke(
        app,
        [
            "voice", "create", str(voice), "--s1", str(s1), "--s2", str(s2), "--ref", str(ref),
            "--ref-text", "Hello, this is Vera.", "--ref-lang", "en", "--consent", "synthetic test voice",
            "--hubert", str(hubert), "--vocoder", str(vocoder),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return {"voice": voice, "vocoder": vocoder, "hubert": hubert, "ref": ref, "root": root}


@pytest.fixture(scope="module")
def tts(flow):
    from gsvkit.inference.pipeline import TTS

    return TTS(flow["voice"], hubert=flow["hubert"])  # the voice records its vocoder


def _speak(tts, **kw):
    return tts.synthesize("Hello there.", "en", seed=4, max_new_tokens=8, **kw)


def test_v4_voice_speaks_at_48k_and_sample_steps_matter(tts):
    assert tts.bundle.is_flow and tts.sample_rate == 48000
    sr, a = _speak(tts, sample_steps=2)
    assert sr == 48000 and a.size > 0 and np.isfinite(a).all() and np.abs(a).max() > 0
    _, again = _speak(tts, sample_steps=2)
    np.testing.assert_array_equal(a, again)  # seeded noise: same seed, same audio
    _, one = _speak(tts, sample_steps=1)
    assert one.shape == a.shape and not np.allclose(one, a)
    seen = []
    sample = tts.bundle.s2.cfm.sample
    tts.bundle.s2.cfm.sample = lambda *a, **k: (seen.append(a[3]), sample(*a, **k))[1]
    try:
        _speak(tts)
    finally:
        del tts.bundle.s2.cfm.sample
    assert seen and set(seen) == {8}  # v4's default


def test_v4_batch_generates_the_fragments_together_in_s1(tts, monkeypatch):
    widths = []
    s1 = tts.bundle.s1
    real = s1.decode_steps

    def steps(phones, *a, **k):
        widths.append(phones.shape[0])
        return real(phones, *a, **k)

    monkeypatch.setattr(s1, "decode_steps", steps)
    kw = {"seed": 4, "top_k": 1, "max_new_tokens": 8, "sample_steps": 1, "split_bucket": False}
    one = tts.synthesize_result("Hello there. And a longer second part.", "en", batch_size=1, **kw)
    two = tts.synthesize_result("Hello there. And a longer second part.", "en", batch_size=2, **kw)
    assert len(one.fragments) == 2 and widths == [1, 1, 2]
    assert two.tokens_per_fragment == one.tokens_per_fragment and two.audio.size > 0


def test_sample_steps_range_and_transcript_required(tts, flow):
    with pytest.raises(ParameterError, match="sample_steps"):
        _speak(tts, sample_steps=0)
    with pytest.raises(ParameterError, match="sample_steps"):
        _speak(tts, sample_steps=129)
    with pytest.raises(TextError, match="v4 voices need the reference clip's transcript"):
        tts.synthesize("Hello.", "en", ref_audio=flow["ref"], ref_text="", consent="synthetic test clip")
    with pytest.raises(Exception, match="streaming is not available for v4"):
        tts.stream("Hello.", "en")


@pytest.mark.slow
def test_cli_synth(flow, tmp_path):
    out = tmp_path / "o.wav"
    args = ["synth", "Hello there.", "--voice", str(flow["voice"]), "-l", "en", "--seed", "1", "--max-new-tokens", "8"]
    r = runner.invoke(app, [*args, "-o", str(out), "--sample-steps", "2"])
    assert r.exit_code == 0, r.output
    wav, sr = sf.read(out)
    assert sr == 48000 and len(wav) > 0 and np.abs(wav).max() > 0
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "x.wav"), "--vocoder", str(tmp_path / "missing.pth")])
    assert r.exit_code != 0 and "missing.pth" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_http_tts(tts):
    from gsvkit.serve.http import ServerSettings, create_app
    from serving import Server

    with Server(create_app(tts, ServerSettings())) as url:
        body = {"text": "Hello there.", "text_lang": "en", "seed": 4, "sample_steps": 2, "max_new_tokens": 8}
        r = httpx.post(f"{url}/tts", json=body, timeout=120)
    assert r.status_code == 200, r.text
    wav, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    direct = _speak(tts, sample_steps=2)[1]
    assert sr == 48000
    np.testing.assert_allclose(wav, direct, atol=2 / 32767)
