"""Upstream GPT-SoVITS's prepared-dataset files, written from a gsvkit dataset and read back into one.

Upstream's experiment folder (`logs/<exp_name>/`) holds::

    2-name2text.txt       name \\t phones (space separated) \\t word2ph (Python list or None) \\t norm_text
    3-bert/<name>.pt      torch tensor [1024, n_phones], zh only
    4-cnhubert/<name>.pt  torch tensor [1, 768, T50]
    5-wav32k/<name>       32 kHz 16-bit clip
    6-name2semantic.tsv   header `item_name\\tsemantic_audio`, then name \\t tokens (space separated)

where `name` is the clip's file name with its extension (`<id>.wav`). The `.list` (path|speaker|LANG|text) that
produced it lives elsewhere upstream; gsvkit writes `<dataset>.list` pointing at 5-wav32k. Reading uses
`torch.load(weights_only=True)`, which refuses anything but plain tensors.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from gsvkit.data.manifest import MANIFEST, Utterance, write_manifest
from gsvkit.data.split import assign_split
from gsvkit.data.transcripts import list_line, normalize_language, read_transcripts
from gsvkit.errors import DataError
from gsvkit.utils.io import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from gsvkit.data.prepare import PrepareResult
    from gsvkit.data.prepare_config import PrepareConfig
    from gsvkit.data.report import Report

NAME2TEXT = "2-name2text.txt"
NAME2SEMANTIC = "6-name2semantic.tsv"
UPSTREAM_SR = 32000


def _write_if_changed(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return
    atomic_write_text(path, text)


def _fresh(target: Path, source: Path) -> bool:
    """True when `target` exists and is at least as new as `source` (nothing to redo)."""
    try:
        return target.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except OSError:
        return False


def _torch_save(path: Path, tensor) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(tensor.contiguous().clone(), tmp)


def write_upstream_layout(out: Path, items: list[Utterance], sr: int) -> None:
    """Write upstream's files for `items` into the dataset directory `out` (idempotent; stale files removed)."""
    from gsvkit.audio.io import load_audio, save_audio
    from gsvkit.data.stages import load_tensor

    out = Path(out)
    dirs = {k: out / k for k in ("3-bert", "4-cnhubert", "5-wav32k")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    name2text, semantic, listed = [], ["item_name\tsemantic_audio"], []
    wanted: dict[str, set[str]] = {k: set() for k in dirs}
    for u in items:
        name = f"{u.id}.wav"
        word2ph = "None" if u.word2ph is None else repr(list(u.word2ph))
        name2text.append(f"{name}\t{' '.join(u.phones)}\t{word2ph}\t{u.norm_text}")
        clip = u.clip_path(out)
        wav32 = dirs["5-wav32k"] / name
        wanted["5-wav32k"].add(name)
        if not _fresh(wav32, clip):
            save_audio(wav32, load_audio(clip, UPSTREAM_SR), UPSTREAM_SR)
        listed.append(list_line(str(wav32.resolve()), u.speaker, u.language, u.text))
        hub = u.feature_path(out, "hubert")
        if hub.is_file():
            target = dirs["4-cnhubert"] / f"{name}.pt"
            wanted["4-cnhubert"].add(target.name)
            if not _fresh(target, hub):
                _torch_save(target, load_tensor(hub, "ssl").unsqueeze(0))  # [1, C, T]
        sem = u.feature_path(out, "semantic")
        if sem.is_file():
            codes = load_tensor(sem, "codes")
            semantic.append(f"{name}\t{' '.join(str(int(c)) for c in codes.tolist())}")
        bert = u.feature_path(out, "bert")
        if bert.is_file():
            target = dirs["3-bert"] / f"{name}.pt"
            wanted["3-bert"].add(target.name)
            if not _fresh(target, bert):
                _torch_save(target, load_tensor(bert, "bert"))
    for key, d in dirs.items():
        for stale in d.iterdir():
            if stale.name not in wanted[key]:
                os.remove(stale)
    _write_if_changed(out / NAME2TEXT, "\n".join(name2text) + "\n")
    _write_if_changed(out / NAME2SEMANTIC, "\n".join(semantic) + "\n")
    _write_if_changed(out / f"{out.name}.list", "".join(line + "\n" for line in listed))


# ------------------------------------------------------------------------------------------------------ reading
def is_upstream_folder(path: Path) -> bool:
    """An upstream experiment folder, recognised by its 2-name2text.txt (and not a gsvkit dataset)."""
    return path.is_dir() and (path / NAME2TEXT).is_file() and not (path / MANIFEST).is_file()


def _torch_load(path: Path):
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle and zip errors vary; all mean "not a plain tensor file"
        raise DataError(f"{path}: not a plain tensor file ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: expected a tensor, found {type(value).__name__}")
    return value


def _phone_ids(phones: list[str], version: str) -> list[int] | None:
    """Phone ids in the text frontend's symbol table; None when that table is not available."""
    try:
        from gsvkit.text.symbols import phones_to_ids
    except ImportError:
        return None
    return phones_to_ids(phones, version)


def read_name2text(path: Path) -> dict[str, tuple[list[str], list[int] | None, str]]:
    """{name: (phones, word2ph, norm_text)} from an upstream 2-name2text.txt."""
    table = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 4:
            raise DataError(f"{path}:{lineno}: expected 4 tab-separated fields (name, phones, word2ph, norm_text)")
        name, phones, word2ph, norm_text = parts[0], parts[1], parts[2], "\t".join(parts[3:])
        try:
            w2p = ast.literal_eval(word2ph.strip())  # a Python list literal or None, never code
        except (ValueError, SyntaxError):
            raise DataError(f"{path}:{lineno}: word2ph {word2ph!r} is not a list or None") from None
        table[name] = (phones.split(), None if w2p is None else [int(x) for x in w2p], norm_text)
    return table


def read_name2semantic(path: Path) -> dict[str, list[int]]:
    table = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("item_name\t"):
            continue
        name, _, codes = line.partition("\t")
        try:
            table[name] = [int(c) for c in codes.split()]
        except ValueError:
            raise DataError(f"{path}:{lineno}: semantic tokens must be integers") from None
    return table


def import_upstream(folder: Path, cfg: PrepareConfig, report: Report) -> PrepareResult:
    """Turn an upstream experiment folder into a gsvkit dataset at `cfg.out` (the folder is only read)."""
    import torch

    from gsvkit.audio.io import read_audio, save_audio
    from gsvkit.data.prepare import PrepareResult
    from gsvkit.data.sources import safe_id
    from gsvkit.data.stages import save_tensors

    out = Path(cfg.out)
    names = read_name2text(folder / NAME2TEXT)
    semantic = read_name2semantic(folder / NAME2SEMANTIC) if (folder / NAME2SEMANTIC).is_file() else {}
    meta: dict[str, tuple[str | None, str | None, str]] = {}
    for list_file in [Path(t) for t in cfg.transcripts] or sorted(folder.glob("*.list")):
        entries, problems = read_transcripts(list_file)
        for p in problems:
            report.drop(p.where, "input", p.reason)
        for t in entries:
            meta[t.audio.name] = (t.speaker, t.language, t.text)
    if not meta:
        report.warnings.append("no .list found: speakers and languages are the defaults, text is norm_text")
    report.sources = len(names)
    items: list[Utterance] = []
    missing_ids = False
    for name, (phones, word2ph, norm_text) in names.items():
        clip_id = safe_id(Path(name).stem if name.lower().endswith(".wav") else name)
        speaker, language, text = meta.get(name, (None, None, norm_text))
        language = normalize_language(language) or cfg.language
        wav_path = folder / "5-wav32k" / name
        try:
            ids = _phone_ids(phones, cfg.text_version)
            wav, sr = read_audio(wav_path)
            hub = folder / "4-cnhubert" / f"{name}.pt"
            if not hub.is_file():
                raise DataError(f"{hub}: HuBERT features missing")
            ssl = _torch_load(hub).float()
            if ssl.ndim != 3 or ssl.shape[0] != 1:
                raise DataError(f"{hub}: expected shape [1, C, T], found {tuple(ssl.shape)}")
        except Exception as err:
            if cfg.strict:
                raise
            report.drop(name, "import", str(err))
            continue
        save_audio(out / "clips" / f"{clip_id}.wav", wav, sr)
        save_tensors(out / "features" / f"{clip_id}.hubert.safetensors", {"ssl": ssl[0]})
        if name in semantic:
            codes = torch.tensor(semantic[name], dtype=torch.int64)
            save_tensors(out / "features" / f"{clip_id}.semantic.safetensors", {"codes": codes})
        else:
            report.warnings.append(f"{name}: no semantic tokens in {NAME2SEMANTIC}")
        bert = folder / "3-bert" / f"{name}.pt"
        if bert.is_file():
            save_tensors(out / "features" / f"{clip_id}.bert.safetensors", {"bert": _torch_load(bert).float()})
        missing_ids = missing_ids or ids is None
        items.append(
            Utterance(
                id=clip_id,
                speaker=speaker or cfg.speaker,
                language=language,
                text=text,
                norm_text=norm_text,
                phones=phones,
                phone_ids=ids or [],
                word2ph=word2ph,
                source=str(wav_path.resolve()),
                end=round(len(wav) / sr, 4),
                duration=round(len(wav) / sr, 4),
                clip=f"clips/{clip_id}.wav",
            )  # fmt: skip
        )
    if missing_ids:
        report.warnings.append("phone ids not filled in: the text frontend's symbol table is not available")
    split = assign_split([(u.id, u.speaker) for u in items], cfg.val_fraction, cfg.seed, cfg.val)
    items = [u.model_copy(update={"split": split[u.id]}) for u in items]
    write_manifest(out / MANIFEST, items)
    info = {"format_version": 1, "config": cfg.model_dump(mode="json"), "imported_from": str(folder.resolve()),
            "utterances": len(items)}  # fmt: skip
    _write_if_changed(out / "prepare.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    report.write(out, items)
    return PrepareResult(out, items, report)
