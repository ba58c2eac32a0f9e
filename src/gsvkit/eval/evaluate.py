"""Score a voice, a training run or a pair of checkpoints on held-out sentences.

Each held-out sentence is synthesised, then scored: speaker similarity to the target speaker, word error rate
(English only), and, where the sentence has a ground-truth recording, mel distance and duration ratio. The
held-out sentences come from an upstream `.list` (`path|speaker|LANG|text`), a prepared dataset (its `val`
split), or a text file (one sentence per line, no ground truth).

The target speaker defaults to the ground-truth clips of the sentences (the held-out speaker's real voice);
without ground truth, to the voice's reference clip. `evaluate()` takes any synthesis callable, so training
can rank checkpoints with it and already-rendered audio can be scored with `evaluate_audio_dir()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gsvkit.errors import AudioError, DataError, GsvError
from gsvkit.eval.report import METRICS, EvalReport, ItemScore
from gsvkit.eval.waveform import AudioInput

if TYPE_CHECKING:
    from gsvkit.inference import TTS, Voice

LIST_LANGS = {"zh": "zh", "en": "en", "ja": "ja", "jp": "ja", "ko": "ko", "yue": "yue"}


@dataclass(frozen=True)
class EvalItem:
    """One held-out sentence: what to say, and (optionally) a recording of the target speaker saying it."""

    id: str
    text: str
    language: str = "en"
    ground_truth: Path | None = None
    speaker: str | None = None


Synthesize = Callable[[EvalItem], tuple[int, np.ndarray]]
"""Maps a sentence to `(sample_rate, waveform [T] float32)`."""


# ------------------------------------------------------------------------------------------------ sentences


def items_from_list(path: str | Path, speaker: str | None = None) -> list[EvalItem]:
    """Sentences of an upstream `.list` file; relative audio paths are taken relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|", 3)
        if len(parts) != 4 or not parts[3].strip():
            raise DataError(f"{path}:{lineno}: expected `path|speaker|LANG|text`, got {line!r}")
        wav, spk, lang, text = (p.strip() for p in parts)
        if speaker is not None and spk != speaker:
            continue
        language = LIST_LANGS.get(lang.lower(), lang.lower())
        wav_path = Path(wav) if os.path.isabs(wav) else path.parent / wav
        items.append(EvalItem(Path(wav).stem, text, language, wav_path, spk))
    return items


def items_from_dataset(dataset: str | Path, split: str = "val", speaker: str | None = None) -> list[EvalItem]:
    """Sentences of a prepared dataset's `split` (default: the held-out `val` split), with their clips."""
    from gsvkit.data.manifest import read_manifest

    dataset = Path(dataset)
    root = dataset if dataset.is_dir() else dataset.parent
    return [
        EvalItem(u.id, u.text, u.language, u.clip_path(root), u.speaker)
        for u in read_manifest(dataset)
        if u.split == split and (speaker is None or u.speaker == speaker)
    ]


