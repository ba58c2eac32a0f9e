"""ONNX export + onnxruntime backend: every graph matches torch within tolerance, and so does the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from tiny import TEXT, speechlike

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_pair, tiny_hubert):
    from gsvkit.inference.onnx.export import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    s1, s2 = tiny_pair
    hubert = tiny_hubert
    ref = root / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    export_onnx(root / "onnx", s1, s2, hubert)
    return {"root": root, "s1": s1, "s2": s2, "hubert": hubert, "ref": ref, "onnx": root / "onnx"}


def test_graphs_match_torch(exported):
    from gsvkit.audio.features import HubertFeaturizer
    from gsvkit.checkpoint import load_s1, load_s2
    from gsvkit.config import config_from_dict
    from gsvkit.inference.onnx.runtime import OrtHubert, OrtS1, OrtS2, read_manifest

    m = read_manifest(exported["onnx"])
    c1, c2 = config_from_dict(m["s1_config"]), config_from_dict(m["s2_config"])
    s1, s2 = load_s1(exported["s1"]), load_s2(exported["s2"])
    o1, o2 = OrtS1(exported["onnx"], c1.model), OrtS2(exported["onnx"], c2.model)

    wav = speechlike(3.3, seed=5)
    ssl_t = HubertFeaturizer(exported["hubert"])(wav)
    ssl_o = OrtHubert(exported["onnx"])(wav)
    np.testing.assert_allclose(ssl_o.numpy(), ssl_t.numpy(), atol=1e-3, rtol=1e-3)
    codes_t = s2.extract_latent(ssl_t)
    assert torch.equal(o2.extract_latent(ssl_t), codes_t)

    g = torch.Generator().manual_seed(0)
    phones = torch.randint(0, c1.model.phone_vocab, (1, 23), generator=g)
    bert = torch.randn(1, 1024, 23, generator=g)
    prompt = codes_t[0]
    kw = {"top_k": 1, "max_new_tokens": 30}  # greedy: tokens are equal iff logits agree on the argmax
    tok_t = list(s1.generate_iter(phones, bert, prompt, **kw))
    tok_o = list(o1.generate_iter(phones, bert, prompt, **kw))
    assert tok_o == tok_t and len(tok_t) > 11
    tok_t = list(s1.generate_iter(phones, bert, prompt, top_k=15, max_new_tokens=40, seed=3))
    tok_o = list(o1.generate_iter(phones, bert, prompt, top_k=15, max_new_tokens=40, seed=3))
    assert tok_o == tok_t  # sampling in Python with the same generator

    spec = torch.rand(1, c2.model.spec_channels, 90, generator=g)
    phones2 = torch.randint(0, c2.model.symbols, (1, 31), generator=g)
    codes = torch.tensor([[tok_t]])
    for noise_scale in (0.0, 0.5):
        w_t = s2.decode(codes, phones2, [spec], noise_scale, generator=torch.Generator().manual_seed(1))
        w_o = o2.decode(codes, phones2, [spec], noise_scale, generator=torch.Generator().manual_seed(1))
        assert w_o.shape == w_t.shape
        np.testing.assert_allclose(w_o.numpy(), w_t.numpy(), atol=2e-3)


def test_pipeline_on_onnx(exported):
    from gsvkit.inference.params import ParameterError
    from gsvkit.inference.pipeline import TTS

    ref = {"ref_audio": exported["ref"], "ref_text": "This is my reference voice.", "ref_lang": "en",
           "consent": "synthetic test clip"}  # fmt: skip
    # s2 fp32 on both sides: the graphs compute the fp32 model (bf16 is a torch-only setting)
    torch_tts = TTS(s1=exported["s1"], s2=exported["s2"], hubert=exported["hubert"], s2_precision="fp32")
    onnx_tts = TTS(backend="onnx", onnx_dir=exported["onnx"])
    assert onnx_tts.status()["backend"] == "onnx" and onnx_tts.sample_rate == 16000
    a = torch_tts.synthesize_result(TEXT, "en", seed=4, max_new_tokens=40, **ref)
    b = onnx_tts.synthesize_result(TEXT, "en", seed=4, max_new_tokens=40, **ref)
    assert b.tokens_per_fragment == a.tokens_per_fragment
    np.testing.assert_allclose(b.audio, a.audio, atol=5e-3)
    chunks = list(onnx_tts.stream(TEXT, "en", seed=4, max_new_tokens=40, **ref))
    assert sum(len(c) for c in chunks) == len(b.audio)
    with pytest.raises(ParameterError, match="speed"):
        onnx_tts.synthesize(TEXT, "en", speed=1.5, **ref)


def test_onnx_speed_refused_before_s1_runs(exported, monkeypatch):
    """speed != 1 on ONNX fails up front: no s1 step for `synthesize`, and `stream` raises at the call."""
    from gsvkit.inference import pipeline
    from gsvkit.inference.params import ParameterError
    from gsvkit.inference.pipeline import TTS

    steps = []

    def counting(*args, **kwargs):
        steps.append(1)
        yield from real(*args, **kwargs)

    real = pipeline.generate_tokens
    monkeypatch.setattr(pipeline, "generate_tokens", counting)
    ref = {"ref_audio": exported["ref"], "ref_text": "This is my reference voice.", "ref_lang": "en",
           "consent": "synthetic test clip"}  # fmt: skip
    tts = TTS(backend="onnx", onnx_dir=exported["onnx"])
    with pytest.raises(ParameterError, match="speed 1.5 .*ONNX"):
        tts.synthesize(TEXT, "en", speed=1.5, **ref)
    with pytest.raises(ParameterError, match="speed 1.5 .*ONNX"):
        tts.stream(TEXT, "en", speed=1.5, **ref)  # raises now, not on the first chunk
    assert steps == []
    list(tts.stream(TEXT, "en", seed=1, max_new_tokens=8, **ref))
    assert steps  # the counter does see s1 work when there is some


def test_cli_synth_on_onnx(exported, tmp_path):
    from typer.testing import CliRunner

    from gsvkit.cli import app

    runner = CliRunner()
    out = tmp_path / "o.wav"
    args = ["synth", "--backend", "onnx", "--onnx", str(exported["onnx"]), "--ref", str(exported["ref"])]
    args += ["--ref-text", "This is my reference voice.", "--ref-lang", "en", "Hello from onnx.", "-l", "en"]
    args += ["--consent", "synthetic test clip"]
    r = runner.invoke(app, [*args, "-o", str(out), "--max-new-tokens", "20"])
    assert r.exit_code == 0, r.output
    assert sf.info(out).frames > 0
    r = runner.invoke(app, ["export", "onnx", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--s1" in r.output
    r = runner.invoke(app, ["synth", "--backend", "onnx", "Hello.", "-o", str(out)])
    assert r.exit_code == 2 and "gsv export onnx" in r.output


def test_int8_s1_graphs_within_bounds_of_fp32(exported):
    """`precision="int8"` on the ONNX backend: s1 graphs quantised once beside the fp32 files, in the torch
    backend's int8 format (every weight product a block-wise 8-bit `MatMulNBits`), logits close."""
    import onnx
    from onnx import numpy_helper

    from gsvkit.config import config_from_dict
    from gsvkit.inference.onnx.runtime import OrtS1, read_manifest
    from gsvkit.inference.params import ParameterError
    from gsvkit.models.s1.gpt import INT8_BLOCK
    from gsvkit.models.s1.step_graph import block_quantize

    c1 = config_from_dict(read_manifest(exported["onnx"])["s1_config"]).model
    fp32, int8 = OrtS1(exported["onnx"], c1), OrtS1(exported["onnx"], c1, precision="int8")
    for name in ("s1_prefill", "s1_step"):
        src, made = exported["onnx"] / f"{name}.onnx", exported["onnx"] / f"{name}.int8-b{INT8_BLOCK}.onnx"
        assert made.is_file() and made.stat().st_size < src.stat().st_size
        before, after = onnx.load(str(src)), onnx.load(str(made))
        weights = {i.name: i for i in before.graph.initializer}
        weighted = [n for n in before.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
        nbits = [n for n in after.graph.node if n.op_type == "MatMulNBits"]
        assert len(weighted) >= 2 * c1.n_layer and len(nbits) == len(weighted)  # each layer's 4 products, at least
        attrs = {a.name: a.i for a in nbits[0].attribute}
        assert (attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (8, INT8_BLOCK, 4)
        codes = {i.name: numpy_helper.to_array(i) for i in after.graph.initializer}[nbits[0].input[1]]
        w = numpy_helper.to_array(weights[weighted[0].input[1]])
        np.testing.assert_array_equal(codes, block_quantize(w, INT8_BLOCK, 8)[0])  # onnxruntime's block quantiser
        assert not any(n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger") for n in after.graph.node)
    g = torch.Generator().manual_seed(0)
    feeds = {
        "phones": torch.randint(0, c1.phone_vocab, (1, 23), generator=g).numpy(),
        "bert": torch.randn(1, 1024, 23, generator=g).numpy(),
        "prompt": torch.randint(0, c1.eos, (1, 9), generator=g).numpy(),
        "text_pe": fp32._table(0, 23),
        "audio_pe": fp32._table(0, 9),
    }
    ref, got = fp32.prefill.run(None, feeds)[0], int8.prefill.run(None, feeds)[0]
    assert 0 < np.abs(got - ref).max() < 0.06 * np.abs(ref).max()
    with pytest.raises(ParameterError, match="bf16"):
        OrtS1(exported["onnx"], c1, precision="bf16")


def test_int8_graphs_in_a_folder_that_cannot_be_written(exported, tmp_path, monkeypatch):
    import shutil
    import tempfile

    from gsvkit.config import config_from_dict
    from gsvkit.inference.onnx.runtime import OrtS1, read_manifest
    from gsvkit.inference.params import ParameterError

    folder = tmp_path / "onnx"
    shutil.copytree(exported["onnx"], folder, ignore=shutil.ignore_patterns("*.int8-*.onnx"))
    c1 = config_from_dict(read_manifest(folder)["s1_config"]).model

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)  # a read-only folder (root ignores chmod)
    with pytest.raises(ParameterError, match="not writable; make it writable or use precision fp32"):
        OrtS1(folder, c1, precision="int8")
    assert OrtS1(folder, c1, precision="fp32").prefill is not None
