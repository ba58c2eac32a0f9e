"""`gsv train`: plain functions that train s2, s1 or both and leave a run directory you can trust.

    runs/EXP/s2/                       (s1/ alike)
      config.yaml                      the full typed config of the run
      checkpoints/*.ckpt, index.json   full-state checkpoints (top-k best + newest + schedule), their records
      checkpoints/corrupt/             unreadable checkpoints found by --resume (moved, never deleted)
      logs/tb/, logs/csv/<version>/    TensorBoard events and metrics.csv (one version per start/resume)
      s2.safetensors                   the best epoch's fp16 inference weights (gsvkit.checkpoint format)
      exports/                         per-epoch exports when checkpoint.export_every_kept is on
      summary.json                     best epoch and value, last value, why it stopped, files
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from gsvkit.config import ConfigError, S1Config, S2Config, config_from_dict, load_config, official_config, save_config
from gsvkit.errors import CheckpointError, DataError, GsvError
from gsvkit.limits import load_yaml

if TYPE_CHECKING:
    from gsvkit.training.flow_module import FlowS2Module

log = logging.getLogger(__name__)

DEFAULT_MONITOR = {"s2": "val/mel_l1", "s1": "val/loss"}
# Validation metrics each stage logs (val/speaker_sim only with train.speaker_similarity on): what may be monitored.
VAL_METRICS = {"s2": ("val/mel_l1", "val/recon_mel_l1", "val/speaker_sim"), "s1": ("val/loss", "val/top3_acc")}
_QUIET = (r".*module\(s\) in eval mode.*", r".*smaller than the logging interval.*", r".*LeafSpec.*",
          # fp16 loss scaling skips a step whose gradients overflowed, by design; the schedule still advances.
          r".*lr_scheduler.step\(\)` before `optimizer.step\(\)`.*")


# Lightning's INFO lines are hardware banners ("GPU available: ...") and advertisements; our summary says
# what matters, so only its warnings reach the terminal.
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def _quiet_lightning() -> None:
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


class TrainingInterrupted(GsvError):
    """Ctrl-C: a resumable checkpoint was written (its path is in the message)."""


@dataclass
class TrainResult:
    """What a finished (or stopped) training run reports."""

    stage: str
    run_dir: str
    export: str | None
    best_checkpoint: str | None
    best_epoch: int | None
    best_value: float | None
    last_epoch: int
    last_value: float | None
    monitor: str
    stop_reason: str
    global_step: int
    seconds: float
    dataset_hash: str
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    opt_steps: int = 0  # optimizer steps of the model (global_step counts both s2 optimizers)
    validation: bool = True  # False: no val split (train.require_validation: false); the last epoch was exported
    precision: str = ""  # what trained: 32, 16-mixed (fp16 + loss scaling) or bf16-mixed ("auto" resolved)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------- configuration
def apply_overrides(cfg: S1Config | S2Config, overrides: list[str] | tuple[str, ...]) -> S1Config | S2Config:
    """`["train.batch_size=8", "train.early_stopping.patience=3"]` applied to a config (values are YAML)."""
    if not overrides:
        return cfg
    data = cfg.model_dump(mode="json")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. train.batch_size=8")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:-1])} is not a config section")
            node = node[p]
        try:
            node[parts[-1]] = load_yaml(raw, f"override {key.strip()}")
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0]
            raise ConfigError(f"override {item[:80]!r}: the value is not plain YAML data ({first})") from None
    return config_from_dict(data, source="overrides")


def _resolve_config(
    stage: Literal["s1", "s2"], config: str | Path | S1Config | S2Config | None, pretrained: Any, overrides: list[str]
) -> S1Config | S2Config:
    if isinstance(config, (S1Config, S2Config)):
        cfg = config
    elif config is not None:
        cfg = load_config(config)
    elif pretrained is not None:
        # The pretrained file's architecture, with this package's training defaults.
        cfg = type(pretrained.config)(**{**pretrained.config.model_dump(), "train": {}})
    else:
        cfg = official_config(stage)
    if cfg.kind != stage:
        raise ConfigError(f"{config}: a {cfg.kind} config was given to `gsv train {stage}`")
    return apply_overrides(cfg, overrides)


def _load_pretrained(stage: str, path: str | Path | None):
    if path is None:
        return None
    from gsvkit.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    if ckpt.kind != stage:
        raise CheckpointError(f"{path}: this is a {ckpt.kind} file, but `gsv train {stage}` needs an {stage} file")
    return ckpt


def _check_compatible(stage: str, cfg: S1Config | S2Config, ckpt, path: Path) -> None:
    if ckpt.version != cfg.model.version:
        raise CheckpointError(
            f"{path}: pretrained weights are {ckpt.version} but the config's model.version is {cfg.model.version}; "
            f"use a {cfg.model.version} file or set model.version: {ckpt.version}"
        )


def check_monitor(stage: str, monitor: str) -> None:
    """Refuse a metric the stage never logs: it would silently disable early stopping and best-epoch ranking."""
    if monitor not in VAL_METRICS[stage]:
        raise ConfigError(f"train.early_stopping.monitor: {stage} logs no metric {monitor!r}; "
                          f"choose one of {', '.join(VAL_METRICS[stage])}")


def _precision(p: str) -> str:
    if p != "auto":
        return p
    import torch

    return "16-mixed" if torch.cuda.is_available() else "32"


# --------------------------------------------------------------------------------------------- the runner
def _next_version(logs: Path) -> str:
    existing = sorted(p.name for p in (logs / "csv").glob("v*") if p.is_dir()) if (logs / "csv").is_dir() else []
    return f"v{len(existing):02d}"


def _fit(
    stage: str,
    module,
    datamodule,
    cfg: S1Config | S2Config,
    stage_dir: Path,
    resume_from: Path | None,
    devices: int,
    accelerator: str,
    progress: bool,
    data_hash: str,
) -> TrainResult:
    import torch
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from lightning.pytorch.strategies import DDPStrategy

    from gsvkit.training.callbacks import AtomicCheckpointIO, CheckpointPolicy, EpochProgressBar, SmoothedEarlyStopping
    from gsvkit.training.export import export_inference
    from gsvkit.training.stepping import StepScaledPrecision

    _quiet_lightning()
    t = cfg.train
    module.dataset_hash = data_hash
    monitor = t.early_stopping.monitor or DEFAULT_MONITOR[stage]
    ckpt_dir = stage_dir / "checkpoints"
    # Only reachable with train.require_validation: false (the data module refuses an empty split otherwise).
    validate = bool(datamodule.val_utts)
    if not validate:
        if t.plateau.enabled:
            raise ConfigError("train.plateau needs a validation metric, but the dataset has no val split; "
                              "set train.plateau.enabled=false or add a validation split")
        msg = (f"{stage}: the dataset has no validation split and train.require_validation is false: training "
               f"runs all {t.epochs} epochs with no validation, no early stopping and no best-checkpoint choice; "
               "the last epoch is exported")
        _warn(msg)

    def on_saved(path: Path, record: dict) -> None:
        if t.checkpoint.export_every_kept and not record.get("interrupted"):
            export_inference(module, cfg, stage_dir / "exports" / f"{stage}-epoch={record['epoch']:04d}.safetensors",
                             record, data_hash)

    policy = CheckpointPolicy(ckpt_dir, t.checkpoint, monitor, t.early_stopping.mode, on_saved=on_saved,
                              report=_warn)
    callbacks: list = [policy]
    early = None
    if t.early_stopping.enabled and validate:
        early = SmoothedEarlyStopping(t.early_stopping, monitor)
        callbacks.insert(0, early)
    if progress:
        callbacks.append(EpochProgressBar(leave=True))
    version = _next_version(stage_dir / "logs")
    loggers = [
        CSVLogger(stage_dir / "logs", name="csv", version=version),
        TensorBoardLogger(stage_dir / "logs", name="tb", version=version, default_hp_metric=False),
    ]
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    strategy: Any = "auto"
    if devices > 1:
        # G and D live in one module and each backward touches only one of them.
        strategy = DDPStrategy(
            find_unused_parameters=True, process_group_backend="gloo" if accelerator == "cpu" else None
        )
    precision = _precision(t.precision)
    plugins: list = [AtomicCheckpointIO()]
    if precision == "16-mixed":
        # fp16 autocast + GradScaler on every device (Lightning would silently use bf16 on CPU).
        plugins.append(StepScaledPrecision("cuda" if accelerator == "gpu" else "cpu"))
    log.info("%s: precision %s on %s", stage, precision, accelerator)
    trainer = Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=None if precision == "16-mixed" else precision,  # type: ignore[arg-type]
        max_epochs=t.epochs,
        # global_step counts every optimizer: G and D for the GAN
        max_steps=t.max_steps * (getattr(module, "steps_per_opt_step", 2 if stage == "s2" else 1) if t.max_steps > 0
                                 else 1),
        min_epochs=t.early_stopping.min_epochs if early is not None else None,
        check_val_every_n_epoch=t.val_every_n_epochs,
        limit_val_batches=None if validate else 0,  # 0: Lightning skips validation entirely
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        callbacks=callbacks,
        logger=loggers,
        plugins=plugins,
        default_root_dir=stage_dir,
        deterministic=t.deterministic,
        use_distributed_sampler=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
    )
    started = time.time()
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        with warnings.catch_warnings():
            # Expected here: frozen quantizer/ssl_proj run in eval mode; tiny datasets have few batches.
            for pattern in _QUIET:
                warnings.filterwarnings("ignore", message=pattern)
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    except SystemExit:
        # Lightning turns Ctrl-C into on_exception (our checkpoint) + sys.exit(1), SIGTERM into SIGTERMException.
        signal.signal(signal.SIGINT, previous_sigint)
        when = f" {policy.interrupted_note}" if policy.interrupted_note else ""
        if policy.interrupted_path is not None:
            raise TrainingInterrupted(
                f"interrupted{when}; a resumable checkpoint is at {policy.interrupted_path}. "
                f"Continue with the same command plus --resume"
            ) from None
        if policy.interrupted_note:
            raise TrainingInterrupted(f"interrupted {policy.interrupted_note}; no checkpoint was written yet: "
                                      "start again with the same command (without --resume)") from None
        raise
    signal.signal(signal.SIGINT, previous_sigint)

    # Why it stopped, in words.
    if module.stop_reason:
        reason = module.stop_reason
    elif early is not None and early.stopping_reason_message:
        reason = f"early stopping: {early.stopping_reason_message}"
    elif t.max_steps > 0 and module.opt_steps >= t.max_steps:
        reason = f"reached max_steps={t.max_steps}"
    else:
        reason = f"reached the last epoch ({t.epochs})"
    if not validate:
        reason += "; no validation split"

    best = policy.best if validate else None
    export_path = None
    if trainer.is_global_zero:
        source = best or (policy.records[-1] if policy.records else None)
        if source is not None:
            export_path = export_inference(
                module, cfg, stage_dir / f"{stage}.safetensors", source, data_hash,
                checkpoint=ckpt_dir / source["name"],
            )
    curve = [(r["epoch"], r["score"]) for r in policy.records if r.get("score") is not None]
    if early is not None and early.history:
        curve = [(int(e), float(v)) for e, v, _ in early.history]
    last_val = curve[-1][1] if curve else None
    result = TrainResult(
        stage=stage,
        run_dir=str(stage_dir),
        export=str(export_path) if export_path else None,
        best_checkpoint=str(ckpt_dir / best["name"]) if best else None,
        best_epoch=best["epoch"] if best else None,
        best_value=best["score"] if best else None,
        last_epoch=trainer.current_epoch,
        last_value=last_val,
        monitor=monitor,
        stop_reason=reason,
        global_step=trainer.global_step,
        seconds=round(time.time() - started, 2),
        opt_steps=module.opt_steps,
        dataset_hash=data_hash,
        val_curve=curve,
        validation=validate,
        precision=precision,
    )
    if trainer.is_global_zero:
        from gsvkit.utils.io import atomic_write_text

        atomic_write_text(stage_dir / "summary.json", json.dumps(result.to_dict(), indent=1))
    return result


def _warn(msg: str) -> None:
    log.warning(msg)
    print(f"warning: {msg}")


def _prepare_run_dir(stage_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuses to overwrite a run without --resume."""
    from gsvkit.training.callbacks import find_resume_checkpoint, list_checkpoints

    ckpt_dir = stage_dir / "checkpoints"
    if not resume:
        if list_checkpoints(ckpt_dir):
            raise DataError(
                f"{stage_dir} already holds a training run; pass --resume to continue it or choose another --out"
            )
        return None
    found = find_resume_checkpoint(ckpt_dir, report=_warn)
    if found is None:
        raise CheckpointError(f"{ckpt_dir}: no readable checkpoint to resume from; start without --resume")
    return found


