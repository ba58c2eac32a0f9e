"""Finding the recordings and their transcripts among the user's inputs.

Inputs are audio files, folders (searched recursively for audio), and transcript files. A recording with a
transcript (from a transcript file or a sidecar `.txt`/`.lab`) is used whole, as one utterance; a recording
without one is sliced on silence and its clips are transcribed later. Transcript lines whose audio path does not
exist are looked up by file name among the audio found in the input folders (upstream's `.list` files often
hold paths from another machine); failing that they are reported as missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gsvkit.audio.io import AUDIO_SUFFIXES
from gsvkit.data.transcripts import (
    TRANSCRIPT_SUFFIXES,
    Problem,
    Transcript,
    normalize_language,
    read_transcripts,
    sidecar_transcript,
)
from gsvkit.errors import DataError

_UNSAFE = re.compile(r"[^\w.\-]+")


def safe_id(name: str) -> str:
    """A filesystem- and `.list`-safe id from a file name (letters of any script, digits, `_`, `.`, `-`)."""
    return _UNSAFE.sub("_", name).strip("._") or "clip"


@dataclass
class Source:
    """One recording and what is known about it before it is decoded."""

    path: Path
    name: str  # id, or id prefix of its clips
    speaker: str
    language: str
    text: str | None = None  # None: slice and transcribe
    origin: str = ""  # where the transcript came from
    sha: str = field(default="", compare=False)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def discover(
    inputs: list[str], transcript_files: list[str], out_dir: Path, language: str, speaker: str
) -> tuple[list[Source], list[Problem]]:
    """Sources in a stable order (sorted by path), and every input problem found on the way."""
    out_dir = out_dir.resolve()
    audio: list[Path] = []
    lists: list[Path] = [Path(t) for t in transcript_files]
    problems: list[Problem] = []
    for raw in inputs:
        path = Path(raw)
        if path.exists() and _is_within(path.resolve(), out_dir):
            # the dataset directory's clips and features are rewritten and pruned: never read inputs from there
            raise DataError(f"{path}: the input is inside the output folder {out_dir}; choose another --out")
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not _is_within(p.resolve(), out_dir)
            )
            if not found:
                problems.append(Problem(str(path), "no audio files (wav, flac, ogg, mp3) in this folder"))
            audio += found
        elif path.is_file() and path.suffix.lower() in TRANSCRIPT_SUFFIXES:
            lists.append(path)
        elif path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
            audio.append(path)
        elif path.is_file():
            problems.append(Problem(str(path), f"not an audio or transcript file ({path.suffix or 'no suffix'})"))
        else:
            raise DataError(f"{path}: input not found")

    # A transcript line may only name audio inside the folders the inputs were given in (the web UI passes
    # uploaded lists here): an absolute or ../ path elsewhere is matched by file name among the inputs, or reported.
    roots = {(p if p.is_dir() else p.parent).resolve() for p in [*map(Path, inputs), *lists] if p.exists()}
    by_path: dict[Path, Path] = {}
    by_name: dict[str, list[Path]] = {}
    for p in audio:
        r = p.resolve()
        if r not in by_path:
            by_path[r] = p
            by_name.setdefault(p.name, []).append(r)

    transcripts: dict[Path, Transcript] = {}
    unusable: set[Path] = set()  # recordings named by a transcript line that could not be read
    for list_file in lists:
        items, bad = read_transcripts(list_file)
        if not items and not bad:
            problems.append(Problem(str(list_file), "empty transcript file: no audio|speaker|language|text lines"))
        problems += bad
        for problem in bad:
            if problem.audio is not None:
                named = problem.audio.resolve() if problem.audio.exists() else None
                same_name = by_name.get(problem.audio.name, [])
                unusable.update([named] if named else same_name[:1] if len(same_name) == 1 else [])
        for t in items:
            target = t.audio.resolve() if t.audio.exists() else None
            outside = target is not None and not any(_is_within(target, r) for r in roots)
            if outside:
                target = None
            if target is None:
                same_name = by_name.get(t.audio.name, [])
                if len(same_name) == 1:
                    target = same_name[0]
                else:
                    why = "is not unique among the inputs" if same_name else "not found"
                    if outside:
                        why = (
                            "lies outside the input folders; give its folder (or the file) as an input too, or copy "
                            "it next to the transcript file"
                        )
                    problems.append(Problem(t.origin, f"audio file {t.audio} {why}"))
                    continue
            if not target.is_file():
                problems.append(Problem(t.origin, f"audio path {t.audio} is not a file"))
                continue
            if target in transcripts:
                problems.append(
                    Problem(t.origin, f"duplicate transcript for {target.name} (first at {transcripts[target].origin})")
                )
                continue
            transcripts[target] = t
            by_path.setdefault(target, t.audio)

    sources: list[Source] = []
    for resolved in sorted(by_path):
        if resolved in unusable and resolved not in transcripts:
            continue  # already reported with its transcript line
        listed = transcripts.get(resolved)
        text, lang, spk, origin = None, language, speaker, ""
        if listed is not None:
            text, origin = listed.text, listed.origin
            lang, spk = listed.language or language, listed.speaker or speaker
        else:
            side, side_problem = sidecar_transcript(resolved)
            if side_problem is not None:
                problems.append(side_problem)
                continue
            if side is not None:
                text, origin = side, str(resolved.with_suffix(""))
        sources.append(
            Source(
                path=resolved,
                name=safe_id(resolved.stem),
                speaker=spk,
                language=normalize_language(lang) or language,
                text=text,
                origin=origin,
            )
        )
    return sources, problems
