"""Transcript files: upstream `.list`, CSV, TSV, JSONL, and sidecar `.txt` / `.lab` files next to the audio.

Formats:

- `.list` (upstream): one `audio_path|speaker|LANG|text` per line; LANG is ZH, JA (or JP), EN, KO, YUE, or any
  language mode the text frontend accepts.
- `.csv` / `.tsv`: a header row naming the columns; `path` (or `audio`, `file`, `wav`) and `text` (or
  `transcript`, `sentence`) are required, `lang`/`language` and `speaker` optional.
- `.jsonl`: one object per line with the same keys.
- sidecar: `clip.wav` + `clip.txt` or `clip.lab` holding the transcript (lines joined with spaces).

Relative audio paths are resolved against the transcript file's folder. A line that cannot be used is not an
error: it comes back as a `Problem` naming the file, the line and the reason, and the caller reports it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from gsvkit.errors import DataError
from gsvkit.utils.io import atomic_write_text

TRANSCRIPT_SUFFIXES = (".list", ".csv", ".tsv", ".jsonl")
SIDECAR_SUFFIXES = (".txt", ".lab")
_PATH_KEYS = ("path", "audio", "audio_path", "file", "filename", "wav", "wav_path")
_TEXT_KEYS = ("text", "transcript", "transcription", "sentence", "normalized_text")
_LANG_KEYS = ("lang", "language")
_SPEAKER_KEYS = ("speaker", "spk", "speaker_id")

# upstream's language codes (1-get-text.py) to the frontend's.
_LANG_ALIASES = {"zh": "zh", "jp": "ja", "ja": "ja", "en": "en", "ko": "ko", "yue": "yue"}
_LIST_CODES = {"zh": "ZH", "ja": "JA", "en": "EN", "ko": "KO", "yue": "YUE"}


@dataclass(frozen=True)
class Transcript:
    """One transcript line: the audio it belongs to and what is said in it."""

    audio: Path
    text: str
    language: str | None = None
    speaker: str | None = None
    origin: str = ""  # "file:line", for messages


@dataclass(frozen=True)
class Problem:
    """Something in the input that could not be used, and why."""

    where: str
    reason: str
    audio: Path | None = None  # the recording a broken transcript line names, if it could be read


def normalize_language(code: str | None) -> str | None:
    """`ZH`/`JP`/`EN`... (upstream) or `zh`/`ja`/`en`... to the frontend's lower-case codes; None stays None."""
    if code is None or not code.strip():
        return None
    code = code.strip()
    return _LANG_ALIASES.get(code.lower(), code.lower())


def list_language(code: str) -> str:
    """The frontend's language code as upstream's `.list` writes it (ZH, JA, EN, KO, YUE)."""
    return _LIST_CODES.get(code, code)


