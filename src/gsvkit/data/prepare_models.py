"""The models `gsv prepare` uses (text front end, HuBERT, s2 quantizer, ASR, BERT, speaker encoder), loaded lazily."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gsvkit.data.prepare_config import PrepareConfig


@dataclass
class Models:
    """Models and functions the stages use; each is created on first use, so a run with nothing to do loads none.

    Tests (and callers with their own models) pass ready objects instead of paths.
    """

    cfg: PrepareConfig
    text_fn: Callable | None = None
    featurizer: Callable | None = None
    quantizer: Any = None
    transcriber: Callable | None = None
    bert: Callable | None = None
    sv: Any = None  # gsvkit.models.sv.SpeakerEncoder

    def device(self) -> str:
        if self.cfg.device != "auto":
            return self.cfg.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def get_text_fn(self) -> Callable:
        if self.text_fn is None:
            from gsvkit.data.stages import frontend_text_fn

            self.text_fn = frontend_text_fn(self.cfg.text_version)
        return self.text_fn

    def get_featurizer(self) -> Callable:
        if self.featurizer is None:
            from gsvkit.audio.features import HubertFeaturizer

            self.featurizer = HubertFeaturizer(self.cfg.hubert, device=self.device())
        return self.featurizer

    def get_quantizer(self) -> Any:
        if self.quantizer is None:
            from gsvkit.checkpoint import load_s2

            self.quantizer = load_s2(self.cfg.s2, device=self.device())
        return self.quantizer

    def get_transcriber(self) -> Callable:
        if self.transcriber is None:
            from gsvkit.data.asr import FasterWhisperTranscriber

            self.transcriber = FasterWhisperTranscriber(self.cfg.asr_model, device=self.device())
        return self.transcriber

    def get_sv(self) -> Any:
        if self.sv is None:
            from gsvkit.checkpoint import load_speaker_encoder

            self.sv = load_speaker_encoder(self.cfg.sv, device=self.device())
        return self.sv

    def get_bert(self) -> Callable:
        if self.bert is None:
            from gsvkit.text.bert import BertFeaturizer

            self.bert = BertFeaturizer(self.cfg.bert, device=self.device())
        return self.bert
