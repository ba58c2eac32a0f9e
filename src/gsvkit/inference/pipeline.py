"""`TTS`: speak text in a cloned voice, whole or streamed.

```python
from gsvkit import TTS

tts = TTS("voices/alice", hubert="models/chinese-hubert-base")
sr, audio = tts.synthesize("Hello there.", "en", seed=1)      # float32 mono in [-1, 1]
for chunk in tts.stream("A longer text, spoken as it is generated.", "en"):
    play(chunk)
```

The path is upstream's (`TTS_infer_pack/TTS.py`): reference clip -> prompt tokens and spectrogram(s) (cached);
prompt text + target fragment -> phones and BERT; s1 generates the fragment's semantic tokens after the prompt;
s2 decodes them with the reference spectrogram(s); fragments are joined with `fragment_interval` seconds of
silence. Sample rate, hop and samples per token all come from the s2 config. With `batch_size` > 1, s1 generates a
batch's fragments together (torch backend; ONNX and streaming go fragment by fragment).

Models load once. A synthesis takes one `ModelBundle` at its start, so `load_models` (a model switch) never mixes
weights into a synthesis already running; reference features are cached per file and per s2 model.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gsvkit.errors import CheckpointError, GsvError, TextError
from gsvkit.inference.batching import background, fragment_batches, threaded
from gsvkit.inference.bundle import ModelBundle, load_bundle
from gsvkit.inference.job import Job, decode_tokens, generate_batch_tokens, generate_tokens, generators, model_device
from gsvkit.inference.params import (
    DEFAULT_MAX_TEXT_CHARS,
    StreamParams,
    SynthesisParams,
    check_language,
    make_params,
)
from gsvkit.inference.prompt import PromptBuilder
from gsvkit.inference.reference import ReferenceCache, SpeakerEmbeddings
from gsvkit.inference.results import AudioStream, SynthesisResult
from gsvkit.inference.streaming import WindowedDecoder
from gsvkit.inference.textprep import BertRequired, TextFeatures, TextReader, split_fragments
from gsvkit.inference.voice import Voice, load_voice
from gsvkit.models.s1.gpt import PRECISIONS
from gsvkit.models.s2.sovits import S2_PRECISIONS
from gsvkit.safety.guard import Guard

__all__ = ["TTS", "AudioStream", "SynthesisResult"]

PathLike = str | os.PathLike


class TTS:
    """Loads s1 + s2 once (from a voice directory or explicit files) and speaks any text with them.

    - `voice`: a voice directory (or loaded `Voice`): weights, default reference, HuBERT/BERT paths.
    - `s1`, `s2`: weight files (gsvkit `.safetensors` or official files); override the voice's.
    - `hubert`: HuBERT directory; needed to read any reference clip except a voice's own when the voice stores
      its prompt tokens. `bert`: Chinese BERT directory; needed for Chinese text. `sv_model`: v2Pro/v2ProPlus
      speaker-verification model file; needed for any reference whose embedding the voice does not store.
    - `precision`: s1 weights, "auto" (default: int8 on a CPU, fp32 on a GPU; `resolve_precision`), "fp32",
      "bf16", "int8" (weight-only, one scale per 128 inputs on onnxruntime, or torch's per-channel int8 layers
      without it) or "int4" (weight-only, one scale per 32 inputs; CPU only): int8 and int4 are faster on a CPU
      and approximate, int4 the most (see `benchmarks/vs_upstream.py` for speed and the quality bounds).
      `status()["s1_weights"]` names the format loaded.
    - `s2_precision`: s2's HiFi-GAN decoder, "auto" (default: bf16 on a CPU with native bf16, AMX or
      AVX512-BF16; fp32 elsewhere and for v3/v4), "fp32" or "bf16" (faster, approximate; torch backend only).
    - `backend`: "torch", or "onnx" to run the graphs `gsv export onnx` wrote to `onnx_dir` with onnxruntime
      (s1/s2 and, when exported, HuBERT; speed 1 and a reference transcript only).
    - `max_text_chars`: longest text one call accepts.
    - `watermark`: mark every output (default); False is recorded as "off" in each audit line.
    - `allow_synthetic_reference`: accept reference clips that carry the watermark (refused by default).
    - `audit_log`: the append-only audit file (default `$GSVKIT_AUDIT_LOG` or `~/.local/state/gsvkit/`).

    Per call, `consent` declares the speaker's consent when cloning from a clip that is not the voice's own
    (required then) and `user` names who asked (default: the OS user); both go into the audit line.
    """

    def __init__(
        self,
        voice: Voice | PathLike | None = None,
        *,
        s1: PathLike | None = None,
        s2: PathLike | None = None,
        hubert: PathLike | None = None,
        bert: PathLike | None = None,
        sv_model: PathLike | None = None,
        vocoder: PathLike | None = None,
        device: str = "cpu",
        precision: str = "auto",
        s2_precision: str = "auto",
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        cache_size: int = 32,
        max_loaded_voices: int = 2,
        backend: str = "torch",
        onnx_dir: PathLike | None = None,
        watermark: bool = True,
        allow_synthetic_reference: bool = False,
        audit_log: PathLike | None = None,
    ) -> None:
        if backend not in ("torch", "onnx"):
            raise GsvError(f"backend {backend!r}: use 'torch' or 'onnx'")
        if precision not in PRECISIONS:
            raise GsvError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if s2_precision not in S2_PRECISIONS:
            raise GsvError(f"s2_precision {s2_precision!r}: use one of {', '.join(S2_PRECISIONS)}")
        if backend == "onnx" and s2_precision == "bf16":
            raise GsvError("s2_precision bf16 needs the torch backend; the ONNX backend runs s2 in fp32 (use auto)")
        if backend == "onnx" and onnx_dir is None:
            raise GsvError("the ONNX backend needs the folder `gsv export onnx` wrote (onnx_dir=..., --onnx DIR)")
        self.backend = backend
        self.guard = Guard(
            watermark=watermark, allow_synthetic_reference=allow_synthetic_reference, audit_log=audit_log
        )
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else None
        if voice is not None and not isinstance(voice, Voice):
            voice = load_voice(voice)
        self.voice: Voice | None = voice
        s1 = s1 if s1 is not None else (voice.s1_path if voice else None)
        s2 = s2 if s2 is not None else (voice.s2_path if voice else None)
        if (s1 is None) != (s2 is None):
            raise CheckpointError("give both s1 and s2 weights (or a voice directory that holds them)")
        self.device = device
        self.precision = precision
        self.s2_precision = s2_precision
        voc = vocoder if vocoder else (voice.vocoder_path if voice else None)
        self.vocoder_path = Path(voc) if voc else None
        self.max_text_chars = max_text_chars
        self.hubert_path = Path(hubert) if hubert else (voice.hubert_path if voice else None)
        self.bert_path = Path(bert) if bert else (voice.bert_path if voice else None)
        self.cache = ReferenceCache(cache_size)
        self.prompts = PromptBuilder(
            self.cache, SpeakerEmbeddings(sv_model, self.cache, device), self.hubert_path, self.onnx_dir, device
        )
        self._lock = threading.RLock()  # lazy loads and bundle swaps; never held while synthesizing
        self._switch_lock = threading.Lock()
        if backend == "onnx":
            from gsvkit.inference.onnx.runtime import load_onnx_bundle

            self._bundle: ModelBundle | None = load_onnx_bundle(self.onnx_dir, precision=precision)
        else:
            self._bundle = (
                load_bundle(s1, s2, device, precision, vocoder=self.vocoder_path, s2_precision=s2_precision)
                if s1 is not None
                else None
            )
        self._voice_bundles: OrderedDict[tuple[Path, Path], ModelBundle] = OrderedDict()
        self._max_voices = max(1, max_loaded_voices)
        self._bert: Any = None
        self._readers: dict[str, TextReader] = {}

    # ------------------------------------------------------------------------------------------ models
    @property
    def bundle(self) -> ModelBundle:
        b = self._bundle
        if b is None:
            raise CheckpointError("no models loaded: give a voice or s1/s2 weights")
        return b

    @property
    def sample_rate(self) -> int:
        return self.bundle.sample_rate

    @property
    def version(self) -> str:
        return self.bundle.version

    def load_models(self, s1: PathLike | None = None, s2: PathLike | None = None) -> None:
        """Switch weights (either or both). The new pair is loaded and checked before it replaces the old one, so
        a failed switch changes nothing and running syntheses finish on the models they started with."""
        if self.backend != "torch":
            raise CheckpointError("switching weights needs the torch backend (export the new pair to ONNX instead)")
        with self._switch_lock:
            cur = self._bundle
            if cur is None and (s1 is None or s2 is None):
                raise CheckpointError("no models loaded yet: give both s1 and s2")
            new = load_bundle(
                s1 if s1 is not None else cur.s1_path,
                s2 if s2 is not None else cur.s2_path,
                self.device,
                self.precision,
                reuse=cur,
                vocoder=self.vocoder_path,
                s2_precision=self.s2_precision,
            )
            with self._lock:
                self._bundle = new

    def status(self) -> dict[str, Any]:
        b = self._bundle
        return {
            "loaded": b is not None,
            **(b.describe() if b else {}),
            "voice": self.voice.name if self.voice else None,
            "hubert": str(self.hubert_path) if self.hubert_path else None,
            "bert": str(self.bert_path) if self.bert_path else None,
            "precision": self.precision,
            "s2_precision": self.s2_precision,
            "backend": self.backend,
            "cached_references": len(self.cache),
        }

    def _bundle_for(self, voice: Voice | None) -> ModelBundle:
        if voice is None or self.backend != "torch":
            return self.bundle
        cur = self._bundle
        key = (voice.s1_path.resolve(), voice.s2_path.resolve())
        if cur is not None and (cur.s1_path, cur.s2_path) == key:
            return cur
        with self._lock:
            hit = self._voice_bundles.get(key)
            if hit is not None:
                self._voice_bundles.move_to_end(key)
                return hit
            bundle = load_bundle(*key, self.device, self.precision, vocoder=voice.vocoder_path or self.vocoder_path,
                                 s2_precision=self.s2_precision)  # fmt: skip
            self._voice_bundles[key] = bundle
            while len(self._voice_bundles) > max(1, self._max_voices - 1):
                self._voice_bundles.popitem(last=False)
            return bundle

    def _reader(self, version: str) -> TextReader:
        with self._lock:
            reader = self._readers.get(version)
            if reader is None:
                if self._bert is None and self.bert_path is not None:
                    from gsvkit.text.bert import BertFeaturizer

                    self._bert = BertFeaturizer(self.bert_path, device=self.device)
                reader = self._readers[version] = TextReader(version, self._bert)
            return reader

    # ------------------------------------------------------------------------------------------ preparing
    def _prepare(
        self,
        text: str,
        lang: str,
        ref_audio: PathLike | None = None,
        ref_text: str | None = None,
        ref_lang: str | None = None,
        aux_refs: Sequence[PathLike] = (),
        *,
        voice: Voice | PathLike | None = None,
        **params: Any,
    ) -> tuple[Job, list[str]]:
        """The arguments of `synthesize`, `synthesize_result` and `stream` (defined here once), checked."""
        consent, user = params.pop("consent", None), params.pop("user", None)
        p: SynthesisParams = make_params(SynthesisParams, params)
        if not isinstance(text, str) or not text.strip():
            raise TextError("the text is empty: give something to say")
        if len(text) > self.max_text_chars:
            raise TextError(
                f"the text is {len(text):,} characters; the limit is {self.max_text_chars:,} per call "
                "(split it into parts, or raise max_text_chars)"
            )
        if voice is not None and not isinstance(voice, Voice):
            voice = load_voice(voice)
        bundle = self._bundle_for(voice)
        bundle.check_params(p)  # backend limits (e.g. ONNX and speed) fail now, for synthesize and stream alike
        lang = check_language(lang, bundle.version, what="text language")
        speaker = voice or self.voice
        if speaker is not None and lang not in speaker.info.languages:
            raise TextError(
                f"voice {speaker.name!r} is made for {', '.join(speaker.info.languages)}, not {lang!r} "
                f"(its voice.json lists the languages it speaks)"
            )
        pieces = split_fragments(text, lang, p.split)
        if not pieces:
            raise TextError(f"nothing pronounceable in the text {text[:60]!r}")
        given = [Path(a) for a in ([ref_audio] if ref_audio is not None else []) + list(aux_refs)]
        own = [speaker.reference_audio, *speaker.aux_references] if speaker is not None else []
        hashes, declaration = self.guard.admit(given, own, consent)
        reader = self._reader(bundle.text_version)
        prompt = self.prompts.build(bundle, reader, voice or self.voice, ref_audio, ref_text, ref_lang, aux_refs)
        seed = p.seed if p.seed is not None else secrets.randbits(32)
        named = speaker if declaration is None else None  # a zero-shot clone speaks as its reference, not the voice
        audit = {
            "user": user, "text": text, "language": lang, "seed": seed, "consent": declaration,
            "voice": named.name if named else None, "reference_sha256": hashes,
            "voice_s2_sha256": named.info.provenance.s2_sha256 if named else None,
        }  # fmt: skip
        return Job(bundle, reader, prompt, p, seed, audit), pieces

    @staticmethod
    def _features(job: Job, pieces: list[str], lang: str) -> list[TextFeatures]:
        feats = []
        for piece in pieces:
            try:
                feats.append(job.reader.features(piece, lang))
            except BertRequired:
                raise  # a sentence that could be spoken with the right model is never dropped silently
            except TextError:
                continue  # a piece of symbols only: upstream skips it too
        if not feats:
            raise TextError(f"nothing pronounceable in the text ({len(pieces)} pieces, none with phones)")
        return feats

    # ------------------------------------------------------------------------------------------ whole
    def synthesize(self, text: str, lang: str, *refs: Any, **params: Any) -> tuple[int, np.ndarray]:
        """Speak `text` (language `lang`); returns (sample_rate, float32 mono audio in [-1, 1]).

        `refs` (positional, or by name): ref_audio, ref_text, ref_lang, aux_refs; `voice=` a Voice or its folder.
        Without `ref_audio` the voice's default reference (clip, transcript, language) is used. `ref_text` empty
        means reference-free: timbre from the clip, no transcript prompt. `params` are `SynthesisParams` fields:
        top_k, top_p, temperature, repetition_penalty, speed, seed, split (cut0-cut5), batch_size,
        batch_threshold, split_bucket, fragment_interval, noise_scale, max_new_tokens.
        """
        res = self.synthesize_result(text, lang, *refs, **params)
        return res.sample_rate, res.audio

    def synthesize_result(self, text: str, lang: str, *refs: Any, **params: Any) -> SynthesisResult:
        """`synthesize`, returning the seed used, the fragments, token counts and timings as well.

        With `batch_size` > 1 the fragments are grouped (`fragment_batches`) and each group's fragments are
        generated together as one s1 batch on the torch backend (one by one on ONNX), then decoded by s2 as one
        sequence (speed 1, v2 families) or one by one. Greedy decoding gives every fragment the tokens of
        `batch_size=1`; sampled fragments share the s1 random stream in turn, so a seed's result depends on
        `batch_size`.
        """
        t0 = time.perf_counter()
        job, pieces = self._prepare(text, lang, *refs, **params)
        lang = check_language(lang, job.bundle.version)
        feats = self._features(job, pieces, lang)
        p = job.params
        t_s1 = t_s2 = 0.0
        t_prep = time.perf_counter() - t0
        g1, g2 = generators(job.seed)
        sr = job.bundle.sample_rate
        audio: list[np.ndarray | None] = [None] * len(feats)
        counts = [0] * len(feats)
        for batch in fragment_batches(feats, p.batch_size, p.batch_threshold, p.split_bucket and p.speed == 1.0):
            t = time.perf_counter()
            codes = dict(zip(batch, generate_batch_tokens(job, [feats[i] for i in batch], g1), strict=True))
            for i in batch:
                counts[i] = len(codes[i])
            t_s1 += time.perf_counter() - t
            t = time.perf_counter()
            if p.speed == 1.0 and len(batch) > 1 and not job.bundle.is_flow:
                # Upstream decodes a batch's fragments as one sequence (codes and phones joined), then cuts it.
                joined = decode_tokens(
                    job, sum((codes[i] for i in batch), []), sum((feats[i].phone_ids for i in batch), []), g2
                )
                step = job.bundle.samples_per_token
                start = 0
                for i in batch:
                    audio[i] = joined[start : start + counts[i] * step]
                    start += counts[i] * step
            else:
                for i in batch:
                    audio[i] = decode_tokens(job, codes[i], feats[i].phone_ids, g2)
            t_s2 += time.perf_counter() - t
        gap = np.zeros(int(sr * p.fragment_interval), np.float32)
        out = []
        for a in audio:
            a = np.asarray(a, np.float32)
            peak = float(np.abs(a).max()) if a.size else 0.0
            out += [a / peak if peak > 1.0 else a, gap]
        wav = self.guard.mark(np.concatenate(out).astype(np.float32), sr)
        audit_id = self.guard.record(kind="synthesize", seconds=round(wav.size / sr, 3), **job.audit)
        return SynthesisResult(
            sample_rate=sr,
            audio=wav,
            watermark=self.guard.watermark_id,
            audit_id=audit_id,
            seed=job.seed,
            fragments=[f.text for f in feats],
            tokens_per_fragment=counts,
            timings={"prepare": t_prep, "s1": t_s1, "s2": t_s2},
        )

    # ------------------------------------------------------------------------------------------ streaming
    def stream(
        self, text: str, lang: str, *refs: Any, stream: StreamParams | dict[str, Any] | None = None, **params: Any
    ) -> AudioStream:
        """Like `synthesize`, but audio chunks come while s1 is still generating (see `inference.streaming`).

        Everything that can fail on bad input (text, language, reference, parameters) fails here, before the
        first chunk. `stream` holds `StreamParams` (first_chunk_tokens, chunk_tokens, left_context_tokens,
        lookahead_tokens, crossfade_tokens). Fragments are generated and decoded one by one (batch_size has no
        effect).
        """
        sp = stream if isinstance(stream, StreamParams) else make_params(StreamParams, dict(stream or {}))
        job, pieces = self._prepare(text, lang, *refs, **params)
        if job.bundle.is_flow:
            raise GsvError(f"streaming is not available for {job.bundle.version} voices yet; use synthesize")
        lang = check_language(lang, job.bundle.version)
        first = None
        while pieces and first is None:  # read ahead to the first speakable piece, so errors come now
            try:
                first = job.reader.features(pieces.pop(0), lang)
            except TextError:
                continue
        if first is None:
            raise TextError(f"nothing pronounceable in the text {text[:60]!r}")
        self.guard.record(kind="stream", seconds=None, **job.audit)  # length unknown until the stream ends
        return AudioStream(job.bundle.sample_rate, job.seed, self._stream_chunks(job, first, pieces, lang, sp))

    def _stream_chunks(
        self, job: Job, first: TextFeatures, rest: list[str], lang: str, sp: StreamParams
    ) -> Iterator[np.ndarray]:
        g1, _ = generators(job.seed)
        sr = job.bundle.sample_rate
        gap = np.zeros(int(job.bundle.sample_rate * job.params.fragment_interval), np.float32)
        window = 0
        in_background = threaded(sp.threaded, model_device(job.bundle.s1))

        def frags() -> Iterator[TextFeatures]:
            yield first
            for piece in rest:
                try:
                    yield job.reader.features(piece, lang)
                except TextError:
                    continue

        for frag in frags():

            def decode(tokens: torch.Tensor, frag: TextFeatures = frag) -> np.ndarray:
                nonlocal window
                window += 1
                gen = torch.Generator().manual_seed((job.seed + 1 + 7919 * window) % 2**64)
                return decode_tokens(job, tokens.tolist(), frag.phone_ids, gen)

            dec = WindowedDecoder(decode, sp)
            tokens = generate_tokens(job, frag, g1)
            for tok in background(tokens) if in_background else tokens:
                for chunk in dec.push(tok):  # one token at a time: windows never depend on timing
                    yield self.guard.mark(np.clip(chunk, -1.0, 1.0), sr)
            for chunk in dec.finish():
                yield self.guard.mark(np.clip(chunk, -1.0, 1.0), sr)
            if len(gap):
                yield gap
