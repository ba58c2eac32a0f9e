"""s2 with the tiny config: building, inference, the training forward, losses, quantiser and weight norm."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from gsvkit.audio.spectrogram import mel_spectrogram, spec_to_mel, spectrogram
from gsvkit.config import load_config
from gsvkit.models.modules import rand_slice_segments, remove_weight_norm, slice_segments, weight_norm
from gsvkit.models.s2 import MultiPeriodDiscriminator, S2TrainOutput, SynthesizerTrn
from gsvkit.models.s2.losses import discriminator_loss, feature_loss, generator_loss, kl_loss, mel_loss
from gsvkit.models.s2.quantizer import ResidualVectorQuantizer

TINY = load_config(Path(__file__).parents[1] / "configs" / "tiny" / "s2.yaml")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: a second thread only adds synchronisation cost (and much more on a shared, busy CPU).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(**changes) -> SynthesizerTrn:
    torch.manual_seed(0)
    cfg = TINY.model.model_copy(update=changes)
    return SynthesizerTrn(cfg)


def tiny_batch(b: int = 2, frames: int = 40, seed: int = 0):
    """ssl [B, ssl_dim, T], wav [B, T*hop], spec [B, bins, T], phones [B, L] with ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    hop = TINY.data.hop_length
    tone = 0.3 * torch.sin(torch.linspace(0, 400, frames * hop)).repeat(b, 1)
    wav = tone + 0.05 * torch.randn(b, frames * hop, generator=g)
    spec = spectrogram(wav, TINY.data)  # [B, 129, frames]
    ssl = torch.randn(b, TINY.model.ssl_dim, frames, generator=g)
    spec_lengths = torch.tensor([frames, frames - 6][:b])
    phones = torch.randint(0, TINY.model.symbols, (b, 12), generator=g)
    phone_lengths = torch.tensor([12, 9][:b])
    return ssl, wav, spec, spec_lengths, phones, phone_lengths


def test_tiny_builds_and_decodes() -> None:
    model = tiny_model().eval()
    assert model.enc_p.text_embedding.weight.shape == (732, TINY.model.hidden_channels)
    assert model.ref_enc.spectral[0].fc.weight.shape[1] == 96  # ref_enc_bins
    codes = model.extract_latent(torch.randn(1, TINY.model.ssl_dim, 21))
    assert codes.shape == (1, 1, 10) and codes.dtype == torch.long
    ref = spectrogram(torch.randn(1, 3000) * 0.1, TINY.data)
    wav = model.decode(codes, torch.randint(0, 732, (1, 7)), [ref, ref[..., :20]], noise_scale=0.5)
    assert wav.shape == (1, 1, 20 * TINY.model.hop_length)
    assert torch.isfinite(wav).all() and wav.abs().max() <= 1
    assert not wav.is_inference() and not codes.is_inference()  # callers may modify them in place
    wav.mul_(0.5)
    slow = model.decode(codes, torch.randint(0, 732, (1, 7)), ref, speed=0.8)
    assert slow.shape[-1] == (int(20 / 0.8) + 1) * TINY.model.hop_length


def test_out_of_range_ids_are_clear_errors() -> None:
    model = tiny_model(version="v1", ref_enc_bins=None).eval()
    ref = spectrogram(torch.randn(1, 3000) * 0.1, TINY.data)
    with pytest.raises(ValueError, match=r"phones: ids must lie in \[0, 322\)"):
        model.decode(torch.zeros(1, 1, 4, dtype=torch.long), torch.tensor([[5, 400]]), ref)
    with pytest.raises(ValueError, match=r"codes: ids must lie in \[0, 64\)"):
        model.decode(torch.full((1, 1, 4), 64), torch.tensor([[5]]), ref)


def test_fresh_model_keeps_frozen_quantizer_in_eval_mode() -> None:
    model = tiny_model()
    assert model.training and model.enc_p.training
    assert not model.quantizer.training and not model.ssl_proj.training


def test_v1_tiny_uses_322_symbols_and_all_bins() -> None:
    model = tiny_model(version="v1", ref_enc_bins=None)
    assert model.enc_p.text_embedding.weight.shape[0] == 322
    assert model.ref_enc.spectral[0].fc.weight.shape[1] == TINY.model.spec_channels


def test_batched_decode_matches_single() -> None:
    model = tiny_model().eval()
    codes = torch.randint(0, 64, (2, 1, 9))
    phones = torch.randint(0, 732, (2, 5))
    ref = spectrogram(torch.randn(2, 2000) * 0.1, TINY.data)
    both = model.decode(codes, phones, ref, noise_scale=0.0)
    one = model.decode(codes[1:], phones[1:], ref[1:], noise_scale=0.0)
    assert torch.allclose(both[1:], one, atol=1e-5)


