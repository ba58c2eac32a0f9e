"""Cutting long recordings into utterance-sized clips at silences.

`Slicer` follows upstream's RMS slicer (tools/slicer2.py) and its webui defaults: frames whose RMS is below the
threshold (-34 dB) are silence candidates; a silence of at least `min_interval` ms ends a clip once the clip is at
least `min_length` ms long; at most `max_sil_kept` ms of silence stays around each cut, and the cut falls on the
quietest frame. `split_long` then cuts clips longer than a maximum again at their quietest point, which upstream
does not do (it leaves 30-second clips that s1 training cannot use well).

Everything here works on sample offsets: `[(start, end), ...]` into the mono waveform the slicer was given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def frame_rms(wav: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS of centred frames (zero padding of frame_length // 2 each side), frame i centred on sample i * hop."""
    x = np.asarray(wav, dtype=np.float64)
    half = frame_length // 2
    padded = np.pad(x, (half, half))
    n_frames = 1 + (padded.size - frame_length) // hop_length
    csum = np.concatenate([[0.0], np.cumsum(padded * padded)])
    starts = np.arange(n_frames) * hop_length
    power = (csum[starts + frame_length] - csum[starts]) / frame_length
    return np.sqrt(np.maximum(power, 0.0))


def _silent_runs(silent: np.ndarray) -> list[tuple[int, int]]:
    """(first, stop) of every run of True in a boolean array."""
    edges = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


@dataclass(frozen=True)
class Slicer:
    """RMS-based silence slicer. Lengths in milliseconds, threshold in dB relative to full scale."""

    sr: int
    threshold: float = -34.0
    min_length: int = 4000
    min_interval: int = 300
    hop_size: int = 10
    max_sil_kept: int = 500

    def __post_init__(self) -> None:
        if not self.min_length >= self.min_interval >= self.hop_size:
            raise ValueError(
                f"slicer needs min_length >= min_interval >= hop_size (got {self.min_length}, "
                f"{self.min_interval}, {self.hop_size} ms)"
            )
        if self.max_sil_kept < self.hop_size:
            raise ValueError(f"slicer needs max_sil_kept >= hop_size (got {self.max_sil_kept}, {self.hop_size} ms)")

    @property
    def hop(self) -> int:
        """Hop in samples."""
        return round(self.sr * self.hop_size / 1000)

    def _frames(self, ms: float) -> int:
        return round(self.sr * ms / 1000 / self.hop)

    def rms(self, wav: np.ndarray) -> np.ndarray:
        """The loudness curve the slicer works on: one RMS value per hop."""
        win = min(round(self.sr * self.min_interval / 1000), 4 * self.hop)
        return frame_rms(wav, win, self.hop)

    def slice(self, wav: np.ndarray) -> list[tuple[int, int]]:
        """Sample ranges of the clips of a mono waveform, in order; silences between them are dropped.

        A recording that is silent throughout gives no clips. Leading and trailing silence longer than
        `min_interval` is trimmed even from short recordings (upstream does the same).
        """
        n = int(np.asarray(wav).shape[0])
        if n == 0:
            return []
        rms = self.rms(wav)
        tags = self._silence_tags(rms)
        total = rms.shape[0]
        if not tags:
            return [(0, n)]
        bounds: list[tuple[int, int]] = []
        if tags[0][0] > 0:
            bounds.append((0, tags[0][0]))
        bounds += [(tags[i][1], tags[i + 1][0]) for i in range(len(tags) - 1)]
        if tags[-1][1] < total:
            bounds.append((tags[-1][1], total))
        out = [(min(b * self.hop, n), min(e * self.hop, n)) for b, e in bounds]
        return [(b, e) for b, e in out if e > b]

    def _silence_tags(self, rms: np.ndarray) -> list[tuple[int, int]]:
        """Frame ranges of the silences to cut out (upstream's rules, walked run by run)."""
        threshold = 10.0 ** (self.threshold / 20.0)
        min_interval = self._frames(self.min_interval)
        min_length = self._frames(self.min_length)
        keep = self._frames(self.max_sil_kept)
        total = rms.shape[0]
        tags: list[tuple[int, int]] = []
        clip_start = 0

        def quietest(lo: int, hi: int) -> int:
            return int(np.argmin(rms[lo:hi])) + lo

        runs = _silent_runs(rms < threshold)
        trailing = runs.pop() if runs and runs[-1][1] == total else None
        for start, stop in runs:  # `stop` is the first loud frame after the silence
            leading = start == 0 and stop > keep
            long_enough = stop - start >= min_interval and stop - clip_start >= min_length
            if not leading and not long_enough:
                continue
            length = stop - start
            if length <= keep:
                pos = quietest(start, stop + 1)
                tags.append((0, pos) if start == 0 else (pos, pos))
                clip_start = pos
            elif length <= 2 * keep:
                pos = quietest(stop - keep, start + keep + 1)
                pos_l = quietest(start, start + keep + 1)
                pos_r = quietest(stop - keep, stop + 1)
                if start == 0:
                    tags.append((0, pos_r))
                    clip_start = pos_r
                else:
                    tags.append((min(pos_l, pos), max(pos_r, pos)))
                    clip_start = max(pos_r, pos)
            else:
                pos_l = quietest(start, start + keep + 1)
                pos_r = quietest(stop - keep, stop + 1)
                tags.append((0, pos_r) if start == 0 else (pos_l, pos_r))
                clip_start = pos_r
        if trailing is not None and total - trailing[0] >= min_interval:
            start = trailing[0]
            pos = quietest(start, min(total, start + keep) + 1)
            tags.append((pos, total + 1))
        return tags


def split_long(
    wav: np.ndarray, sr: int, bounds: list[tuple[int, int]], max_seconds: float, hop_ms: float = 10.0
) -> list[tuple[int, int]]:
    """Cut every range longer than `max_seconds` at its quietest point, again and again, until all fit.

    The cut is searched in the middle of the range (at least a quarter of `max_seconds` from either end), so no
    piece becomes too short to keep; the loudness curve uses 40 ms windows, so the quietest point lies in a pause
    rather than on a zero crossing inside a word.
    """
    max_len = int(max_seconds * sr)
    if max_len <= 0:
        return list(bounds)
    hop = max(1, round(sr * hop_ms / 1000))
    out: list[tuple[int, int]] = []
    todo = list(reversed(bounds))
    while todo:
        start, end = todo.pop()
        if end - start <= max_len:
            out.append((start, end))
            continue
        margin = min(max_len // 4, (end - start) // 4)
        rms = frame_rms(wav[start:end], 4 * hop, hop)  # frame i centred on start + i * hop
        lo, hi = -(-margin // hop), (end - start - margin) // hop
        cut = start + (int(np.argmin(rms[lo : hi + 1])) + lo) * hop
        todo += [(cut, end), (start, cut)]
    return out
