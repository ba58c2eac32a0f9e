"""WindowedDecoder: chunking, left context, look-ahead and cross-fades, with fake decoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gsvkit.inference.params import ParameterError, StreamParams, make_params
from gsvkit.inference.streaming import WindowedDecoder, crossfade

SPT = 8  # samples per token of the fake decoders


def local_decode(tokens: torch.Tensor) -> np.ndarray:
    """Each token -> SPT samples that depend on that token only (no context at all)."""
    return np.repeat(tokens.numpy().astype(np.float32) / 100.0, SPT)


def contextual_decode(tokens: torch.Tensor) -> np.ndarray:
    """Each token's samples depend on its neighbours within +-2 tokens (like a small receptive field)."""
    x = tokens.numpy().astype(np.float32) / 100.0
    pad = np.pad(x, 2, mode="edge")
    smooth = np.convolve(pad, np.ones(5) / 5, mode="valid")
    return np.repeat(smooth, SPT).astype(np.float32)


def run(decode, tokens, params, step=1):
    dec = WindowedDecoder(decode, params)
    chunks = []
    for i in range(0, len(tokens), step):
        chunks += dec.push(*tokens[i : i + step])
    chunks += dec.finish()
    return chunks, dec


@pytest.mark.parametrize("n", [1, 5, 13, 40, 97])
@pytest.mark.parametrize(
    "params",
    [
        StreamParams(),
        StreamParams(
            first_chunk_tokens=4, chunk_tokens=6, left_context_tokens=0, lookahead_tokens=0, crossfade_tokens=0
        ),
        StreamParams(
            first_chunk_tokens=3, chunk_tokens=5, left_context_tokens=7, lookahead_tokens=3, crossfade_tokens=2
        ),
    ],
)
def test_local_decoder_streams_exactly(n, params):
    tokens = list(np.random.default_rng(n).integers(0, 64, size=n))
    whole = local_decode(torch.tensor(tokens))
    chunks, _ = run(local_decode, tokens, params)
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_context_and_lookahead_make_contextual_decoder_exact():
    # With 2 tokens of look-ahead and >= 2 of left context, a +-2-token receptive field sees all it needs.
    tokens = list(np.random.default_rng(0).integers(0, 64, size=60))
    whole = contextual_decode(torch.tensor(tokens))
    p = StreamParams(
        first_chunk_tokens=5, chunk_tokens=7, left_context_tokens=4, lookahead_tokens=2, crossfade_tokens=0
    )
    chunks, dec = run(contextual_decode, tokens, p)
    assert len(chunks) > 5 and dec.windows == len(chunks)
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-6)
    # Without look-ahead the chunk ends miss their right context: audibly different there.
    p0 = p.model_copy(update={"lookahead_tokens": 0})
    chunks0, _ = run(contextual_decode, tokens, p0)
    assert np.abs(np.concatenate(chunks0) - whole).max() > 1e-3


def test_first_chunk_arrives_early():
    p = StreamParams(first_chunk_tokens=4, chunk_tokens=10, lookahead_tokens=1, crossfade_tokens=1)
    dec = WindowedDecoder(local_decode, p)
    out = []
    for i in range(5):
        out += dec.push(i + 1)
        if i < 4:
            assert out == []
    assert len(out) == 1  # the 5th token (4 + 1 look-ahead) releases the first chunk
    assert len(out[0]) == (4 - 1) * SPT  # 4 tokens minus the held-back cross-fade token


def test_default_first_chunk_comes_after_ten_tokens():
    # The defaults (8 tokens, 2 of look-ahead, 1 cross-fade): the 10th token releases 7 tokens' audio, the
    # 9th does not. That window of 10 tokens is 20 frames: one call of the 32-frame bf16 decoder window.
    dec = WindowedDecoder(local_decode, StreamParams())
    assert all(dec.push(t) == [] for t in range(1, 10))
    out = dec.push(10)
    assert len(out) == 1 and len(out[0]) == 7 * SPT


def test_crossfade_is_continuous():
    tail = np.ones(10, np.float32)
    head = np.zeros(10, np.float32)
    mixed = crossfade(tail, head)
    assert np.all(np.diff(mixed) < 0) and 0 < mixed[-1] < mixed[0] < 1
    np.testing.assert_allclose(crossfade(np.full(8, 0.5, np.float32), np.full(8, 0.5, np.float32)), 0.5)


def test_stretched_decoder_keeps_total_length_close():
    def slow(tokens: torch.Tensor) -> np.ndarray:  # like speed=0.8: 10 samples per token
        return np.repeat(tokens.numpy().astype(np.float32) / 100.0, 10)

    tokens = list(range(50))
    chunks, _ = run(slow, tokens, StreamParams(first_chunk_tokens=6, chunk_tokens=6))
    assert abs(sum(len(c) for c in chunks) - 500) <= 2


def test_stream_params_validation():
    with pytest.raises(ParameterError, match="crossfade_tokens"):
        make_params(StreamParams, {"crossfade_tokens": 9, "first_chunk_tokens": 4})
    with pytest.raises(ParameterError, match="chunk_tokens"):
        make_params(StreamParams, {"chunk_tokens": 0})


def test_chunks_grow_to_the_maximum():
    p = StreamParams(first_chunk_tokens=4, chunk_tokens=16, left_context_tokens=2, lookahead_tokens=0,
                     crossfade_tokens=0)  # fmt: skip
    dec = WindowedDecoder(local_decode, p)
    ends = []
    for t in range(60):
        if dec.push(t):
            ends.append(dec.done)
    assert ends == [4, 12, 28, 44, 60]  # 4 new tokens, then 8, then 16 at most
