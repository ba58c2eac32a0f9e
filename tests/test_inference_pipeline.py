"""The TTS pipeline end to end with tiny random models (16 kHz, hop 64: one token = 128 samples)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gsvkit.errors import AudioError, CheckpointError, ConsentError, DataError, GsvError, TextError
from gsvkit.inference.params import ParameterError
from tiny import TEXT, build_models, speechlike


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a shared 2-core machine: thread hand-offs cost far more than the maths.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_pair, tiny_hubert):
    root = tmp_path_factory.mktemp("tts")
    s1, s2 = tiny_pair
    hubert = tiny_hubert
    ref = root / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    aux = root / "aux.wav"
    sf.write(aux, speechlike(3.5, seed=1), 16000)
    return {"root": root, "s1": s1, "s2": s2, "hubert": hubert, "ref": ref, "aux": aux}


@pytest.fixture(scope="module")
def voice_dir(assets):
    from gsvkit.inference.voice import create_voice

    v = create_voice(
        assets["root"] / "voices" / "tiny",
        s1=assets["s1"],
        s2=assets["s2"],
        ref_audio=assets["ref"],
        ref_text="This is my reference voice.",
        ref_lang="en",
        consent="synthetic test voice, no person",
        hubert=assets["hubert"],
        speaker="nobody",
    )
    return v.root


@pytest.fixture(scope="module")
def tts(assets, voice_dir):
    from gsvkit.inference.pipeline import TTS

    return TTS(voice_dir, hubert=assets["hubert"])


SHORT = {"max_new_tokens": 40}
CONSENT = "synthetic test clip, no person's voice"


# ------------------------------------------------------------------------------------------------ basics
def test_synthesize_length_and_rate(tts):
    res = tts.synthesize_result(TEXT, "en", seed=3, **SHORT)
    assert res.sample_rate == 16000 == tts.sample_rate
    assert len(res.fragments) == 2 and all(0 < n <= 40 for n in res.tokens_per_fragment)
    gap = int(16000 * 0.3)
    expected = sum(n * 128 for n in res.tokens_per_fragment) + gap * len(res.fragments)
    assert res.audio.dtype == np.float32 and res.audio.shape == (expected,)
    assert np.abs(res.audio).max() <= 1.0 and np.abs(res.audio).max() > 0
    assert res.seed == 3


def test_same_seed_same_audio(tts):
    _, a = tts.synthesize(TEXT, "en", seed=11, **SHORT)
    _, b = tts.synthesize(TEXT, "en", seed=11, **SHORT)
    _, c = tts.synthesize(TEXT, "en", seed=12, **SHORT)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_no_seed_draws_one_and_reports_it(tts):
    r1 = tts.synthesize_result("Short text here.", "en", **SHORT)
    r2 = tts.synthesize_result("Short text here.", "en", seed=r1.seed, **SHORT)
    np.testing.assert_array_equal(r1.audio, r2.audio)


def test_options_change_the_result(tts):
    base = tts.synthesize_result(TEXT, "en", seed=5, **SHORT)
    gap = tts.synthesize_result(TEXT, "en", seed=5, fragment_interval=0.0, **SHORT)
    assert len(gap.audio) == len(base.audio) - 2 * int(16000 * 0.3)
    one = tts.synthesize_result(TEXT, "en", seed=5, split="cut0", **SHORT)
    assert len(one.fragments) == 1
    fast = tts.synthesize_result(TEXT, "en", seed=5, speed=2.0, fragment_interval=0.0, **SHORT)
    n = sum(fast.tokens_per_fragment)
    assert abs(len(fast.audio) - n * 128 / 2) <= 64 * 2 * len(fast.fragments)


def test_batched_fragments(tts):
    text = "One sentence. Another sentence here. And a third one. Finally the last."
    res = tts.synthesize_result(text, "en", seed=2, batch_size=4, **SHORT)
    assert len(res.fragments) == 4
    gap = int(16000 * 0.3)
    assert len(res.audio) == sum(n * 128 for n in res.tokens_per_fragment) + 4 * gap


THREE = "One sentence. Another sentence that is longer. And a third."


def _s1_batches(tts, monkeypatch):
    """Record the rows of every s1 decode and the tokens each fragment got."""
    from gsvkit.inference import pipeline

    widths: list[int] = []
    lens: list[list[int]] = []
    tokens: list[list[int]] = []
    s1 = tts.bundle.s1
    real_steps, real_batch = s1.decode_steps, pipeline.generate_batch_tokens

    def steps(phones, bert, prompt=None, phone_lens=None, **k):
        widths.append(phones.shape[0])
        lens.append(phone_lens.tolist() if phone_lens is not None else [phones.shape[1]])
        return real_steps(phones, bert, prompt, phone_lens, **k)

    def batch(*a, **k):
        out = real_batch(*a, **k)
        tokens.extend(out)
        return out

    monkeypatch.setattr(s1, "decode_steps", steps)
    monkeypatch.setattr(pipeline, "generate_batch_tokens", batch)
    return widths, lens, tokens


def test_batch_size_decodes_the_fragments_together_in_s1(tts, monkeypatch):
    widths, lens, tokens = _s1_batches(tts, monkeypatch)
    kw = {"seed": 1, "top_k": 1, "split_bucket": False, **SHORT}
    one = tts.synthesize_result(THREE, "en", batch_size=1, **kw)
    assert len(one.fragments) == 3 and widths == [1, 1, 1]
    alone = list(tokens)
    widths.clear(), tokens.clear()
    three = tts.synthesize_result(THREE, "en", batch_size=3, **kw)
    assert widths == [3]  # one s1 decode of three rows
    assert lens[-1] == [row[0] for row in lens[:3]] and len(set(lens[-1])) == 3  # of three phone lengths
    assert tokens == alone and three.tokens_per_fragment == one.tokens_per_fragment  # greedy: the same tokens


def test_an_s1_of_one_row_gets_the_fragments_one_by_one():
    from types import SimpleNamespace

    from gsvkit.inference.job import generate_batch_tokens
    from gsvkit.inference.params import SynthesisParams

    calls = []

    class OneRow:  # decodes one row at a time, as the ONNX runtime's s1 does
        def generate_iter(self, phones, bert, prompt, **kw):
            calls.append(tuple(phones.shape))
            yield from range(phones.shape[1])

    def frag(n):
        return SimpleNamespace(phone_ids=list(range(n)), bert=torch.zeros(1024, n))

    job = SimpleNamespace(bundle=SimpleNamespace(s1=OneRow()), prompt=SimpleNamespace(text=None, tokens=None),
                          params=SynthesisParams())  # fmt: skip
    assert generate_batch_tokens(job, [frag(2), frag(5)], torch.Generator()) == [[0, 1], [0, 1, 2, 3, 4]]
    assert calls == [(1, 2), (1, 5)]


def test_reference_override_aux_and_reference_free(tts, assets):
    a = tts.synthesize_result(TEXT, "en", ref_audio=assets["aux"], ref_text="Another clip.", ref_lang="en", seed=1,
                              consent=CONSENT)  # fmt: skip
    b = tts.synthesize_result(TEXT, "en", aux_refs=[assets["aux"]], seed=1, consent=CONSENT, **SHORT)
    c = tts.synthesize_result(TEXT, "en", ref_audio=assets["ref"], ref_text="", seed=1, consent=CONSENT, **SHORT)
    for r in (a, b, c):
        assert len(r.audio) > 0 and np.isfinite(r.audio).all()


def test_reference_features_are_cached(tts, assets, monkeypatch):
    from gsvkit.inference import reference

    calls = {"tokens": 0, "spec": 0}
    real_tokens, real_spec = reference.prompt_tokens, reference.reference_spectrogram

    def count_tokens(*a, **k):
        calls["tokens"] += 1
        return real_tokens(*a, **k)

    def count_spec(*a, **k):
        calls["spec"] += 1
        return real_spec(*a, **k)

    monkeypatch.setattr(reference, "prompt_tokens", count_tokens)
    monkeypatch.setattr(reference, "reference_spectrogram", count_spec)
    tts.cache.clear()
    for _ in range(3):
        tts.synthesize(
            "Cache me if you can.", "en", ref_audio=assets["aux"], ref_text="A clip.", ref_lang="en",
            consent=CONSENT, **SHORT,
        )  # fmt: skip
    assert calls == {"tokens": 1, "spec": 1}


# ------------------------------------------------------------------------------------------------ streaming
def test_stream_matches_whole(assets, voice_dir):
    from gsvkit.inference.pipeline import TTS

    # The decoder's windows are compared here, so without the output watermark (marked per chunk when streaming).
    tts = TTS(voice_dir, hubert=assets["hubert"], watermark=False)
    kw = {"seed": 9, "noise_scale": 0.0, "max_new_tokens": 60}
    whole = tts.synthesize_result(TEXT, "en", **kw)
    stream = tts.stream(TEXT, "en", **kw)
    assert stream.sample_rate == 16000 and stream.seed == 9
    chunks = list(stream)
    assert len(chunks) > len(whole.fragments) * 2  # really chunked, not per fragment
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.audio.shape
    # Stated tolerance (noise off): windows see 16 tokens of left and 2 of right context, so the samples differ
    # by under 1 % of the peak on average and under 5 % anywhere (measured: 0.02 % and 0.5 %).
    err = np.abs(streamed - whole.audio)
    scale = np.abs(whole.audio).max()
    assert err.mean() < 0.01 * scale and err.max() < 0.05 * scale


@pytest.mark.parametrize("threaded", [True, False])
def test_stream_starts_before_s1_finishes(tts, monkeypatch, threaded):
    import time

    seen: list[str] = []
    s1 = tts.bundle.s1
    real = s1.generate_iter

    def spy(*a, **k):
        for tok in real(*a, **k):
            time.sleep(0.01)  # a slower s1, as at full size
            seen.append("token")
            yield tok

    monkeypatch.setattr(s1, "generate_iter", spy)
    text = "A single sentence that is long enough to stream."
    stream = tts.stream(text, "en", seed=4, max_new_tokens=80, stream={"threaded": threaded})
    first = next(iter(stream))
    n_at_first = len(seen)
    rest = list(stream)
    assert len(first) > 0 and rest
    assert n_at_first < len(seen)  # audio came out while tokens were still being generated


def test_streaming_uses_a_token_thread_only_where_cores_allow(monkeypatch):
    from gsvkit.inference.batching import threaded

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert threaded(None, cpu) is False  # 2 cores, 2 threads: s1 and s2 would take turns
    assert threaded(None, gpu) is True and threaded(True, cpu) is True
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert threaded(None, cpu) is True  # one core each
    assert threaded(False, cpu) is False


def test_the_token_thread_computes_on_its_callers_thread_count():
    from gsvkit.inference.batching import background
    from gsvkit.utils.cores import use_threads

    def counts():
        for _ in range(2):
            yield torch.get_num_threads()

    before = torch.get_num_threads()
    got: list[int] = []

    def consumer() -> None:
        use_threads(1)  # this thread's count; the process's last set count becomes 3 below
        counted.set()
        ready.wait()
        got.extend(background(counts()))

    counted, ready = threading.Event(), threading.Event()
    try:
        t = threading.Thread(target=consumer)
        t.start()
        counted.wait(10)
        torch.set_num_threads(3)  # a thread started now would begin with 3
        ready.set()
        t.join(10)
        assert got == [1, 1]
    finally:
        torch.set_num_threads(before)


def test_threaded_stream_is_deterministic_and_stops(tts):
    import threading

    kw = {"seed": 6, "max_new_tokens": 60}
    a = np.concatenate(list(tts.stream(TEXT, "en", stream={"threaded": True}, **kw)))
    b = np.concatenate(list(tts.stream(TEXT, "en", stream={"threaded": False}, **kw)))
    np.testing.assert_array_equal(a, b)  # windows are cut by token count, never by timing
    stream = tts.stream(TEXT, "en", stream={"threaded": True}, **kw)
    next(iter(stream))
    stream.close()  # a listener who leaves: the token thread ends too
    assert not any(t.name == "gsvkit-s1" for t in threading.enumerate())


def test_stream_errors_come_before_audio(tts):
    with pytest.raises(TextError):
        tts.stream("", "en")
    with pytest.raises(ParameterError, match="chunk_tokens"):
        tts.stream(TEXT, "en", stream={"chunk_tokens": 0})


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_references(tts, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, speechlike(1.0), 16000)
    long = tmp_path / "long.wav"
    sf.write(long, speechlike(12.0), 16000)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 4, np.float32), 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    for path, match in [
        (tmp_path / "missing.wav", "not found"),
        (junk, "decode"),
        (short, "1.00 s"),
        (long, "12.00 s"),
        (silent, "silent"),
    ]:
        with pytest.raises(AudioError, match=match):
            tts.synthesize(TEXT, "en", ref_audio=path, ref_text="Some words.", ref_lang="en", consent=CONSENT)


def test_bad_text_and_parameters(tts):
    with pytest.raises(TextError, match="empty"):
        tts.synthesize("   ", "en")
    with pytest.raises(TextError, match="pronounceable"):
        tts.synthesize("... !!! ???", "en")
    with pytest.raises(TextError, match="not supported"):
        tts.synthesize(TEXT, "xx")
    with pytest.raises(TextError, match="100,000 characters"):
        tts.synthesize("a" * 100_000, "en")
    with pytest.raises(ParameterError, match="top_k"):
        tts.synthesize(TEXT, "en", top_k=0)
    with pytest.raises(ParameterError, match="temperature"):
        tts.synthesize(TEXT, "en", temperature=-1)
    with pytest.raises(ParameterError, match="split"):
        tts.synthesize(TEXT, "en", split="cut9")
    with pytest.raises(ParameterError, match="bogus"):
        tts.synthesize(TEXT, "en", bogus=1)


def test_mismatched_versions(assets, tmp_path):
    from gsvkit.inference.pipeline import TTS

    v1_s1, _ = build_models(tmp_path / "v1", version="v1")
    with pytest.raises(CheckpointError, match="is a v1 GPT model but .* is a v2 SoVITS model; use a v2 GPT with it"):
        TTS(s1=v1_s1, s2=assets["s2"])
    with pytest.raises(CheckpointError, match="s1"):
        TTS(s1=assets["s2"], s2=assets["s2"])


def test_voice_without_hubert_uses_stored_prompt(voice_dir, assets, tmp_path):
    import shutil

    from gsvkit.inference.pipeline import TTS
    from gsvkit.inference.voice import VOICE_FILE, load_voice

    bare = tmp_path / "bare"
    shutil.copytree(voice_dir, bare)
    info = load_voice(bare).info.model_copy(update={"hubert": None})
    (bare / VOICE_FILE).write_text(info.model_dump_json(), encoding="utf-8")
    tts = TTS(bare)  # no HuBERT anywhere: the voice stores its prompt tokens
    with_hubert = TTS(voice_dir, hubert=assets["hubert"])
    a = tts.synthesize(TEXT, "en", seed=1, **SHORT)[1]
    b = with_hubert.synthesize(TEXT, "en", seed=1, **SHORT)[1]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="HuBERT"):
        tts.synthesize(TEXT, "en", ref_audio=assets["aux"], ref_text="Other clip.", ref_lang="en", consent=CONSENT)


def test_voice_with_stored_prompt_never_loads_hubert_for_its_own_clip(voice_dir, assets):
    from gsvkit.inference.pipeline import TTS

    tts = TTS(voice_dir, hubert=assets["hubert"])  # HuBERT at hand, and the voice stores its prompt tokens
    tts.synthesize(TEXT, "en", seed=1, **SHORT)
    assert tts.prompts._hubert is None  # the stored tokens were used: HuBERT (about 380 MB) never loaded
    tts.synthesize(TEXT, "en", ref_audio=assets["aux"], ref_text="Other clip.", ref_lang="en", consent=CONSENT,
                   **SHORT)  # fmt: skip
    assert tts.prompts._hubert is not None  # another clip has to be read


def test_no_models_no_reference(assets):
    from gsvkit.inference.pipeline import TTS

    with pytest.raises(CheckpointError, match="both"):
        TTS(s1=assets["s1"])
    tts = TTS(s1=assets["s1"], s2=assets["s2"])
    with pytest.raises(GsvError, match="reference"):
        tts.synthesize(TEXT, "en")
    assert TTS().status()["loaded"] is False


# ------------------------------------------------------------------------------------------------ switching
def test_model_switch_during_synthesis(tts, assets, tmp_path):
    other_s1, other_s2 = build_models(tmp_path / "other", seed=1)
    kw = {"seed": 21, **SHORT}
    baseline = tts.synthesize(TEXT, "en", **kw)[1]
    old = tts.bundle
    started, switched = threading.Event(), threading.Event()
    real = old.s1.generate_iter

    def slow(*a, **k):
        started.set()
        assert switched.wait(60)
        yield from real(*a, **k)

    old.s1.generate_iter = slow
    out = {}
    try:
        t = threading.Thread(target=lambda: out.setdefault("audio", tts.synthesize(TEXT, "en", **kw)[1]))
        t.start()
        assert started.wait(60)
        tts.load_models(s1=other_s1, s2=other_s2)  # while the synthesis above is mid-way
        switched.set()
        t.join(120)
    finally:
        del old.s1.generate_iter
        switched.set()
    np.testing.assert_array_equal(out["audio"], baseline)  # finished on the models it started with
    assert tts.bundle is not old and tts.bundle.s1_path == other_s1.resolve()
    after = tts.synthesize(TEXT, "en", **kw)[1]
    assert after.shape != baseline.shape or not np.array_equal(after, baseline)
    with pytest.raises(CheckpointError):
        tts.load_models(s1=tmp_path / "nope.safetensors")
    assert tts.bundle.s1_path == other_s1.resolve()  # a failed switch changes nothing
    tts.load_models(s1=assets["s1"], s2=assets["s2"])


# ------------------------------------------------------------------------------------------------ voices
def test_voice_files_and_listing(voice_dir, assets, tmp_path):
    from gsvkit.inference.voice import create_voice, load_voice, scan_voices

    v = load_voice(voice_dir)
    assert v.info.provenance.consent.statement.startswith("synthetic") and v.info.provenance.s2_sha256
    assert v.reference_audio.is_file() and v.prompt_cache.is_file() and "ko" in v.info.languages
    assert [e.voice.name for e in scan_voices(voice_dir.parent)] == ["tiny"]
    with pytest.raises(DataError, match="not empty"):
        create_voice(voice_dir, s1=assets["s1"], s2=assets["s2"], ref_audio=assets["ref"], ref_text="x",
                     ref_lang="en", consent="c")  # fmt: skip
    with pytest.raises(ConsentError, match="consent record"):
        create_voice(tmp_path / "v", s1=assets["s1"], s2=assets["s2"], ref_audio=assets["ref"], ref_text="x",
                     ref_lang="en", consent=" ")  # fmt: skip
    short = tmp_path / "short.wav"
    sf.write(short, speechlike(2.0), 16000)
    with pytest.raises(AudioError, match="3-10 s"):
        create_voice(tmp_path / "v", s1=assets["s1"], s2=assets["s2"], ref_audio=short, ref_text="x",
                     ref_lang="en", consent="c")  # fmt: skip
    assert not (tmp_path / "v").exists()
    fixtures = Path(__file__).parent / "fixtures" / "gsv_v2_parity"  # official containers holding a few tensors
    with pytest.raises(CheckpointError, match="do not fit"):
        create_voice(tmp_path / "v", s1=fixtures / "s1_export.ckpt", s2=fixtures / "s2_export_v2.pth",
                     ref_audio=assets["ref"], ref_text="x", ref_lang="en", consent="c")  # fmt: skip
    assert not (tmp_path / "v").exists() and not list(tmp_path.glob(".v.*"))
    bad = tmp_path / "evil"
    bad.mkdir()
    (bad / "voice.json").write_text(
        v.info.model_copy(update={"s1": "../../etc/passwd"}).model_dump_json(), encoding="utf-8"
    )
    with pytest.raises(DataError, match="inside the voice directory"):
        load_voice(bad)