def _setup_stage(stage: Literal["s1", "s2"], out, config, pretrained, resume: bool, overrides):
    """(stage_dir, checkpoint to resume from, pretrained Checkpoint or None, config) for one stage.

    A resumed run keeps the config saved beside its checkpoints (plus any overrides) unless a config is given;
    pretrained weights are read only for a fresh run.
    """
    stage_dir = Path(out) / stage
    resume_from = _prepare_run_dir(stage_dir, resume)
    ckpt = _load_pretrained(stage, pretrained) if (pretrained and resume_from is None) else None
    if resume_from is not None and (stage_dir / "config.yaml").is_file() and config is None:
        cfg = apply_overrides(load_config(stage_dir / "config.yaml"), list(overrides))
    else:
        cfg = _resolve_config(stage, config, ckpt, list(overrides))
    check_monitor(stage, cfg.train.early_stopping.monitor or DEFAULT_MONITOR[stage])
    return stage_dir, resume_from, ckpt, cfg


def _seed_everything(seed: int) -> None:
    from lightning.fabric.utilities.seed import seed_everything

    seed_everything(seed, workers=True, verbose=False)


def train_s2(
    dataset: str | Path,
    out: str | Path,
    config: str | Path | S2Config | None = None,
    pretrained: str | Path | None = None,
    pretrained_d: str | Path | None = None,
    resume: bool = False,
    overrides: list[str] | tuple[str, ...] = (),
    devices: int = 1,
    accelerator: str = "auto",
    progress: bool = True,
    lora_rank: int = 32,
) -> TrainResult:
    """Fine-tune (or train from scratch) the s2 SoVITS model on a prepared dataset.

    v3/v4 (flow-matching) models are fine-tuned with LoRA (`lora_rank`, alpha = rank; see
    `training.flow_module`); besides the merged export the run writes the adapters in upstream's LoRA format.

    Args:
        dataset: a directory written by `gsv prepare` (manifest.jsonl + clips/ + features/).
        out: the experiment directory; this stage writes into `out/s2/`.
        config: a YAML config (s2); default = the pretrained file's architecture, else the official v2 one.
        pretrained: an s2 generator file (official pretrained G, an official export, or ours).
        pretrained_d: an s2 discriminator file; default = the `s2D*` file beside an `s2G*` pretrained, if any.
        resume: continue from the newest readable checkpoint in `out/s2/checkpoints/`.
        overrides: `section.field=value` strings applied on top of the config.
        devices: processes/GPUs (DDP when > 1; gloo on CPU).
    """
    from gsvkit.training.datamodule import S2DataModule
    from gsvkit.training.datasets import dataset_hash
    from gsvkit.training.s2_module import S2Module

    stage_dir, resume_from, ckpt, cfg = _setup_stage("s2", out, config, pretrained, resume, overrides)
    assert isinstance(cfg, S2Config)
    dm = S2DataModule(Path(dataset), cfg)
    _seed_everything(cfg.train.seed)
    net_g = net_d = None
    module: FlowS2Module | S2Module
    if cfg.model.is_flow:
        from gsvkit.training.flow_module import FlowS2Module

        module = FlowS2Module(cfg, net_g=_flow_pretrained(cfg, ckpt, pretrained), lora_rank=lora_rank)
    elif ckpt is not None:
        from gsvkit.models.s2 import SynthesizerTrn

        _check_compatible("s2", cfg, ckpt, Path(pretrained))  # type: ignore[arg-type]
        net_g = SynthesizerTrn.from_upstream_state_dict(ckpt.state_dict, cfg.model.version, config=cfg.model).train()
        d_path = Path(pretrained_d) if pretrained_d else _sibling_d(Path(pretrained))  # type: ignore[arg-type]
        if d_path is not None:
            from gsvkit.checkpoint import load_s2d

            net_d = load_s2d(d_path).train()
    if not cfg.model.is_flow:
        module = S2Module(cfg, net_g=net_g, net_d=net_d)
    stage_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, stage_dir / "config.yaml")
    dm.setup("fit")
    module.val_refs = dm.val_refs
    module.val_ref_sv = dm.val_ref_sv
    if cfg.train.mixup.enabled and len({u.speaker for u in dm.train_utts}) < 2:
        _warn("s2: train.mixup mixes features of another speaker, but the training split has one speaker: it does "
              "nothing here (it needs a multi-speaker dataset)")
    result = _fit("s2", module, dm, cfg, stage_dir, resume_from, devices, accelerator, progress,
                  dataset_hash(Path(dataset)))
    if cfg.model.is_flow and result.export:
        from gsvkit.training.flow_module import FlowS2Module, export_adapters

        assert isinstance(module, FlowS2Module)
        # The same epoch as the merged export (the best one; the module already holds its weights).
        export_adapters(module, cfg, stage_dir / f"s2-lora-r{lora_rank}.pth", None, result.best_epoch)
    return result


