"""The pair of models one synthesis uses, loaded and checked together.

A `ModelBundle` is immutable: a synthesis takes one bundle at its start and keeps it to the end, and a model switch
builds a whole new bundle before swapping it in. So a switch during a synthesis neither disturbs it nor mixes the
weights of two models.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsvkit.errors import CheckpointError
from gsvkit.utils.memory import loading_memory

_ids = itertools.count(1)


def check_pair(s1_cfg: Any, s2_cfg: Any, s1_path: Any = "s1", s2_path: Any = "s2") -> None:
    """Refuse an s1/s2 pair that cannot work together (`S1ModelConfig`, `S2ModelConfig`)."""
    if s1_cfg.version != s2_cfg.text_version:
        raise CheckpointError(
            f"{s1_path} is a {s1_cfg.version} GPT model but {s2_path} is a {s2_cfg.version} SoVITS model; "
            f"use a {s2_cfg.text_version} GPT with it"
            + (" (upstream pairs v2Pro/v2ProPlus with s1v3.ckpt)" if s2_cfg.is_pro else "")
        )
    if s1_cfg.vocab_size - 1 != s2_cfg.codebook_size:
        raise CheckpointError(
            f"{s1_path} produces {s1_cfg.vocab_size - 1} semantic codes but {s2_path} decodes "
            f"{s2_cfg.codebook_size}; the two models were not trained together"
        )
    if s1_cfg.phone_vocab < s2_cfg.symbols:
        raise CheckpointError(
            f"{s1_path} knows {s1_cfg.phone_vocab} phone symbols but {s2_path} uses {s2_cfg.symbols}; "
            "the two models were not trained together"
        )


@dataclass(frozen=True)
class ModelBundle:
    s1: Any  # gsvkit.models.s1.Text2SemanticDecoder, eval mode
    s2: Any  # gsvkit.models.s2.SynthesizerTrn, eval mode
    s1_config: Any  # S1Config
    s2_config: Any  # S2Config
    s1_path: Path
    s2_path: Path
    ident: str  # identity of the loaded s2 weights: keys the reference cache (tokens come from its quantizer)
    vocoder: Any = None  # v3/v4: mel -> waveform (gsvkit.models.vocoders)
    vocoder_path: Path | None = None
    s1_precision: str = "fp32"  # the format s1's weights run in (`resolve_precision`: never "auto")

    @property
    def version(self) -> str:
        return self.s2_config.model.version

    @property
    def text_version(self) -> str:
        """Symbol table and GPT family ("v2" for v2Pro/v2ProPlus too)."""
        return self.s2_config.model.text_version

    @property
    def is_pro(self) -> bool:
        """v2Pro/v2ProPlus: decoding needs a speaker embedding of every reference."""
        return self.s2_config.model.is_pro

    @property
    def is_flow(self) -> bool:
        """v3/v4: s2 predicts a mel by flow matching and a separate vocoder makes the audio."""
        return self.s2_config.model.is_flow

    @property
    def sample_rate(self) -> int:
        """Rate of the audio synthesis returns (v3 24 kHz, v4 48 kHz: the vocoder's)."""
        if self.is_flow:
            from gsvkit.models.vocoders import VOCODER_RATE

            return VOCODER_RATE[self.version]
        return self.s2_config.data.sampling_rate

    @property
    def samples_per_token(self) -> int:
        """Waveform samples per semantic token at speed 1 (tokens are 25 Hz: two spectrogram frames)."""
        if self.is_flow:
            from gsvkit.inference.flow import samples_per_token

            return round(samples_per_token(self.version))
        frames = 2 if self.s2_config.model.semantic_frame_rate == "25hz" else 1
        return frames * self.s2_config.data.hop_length

    def check_params(self, params: Any) -> None:
        """Refuse `SynthesisParams` these models cannot honour, before any work (an s2 runtime may restrict them)."""
        check = getattr(self.s2, "check_params", None)
        if check is not None:
            check(params)

    def describe(self) -> dict[str, Any]:
        return {
            "s1": str(self.s1_path),
            "s2": str(self.s2_path),
            "version": self.version,
            "sample_rate": self.sample_rate,
            "s1_weights": self.s1_precision,  # the format s1's weights run in
            "s2_decoder": getattr(self.s2, "precision", "fp32"),  # the format s2's decoder runs in
        }


def load_bundle(
    s1_path: str | os.PathLike,
    s2_path: str | os.PathLike,
    device: str = "cpu",
    precision: str = "auto",
    reuse: ModelBundle | None = None,
    vocoder: str | os.PathLike | None = None,
    s2_precision: str = "auto",
) -> ModelBundle:
    """Load and cross-check s1 and s2; s1 at `precision` (auto | fp32 | bf16 | int8 | int4, see
    `resolve_precision`), s2's decoder at `s2_precision` (auto | fp32 | bf16, see `resolve_s2_precision`). With
    `reuse`, a side whose path is unchanged keeps its loaded model.

    v3/v4 also need their vocoder: `vocoder`, else the models folder's (`gsv models fetch v3|v4`)."""
    from gsvkit.checkpoint import load_s1, load_s2, read_header
    from gsvkit.config import S2Config
    from gsvkit.models.s1.gpt import resolve_precision
    from gsvkit.models.s2 import resolve_s2_precision

    s1_path, s2_path = Path(s1_path), Path(s2_path)
    h1, h2 = read_header(s1_path), read_header(s2_path)
    if h1.kind != "s1":
        raise CheckpointError(f"{s1_path}: holds a {h1.kind} model where an s1 (GPT) model is needed")
    if h2.kind != "s2":
        raise CheckpointError(f"{s2_path}: holds a {h2.kind} model where an s2 (SoVITS) model is needed")
    assert isinstance(h2.config, S2Config)
    check_pair(h1.config.model, h2.config.model, s1_path, s2_path)
    s2_format = resolve_s2_precision(s2_precision, device, hifigan=not h2.config.model.is_flow)
    s1_format = resolve_precision(precision, device)
    same1 = reuse if reuse is not None and reuse.s1_path == s1_path.resolve() else None
    same2 = reuse if reuse is not None and reuse.s2_path == s2_path.resolve() else None
    if same1 is not None:
        s1 = same1.s1
    else:
        with loading_memory():  # the float weights the conversion frees go back to the system
            s1 = load_s1(s1_path, device=device).with_precision(s1_format, inplace=True)
    if same2 is not None:
        s2 = same2.s2
    else:
        with loading_memory():  # the weight-norm tensors folding frees, the bf16 conversion's fp32 weights
            s2 = load_s2(s2_path, device=device)
            if not h2.config.model.is_flow:
                s2.for_inference()
            if s2_format != "fp32":
                s2.set_precision(s2_format)
    voc, voc_path = None, None
    if h2.config.model.is_flow:
        voc, voc_path = _vocoder(h2.version, vocoder, device, reuse)
    return ModelBundle(
        s1=s1,
        s2=s2,
        s1_config=h1.config,
        s2_config=h2.config,
        s1_path=s1_path.resolve(),
        s2_path=s2_path.resolve(),
        ident=same2.ident if same2 is not None else f"s2-{next(_ids)}",
        vocoder=voc,
        vocoder_path=voc_path,
        s1_precision=same1.s1_precision if same1 is not None else s1_format,
    )


def _vocoder(version: str, given: str | os.PathLike | None, device: str, reuse: ModelBundle | None):
    from gsvkit.checkpoint import load_vocoder_file
    from gsvkit.models.official import default_path, fetch_hint

    path = Path(given) if given else default_path("vocoder", version)
    if path is None:
        raise CheckpointError(f"a {version} voice needs its vocoder (--vocoder FILE); {fetch_hint('vocoder', version)}")
    if path.is_dir():  # BigVGAN's published folder
        path = path / "bigvgan_generator.pt"
    path = path.resolve()
    if reuse is not None and reuse.vocoder_path == path:
        return reuse.vocoder, path
    voc = load_vocoder_file(path, device=device)
    if (v := _vocoder_version(voc)) != version:
        raise CheckpointError(f"{path} is the {v} vocoder, but the SoVITS model is {version}; use the {version} one")
    return voc, path


def _vocoder_version(voc: Any) -> str:
    from gsvkit.models.vocoders import BigVGAN

    return "v3" if isinstance(voc, BigVGAN) else "v4"
