"""`gsv detect FILE...` (is this audio watermarked?) and `gsv audit` (what was synthesized, by whom)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gsvkit.safety import WATERMARK_THRESHOLD

console = Console()


def detect(
    files: Annotated[list[Path], typer.Argument(help="audio files (wav, flac, ogg, mp3, ...)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    threshold: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="score at or above which a file counts as watermarked")
    ] = WATERMARK_THRESHOLD,
) -> None:
    """Say whether each file carries gsvkit's output watermark, with the detector's score (0-1).

    Exit status 0 when none is watermarked, 1 when at least one is, 2 on an unreadable file."""
    from gsvkit.safety.watermark import get_watermarker

    wm = get_watermarker()
    results = [{"file": str(f), **wm.detect_file(f, threshold).as_dict()} for f in files]
    if as_json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        for r in results:
            verdict = "[bold red]watermarked[/]" if r["watermarked"] else "not watermarked"
            note = f"; {r['note']}" if r.get("note") else ""
            console.print(f"{r['file']}: {verdict} (score {r['score']:.2f}{note})", highlight=False)
    raise typer.Exit(1 if any(r["watermarked"] for r in results) else 0)


def audit(
    log: Annotated[
        Path | None, typer.Option("--log", help="audit file (default $GSVKIT_AUDIT_LOG or ~/.local/state)")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="only this key name or user")] = None,
    last: Annotated[int, typer.Option("--last", min=0, help="only the newest N lines (0: all)")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print the records as JSON lines")] = False,
) -> None:
    """Show the audit log: one line per synthesis (time, who, voice or reference, text hash, watermark)."""
    from gsvkit.safety.audit import AuditLog

    log_file = AuditLog(log)
    records = [r for r in log_file.read() if user is None or r.get("user") == user]
    if last:
        records = records[-last:]
    if as_json:
        for r in records:
            print(json.dumps(r, ensure_ascii=False, sort_keys=True))
        return
    table = Table("time", "user", "kind", "voice / reference", "consent", "text", "watermark", title=str(log_file.path))
    for r in records:
        refs = r.get("reference_sha256") or []
        source = r.get("voice") or (f"ref {refs[0][:12]}" if refs else "-")
        text = f"{str(r.get('text_sha256', ''))[:12]} ({r.get('text_chars')} ch)"
        consent = (r.get("consent") or "voice record")[:30]
        table.add_row(
            str(r.get("time", ""))[:19], str(r.get("user", "")), str(r.get("kind", "")), source, consent, text,
            str(r.get("watermark", ""))[:24],
        )  # fmt: skip
    console.print(table)