def _flow_pretrained(cfg: S2Config, ckpt, pretrained):
    """The v3/v4 base model LoRA fine-tuning starts from (None: fresh weights, for tests and smoke runs)."""
    if ckpt is None:
        return None
    from gsvkit.models.s2.flow import SynthesizerTrnV3

    _check_compatible("s2", cfg, ckpt, Path(pretrained))
    return SynthesizerTrnV3.from_upstream_state_dict(ckpt.state_dict, cfg.model.version, config=cfg.model).train()


def _sibling_d(g_path: Path) -> Path | None:
    if "s2G" not in g_path.name:
        return None
    candidate = g_path.with_name(g_path.name.replace("s2G", "s2D"))
    return candidate if candidate.is_file() else None


def train_s1(
    dataset: str | Path,
    out: str | Path,
    config: str | Path | S1Config | None = None,
    pretrained: str | Path | None = None,
    resume: bool = False,
    overrides: list[str] | tuple[str, ...] = (),
    devices: int = 1,
    accelerator: str = "auto",
    progress: bool = True,
) -> TrainResult:
    """Fine-tune (or train from scratch) the s1 GPT on a prepared dataset's phones and semantic tokens.

    Arguments as `train_s2`; this stage writes into `out/s1/`. `pretrained` is any s1 file (official export,
    official Lightning .ckpt, or ours).
    """
    from gsvkit.training.datamodule import S1DataModule
    from gsvkit.training.datasets import dataset_hash
    from gsvkit.training.s1_module import S1Module

    stage_dir, resume_from, ckpt, cfg = _setup_stage("s1", out, config, pretrained, resume, overrides)
    assert isinstance(cfg, S1Config)
    dm = S1DataModule(Path(dataset), cfg)
    _seed_everything(cfg.train.seed)
    model = None
    if ckpt is not None:
        from gsvkit.models.s1 import Text2SemanticDecoder

        _check_compatible("s1", cfg, ckpt, Path(pretrained))  # type: ignore[arg-type]
        model = Text2SemanticDecoder.from_upstream_state_dict(ckpt.state_dict, cfg.model.version, config=cfg.model)
        model.train()
    module = S1Module(cfg, model=model)
    stage_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, stage_dir / "config.yaml")
    dm.setup("fit")
    return _fit("s1", module, dm, cfg, stage_dir, resume_from, devices, accelerator, progress,
                dataset_hash(Path(dataset)))


