"""Streaming: turn semantic tokens into audio while s1 is still generating them.

s2 decodes a whole token sequence at once, and its attention and convolutions look both ways, so decoding
disjoint pieces would click at every seam. `WindowedDecoder` instead decodes overlapping windows:

```
tokens   |==== spoken ====|xf|---- new ----|la|
window        [left context  xf   new       la]     decoded together
emitted                   [xf|---- new ----]        xf: cross-faded with the previous window's tail
held back                              [xf]         faded into the next window
```

- `left_context_tokens` of already spoken tokens are re-decoded so the new audio starts in context;
- `lookahead_tokens` of the newest tokens are decoded but not emitted yet: they give the end of the chunk some
  right context, and are emitted (re-decoded) with the next window;
- `crossfade_tokens` at each seam are mixed with linear ramps, so chunks join without a click;
- chunks grow: `first_chunk_tokens` (low latency), then twice the previous size up to `chunk_tokens`, so the
  re-decoded context costs less and less once playback is under way.

Concatenating the chunks gives the same number of samples as decoding the whole sequence at once (at speed 1:
exactly tokens x samples-per-token); the samples differ only where the missing future context matters.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gsvkit.inference.params import StreamParams

# decode(tokens [N] long) -> audio samples of those N tokens, float32 [S]
DecodeFn = Callable[[torch.Tensor], np.ndarray]


def crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Mix `tail` (fading out) into the start of `head` (fading in); returns a new `head`."""
    k = min(len(tail), len(head))
    if k == 0:
        return head
    out = head.copy()
    ramp = (np.arange(1, k + 1, dtype=np.float32) / (k + 1)).astype(np.float32)  # never exactly 0 or 1
    out[:k] = tail[:k] * (1.0 - ramp) + head[:k] * ramp
    return out


class WindowedDecoder:
    """Feed tokens with `push`, call `finish` at the end; both return the audio chunks that became final."""

    def __init__(self, decode: DecodeFn, params: StreamParams | None = None) -> None:
        self.decode = decode
        self.p = params or StreamParams()
        self.tokens: list[int] = []
        self.done = 0  # tokens whose audio is settled: emitted, or held in `tail` for the next cross-fade
        self.tail: np.ndarray | None = None  # audio of tokens [done - crossfade, done), not yet emitted
        self.windows = 0
        self.need = self.p.first_chunk_tokens  # new tokens the next window waits for

    def _ready(self) -> bool:
        return len(self.tokens) - self.done >= self.need + self.p.lookahead_tokens

    def push(self, *tokens: int) -> list[np.ndarray]:
        self.tokens.extend(int(t) for t in tokens)
        chunks = []
        while self._ready():
            chunks.append(self._window(final=False))
        return chunks

    def finish(self) -> list[np.ndarray]:
        """Decode what is left (lookahead included) and release the held tail."""
        chunks = []
        if self.done < len(self.tokens):
            chunks.append(self._window(final=True))
        elif self.tail is not None and len(self.tail):
            chunks.append(self.tail)
        self.tail = None
        return [c for c in chunks if len(c)]

    def _window(self, final: bool) -> np.ndarray:
        p = self.p
        b = len(self.tokens)
        end = b if final else b - p.lookahead_tokens
        seam = max(0, self.done - p.crossfade_tokens) if self.tail is not None else self.done
        a = max(0, seam - p.left_context_tokens)
        audio = self.decode(torch.tensor(self.tokens[a:b], dtype=torch.long))
        per_token = len(audio) / (b - a)  # 2 x hop at speed 1; fractional when s2 stretches the latent

        def at(token: int) -> int:
            return int(round((token - a) * per_token))

        seg = np.asarray(audio[at(seam) : at(end)], dtype=np.float32)
        if self.tail is not None:
            seg = crossfade(self.tail, seg)
        self.windows += 1
        self.done = end
        self.need = min(self.p.chunk_tokens, 2 * self.need)
        if final or p.crossfade_tokens == 0:
            self.tail = None if final else np.zeros(0, np.float32)
            return seg
        cut = max(0, len(seg) - (at(end) - at(end - p.crossfade_tokens)))
        self.tail = seg[cut:]
        return seg[:cut]
