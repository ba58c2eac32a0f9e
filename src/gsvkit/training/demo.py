"""`gsv demo`: the whole pipeline on a small synthetic voice with tiny models, in a few minutes on CPU.

    synthesize recordings + transcripts → gsv prepare → train s2 (from a random tiny base) → train s1 (early
    stopping) → create a voice → synthesize one sentence

No model weights exist for the tiny configs, so the base s2 model is randomly initialised (its codebook set by
k-means on the recordings' features, so the semantic tokens follow the audio) and "HuBERT" is a fixed random
projection of the log spectrum (`SpectralFeaturizer`). The voice stores the reference's prompt tokens, so it speaks
with no model beside it. Everything else is the real code path. The speech it produces is not intelligible:
quality needs the official pretrained weights.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsvkit.errors import DataError

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "tiny"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small voice can carry a long way when the evening is quiet.",
    "Please bring the green book from the kitchen table to me.",
    "We walked along the shore and counted the boats in the harbour.",
    "Every morning the baker opens his shop before the sun rises.",
    "The old clock in the hall struck nine as the guests arrived.",
    "She painted the fence blue and then sat down to rest a while.",
    "Rain fell softly on the roof while the children read their stories.",
    "Could you tell me the way to the station and the nearest market?",
    "The train left on time, but the bridge was closed for repairs.",
    "Bright lanterns lit the narrow street during the winter festival.",
    "He wrote a letter to his sister about the mountains in the north.",
    "Fresh bread and warm soup made the cold afternoon feel shorter.",
    "The garden was full of roses, tulips and tall yellow sunflowers.",
    "Our teacher asked us to read the first chapter before Friday.",
    "A gentle wind moved the leaves and the birds began to sing.",
]


class SpectralFeaturizer:
    """Stand-in for HuBERT in the demo: wav16k → [1, dim, T], a fixed random projection of the log spectrum.

    It has HuBERT's interface; its frame rate is the tiny s2 model's (`hop` samples at 16 kHz), so its features
    need no resampling in time. Like HuBERT's feature extractor it normalises its input first, so the level of
    the audio (prepare scales it, inference does not) does not change the features.
    """

    def __init__(self, dim: int = 32, hop: int = 320, seed: int = 0) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.n_fft, self.hop = 640, hop
        self.proj = torch.randn(dim, self.n_fft // 2 + 1, generator=g) / math.sqrt(self.n_fft // 2 + 1)

    def __call__(self, wav16k: np.ndarray):
        import torch

        wav = torch.as_tensor(np.asarray(wav16k, dtype=np.float32))
        wav = (wav - wav.mean()) / (wav.std() + 1e-7)
        frames = max(1, len(wav) // self.hop)
        spec = torch.stft(
            torch.nn.functional.pad(wav, (self.n_fft // 2, self.n_fft // 2)), self.n_fft, self.hop,
            window=torch.hann_window(self.n_fft), return_complex=True,
        ).abs()[:, :frames]  # [bins, T]
        return torch.tanh(self.proj @ torch.log(spec + 1e-4) / 4)[None]  # [1, dim, T]


@dataclass(frozen=True)
class TokenStats:
    """How varied the dataset's semantic tokens are: s1 learns nothing from a constant sequence."""

    tokens: int
    codes_used: int
    codebook: int
    top_share: float  # share of the most common code
    perplexity: float  # exp(entropy): the number of equally likely codes with the same spread

    def describe(self) -> str:
        return (f"  semantic tokens:         {self.tokens} tokens use {self.codes_used} of {self.codebook} codes "
                f"(most common {self.top_share:.0%}, perplexity {self.perplexity:.1f})")


def token_stats(dataset: Path, codebook: int) -> TokenStats:
    """Count the semantic tokens of every utterance of a prepared dataset."""
    from gsvkit.data.manifest import read_manifest
    from gsvkit.data.stages import load_tensor

    counts = np.zeros(codebook, dtype=np.int64)
    for u in read_manifest(dataset):
        codes = load_tensor(u.feature_path(dataset, "semantic"), "codes").numpy()
        counts += np.bincount(codes, minlength=codebook)[:codebook]
    total = int(counts.sum())
    p = counts[counts > 0] / max(total, 1)
    return TokenStats(total, int((counts > 0).sum()), codebook, float(counts.max() / max(total, 1)),
                      float(np.exp(-(p * np.log(p)).sum())))


def format_curve(curve: list[tuple[int, float]], monitor: str, points: int = 12) -> str:
    """The validation curve in one line: at most `points` epochs, evenly spaced, always the first and last."""
    if len(curve) > points:
        step = (len(curve) - 1) / (points - 1)
        curve = [curve[round(i * step)] for i in range(points)]
    values = ", ".join(f"{epoch}: {value:.3f}" for epoch, value in curve)
    return f"  {monitor} by epoch:  {values or 'none'}"


