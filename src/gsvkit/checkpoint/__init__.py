"""Checkpoints: gsvkit's own `.safetensors` files, and safe import of official GPT-SoVITS weight files.

- `save_checkpoint` writes one self-describing `.safetensors` per model (format in `checkpoint/format.py`):
  kind, model version, full config, training info and a content checksum in the metadata; atomic; no pickle.
- `load_checkpoint` reads ours and every supported official file (`checkpoint/upstream.py` lists them) into a
  `Checkpoint`; official pickles go through the restricted reader in `checkpoint/unpickler.py`, which never runs
  code named by the file.
- `read_header` is the cheap look (no tensor data read) behind `gsv info`.
- `load_s1` / `load_s2` / `load_s2d` build eval-mode models from any supported file.

Every problem — missing, empty, truncated or corrupted file, unsupported model version, wrong kind — is a
`CheckpointError` whose message names the file and what is wrong.
"""

from gsvkit.checkpoint.store import (
    Checkpoint,
    CheckpointHeader,
    convert_checkpoint,
    load_checkpoint,
    load_s1,
    load_s2,
    load_s2d,
    load_speaker_encoder,
    load_vocoder_file,
    read_header,
    save_checkpoint,
)
from gsvkit.errors import CheckpointError

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointHeader",
    "convert_checkpoint",
    "load_checkpoint",
    "load_s1",
    "load_s2",
    "load_s2d",
    "load_speaker_encoder",
    "load_vocoder_file",
    "read_header",
    "save_checkpoint",
]
