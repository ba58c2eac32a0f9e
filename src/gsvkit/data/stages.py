"""The per-clip stages of `gsv prepare` after slicing: text → phones (+BERT), HuBERT features, semantic tokens.

Each function does the work for one clip and returns plain data (or raises a `GsvError` the caller turns into
a dropped item); the caller decides whether the work is needed (see `gsvkit.data.state`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gsvkit.errors import AudioError, DataError, GsvError, TextError
from gsvkit.utils.io import atomic_write_bytes

# ------------------------------------------------------------------------------------------------------- text
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_SILENT_PHONES = {",", ".", "!", "?", "…", "-", "_", "SP", "SP2", "SP3", "UNK", "[", "]"}
BERT_LANGUAGES = ("zh",)
SINGLE_LANGUAGES = ("zh", "ja", "en", "ko", "yue")  # upstream computes BERT features for zh only; zeros for the rest

TextFn = Callable[[str, str], dict]


def drop_reason(err: Exception) -> str:
    """An error as a report line: our own errors speak for themselves, others also name their type."""
    return str(err) if isinstance(err, GsvError) else f"{type(err).__name__}: {err}"


def language_mismatch(text: str, language: str) -> str | None:
    """Why `text` cannot be in the declared `language`, judged by its script; None when it can."""
    han, kana, hangul = bool(_HAN.search(text)), bool(_KANA.search(text)), bool(_HANGUL.search(text))
    base = language.removeprefix("all_")
    if base == "en" and (han or kana or hangul):
        found = "Korean" if hangul else "Japanese" if kana else "Chinese"
        return f"declared en but the text contains {found} characters; fix the language or the transcript"
    if base in ("zh", "yue") and not han:
        return f"declared {language} but the text has no Chinese characters; fix the language or the transcript"
    if base == "ja" and not (han or kana):
        return f"declared {language} but the text has no Japanese characters; fix the language or the transcript"
    if base == "ko" and not hangul:
        return f"declared {language} but the text has no Korean characters; fix the language or the transcript"
    return None


def frontend_text_fn(version: str) -> TextFn:
    """The package's text frontend as `fn(text, language) -> {norm_text, phones, phone_ids, word2ph}`.

    A plain language (zh, ja, en, ko, yue) is cleaned as one piece, like upstream's 1-get-text.py; mixed modes
    (auto, all_zh, ...) go through the frontend's language segmentation.
    """
    from gsvkit.text import TextFrontend

    frontend = TextFrontend(version=version)

    def run(text: str, language: str) -> dict:
        if language in SINGLE_LANGUAGES:
            r = frontend.clean(text, language)
        else:
            r = frontend.process(text, language)
        return {
            "norm_text": r.norm_text,
            "phones": list(r.phones),
            "phone_ids": [int(i) for i in r.phone_ids],
            "word2ph": None if r.word2ph is None else [int(w) for w in r.word2ph],
        }

    return run


def text_to_phones(text: str, language: str, text_fn: TextFn) -> dict:
    """Phones of one transcript, with upstream's dataset-preparation substitutions (`%` → `-`, `￥` → `,`)."""
    if not text.strip():
        raise TextError("empty transcript")
    mismatch = language_mismatch(text, language)
    if mismatch:
        raise TextError(mismatch)
    result = text_fn(text.replace("%", "-").replace("￥", ","), language)
    phones = result["phones"]
    if not any(p not in _SILENT_PHONES for p in phones):
        raise TextError(f"nothing pronounceable in {text!r} (phones: {' '.join(phones) or 'none'})")
    if result.get("word2ph") is not None and sum(result["word2ph"]) != len(phones):
        raise TextError(f"word2ph does not add up to the {len(phones)} phones of {text!r}")
    return result


# --------------------------------------------------------------------------------------------------- features
def save_tensors(path: Path, tensors: dict[str, Any]) -> None:
    """Write a safetensors file atomically."""
    import torch
    from safetensors.torch import save

    data = {k: torch.as_tensor(v).contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(data))


