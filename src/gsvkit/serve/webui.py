"""`gsv webui`: a Gradio page with a synthesis tab and a training tab.

- Synthesize: pick a voice (or the loaded models), type text, optionally upload another reference clip, tune the
  sampling parameters, then play or download the result (or stream it while it is generated).
- Train: upload recordings (and optionally a `.list`/`.csv` transcript) -> `gsv prepare` -> `gsv train all` in
  the background, with live status and validation curves -> export the run as a voice, which then appears in the
  synthesis tab.

`build_ui(tts, voices_dir, work_dir)` returns the `gr.Blocks`; the handlers are plain methods of `WebApp`, so they
are testable without a browser.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from gsvkit.errors import GsvError
from gsvkit.inference.params import LANGUAGES, SPLIT_METHODS, SynthesisParams

LOADED = "(loaded models)"
_FIELDS = SynthesisParams.model_fields


def _slider(gr: Any, name: str, label: str) -> Any:
    """A slider for a `SynthesisParams` field: its default and help, over the range its field offers a UI."""
    field = _FIELDS[name]
    low, high, step = field.json_schema_extra["slider"]  # type: ignore[index]
    return gr.Slider(low, high, value=field.default, step=step, label=label, info=field.description)


def _upper(name: str) -> Any:
    """The upper bound (`le`) of a `SynthesisParams` field."""
    return next(m.le for m in _FIELDS[name].metadata if hasattr(m, "le"))


def _pcm(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


class TrainingJob:
    """One prepare + train run in a background thread; its state is polled by the page."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.state = "idle"
        self.message = ""
        self.run_dir: Path | None = None
        self.started = 0.0

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def set(self, state: str, message: str = "") -> None:
        with self.lock:
            self.state, self.message = state, message

    def start(self, target: Any, run_dir: Path) -> None:
        if self.busy:
            raise GsvError("a training run is already in progress; wait for it to finish")
        self.run_dir = run_dir
        self.started = time.time()
        self.set("starting")

        def body() -> None:
            try:
                target(self)
                self.set("done", f"finished in {time.time() - self.started:.0f} s")
            except GsvError as err:
                self.set("failed", str(err))
            except Exception as err:  # surfaced in the page rather than lost in a thread
                self.set("failed", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}")

        self.thread = threading.Thread(target=body, name="gsvkit-webui-train", daemon=True)
        self.thread.start()


