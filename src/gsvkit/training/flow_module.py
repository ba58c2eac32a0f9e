"""v3/v4 SoVITS fine-tuning with LoRA, as upstream's `s2_train_v3_lora.py`, in the project's training loop.

LoRA adapters (peft, rank r, alpha = r) sit on `to_q/to_k/to_v/to_out.0` of every DiT block; `ref_enc`, `bridge`,
`wns1` and `linear_mel` are trained fully; the content path (ssl_proj, quantizer, enc_p) and the rest of the DiT are
frozen. The loss is the flow-matching velocity MSE on the target clip's normalised mel, with a random prompt of up
to 2/3 of it (`SynthesizerTrnV3.forward`). One optimizer (AdamW), so one optimizer step per training step.

Validation follows the inference path: each held-out clip is decoded from its own semantic tokens and phones with a
reference spectrogram of another clip (`decode_encp` -> Euler sampling from seeded noise with the family's default
steps; no prompt mel, since the clip's own would give the answer away), and its mel is compared with the clip's
(`val/mel_l1`, L1 on the log-mel).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F
from torch.optim.lr_scheduler import ExponentialLR

from gsvkit.config import S2Config
from gsvkit.inference.flow import DEFAULT_SAMPLE_STEPS
from gsvkit.models.s2.flow import SynthesizerTrnV3
from gsvkit.models.s2.lora import LORA_TARGETS, merge_lora, plain_key
from gsvkit.models.vocoders.mel import FLOW_MEL, denorm_mel, flow_mel, norm_mel
from gsvkit.training.datasets import S2Batch
from gsvkit.training.schedules import s2_scheduler
from gsvkit.training.stepping import ManualStepModule

FULLY_TRAINED = ("ref_enc.", "bridge.", "wns1.", "linear_mel.")


def add_lora(model: SynthesizerTrnV3, rank: int) -> None:
    """Inject peft LoRA layers into the DiT in place and set what trains (module names keep the model's)."""
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(target_modules=list(LORA_TARGETS), r=rank, lora_alpha=rank, init_lora_weights=True)
    inject_adapter_in_model(cfg, model.cfm)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or name.startswith(FULLY_TRAINED))


