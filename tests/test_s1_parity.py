"""s1 parity with upstream GPT-SoVITS at the official v2 size, on the fixtures' synthetic weights.

See tests/fixtures/gsv_v2_parity/README.md (§1 weights, §2 s1 files, §4 upstream behaviour).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gsvkit.config import S1ModelConfig
from gsvkit.errors import CheckpointError
from gsvkit.models.s1 import Text2SemanticDecoder
from gsvkit.models.s1.sampling import logits_to_probs
from parity import FIXTURES, assert_close, load_case, manifest_keys, synth_state_dict

CASES = ["s1_case0.npz", "s1_case1.npz"]
RUNS = [("rp1p0", 1.0), ("rp1p35", 1.35)]


@pytest.fixture(scope="module")
def upstream_sd() -> dict[str, torch.Tensor]:
    # Values are generated from the Lightning-prefixed names, as stored in official files.
    return synth_state_dict("manifest_s1_v2.json", prefix="model.")


@pytest.fixture(scope="module")
def model(upstream_sd) -> Text2SemanticDecoder:
    return Text2SemanticDecoder.from_upstream_state_dict(upstream_sd, version="v2")


@pytest.fixture(scope="module", params=CASES)
def case(request) -> dict[str, np.ndarray]:
    return load_case(request.param)


def _inputs(z):
    return torch.from_numpy(z["x"]), torch.from_numpy(z["bert"]), torch.from_numpy(z["prompt"])


def test_state_dict_matches_manifest():
    want = manifest_keys("manifest_s1_v2.json")
    got = {k: list(v.shape) for k, v in Text2SemanticDecoder(S1ModelConfig(version="v2")).state_dict().items()}
    assert got == want
    assert len(got) == 295
    v1 = Text2SemanticDecoder(S1ModelConfig(version="v1")).state_dict()
    assert v1["ar_text_embedding.word_embeddings.weight"].shape == (512, 512)
    assert set(v1) == set(want)


def test_loaded_model_is_eval_fp32(model, upstream_sd):
    assert not model.training
    sd = model.state_dict()
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert torch.equal(sd["h.layers.3.linear2.weight"], upstream_sd["model.h.layers.3.linear2.weight"])


def test_load_without_prefix_and_fp16(upstream_sd):
    small = {k[len("model.") :]: v.half() for k, v in upstream_sd.items()}
    m = Text2SemanticDecoder.from_upstream_state_dict(small)
    w = m.state_dict()["ar_predict_layer.weight"]
    assert w.dtype == torch.float32
    assert torch.equal(w, small["ar_predict_layer.weight"].float())


def test_load_errors_name_keys(upstream_sd):
    sd = dict(upstream_sd)
    del sd["model.h.layers.5.norm2.bias"]
    sd["model.speaker_proj.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        Text2SemanticDecoder.from_upstream_state_dict(sd)
    assert "h.layers.5.norm2.bias" in str(err.value) and "speaker_proj.weight" in str(err.value)
    with pytest.raises(CheckpointError, match="512 rows|732 rows"):
        Text2SemanticDecoder.from_upstream_state_dict(upstream_sd, version="v1")


def test_first_step_logits(model, case):
    x, bert, prompt = _inputs(case)
    _, logits = model.generate(x, bert, prompt, top_k=1, max_new_tokens=1, return_logits=True)
    assert_close(logits[:1], case["first_step_logits"], "first_step_logits")


@pytest.mark.parametrize("run,rp", RUNS)
def test_greedy_runs(model, case, run, rp):
    x, bert, prompt = _inputs(case)
    n = case[f"{run}_tokens"].shape[0]
    tokens, logits = model.generate(
        x, bert, prompt, top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=rp, max_new_tokens=n,
        return_logits=True,
    )
    np.testing.assert_array_equal(tokens[0].numpy(), case[f"{run}_tokens"])
    np.testing.assert_array_equal(torch.cat([prompt, tokens], 1).numpy(), case[f"{run}_y"])
    assert_close(logits, case[f"{run}_step_logits"], f"{run}_step_logits")


def test_teacher_forced(model, case):
    x, bert, _ = _inputs(case)
    y = torch.from_numpy(case["tf_y"])
    with torch.no_grad():
        logits = model.logits(x, bert, y)
        out = model(x, torch.tensor([x.shape[1]]), bert, y, torch.tensor([y.shape[1]]))
    assert_close(logits, case["tf_logits"], "tf_logits")
    assert_close(out.loss.reshape(1), case["tf_loss_sum"], "tf_loss_sum")
    assert int(out.n_targets) == y.shape[1] + 1


def test_logits_to_probs_rows():
    z = load_case("s1_logits_to_probs.npz")
    for r in range(z["logits"].shape[0]):
        logits = torch.from_numpy(z["logits"][r : r + 1].copy())
        probs = logits_to_probs(
            logits,
            previous_tokens=torch.from_numpy(z["previous_tokens"][r : r + 1]),
            temperature=float(z["temperature"][r]),
            top_k=int(z["top_k"][r]),
            top_p=float(z["top_p"][r]),
            repetition_penalty=float(z["repetition_penalty"][r]),
        )
        assert_close(probs, z["probs"][r : r + 1], f"probs row {r}")
        assert torch.equal(logits, torch.from_numpy(z["logits"][r : r + 1])), "input must not be modified"


def test_fixture_calls_match_our_arguments():
    # Guard: the fixtures were produced with greedy decoding and no EOS; if that changes, the tests above must too.
    params = json.loads((FIXTURES / "manifest.json").read_text())["files"]["s1_case0.npz"]["params"]
    assert params["top_k"] == 1 and params["rp1p35"]["eos_step"] == -1
