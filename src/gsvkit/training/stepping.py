"""What both Lightning modules share: manual optimization with accumulation, clipping, OOM backoff, freezing,
per-step reseeding (exact resumes) and RNG state in checkpoints.

Lightning refuses `gradient_clip_val` and `accumulate_grad_batches` under manual optimization, so they live here:
a loader batch is split into `splits` micro-batches (1 unless an out-of-memory error forced more), each micro-batch
loss is scaled by its share of the accumulation window, and the optimizers step at the end of the window.
Gradients are clipped in `on_before_optimizer_step`, which Lightning calls after un-scaling fp16 gradients.

Under DDP an out-of-memory error on one rank must not leave the others waiting in a gradient all-reduce: backward
runs without DDP's bucketed sync, and before every optimizer step the ranks first agree (one tiny all-reduce) that
none failed, then average the gradients explicitly (`sync_before_step`). A rank that fails sends its failure into
the same agreement, so every rank backs off and retries the batch together (see `run_micro_batches`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from gsvkit.training.config import CommonTrainConfig

log = logging.getLogger(__name__)


def is_oom(err: BaseException) -> bool:
    """Whether `err` is an out-of-memory error (CUDA or otherwise) that a smaller micro-batch could avoid."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(err, oom_type) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


class PeerOutOfMemory(RuntimeError):
    """Another DDP rank ran out of memory on this batch: this rank backs off with it."""


# What a rank sends into the agreement: all fine, an OOM it can retry with smaller micro-batches, or one it cannot.
OK, RETRY, FATAL = 0, 1, 2


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and (
        torch.distributed.get_world_size() > 1
    )


def agree(code: int, device: torch.device | str = "cpu") -> int:
    """The worst code over all ranks (one all-reduce of one number; `code` itself when not distributed)."""
    if not _distributed():
        return code
    flag = torch.tensor([code], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item())


def check_peers(device: torch.device | str = "cpu") -> None:
    """A sync point: agree with the other ranks that none failed; raise PeerOutOfMemory when one did."""
    verdict = agree(OK, device)
    if verdict == FATAL:
        raise RuntimeError("another DDP rank ran out of memory with one item per micro-batch; reduce the batch size")
    if verdict == RETRY:
        raise PeerOutOfMemory("another rank ran out of memory on this batch")


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Average the gradients of `params` over the ranks (what DDP's backward sync would do), in two all-reduces.

    A parameter without a gradient on some ranks counts as zero there; one without a gradient on every rank keeps
    None (as with DDP's `find_unused_parameters`)."""
    if not _distributed() or not params:
        return
    world = torch.distributed.get_world_size()
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int64, device=params[0].device)
    torch.distributed.all_reduce(has, op=torch.distributed.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist(), strict=True) if h]
    if not live:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in live]
    flat = torch.cat([g.reshape(-1).float() for g in grads])  # [sum of numels]
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for p in live:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n


class MicroBatches:
    """How a loader batch is cut into micro-batches; `backoff()` halves the micro-batch after an OOM."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.splits = 1

    def slices(self, batch_size: int) -> list[slice]:
        n = min(self.splits, batch_size)
        bounds = [round(i * batch_size / n) for i in range(n + 1)]
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]

    def backoff(self, batch_size: int) -> bool:
        """Double the number of splits; False when disabled or already at one item per micro-batch."""
        if not self.enabled or self.splits >= batch_size:
            return False
        self.splits *= 2
        return True


class StepScaledPrecision(MixedPrecision):
    """fp16 autocast with a GradScaler whose scale is updated once per training step, after all of its optimizers
    stepped (torch's recipe for several optimizers; Lightning's plugin updates after each one, so a GAN step would
    move the scale twice). Works on CPU too, where Lightning would swap `16-mixed` for bf16.
    The module calls `update()` (see `ManualStepModule.update_scaler`)."""

    def __init__(self, device: str) -> None:
        super().__init__("16-mixed", device, scaler=torch.amp.GradScaler(device=device))

    def optimizer_step(self, optimizer, model, closure, **kwargs):
        closure()  # manual optimization: the backward already ran; the closure only runs hooks
        self.scaler.unscale_(optimizer)  # before clipping in on_before_optimizer_step
        self._after_closure(model, optimizer)
        return self.scaler.step(optimizer, **kwargs)  # skips the step when gradients are not finite

    def update(self) -> None:
        self.scaler.update()


def rng_state() -> dict:
    """Every random generator's state as plain types (checkpoints load with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def frozen_names(module: nn.Module, prefixes: Sequence[str]) -> set[str]:
    return {n for n, _ in module.named_parameters() if any(n == p or n.startswith(p + ".") for p in prefixes)}