def merged_state_dict(sd: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """A LoRA-injected model's state dict -> the plain model's, adapters merged (W + B A)."""
    base = {plain_key(k): v for k, v in sd.items() if "lora_" not in k}
    lora = {k: v for k, v in sd.items() if "lora_" in k}
    return merge_lora(base, lora, rank)


def target_mels(batch: S2Batch, sr: int, version: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised mels [B, 100, T] of the batch's clips at the family's mel rate, and their lengths [B]."""
    import soxr

    rate = FLOW_MEL[version].sampling_rate
    mels = []
    for i in range(len(batch)):
        wav = batch.wav[i, 0, : int(batch.wav_lengths[i])].float().cpu().numpy()
        if sr != rate:
            wav = soxr.resample(wav, sr, rate).astype(np.float32)
        mels.append(norm_mel(flow_mel(torch.from_numpy(wav), version))[0])  # [100, T]
    lengths = torch.tensor([m.shape[-1] for m in mels])
    out = torch.full((len(mels), mels[0].shape[0], int(lengths.max())), -1.0)
    for i, m in enumerate(mels):
        out[i, :, : m.shape[-1]] = m
    return out.to(batch.wav.device), lengths.to(batch.wav.device)


class FlowS2Module(ManualStepModule):
    stage = "s2"
    steps_per_opt_step = 1  # Lightning's global_step counts one optimizer here (two for the GAN)

    def __init__(self, cfg: S2Config, net_g: SynthesizerTrnV3 | None = None, lora_rank: int = 32) -> None:
        super().__init__(cfg.train, cfg.train.grad_clip)
        self.cfg = cfg
        self.lora_rank = lora_rank
        self.net_g = net_g if net_g is not None else SynthesizerTrnV3(cfg.model)
        add_lora(self.net_g, lora_rank)
        self.val_refs: list[torch.Tensor] = []
        self.val_ref_sv: list = []

    def configure_optimizers(self):
        t = self.cfg.train
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=t.learning_rate, betas=t.betas, eps=t.eps)
        return [opt], [{"scheduler": s2_scheduler(opt, t.lr_decay), "interval": "epoch"}]

    def _optimizer_list(self) -> list:
        opt = self.optimizers()
        return list(opt) if isinstance(opt, list | tuple) else [opt]

    def _loss(self, batch: S2Batch) -> torch.Tensor:
        mel, mel_lengths = target_mels(batch, self.cfg.data.sampling_rate, self.net_g.version)
        gen = torch.Generator(device="cpu").manual_seed(int(torch.randint(0, 2**31, (1,))))
        return self.net_g(
            batch.ssl, batch.spec, batch.spec_lengths, mel, mel_lengths, batch.phones, batch.phone_lengths, gen
        )

    def training_step(self, batch: S2Batch, batch_idx: int) -> None:
        metrics = self.run_micro_batches(batch, self._micro_step)
        self.log_dict({f"train/{k}": v for k, v in metrics.items()}, on_step=True, batch_size=len(batch))

    def _micro_step(self, batch: S2Batch, scale: float, last: bool) -> dict[str, torch.Tensor]:
        (opt,) = self._optimizer_list()
        loss = self._loss(batch)
        if self.check_finite(loss):
            self.manual_backward(loss * scale)
        if last:
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.update_scaler()
            self.opt_steps += 1
        return {"cfm": loss.detach()}

    def on_train_epoch_end(self) -> None:
        sched = self.lr_schedulers()  # Lightning returns the one scheduler of configure_optimizers itself
        assert isinstance(sched, ExponentialLR)
        sched.step()

    # ------------------------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_l1: list[float] = []

    @torch.no_grad()
    def validation_step(self, batch: S2Batch, batch_idx: int) -> None:
        g, version = self.net_g, self.net_g.version
        ref = self.val_refs[batch_idx].to(self.device)[None]  # [1, bins, F]: another clip of the speaker
        mel, mel_lengths = target_mels(batch, self.cfg.data.sampling_rate, version)
        gen = torch.Generator().manual_seed(self.cfg.train.seed + batch_idx)
        for i in range(len(batch)):
            n = int(batch.spec_lengths[i])
            codes = g.extract_latent(batch.ssl[i : i + 1, :, : n // 2 * 2])  # [1, 1, N]
            phones = batch.phones[i : i + 1, : int(batch.phone_lengths[i])]
            fea, _ = g.decode_encp(codes, phones, ref)
            empty_fea, empty_mel = fea[:, :, :0], mel[i : i + 1, :, :0]
            steps = DEFAULT_SAMPLE_STEPS[version]

            def noise(shape, like=fea):
                return torch.randn(shape, generator=gen).to(like)

            hat = g.sample_mel(empty_fea, empty_mel, fea, steps, noises=noise)  # [1, 100, T]
            frames = min(hat.shape[-1], int(mel_lengths[i]))
            if frames < 1:
                continue
            truth = denorm_mel(mel[i : i + 1, :, :frames])
            self._val_l1.append(float(F.l1_loss(denorm_mel(hat[:, :, :frames]), truth)))

    def on_validation_epoch_end(self) -> None:
        if not self._val_l1:
            return
        self.log_dict({"val/mel_l1": sum(self._val_l1) / len(self._val_l1)}, on_epoch=True, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.last_val_epoch = self.current_epoch

    # ------------------------------------------------------------------------------------ export
    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The merged model (adapters folded into the DiT weights): a full v3/v4 file."""
        sd = {k: v.detach().cpu() for k, v in self.net_g.state_dict().items()}
        return merged_state_dict(sd, self.lora_rank)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What upstream's LoRA file holds, under its (peft) names: adapters + the fully trained modules."""
        out = {}
        for k, v in self.net_g.state_dict().items():
            if "lora_" in k:
                out["cfm.base_model.model." + k.removeprefix("cfm.")] = v.detach().cpu().half()
            elif k.startswith(FULLY_TRAINED):
                out[k] = v.detach().cpu().half()
        return out


def export_adapters(module: FlowS2Module, cfg: S2Config, path, checkpoint=None, epoch: int | None = None):
    """Write the adapters as upstream writes a v3/v4 LoRA file: header `03`/`04`, `weight`, `config`, `lora_rank`.

    With `checkpoint` (the best epoch's full-state file) the module's weights are restored from it first.
    """
    import io
    from pathlib import Path

    from gsvkit.training.callbacks import read_checkpoint
    from gsvkit.utils.io import atomic_write_bytes

    if checkpoint is not None:
        module.load_state_dict(read_checkpoint(Path(checkpoint))["state_dict"], strict=True)
    m, d = cfg.model, cfg.data
    hps = {
        "model": {k: getattr(m, k) for k in ("inter_channels", "hidden_channels", "filter_channels", "n_heads",
                                             "n_layers", "kernel_size", "p_dropout", "gin_channels", "resblock",
                                             "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
                                             "upsample_initial_channel", "upsample_kernel_sizes", "version")},
        "data": {k: getattr(d, k) for k in ("sampling_rate", "filter_length", "hop_length", "win_length")},
    }  # fmt: skip
    obj = {"weight": module.adapter_state_dict(), "config": hps, "info": f"{epoch}epoch", "lora_rank": module.lora_rank}
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    header = b"03" if m.version == "v3" else b"04"
    atomic_write_bytes(Path(path), header + data[2:])  # upstream's my_save2: the version tag replaces "PK"
    return Path(path)