class WebApp:
    """State and handlers behind the page."""

    def __init__(self, tts: Any, voices_dir: Path | None = None, work_dir: Path | None = None) -> None:
        self.tts = tts
        self.voices_dir = Path(voices_dir) if voices_dir else None
        self.work_dir = Path(work_dir or "webui-work")
        self.job = TrainingJob()

    # ------------------------------------------------------------------------------------------ voices
    def voice_names(self) -> list[str]:
        names = [LOADED] if self.tts.status().get("loaded") else []
        if self.voices_dir is not None and self.voices_dir.is_dir():
            from gsvkit.inference.voice import scan_voices

            names += [e.path.name for e in scan_voices(self.voices_dir) if e.voice is not None]
        return names

    def voice(self, name: str | None) -> Any:
        if not name or name == LOADED:
            return None
        from gsvkit.inference.voice import find_voice

        if self.voices_dir is None:
            raise GsvError("this page has no voices folder")
        return find_voice(self.voices_dir, name)

    def voice_defaults(self, name: str | None) -> tuple[str, str, list[str]]:
        """Reference text, its language and the languages on offer for the chosen voice."""
        v = self.voice(name) or self.tts.voice
        if v is None:
            version = self.tts.status().get("version") or "v2"
            return "", "en", list(LANGUAGES[version])
        return v.reference_text, v.reference_language, list(v.info.languages)

    # ------------------------------------------------------------------------------------------ synthesis
    def _kwargs(self, voice, text, lang, ref, ref_text, ref_lang, top_k, top_p, temperature, rep, speed, seed,
                split, interval, consent=None, sample_steps=None) -> dict[str, Any]:  # fmt: skip
        v = self.voice(voice)
        kw: dict[str, Any] = {
            "text": text or "",
            "lang": lang or "auto",
            "voice": v,
            "top_k": int(top_k),
            "top_p": float(top_p),
            "temperature": float(temperature),
            "repetition_penalty": float(rep),
            "speed": float(speed),
            "seed": None if seed is None or int(seed) < 0 else int(seed),
            "split": split,
            "fragment_interval": float(interval),
        }
        if sample_steps is not None and int(sample_steps) > 0:  # v3/v4 only; 0 leaves the family's default
            kw["sample_steps"] = int(sample_steps)
        base = v or self.tts.voice
        if ref:  # an uploaded clip replaces the voice's reference: its transcript comes from the boxes
            kw.update(ref_audio=ref, ref_text=ref_text or "", ref_lang=ref_lang or None, consent=consent or None)
        elif base is not None and (ref_text or "").strip() != base.reference_text.strip():
            kw.update(ref_text=ref_text or "", ref_lang=ref_lang or None)
        return kw

    def synthesize(self, *args: Any) -> tuple[tuple[int, np.ndarray], str]:
        import gradio as gr

        try:
            res = self.tts.synthesize_result(**self._kwargs(*args))
        except GsvError as err:
            raise gr.Error(str(err)) from None
        seconds = len(res.audio) / res.sample_rate
        work = sum(res.timings.values())
        info = (
            f"{seconds:.2f} s of audio, {len(res.fragments)} fragment(s), seed {res.seed}, "
            f"synthesis {work:.2f} s (RTF {work / max(seconds, 1e-9):.2f}), watermark {res.watermark}"
        )
        return (res.sample_rate, _pcm(res.audio)), info

    def stream(self, *args: Any):
        import gradio as gr

        try:
            stream = self.tts.stream(**self._kwargs(*args))
        except GsvError as err:
            raise gr.Error(str(err)) from None
        for chunk in stream:
            if len(chunk):
                yield stream.sample_rate, _pcm(chunk)

    # ------------------------------------------------------------------------------------------ training
    def start_training(self, files, exp, lang, speaker, hubert, bert, s2_pre, s1_pre, s2_cfg, s1_cfg, s2_epochs,
                       s1_epochs) -> str:  # fmt: skip
        import gradio as gr

        paths = [Path(getattr(f, "name", f)) for f in (files or [])]
        if not paths:
            raise gr.Error("upload recordings (and optionally a .list/.csv transcript) first")
        exp = (exp or "").strip() or "voice"
        if not exp.replace("-", "").replace("_", "").isalnum():
            raise gr.Error("experiment name: letters, digits, - and _ only")
        root = self.work_dir / exp
        transcripts = [str(p) for p in paths if p.suffix.lower() in (".list", ".csv", ".tsv", ".jsonl", ".txt")]
        audio = [str(p) for p in paths if str(p) not in transcripts]

        def run(job: TrainingJob) -> None:
            from gsvkit.data.prepare import prepare
            from gsvkit.data.prepare_config import PrepareConfig
            from gsvkit.training.fit import train_s1, train_s2

            job.set("preparing", f"{len(audio)} recording(s)")
            cfg = PrepareConfig(inputs=audio, out=str(root / "dataset"), language=lang or "en",
                                speaker=speaker or "speaker", transcripts=transcripts, hubert=hubert or None,
                                bert=bert or None, s2=s2_pre or None)  # fmt: skip
            result = prepare(cfg)
            job.set("training s2", f"dataset: {len(result.items)} utterances")
            train_s2(root / "dataset", root / "run", s2_cfg or None, s2_pre or None,
                     overrides=[f"train.epochs={int(s2_epochs)}"], progress=False)  # fmt: skip
            job.set("training s1")
            train_s1(root / "dataset", root / "run", s1_cfg or None, s1_pre or None,
                     overrides=[f"train.epochs={int(s1_epochs)}"], progress=False)  # fmt: skip

        try:
            self.job.start(run, root / "run")
        except GsvError as err:
            raise gr.Error(str(err)) from None
        return self.training_status()[0]

    def training_status(self) -> tuple[str, Any]:
        job = self.job
        text = f"**{job.state}** {job.message}".strip()
        if job.run_dir is not None:
            text += f"  \nrun: `{job.run_dir}`"
        return text, self.curves()

    def curves(self) -> Any:
        import pandas as pd

        rows = []
        if self.job.run_dir is not None:
            from gsvkit.training.runs import epoch_table, read_metrics

            for stage in ("s2", "s1"):
                stage_dir = self.job.run_dir / stage
                if not stage_dir.is_dir():
                    continue
                for epoch, metrics in epoch_table(read_metrics(stage_dir)).items():
                    for name, value in metrics.items():
                        if name.startswith("val/"):
                            rows.append({"epoch": epoch, "value": value, "metric": f"{stage} {name}"})
        return pd.DataFrame(rows or [{"epoch": 0, "value": 0.0, "metric": "no data yet"}])

    def export_voice(self, name, ref, ref_text, ref_lang, consent, hubert) -> tuple[str, Any]:
        import gradio as gr

        from gsvkit.inference.voice import create_voice, find_run_weights

        if self.job.run_dir is None:
            raise gr.Error("train a voice first")
        if self.voices_dir is None:
            raise gr.Error("start the page with --voices-dir to keep exported voices")
        if not ref:
            raise gr.Error("upload a 3-10 s reference clip of the voice")
        try:
            s1, s2 = find_run_weights(self.job.run_dir)
            v = create_voice(self.voices_dir / (name or "voice"), s1=s1, s2=s2, ref_audio=ref, ref_text=ref_text,
                             ref_lang=ref_lang, consent=consent, hubert=hubert or None)  # fmt: skip
        except GsvError as err:
            raise gr.Error(str(err)) from None
        return f"exported voice **{v.name}** to `{v.root}`", gr.update(choices=self.voice_names(), value=v.root.name)


