"""The readable account of a `gsv prepare` run: `report.md` for people, `report.json` for tools.

It lists what went in, what came out (counts and total duration per speaker and split), what each stage
computed or reused, and every dropped item with the stage and the reason, so nothing disappears silently.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gsvkit.data.manifest import Utterance
from gsvkit.utils.io import atomic_write_text


@dataclass
class Dropped:
    where: str  # file, file:line, or file [start-end s]
    stage: str
    reason: str


@dataclass
class Report:
    sources: int = 0
    dropped: list[Dropped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    computed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage's work in this run

    def drop(self, where: str, stage: str, reason: str) -> None:
        self.dropped.append(Dropped(str(where), stage, reason))

    def summary(self, items: list[Utterance]) -> dict:
        per: dict[str, dict[str, dict[str, float]]] = defaultdict(
            lambda: {s: {"count": 0, "seconds": 0.0} for s in ("train", "val")}
        )
        for u in items:
            cell = per[u.speaker][u.split]
            cell["count"] += 1
            cell["seconds"] = round(cell["seconds"] + u.duration, 3)
        return {
            "sources": self.sources,
            "utterances": len(items),
            "train": sum(1 for u in items if u.split == "train"),
            "val": sum(1 for u in items if u.split == "val"),
            "seconds": round(sum(u.duration for u in items), 3),
            "speakers": {k: per[k] for k in sorted(per)},
            "dropped": len(self.dropped),
        }

    def to_json(self, items: list[Utterance]) -> dict:
        return {
            "summary": self.summary(items),
            "stages": {
                "computed": dict(self.computed),
                "reused": dict(self.reused),
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            },
            "dropped": [asdict(d) for d in self.dropped],
            "warnings": list(self.warnings),
        }

    def to_markdown(self, items: list[Utterance], title: str) -> str:
        s = self.summary(items)
        lines = [
            f"# Dataset report: {title}",
            "",
            f"- recordings read: {s['sources']}",
            f"- utterances kept: {s['utterances']} ({_hms(s['seconds'])}): {s['train']} train, {s['val']} validation",
            f"- items dropped: {s['dropped']}",
            "",
            "## Speakers",
            "",
            "| speaker | train | train time | val | val time |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for speaker, cells in s["speakers"].items():
            tr, va = cells["train"], cells["val"]
            lines.append(
                f"| {speaker} | {tr['count']} | {_hms(tr['seconds'])} | {va['count']} | {_hms(va['seconds'])} |"
            )
        stages = sorted(set(self.computed) | set(self.reused))
        if stages:
            lines += [
                "",
                "## Stages (this run)",
                "",
                "| stage | computed | reused | seconds |",
                "| --- | ---: | ---: | ---: |",
            ]
            lines += [
                f"| {st} | {self.computed.get(st, 0)} | {self.reused.get(st, 0)} | {self.seconds.get(st, 0.0):.1f} |"
                for st in stages
            ]
        if self.warnings:
            lines += ["", "## Warnings", ""] + [f"- {w}" for w in self.warnings]
        lines += ["", "## Dropped", ""]
        if self.dropped:
            lines += ["| item | stage | reason |", "| --- | --- | --- |"]
            lines += [f"| {_cell(d.where)} | {d.stage} | {_cell(d.reason)} |" for d in self.dropped]
        else:
            lines.append("Nothing was dropped.")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path, items: list[Utterance]) -> None:
        atomic_write_text(out_dir / "report.json", json.dumps(self.to_json(items), indent=2, ensure_ascii=False))
        atomic_write_text(out_dir / "report.md", self.to_markdown(items, out_dir.name))


def _hms(seconds: float) -> str:
    m, s = divmod(seconds, 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
