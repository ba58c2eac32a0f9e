"""`gsv runs show`: the validation curves, the stop reason and the chosen checkpoint of a run, as plain text."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from gsvkit.errors import DataError

STAGES = ("s2", "s1")


def read_metrics(stage_dir: Path) -> list[dict[str, float]]:
    """Every row of every `logs/csv/<version>/metrics.csv` (a resumed run adds a version), in order."""
    rows: list[dict[str, float]] = []
    for path in sorted((stage_dir / "logs" / "csv").glob("*/metrics.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def epoch_table(rows: list[dict[str, float]]) -> dict[int, dict[str, float]]:
    """Per-epoch validation metrics and mean training losses (1-based epochs)."""
    table: dict[int, dict[str, float]] = {}
    sums: dict[int, dict[str, list[float]]] = {}
    for r in rows:
        if "epoch" not in r:
            continue
        e = int(r["epoch"]) + 1
        for k, v in r.items():
            if k.startswith("val/"):
                table.setdefault(e, {})[k] = v
            elif k.startswith("train/") and k.endswith(("g/total", "g/mel_l1", "d/total", "/loss")):
                sums.setdefault(e, {}).setdefault(k, []).append(v)
    for e, metrics in sums.items():
        for k, vs in metrics.items():
            table.setdefault(e, {})[k] = sum(vs) / len(vs)
    return dict(sorted(table.items()))


def bar_chart(points: list[tuple[int, float]], width: int = 60, mark: int | None = None) -> list[str]:
    """One line per epoch: a bar proportional to the value between the minimum and maximum."""
    finite = [v for _, v in points if math.isfinite(v)]
    if not finite:
        return []
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    lines = []
    for e, v in points:
        n = 0 if not math.isfinite(v) else 1 + int((v - lo) / span * (width - 1))
        tag = "  <- chosen" if e == mark else ""
        lines.append(f"  {e:>4} {v:>10.5f} |{'#' * n}{tag}")
    return lines


def show_stage(stage_dir: Path, width: int = 60) -> str:
    lines = [f"== {stage_dir}"]
    summary_path = stage_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    index_path = stage_dir / "checkpoints" / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else None
    monitor = (summary or {}).get("monitor") or (index or {}).get("monitor") or ("val/mel_l1" if stage_dir.name == "s2"
                                                                               else "val/loss")
    table = epoch_table(read_metrics(stage_dir))
    chosen = (summary or {}).get("best_epoch")
    points = [(e, m[monitor]) for e, m in table.items() if monitor in m]
    validated = (summary or {}).get("validation", True)
    if not validated:
        lines.append("no validation: the dataset has no val split (train.require_validation: false)")
    elif points:
        lines.append(f"{monitor} per epoch (lower is better):" if monitor.endswith(("loss", "l1")) else f"{monitor}:")
        lines += bar_chart(points, width, chosen)
    else:
        lines.append("no validation results yet")
    train_keys = sorted({k for m in table.values() for k in m if k.startswith("train/")})
    if train_keys:
        lines.append("mean training losses per epoch: " + ", ".join(train_keys))
        for e, m in table.items():
            vals = "  ".join(f"{m[k]:.4f}" if k in m else "   -   " for k in train_keys)
            lines.append(f"  {e:>4}  {vals}")
    if summary:
        lines.append(f"stopped: {summary['stop_reason']}")
        if validated:
            lines.append(f"chosen:  epoch {summary['best_epoch']} ({monitor} {_figure(summary['best_value'])}) -> "
                         f"{summary['export']}")
            lines.append(f"last:    epoch {summary['last_epoch']} ({monitor} {_figure(summary['last_value'])})")
        else:
            lines.append(f"chosen:  the last epoch, {summary['last_epoch']} (no validation) -> {summary['export']}")
    elif index:
        lines.append(f"in progress or interrupted; best so far: {index.get('best')}, newest: {index.get('last')}")
    if index:
        kept = ", ".join(r["name"] for r in index.get("checkpoints", []))
        lines.append(f"checkpoints kept: {kept}")
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    """A metric as the curve above prints it (5 decimals), not the 17 digits of the stored float."""
    return "n/a" if value is None else f"{value:.5f}"


def show_run(run: str | Path, width: int = 60) -> str:
    """The report for `runs/EXP` (every stage in it) or for one stage directory."""
    run = Path(run)
    if not run.is_dir():
        raise DataError(f"{run}: no such run directory")
    if (run / "checkpoints").is_dir() or (run / "logs").is_dir():
        return show_stage(run, width)
    stages = [run / s for s in STAGES if (run / s).is_dir()]
    if not stages:
        raise DataError(f"{run}: not a training run (no s2/ or s1/ inside); pass the --out of `gsv train`")
    return "\n\n".join(show_stage(s, width) for s in stages)
