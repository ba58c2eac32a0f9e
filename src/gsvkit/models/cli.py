"""`gsv models fetch|list`: thin commands over `gsvkit.models.fetch`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gsvkit.models.official import MODELS_ENV, REPO_ID, REVISION, TARGETS

models_app = typer.Typer(help="Download the official GPT-SoVITS files and show what a models folder holds.",
                         no_args_is_help=True)  # fmt: skip
console = Console()

DirOpt = Annotated[
    Path | None, typer.Option("--dir", help=f"models folder (default: ${MODELS_ENV}, else ./models)")
]


@models_app.command("fetch")
def fetch_cmd(
    family: Annotated[str, typer.Argument(help=f"what to download: {', '.join(TARGETS)}")],
    root: DirOpt = None,
    revision: Annotated[str, typer.Option(help="repository revision (default: the pinned commit)")] = REVISION,
) -> None:
    """Download the official files of FAMILY (resumable, verified) into the models folder.

    This is the only gsvkit command that uses the network. The hub library's settings apply: HF_ENDPOINT (a
    mirror), HF_TOKEN, HTTPS_PROXY, HF_HUB_DOWNLOAD_TIMEOUT.
    """
    from huggingface_hub import constants

    from gsvkit.models.fetch import fetch_models
    from gsvkit.models.official import components, models_dir

    components(family)
    base = models_dir(root)
    console.print(
        f"downloading {family} from {constants.ENDPOINT}/{REPO_ID} at revision {revision[:12]} into {base} "
        "(network access: only `gsv models fetch` uses it)",
        highlight=False,
    )
    files = fetch_models(family, base, revision=revision, say=lambda s: console.print(s, highlight=False))
    new = sum(f.downloaded for f in files)
    total = sum(f.size or 0 for f in files)
    console.print(
        f"[bold]{family}[/]: {len(files)} files verified ({new} downloaded, {total / 1e6:.1f} MB in all) in {base}",
        highlight=False,
    )


@models_app.command("list")
def list_cmd(
    root: DirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    no_hash: Annotated[bool, typer.Option("--no-hash", help="do not hash files the fetch record does not cover")] = (
        False
    ),
) -> None:
    """Show, per family, which official files the models folder holds (size, sha256) and which are missing."""
    from gsvkit.models.fetch import list_models, summarize
    from gsvkit.models.official import models_dir

    base = models_dir(root)
    statuses = list_models(base, hash_files=not no_hash)
    if as_json:
        typer.echo(json.dumps({"dir": str(base), "files": [s.to_dict() for s in statuses],
                               "summary": summarize(statuses)}, indent=2))  # fmt: skip
        return
    from rich.table import Table

    table = Table("model", "file", "size", "sha256", "check", title=f"official files in {base}")
    table.columns[1].overflow = "fold"
    for s in statuses:
        if not s.present:
            table.add_row(s.component, s.path, "[red]missing[/]", "", "")
            continue
        table.add_row(s.component, s.path, f"{s.size:,}", (s.sha256 or "")[:16], s.verified or "-")
    console.print(table)
    for target, row in summarize(statuses).items():
        state = "complete" if not row["missing"] and not row["mismatch"] else (
            f"{row['missing']} missing" + (f", {row['mismatch']} mismatched" if row["mismatch"] else ""))
        hint = "" if state == "complete" else f" — `gsv models fetch {target}`"
        console.print(f"{target}: {state}{hint}", highlight=False)