def items_from_text(path: str | Path, language: str = "en") -> list[EvalItem]:
    """One sentence per non-empty line; no ground truth."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: sentence file not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [EvalItem(f"s{i:04d}", text, language) for i, text in enumerate(lines)]


def load_items(
    source: str | Path, split: str = "val", speaker: str | None = None, language: str = "en", limit: int | None = None
) -> list[EvalItem]:
    """Held-out sentences from a `.list`, a dataset directory / manifest.jsonl, or a text file."""
    source = Path(source)
    if source.is_dir() or source.suffix == ".jsonl":
        items = items_from_dataset(source, split, speaker)
    elif source.suffix == ".list":
        items = items_from_list(source, speaker)
    else:
        items = items_from_text(source, language)
    if not items:
        what = f" of speaker {speaker!r}" if speaker else ""
        raise DataError(f"{source}: no sentences{what} to evaluate (split {split!r} for datasets)")
    return items[:limit] if limit else items


# ------------------------------------------------------------------------------------------------ scoring


class Scorer:
    """Scores synthesised audio of `EvalItem`s. Models load on first use and are shared.

    `target`: clips of the one target speaker. Without it, each item is compared with its own speaker's
    ground-truth clips (all items with a ground truth and the same `speaker`), so a multi-speaker held-out set
    is scored speaker by speaker.
    """

    def __init__(
        self, target: Sequence[AudioInput] | None = None, metrics: Iterable[str] = METRICS, device: str = "cpu",
        items: Sequence[EvalItem] = (),
    ):
        self.metrics = set(metrics)
        unknown = self.metrics - set(METRICS)
        if unknown:
            raise GsvError(f"unknown metric(s) {sorted(unknown)}; choose from {list(METRICS)}")
        self.device = device
        self.targets: dict[str | None, list[AudioInput]] = {}
        if target is not None:
            self.targets[None] = list(target)
        else:
            for it in items:
                if it.ground_truth is not None:
                    self.targets.setdefault(it.speaker, []).append(it.ground_truth)
        self._embeddings: dict[str | None, np.ndarray] = {}

    def target_audio(self) -> list[AudioInput]:
        return [a for clips in self.targets.values() for a in clips]

    def target_embedding(self, speaker: str | None = None) -> np.ndarray | None:
        """The embedding the similarity of `speaker`'s items is measured against (None: no target)."""
        key = None if None in self.targets else speaker
        if "similarity" not in self.metrics or not self.targets.get(key):
            return None
        if key not in self._embeddings:
            from gsvkit.eval.similarity import get_encoder

            self._embeddings[key] = get_encoder(self.device).embed_speaker(self.targets[key])
        return self._embeddings[key]

    def score(self, item: EvalItem, wav: np.ndarray, sr: int) -> ItemScore:
        """All applicable metrics of one synthesised sentence `wav` [T] at `sr` Hz."""
        score = ItemScore(id=item.id, text=item.text, language=item.language, duration_s=len(wav) / sr)
        target = self.target_embedding(item.speaker)
        if target is not None:
            from gsvkit.eval.similarity import cosine, get_encoder

            score.similarity = cosine(get_encoder(self.device).embed(wav, sr), target)
        if "wer" in self.metrics and item.language == "en":
            from gsvkit.eval.wer import get_transcriber, word_error_rate

            result = word_error_rate(get_transcriber(self.device).transcribe(wav, sr), item.text)
            score.wer, score.hypothesis = result.wer, result.hypothesis
        if item.ground_truth is not None and self.metrics & {"mel_distance", "duration_ratio"}:
            from gsvkit.eval.mel import mel_distance

            mel = mel_distance(wav, item.ground_truth, sr=sr)
            if "mel_distance" in self.metrics:
                score.mel_distance = mel.distance
            if "duration_ratio" in self.metrics:
                score.duration_ratio = mel.duration_ratio
        return score


def evaluate(
    synthesize: Synthesize,
    items: Sequence[EvalItem],
    *,
    name: str,
    target: Sequence[AudioInput] | None = None,
    metrics: Iterable[str] = METRICS,
    audio_dir: str | Path | None = None,
    device: str = "cpu",
    settings: dict | None = None,
    on_item: Callable[[ItemScore], None] | None = None,
) -> EvalReport:
    """Synthesise and score every item; a sentence that fails is recorded with its error, not raised.

    `target`: audio of the target speaker (default: each item's speaker's ground-truth clips). `audio_dir`: also
    save each synthesised sentence there as `<id>.wav`.
    """
    scorer = Scorer(target, metrics, device, items)
    target_names = [str(t) for t in scorer.target_audio() if not isinstance(t, np.ndarray)]
    report = EvalReport(name=name, target=target_names if "similarity" in scorer.metrics else [],
                        settings={"metrics": sorted(scorer.metrics), **(settings or {})})
    for item in items:
        try:
            sr, wav = synthesize(item)
            wav = np.asarray(wav, dtype=np.float32).reshape(-1)
            score = scorer.score(item, wav, sr)
            if audio_dir is not None:
                from gsvkit.audio.io import save_audio

                out = Path(audio_dir) / f"{item.id}.wav"
                save_audio(out, wav, sr)
                score.audio = str(out)
        except (GsvError, RuntimeError) as err:
            score = ItemScore(id=item.id, text=item.text, language=item.language, duration_s=0.0, error=str(err))
        report.items.append(score)
        if on_item is not None:
            on_item(score)
    return report.summarize()


# ------------------------------------------------------------------------------------------------ what to score


def audio_dir_synthesizer(audio_dir: str | Path) -> Synthesize:
    """Treat already-rendered audio as the synthesis output: `<audio_dir>/<id>.wav` for each item."""
    audio_dir = Path(audio_dir)

    def synthesize(item: EvalItem) -> tuple[int, np.ndarray]:
        from gsvkit.audio.io import read_audio

        for suffix in (".wav", ".flac", ".ogg"):
            path = audio_dir / f"{item.id}{suffix}"
            if path.is_file():
                wav, sr = read_audio(path)
                return sr, wav
        raise AudioError(f"{audio_dir}: no audio for sentence {item.id!r} (expected {item.id}.wav)")

    return synthesize


def tts_synthesizer(tts, seed: int | None = 0, **params) -> Synthesize:
    """Wrap a `gsvkit.inference.TTS` as a `Synthesize`; `params` go to every `tts.synthesize` call
    (ref_audio, ref_text, ref_lang, top_k, max_new_tokens, ...)."""

    def synthesize(item: EvalItem) -> tuple[int, np.ndarray]:
        sr, wav = tts.synthesize(item.text, item.language, seed=seed, **params)
        return int(sr), np.asarray(wav, dtype=np.float32)

    return synthesize


