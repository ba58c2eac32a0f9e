"""Typed sections of the `train:` part of s1/s2 configs (early stopping, checkpoints, regularization, ...).

`gsvkit.config.S2TrainConfig` and `S1TrainConfig` are built from these. Every default is upstream GPT-SoVITS's
behaviour unless the field says otherwise, so a config without these sections trains as upstream does, plus
validation, early stopping and trustworthy checkpoints. Unknown fields are errors that name the field.

This module imports only pydantic: `gsvkit.config` imports it, and importing a config must stay cheap.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Precision = Literal["auto", "32", "16-mixed", "bf16-mixed"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EarlyStoppingConfig(_Section):
    """Stop when the monitored validation metric stops improving (upstream has no validation at all)."""

    enabled: bool = True
    monitor: str | None = Field(None, description="metric name; None = val/mel_l1 (s2) or val/loss (s1)")
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, ge=1, description="validation checks without improvement before stopping")
    min_delta: float = Field(1e-4, ge=0.0, description="smallest change that counts as an improvement")
    smoothing: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="exponential smoothing of the monitored value before comparing (0 = off); GAN metrics are noisy",
    )
    stop_on_nan: bool = Field(True, description="stop when the monitored value or the training loss is NaN/inf")
    divergence_threshold: float | None = Field(None, description="stop at once when the metric passes this value")
    min_epochs: int = Field(0, ge=0, description="never stop before this many epochs")


class CheckpointConfig(_Section):
    """Which full-state checkpoints are kept: top-k best + the newest `keep_last` + a save schedule."""

    top_k: int = Field(3, ge=0, description="best checkpoints kept by the monitored metric (the best always is)")
    keep_last: int = Field(2, ge=1, description="rotation: the newest K checkpoints are always kept")
    schedule: list[tuple[int | None, int]] = Field(
        [(10, 2), (50, 5), (None, 10)],
        description="(up to epoch, every N epochs) pairs; an epoch on the schedule is kept for good",
    )
    export_every_kept: bool = Field(False, description="also export an fp16 inference file for every kept epoch")

    @model_validator(mode="after")
    def _check(self) -> CheckpointConfig:
        for until, every in self.schedule:
            if every < 1:
                raise ValueError(f"schedule: every={every} must be >= 1")
            if until is not None and until < 1:
                raise ValueError(f"schedule: up-to epoch {until} must be >= 1")
        return self


class SpecAugmentConfig(_Section):
    """SpecAugment-style masking of the inputs during training (off by default, as upstream)."""

    ssl: bool = Field(False, description="mask the SSL (HuBERT) features fed to s2's content encoder")
    spec: bool = Field(False, description="mask the linear spectrogram fed to s2's posterior/reference encoders")
    time_masks: int = Field(2, ge=0)
    time_width: float = Field(0.05, ge=0.0, le=1.0, description="largest mask, as a fraction of the frames")
    freq_masks: int = Field(2, ge=0)
    freq_width: float = Field(0.1, ge=0.0, le=1.0, description="largest mask, as a fraction of the channels")
    prob: float = Field(1.0, ge=0.0, le=1.0, description="probability that an utterance is masked at all")


class MixupConfig(_Section):
    """Mix a little of another speaker's SSL features into s2's content input (off by default).

    Needs several speakers in the training split: on a single-speaker dataset (the one-minute case) it does
    nothing, and `gsv train` says so at the start.
    """

    enabled: bool = False
    prob: float = Field(0.5, ge=0.0, le=1.0)
    max_weight: float = Field(0.2, ge=0.0, le=0.5, description="weight of the other clip is U(0, max_weight)")


class EMAConfig(_Section):
    """Exponential moving average of the (generator) weights, used for validation and export when on."""

    enabled: bool = False
    decay: float = Field(0.999, gt=0.0, lt=1.0)
    start_step: int = Field(0, ge=0, description="optimizer steps before averaging starts (copies until then)")
    warmup: bool = Field(
        True, description="n steps into averaging use decay min(decay, (1+n)/(10+n)), so early averages follow "
        "training (off: the fixed decay from the first step)",
    )


class FreezeConfig(_Section):
    """Parameters that do not train. s2's quantizer/ssl_proj freezing is `model.freeze_quantizer`."""

    modules: list[str] = Field([], description="parameter-name prefixes to freeze, e.g. ['enc_p.text_embedding']")
    last_k_layers: int | None = Field(
        None, ge=0, description="s1 only: train just the last k transformer layers and the output head"
    )
    unfreeze_at_epoch: int | None = Field(
        None, ge=0, description="epochs trained with the freeze; from epoch N+1 (1-based) everything trains again"
    )


