"""s2 (SoVITS) GAN training as a Lightning module with manual optimization.

One training step, per micro-batch (upstream's order when there is no accumulation):

    generator forward → discriminator loss (G frozen) → [D steps at window end]
                      → generator loss with that D (D frozen) → [G steps at window end, EMA update]

`_compute_loss` returns every term in a metrics dict. Validation follows the *inference path*: each held-out
utterance is decoded from its own semantic tokens with a reference spectrogram taken from another utterance of
the same speaker, and its mel is compared with the ground truth's (`val/mel_l1`, the early-stopping metric).
The posterior reconstruction (`val/recon_mel_l1`) is logged beside it, and with `train.speaker_similarity` on,
the speaker similarity of the decoded clips to their ground truth (`val/speaker_sim`, see `speaker_sim`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from gsvkit.audio.spectrogram import mel_spectrogram, spec_to_mel
from gsvkit.config import S2Config
from gsvkit.models.s2 import MultiPeriodDiscriminator, SynthesizerTrn
from gsvkit.models.s2.losses import discriminator_loss, feature_loss, generator_loss, kl_loss
from gsvkit.training.augment import speaker_mixup, spec_augment
from gsvkit.training.config import SPEAKER_SIM_METRIC
from gsvkit.training.datasets import S2Batch
from gsvkit.training.ema import EMA
from gsvkit.training.schedules import plateau_scheduler, s2_scheduler
from gsvkit.training.speaker_sim import SpeakerSimilarityMetric
from gsvkit.training.stepping import ManualStepModule, frozen_names

# Upstream trains the phone-side modules of enc_p at text_low_lr_rate (0.4) times the base rate.
TEXT_MODULES = ("enc_p.text_embedding", "enc_p.encoder_text", "enc_p.mrte")


def slice_wave(wav: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """wav [B, 1, S] → [B, 1, length] from sample `starts[i]` (zero-padded past the end)."""
    need = int(starts.max()) + length
    if need > wav.shape[-1]:
        wav = F.pad(wav, (0, need - wav.shape[-1]))
    return torch.stack([wav[i, :, int(s) : int(s) + length] for i, s in enumerate(starts)])


class S2Module(ManualStepModule):
    stage = "s2"

    def __init__(self, cfg: S2Config, net_g: SynthesizerTrn | None = None, net_d=None) -> None:
        super().__init__(cfg.train, cfg.train.grad_clip)
        self.cfg = cfg
        self.net_g = net_g if net_g is not None else SynthesizerTrn(cfg.model)
        if self.net_g.enc_q is None:
            self.net_g.add_posterior_encoder()
        self.net_d = net_d if net_d is not None else MultiPeriodDiscriminator(cfg.model)
        ema = cfg.train.ema
        self.ema = EMA(self.net_g, ema.decay, ema.start_step, ema.warmup) if ema.enabled else None
        freeze = cfg.train.freeze
        self.scheduled_freeze = frozen_names(self.net_g, freeze.modules)
        self.frozen = {f"net_g.{n}" for n in self.scheduled_freeze}
        self.val_refs: list[torch.Tensor] = []  # filled by the data module: reference spectrogram per val clip
        self.val_ref_sv: list[torch.Tensor | None] = []  # and its speaker embedding [sv_dim] (v2Pro)
        sim = cfg.train.speaker_similarity
        self.speaker_sim = SpeakerSimilarityMetric(sim, cfg.data.sampling_rate) if sim.enabled else None

    # ------------------------------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        t = self.cfg.train
        lr = t.learning_rate
        text_ids = {id(p) for n, p in self.net_g.named_parameters() if n.startswith(TEXT_MODULES)}
        trainable = [p for p in self.net_g.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in trainable if id(p) not in text_ids], "lr": lr},
            {"params": [p for p in trainable if id(p) in text_ids], "lr": lr * t.text_low_lr_rate},
        ]
        opt_g = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=t.betas, eps=t.eps)
        opt_d = torch.optim.AdamW(self.net_d.parameters(), lr=lr, betas=t.betas, eps=t.eps)
        if t.plateau.enabled:
            mode = t.early_stopping.mode
            scheds = [plateau_scheduler(opt_g, t.plateau, mode), plateau_scheduler(opt_d, t.plateau, mode)]
        else:
            scheds = [s2_scheduler(opt_g, t.lr_decay), s2_scheduler(opt_d, t.lr_decay)]
        return [opt_g, opt_d], [{"scheduler": s, "interval": "epoch"} for s in scheds]

    def _optimizer_list(self) -> list:
        return list(self.optimizers())

    # ------------------------------------------------------------------------------------ losses
    def kl_weight(self) -> float:
        t = self.cfg.train
        if t.kl_anneal_steps <= 0:
            return t.c_kl
        ramp = min(1.0, self.opt_steps / t.kl_anneal_steps)
        return t.c_kl * (t.kl_anneal_start + (1.0 - t.kl_anneal_start) * ramp)

    def _generator_forward(self, batch: S2Batch) -> dict:
        t, data = self.cfg.train, self.cfg.data
        ssl, spec = batch.ssl, batch.spec
        if self.training:
            ssl = speaker_mixup(ssl, batch.speakers, t.mixup)
            if t.spec_augment.ssl:
                ssl = spec_augment(ssl, batch.ssl_lengths, t.spec_augment)
            if t.spec_augment.spec:
                spec = spec_augment(spec, batch.spec_lengths, t.spec_augment)
        out = self.net_g(
            ssl, batch.ssl_lengths, spec, batch.spec_lengths, batch.phones, batch.phone_lengths, sv_emb=batch.sv
        )
        seg_frames = out.y_hat.shape[-1] // data.hop_length
        with torch.autocast(device_type=self.device.type, enabled=False):
            mel = spec_to_mel(batch.spec.float(), data)  # targets from the clean spectrogram, as upstream
            y_mel = torch.stack([mel[i, :, int(s) : int(s) + seg_frames] for i, s in enumerate(out.ids_slice)])
            y_hat_mel = mel_spectrogram(out.y_hat.squeeze(1).float(), data)
        y = slice_wave(batch.wav, out.ids_slice * data.hop_length, out.y_hat.shape[-1])
        return {"out": out, "y": y, "y_mel": y_mel, "y_hat_mel": y_hat_mel}

    def _compute_loss(self, fwd: dict, part: str) -> dict[str, torch.Tensor]:
        """Loss terms of one part ("d" or "g") of the GAN step; `loss` is what is back-propagated."""
        out, y = fwd["out"], fwd["y"]
        if part == "d":
            d_real, d_fake, _, _ = self.net_d(y, out.y_hat.detach())
            loss_d, _, _ = discriminator_loss(d_real, d_fake)
            return {"loss": loss_d, "d/total": loss_d.detach()}
        t = self.cfg.train
        _, d_fake, fmap_r, fmap_g = self.net_d(y, out.y_hat)
        loss_mel = F.l1_loss(fwd["y_mel"], fwd["y_hat_mel"])
        loss_kl = kl_loss(out.z_p, out.logs_q, out.m_p, out.logs_p, out.z_mask)
        loss_fm = feature_loss(fmap_r, fmap_g)
        loss_gen, _ = generator_loss(d_fake)
        commit = out.commit_loss.float() if torch.is_tensor(out.commit_loss) else torch.tensor(float(out.commit_loss))
        kl_w = self.kl_weight()
        total = loss_gen + loss_fm + t.c_mel * loss_mel + t.c_commit * commit + kl_w * loss_kl
        return {
            "loss": total,
            "g/total": total.detach(),
            "g/gen": loss_gen.detach(),
            "g/fm": loss_fm.detach(),
            "g/mel_l1": loss_mel.detach(),
            "g/kl": loss_kl.detach(),
            "g/commit": commit.detach(),
            "g/kl_weight": torch.tensor(kl_w),
        }

    # ------------------------------------------------------------------------------------ training
    def training_step(self, batch: S2Batch, batch_idx: int) -> None:
        metrics = self.run_micro_batches(batch, self._micro_step)
        lr = self.optimizers()[0].param_groups[0]["lr"]
        logs = {f"train/{k}": v for k, v in metrics.items()}
        logs["lr/g"] = float(lr)
        if 0 in self.grad_norms:
            logs["train/grad_norm_g"] = self.grad_norms[0]
        if 1 in self.grad_norms:
            logs["train/grad_norm_d"] = self.grad_norms[1]
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False, batch_size=len(batch))
        self.log("loss_g", metrics.get("g/total", float("nan")), prog_bar=True, on_step=True, batch_size=len(batch))

    def _micro_step(self, batch: S2Batch, scale: float, last: bool) -> dict[str, torch.Tensor]:
        opt_g, opt_d = self.optimizers()
        if "g" in self.stepped:  # an OOM after G stepped on this batch: it is done
            return {}
        fwd = self._generator_forward(batch)

        d: dict[str, torch.Tensor] = {}
        # After an OOM in the generator part, D has already stepped on this batch: it is not stepped twice.
        if "d" not in self.stepped:
            # The context restores requires_grad even when an OOM escapes it (the retry needs gradients).
            with self.toggled_optimizer(opt_d):
                d = self._compute_loss(fwd, "d")
                if self.check_finite(d["loss"]):
                    self.manual_backward(d["loss"] * scale)
                if last:
                    self.sync_before_step(opt_d)
                    opt_d.step()
                    opt_d.zero_grad(set_to_none=True)
                    self.stepped.add("d")

        with self.toggled_optimizer(opt_g):
            g = self._compute_loss(fwd, "g")
            if self.check_finite(g["loss"]):
                self.manual_backward(g["loss"] * scale)
            if last:
                self.sync_before_step(opt_g)
                opt_g.step()
                opt_g.zero_grad(set_to_none=True)
                self.stepped.add("g")
                self.update_scaler()  # once per GAN step, after both optimizers
                self.opt_steps += 1
                if self.ema is not None:
                    self.ema.update(self.net_g, self.opt_steps)
        return {k: v for k, v in {**d, **g}.items() if k != "loss"}

    def on_train_epoch_start(self) -> None:
        unfreeze = self.cfg.train.freeze.unfreeze_at_epoch
        if unfreeze is not None and self.current_epoch >= unfreeze and self.frozen:
            self.print(f"epoch {self.current_epoch + 1}: unfreezing {len(self.frozen)} parameter tensors")
            self.frozen = set()

    def on_train_epoch_end(self) -> None:
        if not self.cfg.train.plateau.enabled:
            for sched in self.lr_schedulers():
                sched.step()

    # ------------------------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_l1: list[float] = []
        self._val_recon: list[float] = []
        self._score_sim = self.speaker_sim is not None and self.speaker_sim.active(self.current_epoch + 1)
        if self._score_sim:
            self.speaker_sim.reset()
        self._ema_ctx = self.ema.swapped_in(self.net_g) if self.ema is not None else None
        if self._ema_ctx is not None:
            self._ema_ctx.__enter__()

    def validation_step(self, batch: S2Batch, batch_idx: int) -> None:
        data = self.cfg.data
        g = self.net_g
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed + batch_idx)
        ref = self.val_refs[batch_idx].to(self.device)[None]  # [1, bins, F]
        ref_sv = self.val_ref_sv[batch_idx] if self.val_ref_sv else None
        sv = [ref_sv.to(self.device)[None]] if ref_sv is not None else None  # one [1, sv_dim] per reference
        for i in range(len(batch)):
            n = int(batch.spec_lengths[i])
            ssl = batch.ssl[i : i + 1, :, : n // 2 * 2]  # [1, C, 2N]
            codes = g.extract_latent(ssl)  # [1, 1, N]
            phones = batch.phones[i : i + 1, : int(batch.phone_lengths[i])]
            y_hat = g.decode(codes, phones, [ref], noise_scale=0.5, generator=gen, sv_emb=sv)[0].float()  # [1, S]
            # One token is 2 * hop samples: both signals are cut to the same whole number of frames.
            frames = min(y_hat.shape[-1], int(batch.wav_lengths[i])) // data.hop_length
            if frames < 1:
                continue
            y = batch.wav[i, :, : frames * data.hop_length].float()
            mel_hat = mel_spectrogram(y_hat[:, : frames * data.hop_length], data)
            mel_ref = mel_spectrogram(y, data)
            self._val_l1.append(float(F.l1_loss(mel_hat, mel_ref)))
            if batch_idx < self.cfg.train.val_audio_samples:
                self._log_audio(batch.ids[i], y_hat[0])
            if self._score_sim and self.speaker_sim.wants(batch_idx * len(batch) + i):
                truth = batch.wav[i, 0, : int(batch.wav_lengths[i])]  # [S]
                self.speaker_sim.add(batch.ids[i], y_hat[0].cpu().numpy(), truth.float().cpu().numpy())
        # Posterior reconstruction (enc_q -> dec) of the same clips: what the training mel loss measures.
        fwd = self._generator_forward(batch)
        self._val_recon.append(float(F.l1_loss(fwd["y_mel"], fwd["y_hat_mel"])))

    def _log_audio(self, utt_id: str, wav: torch.Tensor) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                peak = wav.abs().max().clamp(min=1.0)
                logger.experiment.add_audio(
                    f"val/{utt_id}", (wav / peak).cpu()[None], self.global_step, self.cfg.data.sampling_rate
                )

    def on_validation_epoch_end(self) -> None:
        if self._ema_ctx is not None:
            self._ema_ctx.__exit__(None, None, None)
            self._ema_ctx = None
        if not self._val_l1:
            return
        mel_l1 = sum(self._val_l1) / len(self._val_l1)
        recon = sum(self._val_recon) / max(1, len(self._val_recon))
        values = {"val/mel_l1": mel_l1, "val/recon_mel_l1": recon}
        if self._score_sim:
            values[SPEAKER_SIM_METRIC] = self.speaker_sim.mean()  # each rank scores the same clips
        self.log_dict(values, on_epoch=True, prog_bar=True, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.last_val_epoch = self.current_epoch
            if self.cfg.train.plateau.enabled:
                monitor = self.cfg.train.early_stopping.monitor or "val/mel_l1"
                value = values.get(monitor, mel_l1)
                for sched in self.lr_schedulers():
                    sched.step(value)

    # ------------------------------------------------------------------------------------ export
    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Generator weights for an inference file: EMA-averaged when EMA is on, enc_q dropped (as upstream)."""
        state = self.ema.averaged_state_dict(self.net_g) if self.ema is not None else self.net_g.state_dict()
        return {k: v.detach().cpu() for k, v in state.items() if not k.startswith("enc_q.")}
