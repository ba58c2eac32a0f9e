"""Synthesis parameters are defined once (`SynthesisParams`); the CLI, HTTP and web UI surfaces derive from it."""

from __future__ import annotations

import pytest
from pydantic import Field
from typer.testing import CliRunner

from gsvkit.inference.cli_params import option_parameters, with_options
from gsvkit.inference.params import UPSTREAM_NAMES, SynthesisParams
from gsvkit.serve.schemas import TTSRequest


def test_every_field_is_an_http_field_under_upstream_names():
    fields = TTSRequest.model_fields
    for name, info in SynthesisParams.model_fields.items():
        wire = UPSTREAM_NAMES.get(name, name)
        assert wire in fields, wire
        if name != "seed":  # upstream's -1 means random
            assert fields[wire].default == info.default and fields[wire].metadata == info.metadata
    req = TTSRequest(text="hi", text_lang="en", speed_factor=1.5, text_split_method="cut1", max_new_tokens=9)
    kw = req.synthesis_kwargs()
    assert kw["speed"] == 1.5 and kw["split"] == "cut1" and kw["max_new_tokens"] == 9 and kw["seed"] is None


def test_a_new_field_becomes_an_option_by_itself():
    import typer

    class Extended(SynthesisParams):
        sample_steps: int = Field(32, ge=1, le=128, description="diffusion steps")

    assert "sample_steps" in [p.name for p in option_parameters(Extended)]
    got = {}
    cmd = typer.Typer()

    @cmd.command()
    @with_options(Extended)
    def run(name: str = "x", params: dict | None = None) -> None:
        got.update(params or {})

    r = CliRunner().invoke(cmd, ["--sample-steps", "8", "--top-k", "3"])
    assert r.exit_code == 0, r.output
    assert got == {"sample_steps": 8, "top_k": 3}
    assert "diffusion steps" in CliRunner().invoke(cmd, ["--help"]).output


@pytest.mark.parametrize("name", ["top_k", "speed", "temperature"])
def test_webui_sliders_take_the_model_default(name):
    gr = pytest.importorskip("gradio")
    from gsvkit.serve.webui import _slider

    with gr.Blocks():
        s = _slider(gr, name, name)
    assert s.value == SynthesisParams.model_fields[name].default