@dataclass
class DemoResult:
    out: Path
    dataset: Path
    run: Path
    voice: Path | None
    wav: Path | None
    s2_summary: str
    s1_summary: str
    seconds: float
    tokens: TokenStats | None = None
    s1_curve: str = ""
    note: str = ""

    def describe(self) -> str:
        lines = [
            f"gsv demo finished in {self.seconds:.0f} s. Everything is in {self.out}:",
            f"  dataset (gsv prepare):   {self.dataset}",
        ]
        if self.tokens is not None:
            lines.append(self.tokens.describe())
        lines += [
            f"  training run:            {self.run}   (inspect with: gsv runs show {self.run})",
            self.s2_summary,
            self.s1_summary,
            self.s1_curve,
            f"  voice:                   {self.voice}   (it stores its prompt tokens: no HuBERT needed)",
            f"  synthesized sentence:    {self.wav}",
            f"Speak with it: gsv synth --voice {self.voice} \"Any sentence.\" -o hello.wav",
            "The models are tiny and start from random weights, so the audio only proves the pipeline works;",
            "real quality needs the official pretrained weights (gsv train s2/s1 --pretrained ...).",
        ]
        if self.note:
            lines.append(self.note)
        return "\n".join(line for line in lines if line)


def synthesize_recordings(folder: Path, minutes: float, sr: int, hop: int, seed: int = 0) -> Path:
    """Write synthetic English recordings (a harmonic 'voice' driven by the real phones) and a `.list` file."""
    from gsvkit.audio.io import save_audio
    from gsvkit.text import TextFrontend
    from gsvkit.training.toy_data import synth_clip

    folder.mkdir(parents=True, exist_ok=True)
    fe = TextFrontend(version="v2")
    rng = np.random.default_rng(seed)
    lines, total, i = [], 0.0, 0
    while total < minutes * 60 or i < 6:
        text = SENTENCES[i % len(SENTENCES)]
        phone_ids = fe.process(text, "en").phone_ids
        durations = [int(rng.integers(5, 9)) for _ in phone_ids]  # 40-70 ms per phone
        wav = synth_clip(phone_ids, durations, 140.0, sr, 2 * hop, rng)
        pad = np.zeros(int(0.15 * sr), dtype=np.float32)
        wav = np.concatenate([pad, wav, pad])
        path = folder / f"rec{i:03d}.wav"
        save_audio(path, wav, sr)
        lines.append(f"{path.resolve()}|demo_speaker|EN|{text}")
        total += len(wav) / sr
        i += 1
    listing = folder / "transcripts.list"
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return listing


MARKER = ".gsv-demo"  # marks a folder written by the demo, the only kind `overwrite` may delete


def _fresh_folder(out: Path, overwrite: bool) -> None:
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise DataError(f"{out}: already exists and is not empty; choose another --out or pass --overwrite")
    if not (out / MARKER).is_file():
        raise DataError(f"{out}: not a folder written by gsv demo (no {MARKER} file); refusing to overwrite it")
    shutil.rmtree(out)


def base_model(cfg, recordings: Path, featurizer):
    """A random tiny s2 model whose quantiser is set by k-means on the recordings' features.

    Frozen at random, the quantiser maps every frame to one code and s1 would learn a constant; k-means on the
    dataset's own features (what upstream's pretraining starts from) gives tokens that follow the audio.
    """
    import torch

    from gsvkit.audio.features import PREPARE_INPUT_SCALE
    from gsvkit.data.stages import hubert_features
    from gsvkit.models.s2 import SynthesizerTrn

    torch.manual_seed(0)
    net = SynthesizerTrn(cfg.model).eval()
    with torch.no_grad():
        frames = [
            net.ssl_proj(hubert_features(wav, featurizer, PREPARE_INPUT_SCALE, cfg.data.hop_length)[None])[0].T
            for wav in sorted(recordings.glob("*.wav"))
        ]  # each [T25, D]
        net.quantizer.kmeans_init(torch.cat(frames), torch.Generator().manual_seed(0))
    return net