class PlateauConfig(_Section):
    """ReduceLROnPlateau on the monitored metric, replacing the stage's own schedule when enabled."""

    enabled: bool = False
    factor: float = Field(0.5, gt=0.0, lt=1.0)
    patience: int = Field(2, ge=0)
    min_lr: float = Field(1e-7, ge=0.0)


class SpeakerSimilarityConfig(_Section):
    """s2 only: speaker similarity of the decoded validation clips to their ground truth (`val/speaker_sim`).

    Higher is better, so monitoring it needs `early_stopping.mode: max`. Needs the `eval` extra (resemblyzer).
    """

    enabled: bool = False
    every_n_epochs: int = Field(
        1, ge=1, description="score after epochs divisible by this (that validate: see val_every_n_epochs)"
    )
    max_items: int = Field(8, ge=1, description="validation utterances scored (the first ones, in order)")


SPEAKER_SIM_METRIC = "val/speaker_sim"


class CommonTrainConfig(_Section):
    """Fields shared by both stages."""

    seed: int = 1234
    precision: Precision = Field("auto", description="auto = 16-mixed on CUDA (upstream fp16), 32 on CPU")
    accumulate_grad_batches: int = Field(1, ge=1)
    val_every_n_epochs: int = Field(1, ge=1)
    require_validation: bool = Field(
        True, description="refuse a dataset with an empty val split; false = train without validation there "
        "(no early stopping, no best-checkpoint ranking, the last epoch is exported)",
    )
    log_every_n_steps: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0, description="data loader workers (features are cached in memory)")
    deterministic: bool = Field(False, description="torch deterministic algorithms (slower; exact resumes)")
    max_steps: int = Field(-1, ge=-1, description="stop after this many optimizer steps (-1 = epochs decide)")
    oom_backoff: bool = Field(True, description="on CUDA OOM halve the micro-batch, keep the batch by accumulation")
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    ema: EMAConfig = EMAConfig()
    freeze: FreezeConfig = FreezeConfig()
    plateau: PlateauConfig = PlateauConfig()
    val_audio_samples: int = Field(2, ge=0, description="s2: validation clips logged as audio each validation")
    speaker_similarity: SpeakerSimilarityConfig = SpeakerSimilarityConfig()

    @model_validator(mode="after")
    def _check_monitor(self) -> CommonTrainConfig:
        if self.early_stopping.monitor != SPEAKER_SIM_METRIC:
            return self
        # Every validation must carry the metric, or checkpoints would be ranked on missing/stale values.
        if not self.speaker_similarity.enabled:
            raise ValueError(f"early_stopping.monitor is {SPEAKER_SIM_METRIC} but speaker_similarity.enabled is "
                             "false; set train.speaker_similarity.enabled: true")
        if self.speaker_similarity.every_n_epochs != 1:
            raise ValueError(f"early_stopping.monitor is {SPEAKER_SIM_METRIC}, so it must be scored at every "
                             "validation: set train.speaker_similarity.every_n_epochs: 1 (and validate less often "
                             "with train.val_every_n_epochs)")
        if self.early_stopping.mode != "max":
            raise ValueError(f"{SPEAKER_SIM_METRIC} is higher-is-better: set train.early_stopping.mode: max")
        return self
