"""v2Pro / v2ProPlus voices with tiny models: the reference's speaker embedding is computed, stored and used.

CLI (`gsv voice create --sv-model`, `gsv synth`), Python (`TTS`) and HTTP (`/tts`) speak; bad input is refused
with a message naming what is missing.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from gsvkit.cli import app
from gsvkit.errors import CheckpointError, DataError
from tiny import build_sv, speechlike

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "tiny"
def build_pro_models(root: Path, version: str = "v2Pro", s1_version: str = "v2") -> tuple[Path, Path]:
    from gsvkit.checkpoint import save_checkpoint
    from gsvkit.config import load_config
    from gsvkit.models.s1 import Text2SemanticDecoder
    from gsvkit.models.s2 import SynthesizerTrn

    c1, c2 = load_config(CONFIGS / "s1.yaml"), load_config(CONFIGS / f"s2-{version}.yaml")
    if s1_version != "v2":
        c1 = c1.model_copy(update={"model": c1.model.model_copy(update={"version": s1_version})})
    torch.manual_seed(0)
    s1, s2 = Text2SemanticDecoder(c1.model).eval(), SynthesizerTrn(c2.model).eval()
    root.mkdir(parents=True, exist_ok=True)
    p1, p2 = root / "s1.safetensors", root / "s2.safetensors"
    save_checkpoint(p1, s1.state_dict(), c1, {"epoch": 1})
    save_checkpoint(p2, s2.state_dict(), c2, {"epoch": 1})
    return p1, p2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["v2Pro", "v2ProPlus"])
def pro(request, tmp_path_factory, tiny_hubert):
    version = request.param
    root = tmp_path_factory.mktemp(version)
    s1, s2 = build_pro_models(root / "run", version)
    sv = build_sv(root / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt")
    hubert = tiny_hubert
    ref, aux = root / "ref.wav", root / "aux.wav"
    sf.write(ref, speechlike(4.0, sr=32000), 32000)
    sf.write(aux, speechlike(3.5, sr=16000, seed=3) * 0.5, 16000)
    voice = root / "voices" / "pia"
    r = runner.invoke(
        app,
        [
            "voice", "create", str(voice), "--s1", str(s1), "--s2", str(s2), "--ref", str(ref),
            "--ref-text", "Hello, this is Pia.", "--ref-lang", "en", "--consent", "synthetic test voice",
            "--hubert", str(hubert), "--sv-model", str(sv), "--aux-ref", str(aux),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "speaker embeddings stored" in r.output
    return {"version": version, "root": root, "s1": s1, "s2": s2, "sv": sv, "hubert": hubert, "voice": voice,
            "ref": ref, "aux": aux}  # fmt: skip


def test_voice_stores_the_reference_embeddings(pro):
    from gsvkit.checkpoint import load_checkpoint, load_speaker_encoder
    from gsvkit.inference.reference import reference_speaker_embedding
    from gsvkit.inference.voice import load_voice

    voice = load_voice(pro["voice"])
    assert voice.version == pro["version"] and voice.speaker_cache.is_file()
    stored = load_file(str(voice.speaker_cache))
    assert set(stored) == {"reference", "aux0"}
    data = load_checkpoint(voice.s2_path).config.data
    sv = load_speaker_encoder(pro["sv"])
    assert stored["reference"].shape == (1, 64)
    torch.testing.assert_close(stored["reference"], reference_speaker_embedding(pro["ref"], data, sv))
    torch.testing.assert_close(stored["aux0"], reference_speaker_embedding(pro["aux"], data, sv))
    assert not torch.allclose(stored["reference"], stored["aux0"])


def _speak(tts, **kw):
    return tts.synthesize("Hello there.", "en", seed=4, noise_scale=0.0, max_new_tokens=12, **kw)[1]


def test_speaking_uses_the_stored_embeddings_without_the_sv_model(pro, tmp_path):
    from gsvkit.inference.pipeline import TTS

    voice = tmp_path / "pia"
    shutil.copytree(pro["voice"], voice)
    seen: list[int] = []
    tts = TTS(voice)  # no sv model given; the one recorded in voice.json is not needed either
    decode = tts.bundle.s2.decode
    tts.bundle.s2.decode = lambda *a, **k: (seen.append(len(k["sv_emb"])), decode(*a, **k))[1]
    a = _speak(tts)
    assert seen and set(seen) == {2}  # reference + aux, each with its own embedding
    # Another embedding changes the voice: the stored values are what decoding uses.
    stored = load_file(str(voice / "speaker.safetensors"))
    meta = __import__("safetensors").safe_open(str(voice / "speaker.safetensors"), "pt").metadata()
    save_file({k: v + 1.0 for k, v in stored.items()}, str(voice / "speaker.safetensors"), metadata=meta)
    b = _speak(TTS(voice))
    assert a.shape == b.shape and not np.allclose(a, b)


def test_cli_synth_and_missing_embedding_error(pro, tmp_path):
    out = tmp_path / "o.wav"
    args = ["synth", "Hello there.", "--voice", str(pro["voice"]), "-l", "en", "--seed", "1", "--max-new-tokens", "12"]
    r = runner.invoke(app, [*args, "-o", str(out)])
    assert r.exit_code == 0, r.output
    wav, sr = sf.read(out)
    assert sr == 16000 and len(wav) > 0 and np.abs(wav).max() > 0
    # Another reference clip needs its own embedding: with the sv model it works, without it the error names it.
    other = tmp_path / "other.wav"
    sf.write(other, speechlike(3.2, sr=16000, seed=9), 16000)
    ref_args = ["--ref", str(other), "--ref-text", "Another clip.", "--ref-lang", "en", "--hubert", str(pro["hubert"]),
                "--consent", "synthetic test clip"]
    voice2 = tmp_path / "v"
    shutil.copytree(pro["voice"], voice2)
    info = (voice2 / "voice.json").read_text().replace(str(pro["sv"].resolve()), "/nonexistent/sv.ckpt")
    (voice2 / "voice.json").write_text(info)
    bad = [a if a != str(pro["voice"]) else str(voice2) for a in args]
    r = runner.invoke(app, [*bad, *ref_args, "-o", str(tmp_path / "x.wav")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "/nonexistent/sv.ckpt" in r.output  # the recorded sv model is what was missing
    r2 = runner.invoke(app, [*args, *ref_args, "--sv-model", str(pro["sv"]), "-o", str(tmp_path / "y.wav")])
    assert r2.exit_code == 0, r2.output


def test_missing_sv_model_names_it(pro, tmp_path):
    from gsvkit.inference.pipeline import TTS

    voice = tmp_path / "pia"
    shutil.copytree(pro["voice"], voice)
    (voice / "speaker.safetensors").unlink()
    info = (voice / "voice.json").read_text().replace(f'"{pro["sv"].resolve()}"', "null")
    (voice / "voice.json").write_text(info)
    with pytest.raises(CheckpointError, match=r"reference\.wav: a v2Pro/v2ProPlus model needs .*--sv-model"):
        _speak(TTS(voice))
    assert _speak(TTS(voice, sv_model=pro["sv"])).size > 0


def test_http_tts(pro):
    from gsvkit.inference.pipeline import TTS
    from gsvkit.serve.http import ServerSettings, create_app
    from serving import Server

    tts = TTS(pro["voice"])
    with Server(create_app(tts, ServerSettings())) as url:
        body = {"text": "Hello there.", "text_lang": "en", "seed": 4, "noise_scale": 0.0}
        r = httpx.post(f"{url}/tts", json=body, timeout=120)
    assert r.status_code == 200, r.text
    wav, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    direct = tts.synthesize("Hello there.", "en", seed=4, noise_scale=0.0)[1]
    np.testing.assert_allclose(wav, direct, atol=2 / 32767)


def test_family_mismatches_are_refused(pro, tmp_path):
    from gsvkit.inference.voice import create_voice

    v1_s1, _ = build_pro_models(tmp_path / "v1", pro["version"], s1_version="v1")
    with pytest.raises(CheckpointError, match=f"is a v1 GPT model but .* is a {pro['version']} SoVITS model; use a v2"):
        create_voice(tmp_path / "a", s1=v1_s1, s2=pro["s2"], ref_audio=pro["ref"], ref_text="x", ref_lang="en",
                     consent="x", sv=pro["sv"])  # fmt: skip
    with pytest.raises(DataError, match="--sv-model"):
        create_voice(tmp_path / "b", s1=pro["s1"], s2=pro["s2"], ref_audio=pro["ref"], ref_text="x", ref_lang="en",
                     consent="x")  # fmt: skip
    official_s2 = Path(__file__).parent / "fixtures" / "gsv_v2_parity" / "s2_export_v2.pth"
    for i, wrong in enumerate((pro["s2"], official_s2)):  # s2 weights given as the sv model
        with pytest.raises(CheckpointError, match="ERes2NetV2"):
            create_voice(tmp_path / f"c{i}", s1=pro["s1"], s2=pro["s2"], ref_audio=pro["ref"], ref_text="x",
                         ref_lang="en", consent="x", sv=wrong)  # fmt: skip
        assert not (tmp_path / f"c{i}").exists()


@pytest.mark.slow
def test_onnx_graphs_cover_the_speaker_branch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from gsvkit.checkpoint import load_checkpoint, load_s2
    from gsvkit.inference.onnx.export import export_onnx
    from gsvkit.inference.onnx.runtime import OrtS2

    s1, s2 = build_pro_models(tmp_path / "run", "v2ProPlus")
    export_onnx(tmp_path / "onnx", s1, s2)
    cfg = load_checkpoint(s2).config.model
    torch_s2, ort_s2 = load_s2(s2), OrtS2(tmp_path / "onnx", cfg)
    g = torch.Generator().manual_seed(0)
    refs = [torch.rand(1, cfg.spec_channels, n, generator=g) for n in (50, 70)]
    embs = [torch.randn(1, cfg.sv_dim, generator=g) for _ in refs]
    codes, phones = torch.randint(0, 64, (1, 1, 14), generator=g), torch.randint(0, 700, (1, 11), generator=g)
    for noise in (0.5, 0.0):
        w_t = torch_s2.decode(codes, phones, refs, noise, generator=torch.Generator().manual_seed(1), sv_emb=embs)
        w_o = ort_s2.decode(codes, phones, refs, noise, generator=torch.Generator().manual_seed(1), sv_emb=embs)
        np.testing.assert_allclose(w_o.numpy(), w_t.numpy(), atol=2e-3)
    other = ort_s2.decode(codes, phones, refs, 0.0, sv_emb=[e + 1 for e in embs])  # noise 0, as the last w_o
    assert not np.allclose(other.numpy(), w_o.numpy(), atol=1e-3)  # the embeddings reach the graph


def test_info_knows_the_sv_checkpoint_and_convert_explains(tmp_path):
    import json

    sv = build_sv(tmp_path / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt")
    sd = torch.load(sv, weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, sv)  # fp16, as upstream ships
    r = runner.invoke(app, ["info", str(sv), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert (got["kind"], got["source_format"]) == ("sv", "sv-state-dict")
    assert got["info"]["embedding_dim"] == 64 and got["config"]["feat_dim"] == 16 and got["dtypes"]["float16"] > 0
    r = runner.invoke(app, ["convert", str(sv), str(tmp_path / "sv.safetensors")])
    assert r.exit_code == 2 and "nothing to convert" in r.output and not (tmp_path / "sv.safetensors").exists()
    from gsvkit.checkpoint import load_speaker_encoder

    enc = load_speaker_encoder(sv)
    assert enc.dim == 64 and all(p.dtype == torch.float32 for p in enc.parameters())


def test_streaming_speaks_with_the_embeddings(pro):
    from gsvkit.inference.pipeline import TTS

    tts = TTS(pro["voice"])
    seen: list[int] = []
    decode = tts.bundle.s2.decode
    tts.bundle.s2.decode = lambda *a, **k: (seen.append(len(k["sv_emb"])), decode(*a, **k))[1]
    chunks = list(tts.stream("Hello there.", "en", seed=4, noise_scale=0.0, max_new_tokens=12))
    assert chunks and sum(len(c) for c in chunks) > 0
    assert seen and set(seen) == {2}  # every window decoded with the reference's and the aux clip's embedding