def run_demo(
    out: str | Path = "gsv-demo",
    minutes: float = 1.0,
    progress: bool = True,
    say: Callable[[str], None] = print,
    s2_epochs: int = 10,
    s1_epochs: int = 200,
    overwrite: bool = False,
    s2_items_per_epoch: int = 40,
) -> DemoResult:
    """Run the pipeline end to end into `out`; see the module docstring.

    `out` must not exist yet or be empty; with `overwrite`, a folder an earlier demo wrote is replaced.
    s2 sees at least `s2_items_per_epoch` clips per epoch (the small dataset repeated): its decoder starts from
    random weights and needs about a hundred steps before its output swings around zero like a waveform.
    """
    from gsvkit.checkpoint import save_checkpoint
    from gsvkit.config import S2Config, load_config
    from gsvkit.data.prepare import prepare
    from gsvkit.data.prepare_config import PrepareConfig
    from gsvkit.training.fit import format_summary, train_s1, train_s2

    started = time.time()
    out = Path(out)
    _fresh_folder(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by gsv demo; `gsv demo --overwrite` may replace this folder\n")
    s2_cfg = load_config(CONFIGS / "s2.yaml")
    assert isinstance(s2_cfg, S2Config)
    sr, hop = s2_cfg.data.sampling_rate, s2_cfg.data.hop_length

    say(f"1/6 synthesizing about {minutes:.1f} min of recordings of a synthetic speaker")
    listing = synthesize_recordings(out / "recordings", minutes, sr, hop)

    say("2/6 a random tiny s2 model stands in for the pretrained base; its codebook is set by k-means")
    featurizer = SpectralFeaturizer(dim=s2_cfg.model.ssl_dim, hop=hop * 16_000 // sr)
    base = out / "base" / "s2-base.safetensors"
    save_checkpoint(base, base_model(s2_cfg, out / "recordings", featurizer).state_dict(), s2_cfg,
                    {"note": "random tiny base, codebook by k-means on the demo recordings (demo)"})

    say("3/6 gsv prepare: clips, phones, features, semantic tokens, train/val split")
    dataset = out / "dataset"
    prep_cfg = PrepareConfig(
        inputs=[str(out / "recordings")], out=str(dataset), transcripts=[str(listing)], language="en",
        speaker="demo_speaker", s2=str(base), val_fraction=0.25, device="cpu",
    )
    prepare(prep_cfg, featurizer=featurizer, progress=progress)
    tokens = token_stats(dataset, s2_cfg.model.codebook_size)
    say(tokens.describe().strip())

    say("4/6 gsv train s2 (from the base, validation every epoch)")
    run = out / "run"
    r2 = train_s2(dataset, run, config=CONFIGS / "s2.yaml", pretrained=base, progress=progress,
                  overrides=[f"train.epochs={s2_epochs}", f"train.min_items_per_epoch={s2_items_per_epoch}",
                             "train.batch_size=4", "train.learning_rate=0.005"])
    say("5/6 gsv train s1 (early stopping on validation loss)")
    r1 = train_s1(dataset, run, config=CONFIGS / "s1.yaml", progress=progress,
                  overrides=[f"train.epochs={s1_epochs}", "train.batch_size=4", "train.early_stopping.patience=3",
                             # the tiny GPT keeps shaving ~0.001 per epoch for hundreds of epochs; stop there
                             "train.early_stopping.min_delta=0.005", "train.lr_scale=0.2"])
    curve = format_curve(r1.val_curve, r1.monitor)
    say(curve.strip())

    say("6/6 creating a voice and synthesizing one sentence")
    voice_dir, wav_path, note = None, None, ""
    try:
        voice_dir, wav_path = _speak(out, dataset, run, featurizer, sr)
    except ImportError as err:  # the inference package is optional for training
        note = f"(synthesis skipped: {err})"
    return DemoResult(out, dataset, run, voice_dir, wav_path, format_summary(r2), format_summary(r1),
                      time.time() - started, tokens, curve, note)


DEMO_SENTENCE = "Hello, this sentence was spoken by a voice trained in a few minutes."


def _speak(out: Path, dataset: Path, run: Path, featurizer, sr: int) -> tuple[Path, Path]:
    from gsvkit.audio.io import save_audio
    from gsvkit.data.manifest import read_manifest
    from gsvkit.inference import TTS
    from gsvkit.inference.reference import write_prompt_cache
    from gsvkit.inference.voice import create_voice, find_run_weights, load_voice

    items = read_manifest(dataset)
    ref_path, ref_text = _reference(out, dataset, items, sr)
    s1, s2 = find_run_weights(run)
    voice = create_voice(
        out / "voice", s1=s1, s2=s2, ref_audio=ref_path, ref_text=ref_text, ref_lang="en",
        consent="synthetic speaker generated by gsv demo; no real person's voice", name="demo",
        speaker="synthetic demo speaker", source="gsv demo",
    )
    # The voice stores the reference's tokens by the demo's HuBERT stand-in, so it speaks with no model given.
    write_prompt_cache(voice, featurizer)
    voice = load_voice(voice.root)
    rate, audio = TTS(voice).synthesize(DEMO_SENTENCE, "en", seed=0)
    wav_path = out / "demo.wav"
    save_audio(wav_path, audio, rate)
    return voice.root, wav_path


def _reference(out: Path, dataset: Path, items: list, sr: int) -> tuple[Path, str]:
    """A 3-10 s reference clip: the longest validation clip in range, else consecutive clips joined."""
    from gsvkit.audio.io import load_audio, save_audio

    usable = [u for u in items if 3.0 <= u.duration <= 10.0]
    if usable:
        ref = max(usable, key=lambda u: (u.split == "val", u.duration))
        return ref.clip_path(dataset), ref.text
    parts, texts, total = [], [], 0.0
    for u in sorted(items, key=lambda u: u.duration, reverse=True):
        if total >= 4.0:
            break
        wav = load_audio(u.clip_path(dataset), sr)
        if total + len(wav) / sr > 9.5:
            continue
        parts.append(wav)
        texts.append(u.text)
        total += len(wav) / sr
    path = out / "reference.wav"
    save_audio(path, np.concatenate(parts), sr)
    return path, " ".join(texts)