def build_ui(tts: Any, voices_dir: Path | None = None, work_dir: Path | None = None) -> Any:
    """The page: `build_ui(...).launch()`."""
    import gradio as gr

    app = WebApp(tts, voices_dir, work_dir)
    names = app.voice_names()
    ref_text0, ref_lang0, langs0 = app.voice_defaults(names[0] if names else None)
    all_langs = list(LANGUAGES["v2"])

    with gr.Blocks(title="gsvkit", analytics_enabled=False) as ui:
        gr.Markdown("# gsvkit\nSpeak in a cloned voice. Only clone voices whose owners agreed to it.")
        with gr.Tab("Synthesize"):
            with gr.Row():
                voice = gr.Dropdown(names, value=names[0] if names else None, label="Voice", elem_id="voice")
                lang = gr.Dropdown(all_langs, value="en" if "en" in langs0 else langs0[0], label="Text language",
                                   elem_id="lang")  # fmt: skip
            text = gr.Textbox(label="Text", lines=4, placeholder="What should the voice say?", elem_id="text")
            with gr.Accordion("Reference (default: the voice's own)", open=False):
                ref = gr.Audio(label="Reference clip (3-10 s)", type="filepath", sources=["upload"])
                with gr.Row():
                    ref_text = gr.Textbox(value=ref_text0, label="Reference transcript (empty: reference-free)")
                    ref_lang = gr.Dropdown(all_langs, value=ref_lang0, label="Reference language")
                consent = gr.Textbox(label="Consent (required with an uploaded clip: how its speaker agreed)",
                                     elem_id="consent")  # fmt: skip
            with gr.Accordion("Parameters", open=False):
                with gr.Row():
                    top_k = _slider(gr, "top_k", "top_k")
                    top_p = _slider(gr, "top_p", "top_p")
                    temperature = _slider(gr, "temperature", "temperature")
                with gr.Row():
                    rep = _slider(gr, "repetition_penalty", "repetition penalty")
                    speed = _slider(gr, "speed", "speed")
                    interval = _slider(gr, "fragment_interval", "pause between fragments (s)")
                with gr.Row():
                    seed = gr.Number(value=-1, precision=0, label="seed (-1: random)")
                    split = gr.Dropdown(list(SPLIT_METHODS), value=_FIELDS["split"].default, label="text split",
                                        info=_FIELDS["split"].description)  # fmt: skip
                    steps = gr.Number(value=0, precision=0, minimum=0, maximum=_upper("sample_steps"),
                                      label="sample steps (v3/v4; 0: the family's default)",
                                      info=_FIELDS["sample_steps"].description)  # fmt: skip
            with gr.Row():
                go = gr.Button("Synthesize", variant="primary", elem_id="synthesize")
                go_stream = gr.Button("Stream", elem_id="stream")
            out = gr.Audio(label="Result", type="numpy", format="wav", interactive=False, buttons=["download"],
                           elem_id="result")  # fmt: skip
            out_stream = gr.Audio(label="Streamed", streaming=True, autoplay=True, interactive=False)
            info = gr.Markdown(elem_id="info")
            inputs = [voice, text, lang, ref, ref_text, ref_lang, top_k, top_p, temperature, rep, speed, seed, split,
                      interval, consent, steps]  # fmt: skip
            go.click(app.synthesize, inputs, [out, info])
            go_stream.click(app.stream, inputs, out_stream)

            def on_voice(name: str) -> tuple[Any, Any]:
                t, lng, _ = app.voice_defaults(name)
                return gr.update(value=t), gr.update(value=lng)

            voice.change(on_voice, voice, [ref_text, ref_lang])

        with gr.Tab("Train"):
            gr.Markdown(
                "Upload about a minute (or more) of one speaker, with a `.list` (`path|speaker|LANG|text`) or "
                "`.csv` transcript unless an ASR model is configured; then prepare, train s2 and s1, and export."
            )
            files = gr.File(label="Recordings and transcripts", file_count="multiple", elem_id="train-files")
            with gr.Row():
                exp = gr.Textbox(value="voice", label="Experiment name")
                t_lang = gr.Dropdown(all_langs, value="en", label="Language")
                speaker = gr.Textbox(value="speaker", label="Speaker")
            with gr.Row():
                hubert = gr.Textbox(label="HuBERT directory", value=str(tts.hubert_path or ""))
                bert = gr.Textbox(label="BERT directory (Chinese)", value=str(tts.bert_path or ""))
            with gr.Row():
                s2_pre = gr.Textbox(label="s2 pretrained weights")
                s1_pre = gr.Textbox(label="s1 pretrained weights")
            with gr.Row():
                s2_cfg = gr.Textbox(label="s2 config YAML (optional)")
                s1_cfg = gr.Textbox(label="s1 config YAML (optional)")
                s2_epochs = gr.Number(value=8, precision=0, label="s2 epochs")
                s1_epochs = gr.Number(value=15, precision=0, label="s1 epochs")
            train = gr.Button("Prepare and train", variant="primary")
            status = gr.Markdown("**idle**")
            plot = gr.LinePlot(app.curves(), x="epoch", y="value", color="metric", label="validation curves")
            gr.Timer(2.0).tick(app.training_status, None, [status, plot])
            train.click(app.start_training, [files, exp, t_lang, speaker, hubert, bert, s2_pre, s1_pre, s2_cfg, s1_cfg,
                                             s2_epochs, s1_epochs], status)  # fmt: skip
            gr.Markdown("### Export the trained run as a voice")
            with gr.Row():
                v_name = gr.Textbox(value="my-voice", label="Voice name")
                v_ref = gr.Audio(label="Reference clip (3-10 s)", type="filepath", sources=["upload"])
            with gr.Row():
                v_text = gr.Textbox(label="Reference transcript")
                v_lang = gr.Dropdown(all_langs, value="en", label="Reference language")
                v_consent = gr.Textbox(label="Consent (who agreed, when, how)")
            export = gr.Button("Export voice")
            exported = gr.Markdown()
            export.click(app.export_voice, [v_name, v_ref, v_text, v_lang, v_consent, hubert], [exported, voice])
    return ui