def test_training_forward_losses_and_backward() -> None:
    model = tiny_model().train()
    disc = MultiPeriodDiscriminator(TINY.model)
    ssl, wav, spec, spec_lengths, phones, phone_lengths = tiny_batch()
    out = model(ssl, None, spec, spec_lengths, phones, phone_lengths, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, S2TrainOutput)
    seg, hop, c = TINY.model.segment_size, TINY.model.hop_length, TINY.model.inter_channels
    assert out.y_hat.shape == (2, 1, seg * hop)
    assert out.z.shape == out.z_p.shape == out.m_p.shape == out.logs_q.shape == (2, c, spec.size(2))
    assert out.ge.shape == (2, TINY.model.gin_channels, 1)
    assert out.quantized.shape == (2, TINY.model.ssl_dim, spec.size(2))
    assert out.z_mask[1, 0, -6:].sum() == 0 and out.x_mask[1, 0, : spec.size(2) - 6].all()
    assert ((out.ids_slice >= 0) & (out.ids_slice <= spec_lengths - seg)).all()
    assert float(out.commit_loss) == 0.0  # frozen quantiser

    y = slice_segments(wav.unsqueeze(1), out.ids_slice * hop, seg * hop)  # [B, 1, seg*hop]
    y_mel = slice_segments(spec_to_mel(spec, TINY.data), out.ids_slice, seg)
    y_hat_mel = mel_spectrogram(out.y_hat.squeeze(1), TINY.data)
    d_real, d_fake, _, _ = disc(y, out.y_hat.detach())
    loss_d, r_terms, g_terms = discriminator_loss(d_real, d_fake)
    assert len(r_terms) == len(g_terms) == 6 and torch.isfinite(loss_d)
    loss_d.backward()
    assert all(p.grad is not None for p in disc.parameters())

    _, d_fake, fmap_r, fmap_g = disc(y, out.y_hat)
    loss_gen, _ = generator_loss(d_fake)
    loss = (
        loss_gen
        + feature_loss(fmap_r, fmap_g)
        + 45 * mel_loss(y_mel, y_hat_mel)
        + kl_loss(out.z_p, out.logs_q, out.m_p, out.logs_p, out.z_mask)
        + out.commit_loss
    )
    model.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    for prefix in ("enc_p.", "enc_q.", "flow.", "dec.", "ref_enc."):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)), prefix
    assert not any(n.startswith(("ssl_proj.", "quantizer.")) for n in grads)  # frozen: no gradients at all


def test_frozen_quantizer_stays_put_and_unfrozen_one_learns() -> None:
    ssl, _, spec, spec_lengths, phones, phone_lengths = tiny_batch()
    frozen = tiny_model().train()
    assert not frozen.quantizer.training and not frozen.ssl_proj.training
    before = copy.deepcopy(frozen.quantizer.state_dict())
    frozen(ssl, None, spec, spec_lengths, phones, phone_lengths)
    frozen(ssl, None, spec, spec_lengths, phones, phone_lengths)
    after = frozen.quantizer.state_dict()
    # A never-initialised codebook is set once by k-means (as upstream), then no longer changes.
    assert after["vq.layers.0._codebook.inited"].item() == 1.0
    snapshot = copy.deepcopy(after)
    frozen(ssl, None, spec, spec_lengths, phones, phone_lengths)
    assert all(torch.equal(snapshot[k], v) for k, v in frozen.quantizer.state_dict().items())
    assert not torch.equal(before["vq.layers.0._codebook.embed"], snapshot["vq.layers.0._codebook.embed"])

    free = tiny_model(freeze_quantizer=False).train()
    assert free.quantizer.training
    out = free(ssl, None, spec, spec_lengths, phones, phone_lengths)
    embed = free.quantizer.vq.layers[0]._codebook.embed.clone()
    assert out.commit_loss > 0
    out.commit_loss.backward()
    assert free.ssl_proj.weight.grad is not None and free.ssl_proj.weight.grad.abs().sum() > 0
    free(ssl, None, spec, spec_lengths, phones, phone_lengths)
    assert not torch.equal(embed, free.quantizer.vq.layers[0]._codebook.embed)  # EMA update


def test_quantizer_lookup_matches_distance_rule() -> None:
    rvq = ResidualVectorQuantizer(dimension=8, n_q=1, bins=16).eval()
    book = rvq.vq.layers[0]._codebook
    book.embed.copy_(torch.randn(16, 8))
    book.inited.fill_(1)
    x = torch.randn(2, 8, 5)  # [B, D, T]
    codes = rvq.encode(x)  # [1, B, T]
    ref = torch.cdist(x.transpose(1, 2), book.embed.unsqueeze(0)).argmin(-1)  # [B, T]
    assert torch.equal(codes[0], ref)
    quantized, codes2, loss = rvq(x)
    assert torch.equal(codes2, codes) and float(loss) == 0.0
    assert torch.equal(quantized, rvq.decode(codes))