def load_tensor(path: Path, name: str) -> Any:
    from safetensors.torch import load_file

    return load_file(str(path))[name]


def hubert_features(clip: Path, featurizer: Callable, scale: float, hop: int | None = None) -> Any:
    """[C, T] float32 HuBERT features of a clip file (read at 16 kHz and scaled like upstream's input).

    T is HuBERT's 50 Hz frame count. When the s2 model's frame rate (sampling rate / `hop`) is not 50 Hz, as in
    small test configs, the features are linearly resampled in time to one frame per `hop` samples of the clip,
    because s2 pairs every spectrogram frame with one feature frame. Official models run at 50 Hz: untouched.
    """
    import torch

    from gsvkit.audio.features import HUBERT_HOP, HUBERT_SR
    from gsvkit.audio.io import load_audio, read_audio

    clip_wav, clip_sr = read_audio(clip)
    wav = load_audio(clip, HUBERT_SR) * np.float32(scale)  # [S16]
    ssl = featurizer(wav)  # [1, C, T]
    if ssl.ndim != 3 or ssl.shape[0] != 1:
        raise DataError(f"HuBERT returned shape {tuple(ssl.shape)}, expected [1, C, T]")
    if not torch.isfinite(ssl).all():
        raise AudioError("HuBERT features contain NaN/inf (the clip may be clipped or corrupt)")
    if hop is not None and clip_sr * HUBERT_HOP != HUBERT_SR * hop:
        frames = max(1, len(clip_wav) // hop)
        ssl = torch.nn.functional.interpolate(ssl.float(), size=frames, mode="linear", align_corners=False)
    return ssl[0].float()


def semantic_tokens(ssl: Any, quantizer: Any) -> Any:
    """[T25] int64 semantic tokens of [C, T50] HuBERT features through an s2 model's quantizer."""
    import torch

    extract = getattr(quantizer, "extract_latent", quantizer)
    with torch.inference_mode():
        codes = extract(ssl.unsqueeze(0))  # [1, 1, T25]
    codes = torch.as_tensor(codes)
    return codes.reshape(-1).to(torch.int64).cpu()


def bert_features(norm_text: str, word2ph: list[int], bert: Callable, n_phones: int) -> Any:
    """[1024, n_phones] BERT features of a zh utterance."""
    feats = bert(norm_text, word2ph)
    if feats.shape[-1] != n_phones:
        raise TextError(f"BERT features cover {feats.shape[-1]} phones, expected {n_phones}")
    return feats.float().cpu()


def cached_feature_stage(
    run: Any,
    name: str,
    clips: list,
    key: Callable[[Any], str],
    compute: Callable[[Any], tuple[dict[str, Any], dict]],
    drop_failed: bool = True,
) -> list:
    """One resumable per-clip stage writing features/<id>.<name>.safetensors (run: prepare's `_Run`).

    A clip whose recorded key matches and whose file exists is reused; the others go through `compute(clip)` ->
    (tensors to save, facts for the stage's state). With `drop_failed` a clip whose compute raises is dropped with
    its reason; otherwise the error ends the stage. Returns the clips kept, in order."""
    from gsvkit.data.state import StageState

    state, feats = StageState(run.out, name), run.out / "features"
    todo = []
    for c in clips:
        k = key(c)
        if state.get(c.id, k) is not None and (feats / f"{c.id}.{name}.safetensors").is_file():
            run.report.reused[name] += 1
        else:
            todo.append((c, k))
    failed: set[str] = set()
    with run.bar(name, len(todo)) as advance:
        for c, k in todo:
            try:
                tensors, facts = compute(c)
                save_tensors(feats / f"{c.id}.{name}.safetensors", tensors)
                state.put(c.id, k, facts)
                run.report.computed[name] += 1
            except Exception as err:
                if not drop_failed:
                    raise
                run.drop(c.where(), name, drop_reason(err))
                failed.add(c.id)
            advance()
    kept = [c for c in clips if c.id not in failed]
    state.prune({c.id for c in kept})
    return kept
