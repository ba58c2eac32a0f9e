"""`gsv demo`: the whole pipeline (synthetic recordings → prepare → train s2 → train s1 → voice → speech)."""

from __future__ import annotations

import pytest

from gsvkit.audio.io import load_audio
from gsvkit.errors import DataError
from gsvkit.training.demo import run_demo

pytestmark = pytest.mark.slow


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    lines: list[str] = []
    r = run_demo(out, minutes=0.15, progress=False, say=lines.append, s2_epochs=1, s1_epochs=3)
    assert len(lines) == 6 and (r.dataset / "manifest.jsonl").is_file()
    assert (r.run / "s2" / "s2.safetensors").is_file() and (r.run / "s1" / "s1.safetensors").is_file()
    assert r.wav is not None and r.wav.is_file(), r.note
    assert len(load_audio(r.wav)) > 0
    text = r.describe()
    assert str(r.run) in text and "pretrained" in text
    with pytest.raises(DataError, match="not empty"):
        run_demo(out, progress=False, say=lines.append)
