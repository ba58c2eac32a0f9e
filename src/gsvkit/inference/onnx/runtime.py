"""onnxruntime backend: the exported graphs behind the same small interfaces the pipeline uses for torch models.

- `OrtS1.generate_iter(...)`: the decoding loop of `Text2SemanticDecoder.decode_steps` over `s1_prefill` and
  `s1_step`, each step's token chosen by the torch path's own function (`gsvkit.models.s1.sampling.next_token`:
  EOS masking, repetition penalty, sampling order, stop rule).
- `OrtS2.decode(...)` / `.extract_latent(...)`: `s2_ref` per reference (embeddings averaged, as torch does),
  then `s2_decode` with the prior noise drawn from the caller's generator exactly as the torch model draws it.
- `OrtHubert(wav16k)`: `hubert.onnx`.

Everything else (text, reference cache, streaming, batching) is the torch pipeline's own code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gsvkit.errors import CheckpointError
from gsvkit.inference.params import ParameterError


def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX graph missing; run `gsv export onnx` again")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _s1_graph(folder: Path, name: str, precision: str) -> Path:
    """The s1 graph file for `precision`: fp32 as exported, or int8, made once beside the fp32 file in the torch
    backend's int8 format (`step_graph.quantize_matmuls`: 8-bit codes with one scale and zero point per
    `INT8_BLOCK` inputs, int8 products)."""
    from gsvkit.models.s1.gpt import INT8_BLOCK

    src = folder / f"{name}.onnx"
    if precision == "fp32":
        return src
    if precision != "int8":
        raise ParameterError(f"precision {precision!r} is not available with the ONNX backend; use fp32 or int8")
    out = folder / f"{name}.int8-b{INT8_BLOCK}.onnx"  # the format in the name: a file of another one is not reused
    if not out.is_file() or out.stat().st_mtime < src.stat().st_mtime:
        import onnx

        from gsvkit.models.s1.step_graph import quantize_matmuls
        from gsvkit.utils.io import atomic_path

        if not src.is_file():
            raise CheckpointError(f"{src}: ONNX graph missing; run `gsv export onnx` again")
        model = quantize_matmuls(onnx.load(str(src)), INT8_BLOCK)
        try:
            with atomic_path(out) as tmp:
                onnx.save(model, str(tmp))
        except PermissionError:
            raise ParameterError(
                f"{folder}: int8 (the default on a CPU) writes its s1 graphs beside the export once, and this folder "
                "is not writable; make it writable or use precision fp32"
            ) from None
    return out


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    from gsvkit.inference.onnx.export import ONNX_MANIFEST

    path = Path(folder) / ONNX_MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder}: not an ONNX export (no {ONNX_MANIFEST}); create one with `gsv export onnx`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None
    if data.get("format") != "gsvkit-onnx" or int(data.get("format_version", 0)) > 1:
        raise CheckpointError(f"{path}: not a gsvkit ONNX export this version can read")
    return data


class OrtS1:
    """s1 over onnxruntime; `cfg` is the S1ModelConfig."""

    device = torch.device("cpu")

    def __init__(self, folder: Path, cfg: Any, threads: int | None = None, precision: str = "fp32") -> None:
        from gsvkit.models.s1.gpt import SinePositionalEmbedding

        self.cfg = cfg
        self.eos = cfg.eos
        self.prefill = _session(_s1_graph(folder, "s1_prefill", precision), threads)
        self.step = _session(_s1_graph(folder, "s1_step", precision), threads)
        self._pe = SinePositionalEmbedding(cfg.embedding_dim)  # the table only; alpha lives in the graphs

    def _table(self, start: int, n: int) -> np.ndarray:
        return self._pe.table(start + n, torch.zeros(0))[start:].numpy()  # [n, D]

    @torch.inference_mode()
    def generate_iter(
        self, phones: torch.Tensor, bert: torch.Tensor, prompt: torch.Tensor | None = None, **sampling: Any
    ) -> Iterator[int]:
        from gsvkit.models.s1.sampling import Sampling, next_token

        rule = Sampling(**sampling)
        max_new_tokens = rule.max_new_tokens
        if prompt is None or prompt.shape[1] == 0:
            raise ParameterError("the ONNX backend needs a reference transcript (reference-free mode is torch-only)")
        gen = rule.make_generator()
        tx, tp = phones.shape[1], prompt.shape[1]
        logits, keys, values = self.prefill.run(
            None,
            {
                "phones": phones.long().numpy(),
                "bert": bert.float().numpy(),
                "prompt": prompt.long().numpy(),
                "text_pe": self._table(0, tx),
                "audio_pe": self._table(0, tp),
            },
        )
        history = torch.zeros(1, tp + max_new_tokens, dtype=torch.long)
        history[:, :tp] = prompt
        for step in range(max_new_tokens):
            raw = torch.from_numpy(logits).float()  # [1, V]
            tok, ended = next_token(raw, history[:, : tp + step], step, self.eos, gen, *rule.rule)
            if ended:
                return
            yield tok
            if step + 1 == max_new_tokens:
                return
            history[:, tp + step] = tok
            logits, keys, values = self.step.run(
                None,
                {
                    "token": np.array([[tok]], dtype=np.int64),
                    "pe": self._table(tp + step, 1),
                    "keys": keys,
                    "values": values,
                },
            )


class OrtS2:
    """s2 over onnxruntime; `cfg` is the S2ModelConfig."""

    device = torch.device("cpu")

    def __init__(self, folder: Path, cfg: Any, threads: int | None = None) -> None:
        self.cfg = cfg
        self.latent = _session(folder / "s2_latent.onnx", threads)
        self.ref = _session(folder / "s2_ref.onnx", threads)
        self.dec = _session(folder / "s2_decode.onnx", threads)

    @torch.inference_mode()
    def extract_latent(self, ssl: torch.Tensor) -> torch.Tensor:
        (codes,) = self.latent.run(None, {"ssl": ssl.float().numpy()})
        return torch.from_numpy(codes)  # [1, 1, T/2]

    def reference_embedding(
        self, refer: Sequence[torch.Tensor], sv_emb: Sequence[torch.Tensor] | None = None
    ) -> np.ndarray:
        if self.cfg.is_pro:
            if sv_emb is None or len(sv_emb) != len(refer):
                raise ParameterError(f"this {self.cfg.version} model needs one speaker embedding per reference")
            pairs = zip(refer, sv_emb, strict=True)
            feeds = [{"refer": r.float().numpy(), "sv_emb": e.float().numpy()} for r, e in pairs]
        else:
            feeds = [{"refer": r.float().numpy()} for r in refer]
        ges = [self.ref.run(None, feed)[0] for feed in feeds]
        return np.mean(np.stack(ges, 0), 0).astype(np.float32)  # [1, gin, 1]

    @staticmethod
    def check_params(params: Any) -> None:
        """The exported graphs decode at speed 1 only (s2's length rule is a Python expression)."""
        if params.speed != 1.0:
            raise ParameterError(
                f"speed {params.speed} is not available with the ONNX backend (speed 1 only); use the torch backend"
            )

    @torch.inference_mode()
    def decode(
        self,
        codes: torch.Tensor,
        phones: torch.Tensor,
        refer: torch.Tensor | Sequence[torch.Tensor],
        noise_scale: float = 0.5,
        speed: float = 1.0,
        generator: torch.Generator | None = None,
        sv_emb: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if speed != 1.0:
            raise ParameterError("speed other than 1 is not available with the ONNX backend; use the torch backend")
        refer = [refer] if isinstance(refer, torch.Tensor) else list(refer)
        frames = codes.shape[-1] * (2 if self.cfg.semantic_frame_rate == "25hz" else 1)
        noise = torch.randn((1, self.cfg.inter_channels, frames), generator=generator)  # as the torch model draws it
        (wav,) = self.dec.run(
            None,
            {
                "codes": codes.long().numpy(),
                "phones": phones.long().numpy(),
                "ge": self.reference_embedding(refer, [sv_emb] if isinstance(sv_emb, torch.Tensor) else sv_emb),
                "noise": noise.numpy(),
                "noise_scale": np.array(noise_scale, dtype=np.float32),
            },
        )
        return torch.from_numpy(wav)  # [1, 1, S]


class OrtHubert:
    def __init__(self, folder: Path, threads: int | None = None) -> None:
        self.session = _session(folder / "hubert.onnx", threads)

    def __call__(self, wav16k: np.ndarray) -> torch.Tensor:
        wav = np.asarray(wav16k, dtype=np.float32).reshape(1, -1)
        if wav.shape[1] < 4000:
            wav = np.pad(wav, ((0, 0), (0, 4000 - wav.shape[1])))
        (ssl,) = self.session.run(None, {"wav": wav})
        return torch.from_numpy(ssl)  # [1, C, T]


def load_onnx_bundle(folder: str | os.PathLike, threads: int | None = None, precision: str = "auto") -> Any:
    """A `ModelBundle` whose s1 and s2 run on onnxruntime; s1 at `precision` (fp32 or int8; auto is int8, as
    `resolve_precision` has it on a CPU)."""
    from gsvkit.config import ConfigError, config_from_dict
    from gsvkit.inference.bundle import ModelBundle
    from gsvkit.models.s1.gpt import resolve_precision

    precision = resolve_precision(precision, "cpu")

    folder = Path(folder)
    data = read_manifest(folder)
    try:
        c1 = config_from_dict(data["s1_config"], source=f"{folder} s1_config")
        c2 = config_from_dict(data["s2_config"], source=f"{folder} s2_config")
    except (ConfigError, KeyError) as err:
        raise CheckpointError(f"{folder}: damaged ONNX manifest ({err})") from None
    from gsvkit.utils.memory import loading_memory

    with loading_memory():  # what reading the graphs and packing their weights frees goes back to the system
        s1, s2 = OrtS1(folder, c1.model, threads, precision), OrtS2(folder, c2.model, threads)
    return ModelBundle(
        s1=s1,
        s2=s2,
        s1_config=c1,
        s2_config=c2,
        s1_path=(folder / "s1_prefill.onnx").resolve(),
        s2_path=(folder / "s2_decode.onnx").resolve(),
        ident=f"onnx:{folder.resolve()}",
        s1_precision=precision,
    )