def _decoded_lines(path: Path) -> tuple[list[tuple[int, str]], dict[int, str]]:
    """UTF-8 lines (BOM dropped) with their numbers, and {line number: why} for lines that are not UTF-8.

    Undecodable lines stay in the list (with replacement characters) so the caller can still tell which
    recording they name, and set that recording aside instead of treating it as untranscribed.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read transcript file ({err.strerror})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines, bad = [], {}
    for lineno, chunk in enumerate(raw.split(b"\n"), 1):
        chunk = chunk.rstrip(b"\r")
        try:
            lines.append((lineno, chunk.decode("utf-8")))
        except UnicodeDecodeError as err:
            bad[lineno] = (
                f"not UTF-8 text (byte 0x{chunk[err.start]:02x} at column {err.start + 1}); save the file as UTF-8"
            )
            lines.append((lineno, chunk.decode("utf-8", errors="replace")))
    return lines, bad


def _resolve(base: Path, audio: str) -> Path:
    p = Path(audio.strip().strip('"'))
    return p if p.is_absolute() else base / p


def _pick(row: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip() != "":
            return str(value)
    return None


def _from_row(row: dict, base: Path, where: str) -> Transcript | Problem:
    row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    audio, text = _pick(row, _PATH_KEYS), _pick(row, _TEXT_KEYS)
    if audio is None:
        return Problem(where, f"no audio path (expected a column named one of {', '.join(_PATH_KEYS)})")
    if text is None:
        return Problem(where, "empty transcript")
    return Transcript(
        audio=_resolve(base, audio),
        text=text.strip(),
        language=normalize_language(_pick(row, _LANG_KEYS)),
        speaker=(_pick(row, _SPEAKER_KEYS) or "").strip() or None,
        origin=where,
    )


def read_transcripts(path: str | Path) -> tuple[list[Transcript], list[Problem]]:
    """Read a `.list`, `.csv`, `.tsv` or `.jsonl` transcript file: (usable lines, problems)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: transcript file not found")
    suffix = path.suffix.lower()
    if suffix not in TRANSCRIPT_SUFFIXES:
        raise DataError(f"{path}: unknown transcript format {suffix!r}; use one of {', '.join(TRANSCRIPT_SUFFIXES)}")
    lines, bad = _decoded_lines(path)
    base = path.parent
    results: list[Transcript | Problem] = []
    if suffix == ".list":
        for lineno, line in lines:
            if not line.strip():
                continue
            parts = line.split("|", 3)
            where = f"{path}:{lineno}"
            if len(parts) != 4:
                results.append(Problem(where, "expected 4 fields `audio|speaker|LANG|text`"))
                continue
            row = {"path": parts[0], "speaker": parts[1], "lang": parts[2], "text": parts[3]}
            results.append(_from_row(row, base, where))
    elif suffix == ".jsonl":
        for lineno, line in lines:
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                results.append(Problem(where, f"not valid JSON ({err.msg})"))
                continue
            results.append(_from_row(row, base, where) if isinstance(row, dict) else Problem(where, "not an object"))
    else:
        text = "\n".join(line for _, line in lines)
        numbers = [n for n, _ in lines]
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if not set(header) & set(_PATH_KEYS) or not set(header) & set(_TEXT_KEYS):
            raise DataError(
                f"{path}: the header row must name an audio column ({', '.join(_PATH_KEYS)}) and a text column "
                f"({', '.join(_TEXT_KEYS)}); found {header}"
            )
        for row in reader:
            lineno = numbers[min(reader.line_num - 1, len(numbers) - 1)] if numbers else reader.line_num
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            results.append(_from_row(row, base, f"{path}:{lineno}"))
    items: list[Transcript] = []
    problems: list[Problem] = []
    for r in results:
        lineno = int(r.where.rsplit(":", 1)[1]) if isinstance(r, Problem) else int(r.origin.rsplit(":", 1)[1])
        if lineno in bad:
            problems.append(
                Problem(f"{path}:{lineno}", bad.pop(lineno), r.audio if isinstance(r, Transcript) else None)
            )
        elif isinstance(r, Transcript):
            items.append(r)
        else:
            problems.append(r)
    problems += [Problem(f"{path}:{n}", why) for n, why in bad.items()]  # lines that parsed to nothing
    return items, sorted(problems, key=lambda p: int(p.where.rsplit(":", 1)[1]))


def sidecar_transcript(audio: Path) -> tuple[str | None, Problem | None]:
    """The text of `audio`'s sidecar `.txt`/`.lab` file, if there is one: (text, problem)."""
    for suffix in SIDECAR_SUFFIXES:
        side = audio.with_suffix(suffix)
        if not side.is_file():
            continue
        lines, bad = _decoded_lines(side)
        if bad:
            return None, Problem(str(side), next(iter(bad.values())), audio)
        text = " ".join(line.strip() for _, line in lines if line.strip())
        if not text:
            return None, Problem(str(side), "empty transcript")
        return text, None
    return None, None


def list_line(audio: str, speaker: str, language: str, text: str) -> str:
    """One `.list` line; `|` and line breaks inside fields would break the format, so they become spaces."""

    def clean(s: str) -> str:
        return " ".join(s.replace("|", " ").split())

    return f"{audio}|{clean(speaker)}|{list_language(language)}|{clean(text)}"


def write_list(path: str | Path, rows: list[tuple[str, str, str, str]]) -> None:
    """Write an upstream `.list` (audio|speaker|LANG|text) atomically."""
    atomic_write_text(Path(path), "".join(list_line(*row) + "\n" for row in rows))