class ManualStepModule(LightningModule):
    """Base of the s1 and s2 modules (see the module docstring)."""

    stage = ""

    def __init__(self, train_cfg: CommonTrainConfig, grad_clip: float | None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.train_cfg = train_cfg
        self.grad_clip = grad_clip
        self.micro = MicroBatches(train_cfg.oom_backoff)
        self.micro_step = 0  # micro-batches seen: the per-step seed, saved in checkpoints
        self.opt_steps = 0  # optimizer steps of the main model (global_step counts every optimizer)
        self.window_fill = 0  # loader batches accumulated in the current window
        self.nonfinite = 0  # consecutive non-finite losses
        self.stop_reason: str | None = None
        self.last_val_epoch: int | None = None
        self.grad_norms: dict[int, float] = {}
        self.frozen: set[str] = set()  # parameter names whose gradients are dropped (freeze schedules)
        self.oom_events = 0
        self.dataset_hash: str | None = None  # set by the runner; travels in checkpoints with the config
        self.stepped: set[str] = set()  # optimizers that stepped on the current loader batch (OOM retries skip them)

    # ----------------------------------------------------------------- DDP: agree before every gradient collective
    def _no_backward_sync(self) -> None:
        """No bucketed all-reduce inside backward: a rank that ran out of memory before or during its backward
        would leave the others blocked there; `sync_before_step` averages the gradients instead. (Lightning sets
        the flag back after every training step, so this runs at the start of each.)"""
        if not _distributed():
            return
        ddp = self.trainer.model
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            ddp.require_backward_grad_sync = False

    def sync_before_step(self, optimizer) -> None:
        """Call right before `optimizer.step()`: the ranks agree that none ran out of memory on this batch (else
        raise PeerOutOfMemory, which backs off like a local OOM), then average the optimizer's gradients."""
        if not _distributed():
            return
        check_peers(self.device)
        average_gradients([p for g in optimizer.param_groups for p in g["params"]])

    # ----------------------------------------------------------------- randomness
    def reseed(self) -> None:
        """Seed every generator from (seed, rank, micro-step): a resumed run draws the same numbers."""
        seed = (self.train_cfg.seed * 1_000_003 + self.global_rank * 7919 + self.micro_step) % (2**63 - 1)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))

    # ----------------------------------------------------------------- accumulation / OOM
    def window_ends(self) -> bool:
        """Whether this loader batch closes an accumulation window (or the epoch)."""
        return (self.window_fill + 1) >= self.train_cfg.accumulate_grad_batches or bool(self.trainer.is_last_batch)

    def run_micro_batches(self, batch, step_fn) -> dict[str, float]:
        """Call `step_fn(micro, scale, last)` per micro-batch, retrying with smaller ones after an OOM.

        `scale` is the micro-batch's share of the accumulation window's loss; `last` is True for the micro-batch
        after which the optimizers step. An OOM can strike anywhere in `step_fn` (forward, loss, backward, after an
        optimizer step): the retry starts the batch over with smaller micro-batches, except that `step_fn` skips
        the optimizers already in `self.stepped`, so none steps twice on one batch.
        """
        self._no_backward_sync()
        ends = self.window_ends()
        self.stepped = set()
        while True:
            self.reseed()
            try:
                metrics: dict[str, float] = {}
                slices = self.micro.slices(len(batch))
                for k, sl in enumerate(slices):
                    micro = batch if len(slices) == 1 else batch.select(sl)
                    scale = (sl.stop - sl.start) / len(batch) / self.train_cfg.accumulate_grad_batches
                    out = step_fn(micro, scale, ends and k == len(slices) - 1)
                    for name, v in out.items():
                        metrics[name] = metrics.get(name, 0.0) + float(v) * (sl.stop - sl.start) / len(batch)
                # A peer may have failed after its last agreement (an EMA update, a window that does not step).
                check_peers(self.device)
                break
            except Exception as err:
                peer = isinstance(err, PeerOutOfMemory)  # the ranks already agreed on this failure
                if not peer and not is_oom(err):
                    raise
                can_retry = self.micro.backoff(len(batch))
                if not peer:
                    verdict = agree(RETRY if can_retry else FATAL, self.device)
                    if not can_retry:
                        raise
                    if verdict == FATAL:
                        raise RuntimeError("another DDP rank ran out of memory with one item per micro-batch") from err
                self.oom_events += 1
                # The window restarts: gradients of earlier micro-batches in it are dropped with the failed ones.
                self.zero_grad(set_to_none=True)
                if not self.stepped:
                    self.window_fill = 0
                    ends = self.window_ends()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                where = "on another rank" if peer else f"at step {self.global_step}"
                msg = (
                    f"out of memory {where}: micro-batch halved to "
                    f"{len(batch) // self.micro.splits} (x{self.micro.splits} accumulation keeps batch {len(batch)})"
                )
                log.warning(msg)
                self.print(msg)
        self.micro_step += 1
        self.window_fill = 0 if ends else self.window_fill + 1
        metrics["micro_splits"] = float(self.micro.splits)
        return metrics

    def update_scaler(self) -> None:
        """End of a training step's optimizer steps: move the fp16 loss scale (once, however many optimizers)."""
        plugin = self.trainer.precision_plugin
        if isinstance(plugin, StepScaledPrecision):
            plugin.update()

    def _optimizer_list(self) -> list:
        opts = self.optimizers()
        return list(opts) if isinstance(opts, (list, tuple)) else [opts]

    # ----------------------------------------------------------------- clipping / freezing
    def on_before_optimizer_step(self, optimizer) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if self.frozen:
            names = {id(p): n for n, p in self.named_parameters()}
            for p in params:
                if names.get(id(p)) in self.frozen:
                    p.grad = None
        grads = [p for p in params if p.grad is not None]
        max_norm = self.grad_clip if self.grad_clip else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(grads, max_norm) if grads else torch.zeros(())
        idx = next(i for i, o in enumerate(self._optimizer_list()) if o.optimizer is optimizer or o is optimizer)
        self.grad_norms[idx] = float(norm)

    def check_finite(self, loss: torch.Tensor) -> bool:
        """False (skip the step) for a NaN/inf loss; three in a row stop the run when stop_on_nan is set."""
        if bool(torch.isfinite(loss.detach()).all()):
            self.nonfinite = 0
            return True
        self.nonfinite += 1
        if self.nonfinite >= 3 and self.train_cfg.early_stopping.stop_on_nan:
            self.stop_reason = f"training loss was not finite for 3 steps in a row (step {self.global_step})"
            self.trainer.should_stop = True
        return False

    # ----------------------------------------------------------------- checkpoint state
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gsvkit"] = {
            "stage": self.stage,
            "config": self.cfg.model_dump(mode="json"),  # a checkpoint is exportable on its own (gsv export)
            "dataset_hash": self.dataset_hash,
            "micro_step": self.micro_step,
            "opt_steps": self.opt_steps,
            "window_fill": self.window_fill,
            "splits": self.micro.splits,
            "frozen": sorted(self.frozen),
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("gsvkit", {})
        self.micro_step = int(state.get("micro_step", 0))
        self.opt_steps = int(state.get("opt_steps", 0))
        self.window_fill = int(state.get("window_fill", 0))
        self.micro.splits = int(state.get("splits", 1))
        self.frozen = set(state.get("frozen", []))
        if "rng" in state:
            set_rng_state(state["rng"])

    def mark_batch_done(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        sampler = getattr(dm, "train_sampler", None)
        if sampler is not None:
            sampler.mark_done()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.mark_batch_done()
