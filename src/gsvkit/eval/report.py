"""Evaluation reports: per-sentence scores and their means, as JSON (for tools) and Markdown (for people)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gsvkit.utils.io import atomic_write_text

METRICS = ("similarity", "wer", "mel_distance", "duration_ratio")
_HIGHER_IS_BETTER = {"similarity": "higher is better", "wer": "lower is better", "mel_distance": "lower is better",
                     "duration_ratio": "1.0 = ground-truth length"}


class ItemScore(BaseModel):
    """Scores of one synthesised sentence; a metric is None where it does not apply (no ground truth, not en)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    text: str
    language: str = "en"
    duration_s: float = Field(ge=0)
    similarity: float | None = None
    wer: float | None = None
    hypothesis: str | None = Field(None, description="the normalised ASR transcript")
    mel_distance: float | None = None
    duration_ratio: float | None = None
    audio: str | None = Field(None, description="where the scored audio was written, if it was")
    error: str | None = Field(None, description="why this sentence could not be synthesised or scored")


class EvalReport(BaseModel):
    """A scored set of held-out sentences for one voice, run or checkpoint pair."""

    model_config = ConfigDict(extra="forbid")

    name: str
    created: str = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    target: list[str] = Field(default_factory=list, description="the audio the similarity is measured against")
    settings: dict = Field(default_factory=dict)
    items: list[ItemScore] = Field(default_factory=list)
    summary: dict[str, float | int | None] = Field(default_factory=dict)

    def summarize(self) -> EvalReport:
        """Fill `summary` with the mean of each metric over the sentences that have it, and the counts."""
        summary: dict[str, float | int | None] = {"sentences": len(self.items)}
        summary["failed"] = sum(1 for it in self.items if it.error)
        for metric in METRICS:
            values = [getattr(it, metric) for it in self.items if getattr(it, metric) is not None]
            values = [v for v in values if math.isfinite(v)]
            summary[metric] = sum(values) / len(values) if values else None
        self.summary = summary
        return self


def to_markdown(report: EvalReport) -> str:
    """A short human-readable report: the means, then one row per sentence."""
    lines = [f"# Evaluation: {report.name}", "", f"Created {report.created}."]
    if report.target:
        lines.append(f"Target speaker audio: {', '.join(f'`{t}`' for t in report.target)}.")
    lines += ["", "| metric | mean | |", "|---|---|---|"]
    for metric in METRICS:
        lines.append(f"| {metric} | {_fmt(report.summary.get(metric))} | {_HIGHER_IS_BETTER[metric]} |")
    lines.append(f"| sentences | {report.summary.get('sentences', len(report.items))} | "
                 f"{report.summary.get('failed', 0)} failed |")
    lines += ["", "| id | similarity | WER | mel distance | duration ratio | transcript |", "|---|---|---|---|---|---|"]
    for it in report.items:
        heard = it.error and f"error: {it.error}" or (it.hypothesis or "")
        row = [it.id, _fmt(it.similarity), _fmt(it.wer), _fmt(it.mel_distance), _fmt(it.duration_ratio), heard]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, out_dir: str | Path, stem: str = "eval") -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.md` into `out_dir` (atomically). Returns both paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write_text(json_path, report.model_dump_json(indent=2) + "\n")
    atomic_write_text(md_path, to_markdown(report))
    return json_path, md_path


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
