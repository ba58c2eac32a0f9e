"""HubertFeaturizer: upstream's input handling (raw waveform into HubertModel, last_hidden_state channels-first)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gsvkit.audio.features import HubertFeaturizer


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    path = tmp_path_factory.mktemp("hubert")
    HubertModel(config).save_pretrained(path)
    return path


def test_features_are_the_models_last_hidden_state(hubert_dir):
    from transformers import HubertModel

    featurizer = HubertFeaturizer(hubert_dir)
    wav = (0.1 * np.random.default_rng(0).standard_normal(16000 * 2)).astype(np.float32)
    feats = featurizer(wav)
    assert feats.shape == (1, 32, featurizer.n_frames(len(wav))) and feats.shape[-1] == 99  # 50 Hz
    model = HubertModel.from_pretrained(hubert_dir).eval()
    with torch.no_grad():
        direct = model(torch.from_numpy(wav)[None]).last_hidden_state.transpose(1, 2)
    assert torch.allclose(feats, direct, atol=1e-5)
    # the GroupNorm after the first convolution makes the input scale almost irrelevant (upstream scales by 1145.14)
    assert torch.allclose(featurizer(wav * 1145.14), featurizer(wav * 10.0), atol=1e-3)
    assert featurizer(np.zeros(100, np.float32)).shape[-1] == 1  # shorter than one receptive field: padded


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu(hubert_dir):
    wav = (0.1 * np.random.default_rng(1).standard_normal(16000 * 3)).astype(np.float32)
    cpu = HubertFeaturizer(hubert_dir)(wav)
    gpu = HubertFeaturizer(hubert_dir, device="cuda")(wav)
    assert gpu.device.type == "cpu" and torch.allclose(cpu, gpu, atol=1e-3)
