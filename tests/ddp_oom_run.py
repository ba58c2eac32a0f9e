"""Run by tests/test_train_oom.py as a script (Lightning's DDP launcher starts it again for rank 1): a two-process
CPU (gloo) s2 run in which rank 1 alone raises one `torch.OutOfMemoryError` at the named phase.

Usage: python tests/ddp_oom_run.py DATASET OUT PHASE   (PHASE: forward | after-d-step)
Rank 0 writes OUT/result.json with the run's step counts and how many OOMs each rank handled."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from gsvkit.training.fit import train_s2
from gsvkit.training.s2_module import S2Module

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import TINY_S2  # noqa: E402


def main(dataset: str, out: str, phase: str) -> None:
    name = "_generator_forward" if phase == "forward" else "_compute_loss"
    real = getattr(S2Module, name)
    raised = {"n": 0}
    handled: list[int] = []

    def wrapped(self, *args, **kwargs):
        hit = phase == "forward" or args[1] == "g"  # "g": the generator's loss, after D stepped on this batch
        if self.global_rank == 1 and not raised["n"] and hit and self.micro.splits == 1:
            raised["n"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory (injected on rank 1)")
        return real(self, *args, **kwargs)

    setattr(S2Module, name, wrapped)
    real_end = S2Module.on_train_end

    def on_train_end(self):
        # Every rank reports how many OOMs it backed off from (rank 1 its own, rank 0 its peer's).
        counts = [torch.zeros(1) for _ in range(self.trainer.world_size)]
        torch.distributed.all_gather(counts, torch.tensor([float(self.oom_events)]))
        handled.extend(int(c.item()) for c in counts)
        return real_end(self)

    S2Module.on_train_end = on_train_end
    args = ["train.batch_size=2", "train.min_items_per_epoch=0", "train.epochs=1", "train.val_audio_samples=0",
            "train.early_stopping.enabled=false"]
    r = train_s2(Path(dataset), Path(out), config=TINY_S2, overrides=args, devices=2, accelerator="cpu",
                 progress=False)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        Path(out, "result.json").write_text(json.dumps(
            {"opt_steps": r.opt_steps, "global_step": r.global_step, "oom_events": handled}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
