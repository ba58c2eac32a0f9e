"""The prompt of a synthesis: what s1 and s2 take from the reference clip, its transcript and the voice.

s1 continues the reference: its semantic tokens (from HuBERT, or stored in the voice) follow the transcript's
phones. s2 takes the timbre from the reference's spectrogram(s) and, for v2Pro/v2ProPlus, speaker embeddings.
Features are cached per file and per s2 model (`ReferenceCache`), so a voice's reference is read once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gsvkit.errors import CheckpointError, GsvError, TextError
from gsvkit.inference.bundle import ModelBundle
from gsvkit.inference.params import check_language
from gsvkit.inference.reference import ReferenceCache, SpeakerEmbeddings, read_prompt_cache
from gsvkit.inference.textprep import TextFeatures, TextReader, with_end_punctuation
from gsvkit.inference.voice import Voice

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Prompt:
    """Everything taken from the reference: s1's prompt (tokens + text features) and s2's spectrograms."""

    tokens: torch.Tensor | None  # [Tp] long; None = reference-free (no transcript)
    text: TextFeatures | None
    specs: list[torch.Tensor]  # each [1, bins, F]
    sv_embs: list[torch.Tensor] | None = None  # v2Pro: one [1, sv_dim] speaker embedding per spectrogram
    flow_mel: torch.Tensor | None = None  # v3/v4: the reference's normalised mel [1, 100, T] (the decoder's prompt)


class PromptBuilder:
    """Builds `Prompt`s, loading HuBERT only when a clip has to be read (a voice may store its prompt tokens)."""

    def __init__(
        self,
        cache: ReferenceCache,
        speakers: SpeakerEmbeddings,
        hubert_path: Path | None,
        onnx_dir: Path | None,
        device: str,
    ) -> None:
        self.cache = cache
        self.speakers = speakers
        self.hubert_path = hubert_path
        self.onnx_dir = onnx_dir
        self.device = device
        self._lock = threading.Lock()
        self._hubert: Any = None
        self._stored: dict[tuple[Path, str], torch.Tensor | None] = {}

    def hubert(self) -> Any:
        """The HuBERT featurizer (ONNX when `gsv export onnx` wrote one), loaded on first use."""
        with self._lock:
            if self._hubert is None and self.onnx_dir is not None and (self.onnx_dir / "hubert.onnx").is_file():
                from gsvkit.inference.onnx.runtime import OrtHubert

                self._hubert = OrtHubert(self.onnx_dir)
            if self._hubert is None:
                if self.hubert_path is None:
                    raise CheckpointError(
                        "reading a reference clip needs a HuBERT model (chinese-hubert-base): pass hubert=DIR "
                        "(CLI: --hubert DIR, or `gsv models fetch hubert` once), or use a voice that stores its "
                        "prompt tokens"
                    )
                from gsvkit.audio.features import HubertFeaturizer

                self._hubert = HubertFeaturizer(self.hubert_path, device=self.device)
            return self._hubert

    def tokens(self, bundle: ModelBundle, path: Path, voice: Voice | None) -> torch.Tensor:
        """The reference's semantic tokens [Tp]: stored in the voice when it is the voice's own clip and model
        (then HuBERT is not loaded even when one is at hand: the stored tokens are what it would compute)."""
        if voice is not None and path == voice.reference_audio:
            key = (voice.root, bundle.ident)
            if key not in self._stored:
                stored = read_prompt_cache(voice) if bundle.s2_path == voice.s2_path.resolve() else None
                self._stored[key] = stored
            tokens = self._stored[key]
            if tokens is not None:
                return tokens
        return self.cache.tokens(path, self.hubert(), bundle.s2, bundle.s2_config.data.sampling_rate, bundle.ident)

    def build(
        self,
        bundle: ModelBundle,
        reader: TextReader,
        voice: Voice | None,
        ref_audio: PathLike | None,
        ref_text: str | None,
        ref_lang: str | None,
        aux_refs: Sequence[PathLike],
    ) -> Prompt:
        """The prompt for a call: `voice`'s default reference unless `ref_audio` is given (then zero-shot)."""
        speaker = voice
        if ref_audio is None:
            if voice is None:
                raise GsvError("no reference audio: pass ref_audio (CLI: --ref) or use a voice")
            ref_path = voice.reference_audio
            ref_text = voice.reference_text if ref_text is None else ref_text
            ref_lang = ref_lang or voice.reference_language
            aux = [Path(a) for a in aux_refs] if aux_refs else voice.aux_references
        else:
            ref_path = Path(ref_audio)
            aux = [Path(a) for a in aux_refs]
            voice = voice if (voice is not None and ref_path == voice.reference_audio) else None
        data, ident = bundle.s2_config.data, bundle.ident
        specs = [self.cache.spectrogram(ref_path, data, ident, check=True)]
        specs += [self.cache.spectrogram(p, data, ident) for p in aux]
        m = bundle.s2_config.model
        embs = self.speakers.for_clips([ref_path, *aux], speaker, data, m.sv_dim) if m.is_pro else None
        ref_text = (ref_text or "").strip()
        mel = None
        if bundle.is_flow:
            from gsvkit.inference.flow import reference_mel, require_transcript

            require_transcript(bundle.version, ref_text)
            mel = reference_mel(ref_path, bundle.version)
        if not ref_text:  # reference-free: timbre from the spectrogram only, s1 starts without a prompt
            return Prompt(tokens=None, text=None, specs=specs, sv_embs=embs)
        if not ref_lang:
            raise TextError("the reference transcript needs its language: pass ref_lang (CLI: --ref-lang)")
        ref_lang = check_language(ref_lang, bundle.version, what="reference language")
        tokens = self.tokens(bundle, ref_path, voice)
        text = reader.features(with_end_punctuation(ref_text, ref_lang), ref_lang)
        return Prompt(tokens=tokens, text=text, specs=specs, sv_embs=embs, flow_mel=mel)
