"""`gsv eval`: objective scores from the command line (thin over gsvkit.eval's functions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gsvkit.utils.cli_options import Device

eval_app = typer.Typer(
    name="eval",
    help="Score speech: speaker similarity, word error rate, mel distance; evaluate a voice, run or checkpoint.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object instead of text")]
DataArg = Annotated[Path, typer.Option("--data", "-d", help="held-out sentences: a .list, a dataset dir, or a .txt")]
TargetOpt = Annotated[
    list[Path] | None, typer.Option("--target", "-t", help="target speaker audio (repeatable); default: ground truth")
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="write eval.json, eval.md and the audio here")]
LimitOpt = Annotated[int | None, typer.Option("--limit", "-n", help="score at most this many sentences")]
SpeakerOpt = Annotated[str | None, typer.Option("--speaker", help="only this speaker's sentences")]
SplitOpt = Annotated[str, typer.Option("--split", help="dataset split to score")]
SeedOpt = Annotated[int, typer.Option("--seed", help="sampling seed (same seed, same audio)")]
ConsentOpt = Annotated[str | None, typer.Option("--consent", help="with --ref: how its speaker agreed (audited)")]
MetricOpt = Annotated[
    list[str] | None,
    typer.Option("--metric", "-m", help="similarity, wer, mel_distance, duration_ratio (repeatable; default all)"),
]
HubertOpt = Annotated[Path | None, typer.Option("--hubert", help="HuBERT model directory (to read references)")]
BertOpt = Annotated[Path | None, typer.Option("--bert", help="Chinese BERT model directory (zh text)")]


@eval_app.command("similarity")
def similarity_cmd(a: Path, b: Path, as_json: JsonOpt = False, device: Device = "auto") -> None:
    """Speaker similarity of two audio files (cosine of speaker embeddings; ~0.85 same voice, ~0.5 different)."""
    from gsvkit.eval.similarity import speaker_similarity
    from gsvkit.utils.console import err_console

    # Loading the speaker encoder takes seconds; the spinner (terminal only, on stderr) says what is going on.
    with err_console.status("loading the speaker encoder and scoring the two files"):
        value = speaker_similarity(a, b, device=device)
    typer.echo(json.dumps({"similarity": value}) if as_json else f"similarity: {value:.2f}")


@eval_app.command("wer")
def wer_cmd(audio: Path, reference: str, as_json: JsonOpt = False, device: Device = "auto") -> None:
    """Word error rate of English AUDIO against the REFERENCE text (Whisper tiny.en, normalised text)."""
    from gsvkit.eval.wer import audio_wer

    result = audio_wer(audio, reference, device=device)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        typer.echo(f"{result.wer:.4f}\theard: {result.hypothesis}")


@eval_app.command("mel")
def mel_cmd(audio: Path, reference: Path, as_json: JsonOpt = False) -> None:
    """Log-mel L1 distance of AUDIO to the ground-truth REFERENCE (DTW-aligned), and the duration ratio."""
    from gsvkit.eval.mel import mel_distance

    result = mel_distance(audio, reference)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        typer.echo(f"{result.distance:.4f}\tduration ratio {result.duration_ratio:.3f}")


def _finish(report, out: Path | None, as_json: bool) -> None:
    from gsvkit.eval.report import to_markdown, write_report

    if out is not None:
        json_path, md_path = write_report(report, out)
        typer.echo(f"wrote {json_path} and {md_path}", err=True)
    typer.echo(report.model_dump_json(indent=2) if as_json else to_markdown(report))
    failed = [it for it in report.items if it.error]
    if failed and len(failed) == len(report.items):
        from gsvkit.cli import fail

        fail(f"every sentence failed ({len(failed)} of {len(failed)}); the first: {failed[0].error}", code=1)


def _metrics(metric: list[str] | None) -> dict:
    return {"metrics": metric} if metric else {}


def _items(data: Path, split: str, speaker: str | None, limit: int | None):
    from gsvkit.eval.evaluate import load_items

    return load_items(data, split=split, speaker=speaker, limit=limit)


@eval_app.command("audio")
def audio_cmd(
    audio_dir: Path, data: DataArg, target: TargetOpt = None, out: OutOpt = None, limit: LimitOpt = None,
    speaker: SpeakerOpt = None, split: SplitOpt = "val", metric: MetricOpt = None, as_json: JsonOpt = False,
    device: Device = "auto",
) -> None:
    """Score already-synthesised audio (AUDIO_DIR/<id>.wav for each held-out sentence)."""
    from gsvkit.eval.evaluate import audio_dir_synthesizer, evaluate

    items = _items(data, split, speaker, limit)
    report = evaluate(audio_dir_synthesizer(audio_dir), items, name=audio_dir.name, target=target or None,
                      device=device, settings={"audio_dir": str(audio_dir), "data": str(data)},
                      **_metrics(metric))
    _finish(report, out, as_json)


@eval_app.command("voice")
def voice_cmd(
    voice: Path, data: DataArg, target: TargetOpt = None, out: OutOpt = None, limit: LimitOpt = None,
    speaker: SpeakerOpt = None, split: SplitOpt = "val", seed: SeedOpt = 0, hubert: HubertOpt = None,
    bert: BertOpt = None, metric: MetricOpt = None, as_json: JsonOpt = False, device: Device = "auto",
) -> None:
    """Synthesise the held-out sentences with a voice directory and score them."""
    from gsvkit.eval.evaluate import evaluate_voice

    items = _items(data, split, speaker, limit)
    report = evaluate_voice(voice, items, target=target or None, seed=seed, device=device, hubert=hubert,
                            bert=bert, audio_dir=out / "audio" if out else None, **_metrics(metric))
    _finish(report, out, as_json)


@eval_app.command("checkpoint")
def checkpoint_cmd(
    s1: Annotated[Path, typer.Option("--s1", help="s1 (GPT) weights")],
    s2: Annotated[Path, typer.Option("--s2", help="s2 (SoVITS) weights")],
    ref: Annotated[Path, typer.Option("--ref", help="reference clip, 3-10 s")],
    ref_text: Annotated[str, typer.Option("--ref-text", help="transcript of the reference clip")],
    data: DataArg,
    ref_lang: Annotated[str, typer.Option("--ref-lang")] = "en",
    hubert: HubertOpt = None, bert: BertOpt = None,
    target: TargetOpt = None, out: OutOpt = None, limit: LimitOpt = None, speaker: SpeakerOpt = None,
    split: SplitOpt = "val", seed: SeedOpt = 0, metric: MetricOpt = None, as_json: JsonOpt = False,
    device: Device = "auto", consent: ConsentOpt = None,
) -> None:
    """Synthesise the held-out sentences with a pair of checkpoints and a reference clip, and score them."""
    from gsvkit.eval.evaluate import evaluate_checkpoints

    items = _items(data, split, speaker, limit)
    report = evaluate_checkpoints(s1, s2, items, ref_audio=ref, ref_text=ref_text, ref_lang=ref_lang,
                                  consent=consent, target=target or None, seed=seed, device=device,
                                  hubert=hubert, bert=bert,
                                  audio_dir=out / "audio" if out else None, **_metrics(metric))
    _finish(report, out, as_json)


@eval_app.command("run")
def run_cmd(
    run_dir: Path, data: DataArg,
    ref: Annotated[Path | None, typer.Option("--ref", help="reference clip; default: one from --data")] = None,
    ref_text: Annotated[str | None, typer.Option("--ref-text")] = None,
    ref_lang: Annotated[str, typer.Option("--ref-lang")] = "en",
    hubert: HubertOpt = None, bert: BertOpt = None,
    target: TargetOpt = None, out: OutOpt = None, limit: LimitOpt = None, speaker: SpeakerOpt = None,
    split: SplitOpt = "val", seed: SeedOpt = 0, metric: MetricOpt = None, as_json: JsonOpt = False,
    device: Device = "auto", consent: ConsentOpt = None,
) -> None:
    """Score the exported weights of a training run on the held-out sentences of its dataset."""
    from gsvkit.eval.evaluate import evaluate_run

    items = _items(data, split, speaker, limit)
    dataset = data if data.is_dir() or data.suffix == ".jsonl" else None
    report = evaluate_run(run_dir, items, dataset=dataset, ref_audio=ref, ref_text=ref_text, ref_lang=ref_lang,
                          speaker=speaker, **({"consent": consent} if consent else {}), target=target or None,
                          seed=seed, device=device, hubert=hubert,
                          bert=bert, audio_dir=out / "audio" if out else None, **_metrics(metric))
    _finish(report, out, as_json)