def train_all(
    dataset: str | Path,
    out: str | Path,
    s2_config: str | Path | S2Config | None = None,
    s1_config: str | Path | S1Config | None = None,
    s2_pretrained: str | Path | None = None,
    s2_pretrained_d: str | Path | None = None,
    s1_pretrained: str | Path | None = None,
    resume: bool = False,
    s2_overrides: list[str] | tuple[str, ...] = (),
    s1_overrides: list[str] | tuple[str, ...] = (),
    devices: int = 1,
    accelerator: str = "auto",
    progress: bool = True,
) -> tuple[TrainResult, TrainResult]:
    """s2 then s1 on the same dataset, into `out/s2/` and `out/s1/`. With `resume`, a finished stage is skipped."""
    out = Path(out)
    if resume and (out / "s2" / "summary.json").is_file():
        r2 = TrainResult(**json.loads((out / "s2" / "summary.json").read_text()))
    else:
        r2 = train_s2(dataset, out, s2_config, s2_pretrained, s2_pretrained_d, resume and (out / "s2").is_dir(),
                      s2_overrides, devices, accelerator, progress)
    r1 = train_s1(dataset, out, s1_config, s1_pretrained, resume and (out / "s1" / "checkpoints").is_dir(),
                  s1_overrides, devices, accelerator, progress)
    return r2, r1


def format_summary(r: TrainResult) -> str:
    """A few plain lines for the end of a run."""
    best = "n/a" if r.best_value is None or not math.isfinite(r.best_value) else f"{r.best_value:.5f}"
    last = "n/a" if r.last_value is None else f"{r.last_value:.5f}"
    metric = (f"  {r.monitor}: best {best} at epoch {r.best_epoch}, last {last}" if r.validation
              else "  no validation: the last epoch was exported")
    return "\n".join(
        [
            f"{r.stage}: stopped after epoch {r.last_epoch} ({r.stop_reason})",
            metric,
            f"  best checkpoint: {r.best_checkpoint}",
            f"  exported:        {r.export}",
            f"  run directory:   {r.run_dir}  ({r.seconds:.0f} s, {r.opt_steps} optimizer steps of the model)",
        ]
    )
