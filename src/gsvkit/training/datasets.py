"""Datasets for both stages, read from a prepared dataset directory (`gsvkit.data.manifest`).

Everything a clip needs is loaded once and kept in memory: one minute of speech is a few megabytes of features,
and caching removes the data loader from the step time. The bucket sampler groups clips of similar length
(less padding), shuffles deterministically from (seed, epoch), shards across DDP ranks, and remembers how many
batches of the current epoch were consumed so a mid-epoch checkpoint resumes at the next batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset, Sampler

from gsvkit.config import S1Config, S2Config
from gsvkit.data.manifest import MANIFEST, Utterance, read_manifest
from gsvkit.errors import DataError

# What each stage reads, and the `gsv prepare` stage that writes it.
_Need = Literal["clip", "phones", "hubert", "semantic", "sv"]
_NEEDS: dict[str, dict[_Need, str]] = {
    "s2": {"clip": "slice/resample (clips/)", "hubert": "hubert features", "phones": "text (phones)"},
    "s1": {"semantic": "semantic tokens", "phones": "text (phones)"},
}
# v2Pro/v2ProPlus s2 also reads each clip's speaker embedding.
_SV_NEED: dict[_Need, str] = {"sv": "speaker embedding (gsv prepare --sv-model)"}


def dataset_hash(root: Path) -> str:
    """A short content hash of the dataset's manifest (recorded in every export)."""
    data = (Path(root) / MANIFEST).read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def load_utterances(
    root: Path, stage: str, require_validation: bool = True, needs_sv: bool = False
) -> tuple[list[Utterance], list[Utterance]]:
    """(train, val) utterances of a prepared dataset, checking that `stage` ("s1"/"s2") has all it needs.

    An empty val split is an error unless `require_validation` is False (then `val` may be empty). `needs_sv`:
    the clips' speaker embeddings are needed too (v2Pro/v2ProPlus s2).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found; create it with `gsv prepare`")
    items = read_manifest(root)
    if not items:
        raise DataError(f"{root / MANIFEST}: the dataset has no utterances")
    for utt in items:
        for need, stage_name in {**_NEEDS[stage], **(_SV_NEED if needs_sv else {})}.items():
            if need == "phones":
                ok = bool(utt.phone_ids)
                where = f"utterance {utt.id!r} has no phone_ids"
            elif need == "clip":
                ok = utt.clip_path(root).is_file()
                where = f"{utt.clip_path(root)} is missing"
            else:
                ok = utt.feature_path(root, need).is_file()
                where = f"{utt.feature_path(root, need)} is missing"
            if not ok:
                how = " with --sv-model PATH (upstream's sv/pretrained_eres2netv2w24s4ep4.ckpt)" if need == "sv" else ""
                raise DataError(
                    f"{root}: the dataset lacks the '{stage_name}' stage needed by {stage} ({where}); "
                    f"run `gsv prepare` again{how} to complete it"
                )
    train = [u for u in items if u.split == "train"]
    val = [u for u in items if u.split == "val"]
    if not train:
        raise DataError(f"{root / MANIFEST}: no utterance has split 'train'")
    if not val and require_validation:
        raise DataError(
            f"{root / MANIFEST}: the validation split is empty; early stopping needs held-out clips. "
            "Re-run `gsv prepare` with a validation fraction, or set split: val on a few lines, "
            "or train without validation: --set train.require_validation=false"
        )
    return train, val


def _load_tensor(path: Path, key: str) -> torch.Tensor:
    try:
        data = load_file(str(path))
    except Exception as err:
        raise DataError(f"{path}: unreadable feature file ({err}); re-run `gsv prepare`") from None
    if key not in data:
        raise DataError(f"{path}: has no tensor {key!r} (found {sorted(data)}); re-run `gsv prepare`")
    return data[key]


def repeat_to(n_items: int, min_items: int) -> int:
    """How many times a small dataset is repeated per epoch (upstream: max(2, 100 // n) below 100 clips)."""
    if n_items >= min_items or n_items == 0:
        return 1
    return max(2, min_items // n_items)


# ----------------------------------------------------------------------------------------------------- s2
@dataclass
class S2Item:
    id: str
    speaker: str
    ssl: torch.Tensor  # [C, F]  SSL features at the spectrogram frame rate
    spec: torch.Tensor  # [bins, F]
    wav: torch.Tensor  # [S]
    phones: torch.Tensor  # [L] long
    sv: torch.Tensor | None = None  # [sv_dim] speaker embedding (v2Pro/v2ProPlus)


class S2Dataset(Dataset):
    """ssl, linear spectrogram, waveform and phones of each clip (spectrograms computed once, here)."""

    def __init__(self, root: Path, utts: Sequence[Utterance], cfg: S2Config, repeat: int = 1) -> None:
        from gsvkit.audio.io import load_audio
        from gsvkit.audio.spectrogram import spectrogram

        self.root = Path(root)
        self.utts = list(utts)
        self.items: list[S2Item] = []
        hop = cfg.data.hop_length
        for utt in self.utts:
            wav = torch.from_numpy(load_audio(utt.clip_path(root), cfg.data.sampling_rate)).float()  # [S]
            if wav.numel() < cfg.data.filter_length:
                raise DataError(f"{utt.clip_path(root)}: clip shorter than one analysis window; remove it")
            spec = spectrogram(wav[None], cfg.data)[0]  # [bins, F]
            ssl = _load_tensor(utt.feature_path(root, "hubert"), "ssl").float()
            if ssl.dim() == 3:
                ssl = ssl[0]
            if ssl.shape[0] != cfg.model.ssl_dim:
                raise DataError(
                    f"{utt.feature_path(root, 'hubert')}: ssl width {ssl.shape[0]} but the model expects "
                    f"ssl_dim={cfg.model.ssl_dim}; the dataset was prepared for another model"
                )
            frames = spec.shape[-1]
            if abs(ssl.shape[-1] - frames) > 3:
                raise DataError(
                    f"{utt.feature_path(root, 'hubert')}: {ssl.shape[-1]} SSL frames for {frames} spectrogram frames "
                    f"(hop {hop}); the features do not match the clip — re-run `gsv prepare`"
                )
            # Upstream pads one replicated frame when HuBERT comes out a frame short; crop when long.
            if ssl.shape[-1] < frames:
                ssl = torch.nn.functional.pad(ssl[None], (0, frames - ssl.shape[-1]), mode="replicate")[0]
            ssl = ssl[:, :frames]
            wav = wav[: frames * hop]
            phones = torch.tensor(utt.phone_ids, dtype=torch.long)
            sv = _speaker_embedding(utt.feature_path(root, "sv"), cfg.model.sv_dim) if cfg.model.is_pro else None
            self.items.append(S2Item(utt.id, utt.speaker, ssl, spec, wav, phones, sv))
        self.index = [i for _ in range(repeat) for i in range(len(self.items))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> S2Item:
        return self.items[self.index[i]]

    def lengths(self) -> list[int]:
        return [self.items[i].spec.shape[-1] for i in self.index]


def _speaker_embedding(path: Path, dim: int) -> torch.Tensor:
    sv = _load_tensor(path, "sv").float().reshape(-1)  # [sv_dim]
    if sv.numel() != dim:
        raise DataError(
            f"{path}: a {sv.numel()}-d speaker embedding but the model takes {dim}; the dataset was prepared with "
            "another speaker-verification model (re-run `gsv prepare --sv-model` with the matching one)"
        )
    return sv


def _even_up(n: int) -> int:
    # ssl_proj halves the frame rate and the decoder doubles it back: padded lengths must be even (upstream +2).
    return 2 * (n // 2 + 1)


@dataclass
class S2Batch:
    ssl: torch.Tensor  # [B, C, F]
    ssl_lengths: torch.Tensor  # [B]
    spec: torch.Tensor  # [B, bins, F]
    spec_lengths: torch.Tensor  # [B]
    wav: torch.Tensor  # [B, 1, S]
    wav_lengths: torch.Tensor  # [B]
    phones: torch.Tensor  # [B, L]
    phone_lengths: torch.Tensor  # [B]
    speakers: list[str]
    ids: list[str]
    sv: torch.Tensor | None = None  # [B, sv_dim] (v2Pro/v2ProPlus)

    def __len__(self) -> int:
        return self.ssl.shape[0]

    def to(self, device: torch.device | str) -> S2Batch:
        moved: dict[str, Any] = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return S2Batch(**moved)

    def select(self, idx: slice) -> S2Batch:
        """A sub-batch (micro-batch) of rows `idx`."""
        rows: dict[str, Any] = {k: (v[idx] if v is not None else None) for k, v in self.__dict__.items()}
        return S2Batch(**rows)


def collate_s2(items: list[S2Item]) -> S2Batch:
    """Zero-pad a list of clips, longest first (like upstream)."""
    items = sorted(items, key=lambda it: it.spec.shape[-1], reverse=True)
    b = len(items)
    f_max = _even_up(max(it.spec.shape[-1] for it in items))
    s_max = max(it.wav.shape[-1] for it in items)
    l_max = max(it.phones.shape[-1] for it in items)
    ssl = torch.zeros(b, items[0].ssl.shape[0], f_max)
    spec = torch.zeros(b, items[0].spec.shape[0], f_max)
    wav = torch.zeros(b, 1, s_max)
    phones = torch.zeros(b, l_max, dtype=torch.long)
    for i, it in enumerate(items):
        ssl[i, :, : it.ssl.shape[-1]] = it.ssl
        spec[i, :, : it.spec.shape[-1]] = it.spec
        wav[i, 0, : it.wav.shape[-1]] = it.wav
        phones[i, : it.phones.shape[-1]] = it.phones
    frames = torch.tensor([it.spec.shape[-1] for it in items])
    return S2Batch(
        ssl=ssl, ssl_lengths=frames.clone(), spec=spec, spec_lengths=frames,
        wav=wav, wav_lengths=torch.tensor([it.wav.shape[-1] for it in items]),
        phones=phones, phone_lengths=torch.tensor([it.phones.shape[-1] for it in items]),
        speakers=[it.speaker for it in items], ids=[it.id for it in items],
        # A dataset has an embedding for every clip or for none.
        sv=torch.stack(cast(list[torch.Tensor], [it.sv for it in items])) if items[0].sv is not None else None,
    )


# ----------------------------------------------------------------------------------------------------- s1
@dataclass
class S1Item:
    id: str
    phones: torch.Tensor  # [Tx] long
    bert: torch.Tensor | None  # [1024, Tx] or None (zeros)
    semantic: torch.Tensor  # [Ts] long


class S1Dataset(Dataset):
    """Phones (+BERT features where present) and semantic tokens of each clip."""

    def __init__(self, root: Path, utts: Sequence[Utterance], cfg: S1Config, max_sec: float | None = None) -> None:
        self.items: list[S1Item] = []
        bert_dim = cfg.model.bert_dim
        for utt in utts:
            if max_sec is not None and utt.duration > max_sec:
                continue
            codes = _load_tensor(utt.feature_path(root, "semantic"), "codes").long().reshape(-1)  # [Ts]
            if codes.numel() == 0:
                raise DataError(f"{utt.feature_path(root, 'semantic')}: no semantic tokens; re-run `gsv prepare`")
            if int(codes.max()) >= cfg.model.eos:
                raise DataError(
                    f"{utt.feature_path(root, 'semantic')}: token {int(codes.max())} >= eos={cfg.model.eos}; "
                    "the dataset was prepared with another codebook size"
                )
            phones = torch.tensor(utt.phone_ids, dtype=torch.long)
            if int(phones.max()) >= cfg.model.phone_vocab:
                raise DataError(
                    f"utterance {utt.id!r}: phone id {int(phones.max())} >= phone vocabulary {cfg.model.phone_vocab}"
                )
            bert = None
            bert_path = utt.feature_path(root, "bert")
            if bert_path.is_file():
                bert = _load_tensor(bert_path, "bert").float()
                if bert.shape != (bert_dim, phones.numel()):
                    raise DataError(
                        f"{bert_path}: shape {tuple(bert.shape)} but expected ({bert_dim}, {phones.numel()})"
                    )
            self.items.append(S1Item(utt.id, phones, bert, codes))
        if not self.items:
            raise DataError(f"{root}: no usable clips for s1 (all longer than max_sec={max_sec}?)")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> S1Item:
        return self.items[i]

    def lengths(self) -> list[int]:
        return [it.semantic.numel() for it in self.items]


@dataclass
class S1Batch:
    phones: torch.Tensor  # [B, Tx]
    phone_lengths: torch.Tensor  # [B]
    bert: torch.Tensor  # [B, 1024, Tx]
    semantic: torch.Tensor  # [B, Ts]
    semantic_lengths: torch.Tensor  # [B]
    ids: list[str]

    def __len__(self) -> int:
        return self.phones.shape[0]

    def select(self, idx: slice) -> S1Batch:
        return S1Batch(**{k: v[idx] for k, v in self.__dict__.items()})


def make_collate_s1(pad_val: int, bert_dim: int):
    """Collate for s1: phones padded with 0, semantic tokens with `pad_val` (EOS), BERT with zeros."""

    def collate(items: list[S1Item]) -> S1Batch:
        b = len(items)
        tx = max(it.phones.numel() for it in items)
        ts = max(it.semantic.numel() for it in items)
        phones = torch.zeros(b, tx, dtype=torch.long)
        bert = torch.zeros(b, bert_dim, tx)
        semantic = torch.full((b, ts), pad_val, dtype=torch.long)
        for i, it in enumerate(items):
            phones[i, : it.phones.numel()] = it.phones
            semantic[i, : it.semantic.numel()] = it.semantic
            if it.bert is not None:
                bert[i, :, : it.bert.shape[-1]] = it.bert
        return S1Batch(
            phones=phones, phone_lengths=torch.tensor([it.phones.numel() for it in items]),
            bert=bert, semantic=semantic, semantic_lengths=torch.tensor([it.semantic.numel() for it in items]),
            ids=[it.id for it in items],
        )

    return collate


# -------------------------------------------------------------------------------------------------- sampler
class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar-length clips, reshuffled every epoch from (seed, epoch), sharded over DDP ranks.

    Stateful: `state_dict()` records the epoch and how many batches of it the trainer completed (the module calls
    `mark_done()` after each), so resuming a mid-epoch checkpoint skips exactly those batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.done = 0  # batches of `epoch` completed by the trainer
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.done = 0
            self._skip = 0
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.lengths)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        # Sort within windows of ~ batch_size * 8 so batches hold similar lengths but epochs still differ.
        window = max(self.batch_size * 8, 1)
        batches: list[list[int]] = []
        for start in range(0, n, window):
            chunk = sorted(order[start : start + window], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
        # Every rank gets the same number of batches (DDP steps in lockstep): wrap around to pad.
        per_rank = math.ceil(len(batches) / self.num_replicas)
        batches += batches[: per_rank * self.num_replicas - len(batches)]
        return batches[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        skip, self._skip = self._skip, 0
        self.done = skip
        yield from batches[skip:]

    def __len__(self) -> int:
        return len(self._batches())

    def mark_done(self) -> None:
        self.done += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.done = int(state["done"])
        self._skip = self.done


class StatefulLoader(torch.utils.data.DataLoader):
    """A DataLoader whose batch sampler's position is saved in Lightning checkpoints (mid-epoch resume)."""

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)  # type: ignore[union-attr]
