"""Helpers for the parity tests: the fixtures' deterministic synthetic weights and tolerance checks.

`synth_param` follows the recipe in tests/fixtures/gsv_v2_parity/README.md §1 exactly.
"""

from __future__ import annotations

import io
import json
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "gsv_v2_parity"
EMBEDDING_TABLES = ("embedding.weight", "embeddings.weight", "_codebook.embed", "_codebook.embed_avg")
RESIDUAL_OUT = (".self_attn.out_proj.weight", ".linear2.weight")


def synth_param(key: str, shape) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    shape = tuple(int(s) for s in shape)
    if key.endswith("_codebook.inited"):
        return np.ones(shape, dtype=np.float32)
    # BatchNorm statistics (only the speaker encoder has them; gsv_v2pro_parity/README.md): sane, never zero-variance.
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    if key.endswith("running_mean"):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if key.endswith("running_var"):
        return (1.0 + 0.1 * np.abs(rng.standard_normal(shape))).astype(np.float32)
    if key.endswith(".weight_g"):
        a = 1.0 + 0.1 * rng.standard_normal(shape)
    elif key.endswith(EMBEDDING_TABLES):
        a = rng.standard_normal(shape)
    elif len(shape) >= 2:
        a = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        if key.endswith(RESIDUAL_OUT):
            a = a / np.sqrt(48.0)
    elif key.endswith("bias") or key.endswith("beta"):
        a = 0.1 * rng.standard_normal(shape)
    else:
        a = 1.0 + 0.1 * rng.standard_normal(shape)
    return a.astype(np.float32)


def manifest_keys(name: str) -> dict[str, list[int]]:
    """{key: shape} from manifest_s2_v2.json / manifest_s2D_v2.json / manifest_s1_v2.json."""
    data = json.loads((FIXTURES / name).read_text())
    return {k: v["shape"] for k, v in data["keys"].items()}


def synth_state_dict(name: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """Synthetic weights for every key of a manifest; `prefix` is prepended before generating (s1: "model.")."""
    return {prefix + k: torch.from_numpy(synth_param(prefix + k, s)) for k, s in manifest_keys(name).items()}


def load_case(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name) as z:
        return {k: z[k] for k in z.files}


def assert_close(got, ref, name: str = "") -> None:
    """The fixtures' tolerance: max|got-ref| <= 1e-4 * max(1, max|ref|)."""
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max())
    assert err <= tol, f"{name}: max|diff|={err:.3g} > tol {tol:.3g}"


# ------------------------------------------------------------------ official containers and the v2Pro fixtures
CONTAINERS = json.loads((FIXTURES / "containers.json").read_text())
PRO = FIXTURES.parent / "gsv_v2pro_parity"
MANIFEST = json.loads((PRO / "manifest.json").read_text())

# the class upstream pickles its hyperparameters as
HPARAMS_SRC = """
class HParams:
    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            if type(v) == dict:
                v = HParams(**v)
            self[k] = v

    def __setitem__(self, key, value):
        return setattr(self, key, value)
"""


def save_torch(obj, path: Path, header: bytes | None = None) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    path.write_bytes(header + data[2:] if header else data)
    return path


def pro_case(name: str) -> dict[str, np.ndarray]:
    with np.load(PRO / name) as z:
        return {k: z[k] for k in z.files}


def tiny_state_dict(keys: dict[str, list[int]], real: tuple[str, ...] = (), dtype=torch.float16) -> OrderedDict:
    """Every key of an official model, each a tiny tensor, except `real` keys which keep their true shape."""
    g = torch.Generator().manual_seed(0)
    out = OrderedDict()
    for k, shape in keys.items():
        out[k] = torch.randn(*(shape if k in real else [2]), generator=g).to(dtype)
    return out


def s2_hps(version: str = "v2") -> dict:
    cfg = json.loads(json.dumps(CONTAINERS["s2_export_v2.pth"]["config_as_dict"]))
    cfg["model"]["version"] = version
    cfg["version"] = version
    return cfg