def load_tts(
    voice: Voice | str | Path | None = None,
    *,
    s1: str | Path | None = None,
    s2: str | Path | None = None,
    hubert: str | Path | None = None,
    bert: str | Path | None = None,
    device: str = "cpu",
) -> TTS:
    """A `gsvkit.inference.TTS` for a voice directory and/or a pair of weight files."""
    from gsvkit.inference import TTS

    return TTS(voice, s1=s1, s2=s2, hubert=hubert, bert=bert, device=device)


def evaluate_voice(
    voice: str | Path, items: Sequence[EvalItem], *, target: Sequence[AudioInput] | None = None,
    seed: int | None = 0, device: str = "cpu", hubert: str | Path | None = None, bert: str | Path | None = None,
    params: dict | None = None, **kwargs,
) -> EvalReport:
    """Score a voice directory on `items`. Without ground truth, the target is the voice's reference clip.

    `params`: synthesis parameters for every sentence (`TTS.synthesize` keywords); `kwargs` go to `evaluate`.
    """
    from gsvkit.inference import load_voice

    v = load_voice(voice)
    if target is None and not any(it.ground_truth for it in items):
        target = [v.reference_audio]
    tts = load_tts(v, hubert=hubert, bert=bert, device=device)
    return evaluate(tts_synthesizer(tts, seed, **(params or {})), items, name=v.name, target=target, device=device,
                    settings={"voice": str(v.root), "seed": seed, **(params or {})}, **kwargs)


def evaluate_checkpoints(
    s1: str | Path, s2: str | Path, items: Sequence[EvalItem], *, ref_audio: str | Path, ref_text: str,
    ref_lang: str = "en", target: Sequence[AudioInput] | None = None, seed: int | None = 0, device: str = "cpu",
    hubert: str | Path | None = None, bert: str | Path | None = None, name: str | None = None,
    params: dict | None = None, consent: str | None = None, **kwargs,
) -> EvalReport:
    """Score a pair of weight files speaking with `ref_audio` (transcript `ref_text`) as the reference.

    `consent` declares that the reference's speaker agreed (required, as for any synthesis from a clip)."""
    if target is None and not any(it.ground_truth for it in items):
        target = [ref_audio]
    tts = load_tts(s1=s1, s2=s2, hubert=hubert, bert=bert, device=device)
    params = {"ref_audio": ref_audio, "ref_text": ref_text, "ref_lang": ref_lang, "consent": consent, **(params or {})}
    settings = {"s1": str(s1), "s2": str(s2), "seed": seed, **{k: str(v) for k, v in params.items()}}
    return evaluate(tts_synthesizer(tts, seed, **params), items, name=name or Path(s2).stem, target=target,
                    device=device, settings=settings, **kwargs)


def pick_reference(dataset: str | Path, speaker: str | None = None) -> tuple[Path, str, str]:
    """A 3-10 s training clip of the dataset (of `speaker`) to use as the synthesis reference."""
    from gsvkit.data.manifest import read_manifest

    dataset = Path(dataset)
    root = dataset if dataset.is_dir() else dataset.parent
    for u in read_manifest(dataset):
        if u.split == "train" and 3.0 <= u.duration <= 10.0 and (speaker is None or u.speaker == speaker):
            return u.clip_path(root), u.text, u.language
    raise DataError(f"{dataset}: no 3-10 s training clip to use as reference; pass --ref and --ref-text")


def evaluate_run(run_dir: str | Path, items: Sequence[EvalItem], *, dataset: str | Path | None = None,
                 ref_audio: str | Path | None = None, ref_text: str | None = None, ref_lang: str = "en",
                 speaker: str | None = None, **kwargs) -> EvalReport:
    """Score the exported weights of a training run; the reference is given or picked from `dataset`."""
    from gsvkit.inference.voice import find_run_weights

    s1, s2 = find_run_weights(run_dir)
    if ref_audio is None or ref_text is None:
        if dataset is None:
            raise GsvError("a run needs a reference: pass --ref and --ref-text, or the dataset to pick one from")
        ref_audio, ref_text, ref_lang = pick_reference(dataset, speaker)
        # A clip of the run's own training data: whoever prepared the dataset vouched for it; the audit line says so.
        kwargs.setdefault("consent", f"training clip of the evaluated dataset {dataset}")
    return evaluate_checkpoints(s1, s2, items, ref_audio=ref_audio, ref_text=ref_text, ref_lang=ref_lang,
                                name=Path(run_dir).name, **kwargs)
