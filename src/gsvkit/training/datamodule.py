"""LightningDataModules for both stages: train loader with the stateful bucket sampler, val loader in order."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from gsvkit.config import S1Config, S2Config
from gsvkit.data.manifest import Utterance
from gsvkit.training.datasets import (
    BucketBatchSampler,
    S1Dataset,
    S2Dataset,
    StatefulLoader,
    collate_s2,
    load_utterances,
    make_collate_s1,
    repeat_to,
)


def reference_for(utt: Utterance, val: list[Utterance], train: list[Utterance]) -> Utterance:
    """Another clip of the same speaker for the validation reference: another val clip, else a train clip.

    Falls back to the clip itself only when the speaker has a single clip in the whole dataset.
    """
    for pool in (val, train):
        for other in pool:
            if other.speaker == utt.speaker and other.id != utt.id:
                return other
    return utt


class _Base(pl.LightningDataModule):
    def __init__(self, root: Path, batch_size: int, seed: int, num_workers: int) -> None:
        super().__init__()
        self.root = Path(root)
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.train_sampler: BucketBatchSampler | None = None

    def _train_loader(self, dataset, collate) -> StatefulLoader:
        trainer = self.trainer
        replicas = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if self.train_sampler is None:
            self.train_sampler = BucketBatchSampler(
                dataset.lengths(), self.batch_size, seed=self.seed, num_replicas=replicas, rank=rank
            )
        return StatefulLoader(
            dataset, batch_sampler=self.train_sampler, collate_fn=collate, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class S2DataModule(_Base):
    def __init__(self, root: Path, cfg: S2Config) -> None:
        super().__init__(root, cfg.train.batch_size, cfg.train.seed, cfg.train.num_workers)
        self.cfg = cfg
        self.train_utts, self.val_utts = load_utterances(
            self.root, "s2", cfg.train.require_validation, needs_sv=cfg.model.is_pro
        )
        t = cfg.train
        self.train_utts = [u for u in self.train_utts if not u.duration or t.min_clip_sec < u.duration < t.max_clip_sec]
        self.train_set: S2Dataset | None = None
        self.val_set: S2Dataset | None = None
        self.val_refs: list[torch.Tensor] = []
        self.val_ref_sv: list[torch.Tensor | None] = []  # the reference's speaker embedding (v2Pro)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        cfg = self.cfg
        rep = repeat_to(len(self.train_utts), cfg.train.min_items_per_epoch)
        self.train_set = S2Dataset(self.root, self.train_utts, cfg, repeat=rep)
        self.val_set = S2Dataset(self.root, self.val_utts, cfg)
        by_id = {it.id: it for it in self.val_set.items + self.train_set.items}
        refs = [reference_for(u, self.val_utts, self.train_utts) for u in self.val_utts]
        missing = [r for r in refs if r.id not in by_id]
        extra = {it.id: it for it in S2Dataset(self.root, missing, cfg).items} if missing else {}
        ref_items = [by_id.get(r.id) or extra[r.id] for r in refs]
        self.val_refs = [it.spec for it in ref_items]
        self.val_ref_sv = [it.sv for it in ref_items]

    def train_dataloader(self) -> StatefulLoader:
        return self._train_loader(self.train_set, collate_s2)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        assert self.val_set is not None, "setup() builds the validation set"
        return torch.utils.data.DataLoader(self.val_set, batch_size=1, shuffle=False, collate_fn=collate_s2)


class S1DataModule(_Base):
    def __init__(self, root: Path, cfg: S1Config) -> None:
        super().__init__(root, cfg.train.batch_size, cfg.train.seed, cfg.train.num_workers)
        self.cfg = cfg
        self.train_utts, self.val_utts = load_utterances(self.root, "s1", cfg.train.require_validation)
        self.train_set: S1Dataset | None = None
        self.val_set: S1Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = S1Dataset(self.root, self.train_utts, self.cfg, max_sec=self.cfg.data.max_sec)
        # No val split (train.require_validation: false): validation is switched off in the trainer.
        self.val_set = S1Dataset(self.root, self.val_utts, self.cfg) if self.val_utts else None
        self.collate = make_collate_s1(self.cfg.data.pad_val, self.cfg.model.bert_dim)

    def train_dataloader(self) -> StatefulLoader:
        return self._train_loader(self.train_set, self.collate)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        # Lightning asks only when validation runs, i.e. there is a validation split.
        assert self.val_set is not None, "setup() builds the validation set"
        return torch.utils.data.DataLoader(
            self.val_set, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate
        )
