"""Checkpoints you can trust, and early stopping that knows why it stopped.

- `AtomicCheckpointIO`: every Lightning checkpoint is written to a temporary file, fsynced and renamed, and read
  back with `torch.load(weights_only=True)` (no pickle code runs). Each file carries a SHA-256 of its content
  (every tensor's bytes and every other value), checked whenever it is read, so flipped bits are caught.
- `CheckpointPolicy`: after every epoch saves a full-state checkpoint (model, optimizers, schedulers, scaler,
  loops, RNG, callback states) and keeps the top-k best by the monitored metric, the newest `keep_last` and the
  epochs on the save schedule; others are rotated away. Ctrl-C writes a resumable checkpoint.
- `find_resume_checkpoint`: the newest checkpoint that reads back and matches its checksum; a damaged one is
  moved aside into `corrupt/` (never deleted) and the previous one is used. Temporary files of interrupted saves
  are removed first. `best.ckpt` and `last.ckpt` are hard links (copies where links fail) to the best and the
  newest epoch file.
- `SmoothedEarlyStopping`: Lightning's early stopping on an exponentially smoothed metric, remembering the best
  epoch and a plain-words reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, RichProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gsvkit.errors import CheckpointError
from gsvkit.training.config import CheckpointConfig, EarlyStoppingConfig
from gsvkit.utils.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

INDEX = "index.json"
CORRUPT_DIR = "corrupt"
CHECKSUM_KEY = "gsvkit_sha256"
STABLE_NAMES = ("best.ckpt", "last.ckpt")
_NAME = re.compile(r"^epoch=(\d+)-step=(\d+)(?:-([a-z]+))?\.ckpt$")


# ------------------------------------------------------------------------------------------------- file I/O
class AtomicCheckpointIO(TorchCheckpointIO):
    """Atomic saves (temp file + fsync + rename) with a content checksum, and safe loads (`weights_only=True`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        checkpoint = {**checkpoint, CHECKSUM_KEY: content_digest(checkpoint)}
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(Path(path), map_location)


def _digest_into(h: Any, obj: Any) -> None:
    # Type tags and lengths make the encoding unambiguous; tensors contribute dtype, shape and raw bytes.
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        keys = sorted((k for k in obj if k != CHECKSUM_KEY), key=repr)
        h.update(f"D{len(keys)}".encode())
        for k in keys:
            h.update(f"K{k!r}".encode())
            _digest_into(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _digest_into(h, v)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r};".encode())


def content_digest(checkpoint: dict[str, Any]) -> str:
    """SHA-256 over everything a checkpoint holds (its own checksum entry excluded), as read back by torch.load."""
    h = hashlib.sha256()
    _digest_into(h, checkpoint)
    return h.hexdigest()


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """Load a full-state checkpoint without running pickled code and check its content checksum.

    CheckpointError if the file is unreadable, not a training checkpoint, or its content does not match the
    checksum written with it (flipped bits). Files written before checksums existed load unchecked.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle opcode, I/O error: all mean "cannot use this file"
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (no state_dict)")
    expected = ckpt.get(CHECKSUM_KEY)
    if expected is not None and content_digest(ckpt) != expected:
        raise CheckpointError(f"{path}: damaged checkpoint (its content does not match the checksum written with it)")
    return ckpt


def checkpoint_name(epoch: int, step: int, tag: str = "") -> str:
    return f"epoch={epoch:04d}-step={step:07d}{'-' + tag if tag else ''}.ckpt"


def _sort_key(path: Path) -> tuple[int, int, float]:
    m = _NAME.match(path.name)
    step, epoch = (int(m.group(2)), int(m.group(1))) if m else (-1, -1)
    return step, epoch, path.stat().st_mtime


def list_checkpoints(directory: Path) -> list[Path]:
    """Epoch checkpoints in `directory`, oldest first (by step, then epoch, then modification time).

    `best.ckpt`/`last.ckpt` are links to some of these and are not listed.
    """
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.glob("*.ckpt") if p.is_file() and _NAME.match(p.name)), key=_sort_key)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files that interrupted atomic saves left in `directory` (`.NAME.XXXX.tmp`)."""
    removed = []
    if directory.is_dir():
        for p in directory.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def find_resume_checkpoint(directory: Path, report: Callable[[str], None] = log.warning) -> Path | None:
    """The newest checkpoint in `directory` that reads back completely.

    A corrupted, truncated or bit-flipped file is reported and moved into `directory/corrupt/` (never deleted)
    and the previous one is tried. Temporary files of interrupted saves are removed first. Returns None when
    there is no checkpoint at all.
    """
    remove_stale_temporaries(directory)
    for path in reversed(list_checkpoints(directory)):
        try:
            read_checkpoint(path)
            return path
        except CheckpointError as err:
            dest = move_aside(path)
            report(f"{err}; moved it to {dest} and falling back to the previous checkpoint")
    return None


def link_stable_name(target: Path, link: Path) -> None:
    """Point `link` at `target` atomically: a hard link (no extra space), a copy where links are not possible."""
    with atomic_path(link) as tmp:
        tmp.unlink()
        try:
            os.link(target, tmp)
        except OSError:
            shutil.copy2(target, tmp)


def move_aside(path: Path) -> Path:
    """Move a bad file into `corrupt/` next to it, never overwriting an earlier one."""
    target_dir = path.parent / CORRUPT_DIR
    target_dir.mkdir(exist_ok=True)
    dest = target_dir / path.name
    n = 1
    while dest.exists():
        dest = target_dir / f"{path.stem}.{n}{path.suffix}"
        n += 1
    shutil.move(str(path), str(dest))
    return dest


# ------------------------------------------------------------------------------------------------ retention
def on_schedule(epoch: int, schedule: list[tuple[int | None, int]]) -> bool:
    """Whether `epoch` (1-based, completed epochs) is kept for good by the save schedule.

    The default `[(10, 2), (50, 5), (None, 10)]` keeps every 2nd epoch up to 10, every 5th up to 50, every 10th
    after that.
    """
    for until, every in schedule:
        if until is None or epoch <= until:
            return epoch % every == 0
    return False


def select_kept(records: list[dict], cfg: CheckpointConfig, mode: str) -> set[str]:
    """Names of the checkpoints to keep: top-k best (finite scores; at least the best) ∪ newest keep_last ∪
    scheduled."""
    keep = {r["name"] for r in records[-cfg.keep_last :]}
    keep |= {r["name"] for r in records if r.get("scheduled")}
    scored = [r for r in records if r.get("score") is not None and math.isfinite(r["score"])]
    scored.sort(key=lambda r: (r["score"] if mode == "min" else -r["score"], r["step"]))
    keep |= {r["name"] for r in scored[: max(cfg.top_k, 1)]}  # the best is kept even with top_k 0
    return keep


def best_record(records: list[dict], mode: str) -> dict | None:
    scored = [r for r in records if r.get("score") is not None and math.isfinite(r["score"])]
    if not scored:
        return None
    return min(scored, key=lambda r: (r["score"] if mode == "min" else -r["score"], r["step"]))


class CheckpointPolicy(Checkpoint):
    """Saves a full-state checkpoint after every epoch and applies the retention policy.

    Being a `Checkpoint`, Lightning calls it after the module's own epoch-end hook (schedulers stepped) and after
    early stopping updated its state, so a saved file resumes exactly where the run was. Its own records (file,
    epoch, step, score, metrics) travel inside every checkpoint and are mirrored to `index.json`.
    """

    def __init__(
        self,
        dirpath: Path,
        cfg: CheckpointConfig,
        monitor: str,
        mode: str = "min",
        on_saved: Callable[[Path, dict], None] | None = None,
        report: Callable[[str], None] = log.warning,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.cfg = cfg
        self.monitor = monitor
        self.mode = mode
        self.records: list[dict] = []
        self.interrupted_path: Path | None = None  # where a resume continues after Ctrl-C/SIGTERM
        self.interrupted_note = ""  # when it happened, in words
        self._on_saved = on_saved
        self._report = report

    @property
    def state_key(self) -> str:
        return "CheckpointPolicy"

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"records": [dict(r) for r in self.records], "monitor": self.monitor, "mode": self.mode}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Files rotated away after this checkpoint was written are gone; keep only records that still exist.
        self.records = [r for r in state_dict.get("records", []) if (self.dirpath / r["name"]).exists()]

    @property
    def best(self) -> dict | None:
        return best_record(self.records, self.mode)

    # ---------------------------------------------------------------- hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path is None or not trainer.is_global_zero:
            return
        # A resumed run needs its kept files (the best one is exported at the end): check them all now, so a
        # damaged one is set aside and ranking continues with the intact ones.
        resumed_from = Path(trainer.ckpt_path).name
        intact = []
        for r in self.records:
            path = self.dirpath / r["name"]
            if r["name"] != resumed_from:
                try:
                    read_checkpoint(path)
                except CheckpointError as err:
                    self._report(f"{err}; moved it to {move_aside(path)} and left it out of the ranking")
                    continue
            intact.append(r)
        self.records = intact
        self._write_index()
        self._link_stable_names()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1  # completed epochs
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        validated = getattr(pl_module, "last_val_epoch", None) == trainer.current_epoch
        score = metrics.get(self.monitor) if validated else None
        record = {
            "name": checkpoint_name(epoch, trainer.global_step),
            "epoch": epoch,
            "step": trainer.global_step,
            "score": score,
            "metrics": metrics if validated else {},
            "scheduled": on_schedule(epoch, self.cfg.schedule),
            "time": time.time(),
        }
        self._save(trainer, record)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        # Ctrl-C, or SIGTERM (a scheduler preempting the job): both leave a resumable checkpoint.
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        epochs = trainer.fit_loop.epoch_progress.current
        batches_done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if epochs.completed >= epochs.ready:
            # Between epochs: the epoch's own checkpoint is the resume point (nothing newer to save).
            self.interrupted_path = self.dirpath / self.records[-1]["name"] if self.records else None
            self.interrupted_note = "" if self.records else "before the first epoch ended"
            return
        if batches_done >= trainer.num_training_batches:
            # Training batches done, epoch end (validation, ranking, early stopping) not: Lightning cannot resume
            # into that, so the previous epoch's checkpoint stays the resume point and this epoch is redone.
            self.interrupted_path = self.dirpath / self.records[-1]["name"] if self.records else None
            self.interrupted_note = (f"during the end of epoch {epochs.ready}, which is trained again on resume"
                                     if self.records else "during the end of the first epoch")
            return
        # Mid-epoch state: Lightning's loop progress and our sampler position make it resumable.
        record: dict[str, Any] = {
            "name": checkpoint_name(epochs.ready, trainer.global_step, "interrupted"),
            "epoch": epochs.ready,  # 1-based: the epoch that was running
            "step": trainer.global_step,
            "score": None,
            "metrics": {},
            "scheduled": False,
            "interrupted": True,
            "time": time.time(),
        }
        self._save(trainer, record)
        self.interrupted_path = self.dirpath / record["name"]
        self.interrupted_note = f"during epoch {epochs.ready}"

    # ---------------------------------------------------------------- saving
    def _save(self, trainer: Trainer, record: dict) -> None:
        path = self.dirpath / record["name"]
        self.records = [r for r in self.records if r["name"] != record["name"]] + [record]
        try:
            trainer.save_checkpoint(path, weights_only=False)
        except OSError as err:
            self.records.pop()
            raise CheckpointError(
                f"could not write checkpoint {path} ({err}); the earlier checkpoints in {self.dirpath} are intact. "
                "Free some disk space and resume with --resume"
            ) from err
        if trainer.is_global_zero:
            self._rotate()
            self._write_index()
            self._link_stable_names()
            if self._on_saved is not None:
                self._on_saved(path, record)

    def _rotate(self) -> None:
        keep = select_kept([r for r in self.records if not r.get("interrupted")], self.cfg, self.mode)
        # An interrupted checkpoint is only useful until the next regular save supersedes it.
        newest = self.records[-1]
        kept_records = []
        for r in self.records:
            if r["name"] in keep or r is newest:
                kept_records.append(r)
                continue
            path = self.dirpath / r["name"]
            if path.exists():
                path.unlink()
        self.records = kept_records

    def _link_stable_names(self) -> None:
        """`best.ckpt` → the best epoch's file, `last.ckpt` → the newest file (interrupted ones included)."""
        best, last = self.best, (self.records[-1] if self.records else None)
        for link, record in zip(STABLE_NAMES, (best, last), strict=True):
            path = self.dirpath / link
            if record is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                link_stable_name(self.dirpath / record["name"], path)

    def _write_index(self) -> None:
        best = self.best
        index = {
            "monitor": self.monitor,
            "mode": self.mode,
            "best": best["name"] if best else None,
            "last": self.records[-1]["name"] if self.records else None,
            "checkpoints": self.records,
        }
        atomic_write_text(self.dirpath / INDEX, json.dumps(index, indent=1))


# ------------------------------------------------------------------------------------------- early stopping
class SmoothedEarlyStopping(EarlyStopping):
    """Early stopping on an exponentially smoothed metric: `s = a*s + (1-a)*x` (a = `smoothing`, 0 = raw).

    Remembers the epoch of the best (smoothed) value and a plain-words stop reason, and both travel in
    checkpoints so a resumed run stops exactly where an uninterrupted one would.
    """

    def __init__(self, cfg: EarlyStoppingConfig, monitor: str) -> None:
        super().__init__(
            monitor=monitor,
            mode=cfg.mode,
            patience=cfg.patience,
            min_delta=cfg.min_delta,
            check_finite=cfg.stop_on_nan,
            divergence_threshold=cfg.divergence_threshold,
            verbose=False,
            strict=False,
        )
        self.smoothing = cfg.smoothing
        self.smoothed: float | None = None
        self.best_epoch: int | None = None
        self.history: list[tuple[int, float, float]] = []  # (epoch, raw, smoothed)

    @property
    def state_key(self) -> str:
        return "SmoothedEarlyStopping"

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        raw = float(current)
        if math.isfinite(raw):
            prev = raw if self.smoothed is None else self.smoothed
            self.smoothed = self.smoothing * prev + (1 - self.smoothing) * raw
            value = torch.tensor(self.smoothed, dtype=torch.float64)
        else:
            value = current.double()
        epoch = self._trainer_epoch
        self.history.append((epoch, raw, float(value)))
        previous_best = float(self.best_score)
        should_stop, reason = super()._evaluate_stopping_criteria(value)
        if float(self.best_score) != previous_best:
            self.best_epoch = epoch
        if should_stop:
            reason = self._plain_reason(raw, float(value), epoch)
        return should_stop, reason

    def _plain_reason(self, raw: float, value: float, epoch: int) -> str:
        """Why it stopped, in the config's terms (Lightning's own message names records and 'signals')."""
        from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

        name = f"{self.monitor} (smoothed, {self.smoothing:g})" if self.smoothing else self.monitor
        if self.stopping_reason == EarlyStoppingReason.NON_FINITE_METRIC:
            return f"{self.monitor} was {raw} at epoch {epoch}, not a finite number (early_stopping.stop_on_nan)"
        if self.stopping_reason == EarlyStoppingReason.DIVERGENCE_THRESHOLD:
            return (f"{name} reached {value:.5g} at epoch {epoch}, past early_stopping.divergence_threshold "
                    f"{self.divergence_threshold:g}")
        direction = "fall" if self.mode == "min" else "rise"
        delta = abs(float(self.min_delta))
        return (f"{name} did not {direction} by more than min_delta {delta:g} for {self.wait_count} "
                f"validation checks in a row (patience {self.patience}); best {float(self.best_score):.5g} "
                f"at epoch {self.best_epoch}")

    def _run_early_stopping_check(self, trainer: Trainer) -> None:
        self._trainer_epoch = trainer.current_epoch + 1
        super()._run_early_stopping_check(trainer)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(smoothed=self.smoothed, best_epoch=self.best_epoch, history=[list(h) for h in self.history])
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.smoothed = state_dict.get("smoothed")
        self.best_epoch = state_dict.get("best_epoch")
        self.history = [tuple(h) for h in state_dict.get("history", [])]


class EpochProgressBar(RichProgressBar):
    """Lightning's rich progress bar, numbering epochs from 1 like file names, summaries and `gsv info`."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = f"Epoch {current_epoch + 1}" + (f"/{self.trainer.max_epochs}" if self.trainer.max_epochs else "")
        return f"{text:{len(self.validation_description)}}"  # as wide as "Validation": no flicker
