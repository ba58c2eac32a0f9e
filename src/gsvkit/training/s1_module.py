"""s1 (GPT text→semantic) training as a Lightning module.

Manual optimization like upstream (and like s2 here) so accumulation, clipping and OOM backoff share one code
path. AdamW with a per-step warmup + cosine schedule whose shape comes from the config's `optimizer` section
(upstream declared that schedule but its learning rate never moved). The loss is upstream's summed
cross-entropy, normalised by the batch's target-token count so the rate does not depend on its length; validation logs
teacher-forced `val/loss` (mean per token) and `val/top3_acc`.
"""

from __future__ import annotations

import re

import torch

from gsvkit.config import S1Config
from gsvkit.models.s1 import Text2SemanticDecoder
from gsvkit.training.datasets import S1Batch
from gsvkit.training.ema import EMA
from gsvkit.training.schedules import plateau_scheduler, s1_scheduler
from gsvkit.training.stepping import ManualStepModule, frozen_names

_LAYER = re.compile(r"^h\.layers\.(\d+)\.")


def last_k_frozen(model: Text2SemanticDecoder, k: int) -> set[str]:
    """Parameter names outside the last k transformer layers and the output head."""
    n_layers = len(model.h.layers)
    keep = set()
    for name, _ in model.named_parameters():
        m = _LAYER.match(name)
        if (m and int(m.group(1)) >= n_layers - k) or name.startswith("ar_predict_layer."):
            keep.add(name)
    return {n for n, _ in model.named_parameters()} - keep


class S1Module(ManualStepModule):
    stage = "s1"

    def __init__(self, cfg: S1Config, model: Text2SemanticDecoder | None = None) -> None:
        super().__init__(cfg.train, cfg.train.gradient_clip or None)
        self.cfg = cfg
        self.model = model if model is not None else Text2SemanticDecoder(cfg.model)
        self.model.h.layer_drop = cfg.train.stochastic_depth
        ema = cfg.train.ema
        self.ema = EMA(self.model, ema.decay, ema.start_step, ema.warmup) if ema.enabled else None
        freeze = cfg.train.freeze
        names = frozen_names(self.model, freeze.modules)
        if freeze.last_k_layers is not None:
            names |= last_k_frozen(self.model, freeze.last_k_layers)
        self.frozen = {f"model.{n}" for n in names}

    def configure_optimizers(self):
        t, o = self.cfg.train, self.cfg.optimizer
        peak = o.lr * t.lr_scale
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.dim() < 2 or "norm" in name or "alpha" in name else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=peak, betas=(0.9, 0.95),
        )
        if t.plateau.enabled:
            return [opt], [{"scheduler": plateau_scheduler(opt, t.plateau, t.early_stopping.mode), "interval": "epoch"}]
        sched = s1_scheduler(opt, peak, o.lr_init * t.lr_scale, o.lr_end * t.lr_scale, o.warmup_steps, o.decay_steps)
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def _compute_loss(self, batch: S1Batch) -> dict[str, torch.Tensor]:
        """Summed cross-entropy (upstream's objective; `loss`), its per-token mean and top-3 accuracy."""
        out = self.model(batch.phones, batch.phone_lengths, batch.bert, batch.semantic, batch.semantic_lengths)
        return {"loss": out.loss, "loss_mean": out.loss_mean.detach(), "top3_acc": out.top3_acc.detach()}

    def training_step(self, batch: S1Batch, batch_idx: int) -> None:
        # Normalise by the loader batch's target count (codes + one EOS each), not the micro-batch's: splitting
        # a batch after an OOM then gives exactly the same gradient.
        self._batch_targets = float(batch.semantic_lengths.sum() + len(batch))
        metrics = self.run_micro_batches(batch, self._micro_step)
        logs = {f"train/{k}": v for k, v in metrics.items()}
        logs["lr"] = float(self.optimizers().param_groups[0]["lr"])
        if 0 in self.grad_norms:
            logs["train/grad_norm"] = self.grad_norms[0]
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=len(batch))
        self.log("loss", metrics.get("loss", float("nan")), prog_bar=True, on_step=True, batch_size=len(batch))

    def _micro_step(self, batch: S1Batch, scale: float, last: bool) -> dict[str, torch.Tensor]:
        if "model" in self.stepped:  # an OOM after the step (schedule, EMA): the batch is done
            return {}
        m = self._compute_loss(batch)
        if self.check_finite(m["loss"]):
            self.manual_backward(m["loss"] / self._batch_targets / self.train_cfg.accumulate_grad_batches)
        if last:
            opt = self.optimizers()
            self.sync_before_step(opt)
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.stepped.add("model")
            self.update_scaler()
            self.opt_steps += 1
            if not self.cfg.train.plateau.enabled:
                self.lr_schedulers().step()
            if self.ema is not None:
                self.ema.update(self.model, self.opt_steps)
        return {"loss": m["loss_mean"], "top3_acc": m["top3_acc"]}

    def on_train_epoch_start(self) -> None:
        unfreeze = self.cfg.train.freeze.unfreeze_at_epoch
        if unfreeze is not None and self.current_epoch >= unfreeze and self.frozen:
            self.print(f"epoch {self.current_epoch + 1}: unfreezing {len(self.frozen)} parameter tensors")
            self.frozen = set()

    # ------------------------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._sums = torch.zeros(3, dtype=torch.float64)  # summed loss, targets, top-3 hits-weighted
        self._ema_ctx = self.ema.swapped_in(self.model) if self.ema is not None else None
        if self._ema_ctx is not None:
            self._ema_ctx.__enter__()

    def validation_step(self, batch: S1Batch, batch_idx: int) -> None:
        out = self.model(batch.phones, batch.phone_lengths, batch.bert, batch.semantic, batch.semantic_lengths)
        codes = float(batch.semantic_lengths.sum())
        self._sums += torch.tensor([float(out.loss), float(out.n_targets), float(out.top3_acc) * codes, codes][:3])
        self._codes = getattr(self, "_codes", 0.0) + codes

    def on_validation_epoch_end(self) -> None:
        if self._ema_ctx is not None:
            self._ema_ctx.__exit__(None, None, None)
            self._ema_ctx = None
        loss = float(self._sums[0] / self._sums[1].clamp(min=1))
        acc = float(self._sums[2]) / max(1.0, getattr(self, "_codes", 0.0))
        self._codes = 0.0
        self.log_dict({"val/loss": loss, "val/top3_acc": acc}, on_epoch=True, prog_bar=True, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.last_val_epoch = self.current_epoch
            if self.cfg.train.plateau.enabled:
                monitor = self.cfg.train.early_stopping.monitor or "val/loss"
                self.lr_schedulers().step(loss if monitor == "val/loss" else acc)

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        state = self.ema.averaged_state_dict(self.model) if self.ema is not None else self.model.state_dict()
        return {k: v.detach().cpu() for k, v in state.items()}