def test_code_lookup_runs_outside_autocast() -> None:
    model = tiny_model().train()
    ssl, _, spec, spec_lengths, phones, phone_lengths = tiny_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ssl, None, spec, spec_lengths, phones, phone_lengths)
    assert out.quantized.dtype == torch.float32
    codes = model.extract_latent(ssl)  # [B, 1, T/2]
    book = model.quantizer.vq.layers[0]._codebook.embed
    assert torch.equal(out.quantized[:, :, ::2], book[codes[:, 0]].transpose(1, 2))


def test_infer_reconstructs_a_batch() -> None:
    model = tiny_model().eval()
    ssl, _, spec, spec_lengths, phones, phone_lengths = tiny_batch()
    wav, mask = model.infer(ssl, spec, spec_lengths, phones, phone_lengths, generator=torch.Generator().manual_seed(0))
    assert wav.shape == (2, 1, spec.size(2) * TINY.model.hop_length)
    assert mask.shape == (2, 1, spec.size(2)) and mask[1].sum() == spec.size(2) - 6


def test_mismatched_ssl_and_spec_frames_is_a_clear_error() -> None:
    model = tiny_model().train()
    ssl, _, spec, spec_lengths, phones, phone_lengths = tiny_batch()
    with pytest.raises(ValueError, match="do not match"):
        model(ssl[..., :30], None, spec, spec_lengths, phones, phone_lengths)


def test_dropout_follows_config() -> None:
    model = tiny_model(p_dropout=0.3)
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.3, 0.0}  # 0.0: the flow/enc_q WaveNets and MRTE cross-attention, as upstream


# ------------------------------------------------------------------------------------------- pieces
def test_weight_norm_keys_fold_and_cache() -> None:
    conv = weight_norm(nn.ConvTranspose1d(4, 3, 5, 2))
    assert list(conv.state_dict()) == ["bias", "weight_g", "weight_v"]
    assert conv.weight_g.shape == (4, 1, 1)
    x = torch.randn(1, 4, 9)
    y = conv(x)
    with torch.no_grad():
        conv.weight_g.mul_(2.0)  # an in-place change must invalidate the inference cache
        y2 = conv(x)
    assert torch.allclose(y2 - conv.bias[None, :, None], 2 * (y - conv.bias[None, :, None]).detach(), atol=1e-5)
    remove_weight_norm(conv)
    assert list(conv.state_dict()) == ["bias", "weight"]
    assert torch.allclose(conv(x), y2, atol=1e-6)


def test_slicing_helpers() -> None:
    x = torch.arange(20.0).view(1, 2, 10).repeat(2, 1, 1)
    out = slice_segments(x, torch.tensor([0, 8]), 4)
    assert torch.equal(out[0, 0], torch.tensor([0.0, 1, 2, 3]))
    assert torch.equal(out[1, 1], torch.tensor([18.0, 19, 0, 0]))  # past the end reads zeros
    sl, ids = rand_slice_segments(x, torch.tensor([10, 5]), 4, generator=torch.Generator().manual_seed(0))
    assert sl.shape == (2, 2, 4) and ids[0] <= 6 and ids[1] <= 1


def test_loss_functions_values() -> None:
    m, logs = torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)
    mask = torch.ones(1, 1, 3)
    assert torch.isclose(kl_loss(m, logs, m, logs, mask), torch.tensor(-1.0))  # -0.5 * 6 elements / sum(mask) = 3
    assert torch.isclose(kl_loss(m + 1, logs, m, logs, mask), torch.tensor(0.0))
    loss, r, g = discriminator_loss([torch.ones(2, 3)], [torch.zeros(2, 3)])
    assert float(loss) == 0.0 and float(r[0]) == 0.0 and float(g[0]) == 0.0
    gl, terms = generator_loss([torch.zeros(2, 3), torch.ones(2, 3)])
    assert float(gl) == 1.0 and len(terms) == 2
    fm = feature_loss([[torch.ones(2), torch.zeros(2)]], [[torch.zeros(2), torch.zeros(2)]])
    assert float(fm) == 2.0
    assert float(mel_loss(torch.zeros(1, 4, 2), torch.ones(1, 4, 2))) == 1.0


def test_discriminator_channel_divisor_keeps_upstream_shape_at_one():
    from gsvkit.config import ConfigError, config_from_dict, official_config

    official = sum(p.numel() for p in MultiPeriodDiscriminator(official_config("s2", "v2").model).parameters())
    assert official == 46_747_132  # upstream's discriminator, unchanged by the option's default
    small = MultiPeriodDiscriminator(TINY.model)
    assert TINY.model.discriminator_channel_divisor == 16
    assert sum(p.numel() for p in small.parameters()) < official // 100
    y = torch.randn(1, 1, 2048)
    real, fake, fmap_r, fmap_g = small(y, y)
    assert len(real) == 6 and all(torch.equal(a, b) for a, b in zip(real, fake, strict=True))
    with pytest.raises(ConfigError, match="discriminator_channel_divisor"):
        config_from_dict({"kind": "s2", "model": {"discriminator_channel_divisor": 3}})
