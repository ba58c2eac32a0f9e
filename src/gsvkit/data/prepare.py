"""`gsv prepare`: raw recordings (+ transcripts) → a training-ready dataset directory.

Stages, each resumable per item (see `gsvkit.data.state`):

1. clips     decode, slice on silence (recordings without a transcript), resample, normalise → clips/<id>.wav
2. asr       transcribe clips that have no transcript (only with --asr-model) → transcripts.list
3. text      transcript → normalised text, phones, word2ph (+ BERT features for zh with --bert)
4. hubert    clip → HuBERT features at 50 Hz (with --hubert) → features/<id>.hubert.safetensors
5. semantic  HuBERT features → semantic tokens through the s2 quantizer (with --s2) → features/<id>.semantic...
   sv        v2Pro/v2ProPlus: clip → speaker embedding (with --sv-model) → features/<id>.sv.safetensors
6. split, manifest.jsonl, report.md/json, prepare.json (and upstream's files with --upstream-layout)

Bad input never stops the run: it is dropped with its reason and listed in the report (`strict=True` raises
instead). Nothing outside the dataset directory is written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gsvkit.data.asr import missing_transcripts_error
from gsvkit.data.clips import ClipJob, cut_recording
from gsvkit.data.manifest import MANIFEST, Utterance, write_manifest
from gsvkit.data.prepare_config import PrepareConfig
from gsvkit.data.prepare_models import Models
from gsvkit.data.report import Report
from gsvkit.data.sources import Source, discover
from gsvkit.data.split import assign_split
from gsvkit.data.stages import drop_reason
from gsvkit.data.state import FileHashes, StageState, digest
from gsvkit.data.transcripts import normalize_language, read_transcripts, write_list
from gsvkit.errors import DataError
from gsvkit.utils.io import atomic_write_text

PREPARE_VERSION = 1  # bump to invalidate every marker when a stage's output format changes
TRANSCRIPTS = "transcripts.list"


@dataclass
class Clip:
    """A clip on its way through the stages."""

    id: str
    source: Source
    start: float
    end: float
    duration: float
    sha: str
    text: str | None = None
    speaker: str = ""
    language: str = ""
    phones: dict = field(default_factory=dict)
    hubert_key: str = ""

    def where(self) -> str:
        """The clip as a user finds it: its recording, and the span when it was cut from a longer one."""
        if self.id == self.source.name:
            return str(self.source.path)
        return f"{self.source.path} [{self.start:.2f}-{self.end:.2f} s] (clip {self.id})"


@dataclass
class PrepareResult:
    out: Path
    items: list[Utterance]
    report: Report


# ---------------------------------------------------------------------------------------------------- helpers
class _Run:
    """State shared by the stages of one run."""

    def __init__(self, cfg: PrepareConfig, models: Models, progress: bool) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.models = models
        self.report = Report()
        self.hashes = FileHashes(self.out)
        self.progress = progress
        self.hop: int | None = None  # s2 hop when its frame rate differs from HuBERT's 50 Hz

    def drop(self, where: str, stage: str, reason: str) -> None:
        if self.cfg.strict:
            raise DataError(f"{where}: {reason} (stage {stage}; drop --strict to skip such items instead)")
        self.report.drop(where, stage, reason)

    @contextlib.contextmanager
    def bar(self, stage: str, total: int) -> Iterator[Callable[[], None]]:
        """A progress bar for `total` items of work; the time spent is added to the report."""
        start = time.perf_counter()
        try:
            if not self.progress or total == 0:
                yield lambda: None
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(
                TextColumn(f"{stage:<9}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
            ) as bar:
                task = bar.add_task(stage, total=total)
                yield lambda: bar.advance(task)
        finally:
            if total:
                self.report.seconds[stage] = self.report.seconds.get(stage, 0.0) + time.perf_counter() - start

    def model_hash(self, path: str | None) -> str:
        return self.hashes.tree_sha(Path(path)) if path else ""


def _write_if_changed(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return
    atomic_write_text(path, text)


def _s2_rates(cfg: PrepareConfig) -> tuple[int | None, int | None]:
    """(sampling rate, hop length) of the s2 model given with --s2, from its header; (None, None) without one."""
    if not cfg.s2:
        return None, None
    from gsvkit.checkpoint import read_header

    data = getattr(read_header(cfg.s2).config, "data", None)
    return (int(data.sampling_rate), int(data.hop_length)) if data is not None else (None, None)


# ----------------------------------------------------------------------------------------------------- stages
def _synthetic(path: Path) -> str | None:
    """Why a recording is refused as training audio when it carries the speech-synthesis watermark, else None."""
    from gsvkit.errors import GsvError, SyntheticAudioError
    from gsvkit.safety.watermark import refuse_synthetic

    try:
        refuse_synthetic(path, "this recording", "--allow-synthetic")
    except GsvError as err:  # an unreadable file is reported by the slicing stage, with its own reason
        if not isinstance(err, SyntheticAudioError):
            return None
        return str(err).removeprefix(f"{path}: ")  # the report names the file already
    return None


def _stage_clips(run: _Run, sources: list[Source], sr: int) -> list[Clip]:
    cfg, state = run.cfg, StageState(run.out, "clips")
    clips_dir = run.out / "clips"
    seen: dict[str, Path] = {}
    jobs: list[tuple[Source, ClipJob, str]] = []
    done: dict[str, dict] = {}
    for s in sources:
        if s.name in seen:
            run.drop(str(s.path), "clips", f"duplicate id {s.name!r} (also {seen[s.name]}); rename one of the files")
            continue
        seen[s.name] = s.path
        job = ClipJob(
            path=str(s.path),
            name=s.name,
            whole=s.text is not None, text_chars=len((s.text or "").strip()), sr=sr,
            clips_dir=str(clips_dir),
            slicer=cfg.slicer.model_dump(exclude={"max_length"}),
            max_length=cfg.slicer.max_length,
            min_duration=cfg.min_duration,
            max_duration=cfg.max_duration,
            loudness=cfg.loudness,
            target_lufs=cfg.target_lufs,
            denoise=cfg.denoise,
        )
        extra = {"synthetic_allowed": True} if cfg.allow_synthetic else {}  # keys of earlier runs stay valid
        key = digest("clips", PREPARE_VERSION, s.sha, asdict(job) | {"path": "", "clips_dir": ""} | extra)
        record = state.get(s.name, key)
        if record is not None and all((clips_dir / f"{c['id']}.wav").is_file() for c in record["clips"]):
            done[s.name] = record
            run.report.reused["clips"] += 1
        elif not cfg.allow_synthetic and (why := _synthetic(s.path)):
            run.drop(str(s.path), "clips", why)
        else:
            jobs.append((s, job, key))

    with run.bar("clips", len(jobs)) as advance:
        if cfg.workers > 1 and len(jobs) > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(cut_recording, job): (s, key) for s, job, key in jobs}
                for fut in as_completed(futures):
                    s, key = futures[fut]
                    done[s.name] = state.put(s.name, key, fut.result())
                    run.report.computed["clips"] += 1
                    advance()
        else:
            for s, job, key in jobs:
                done[s.name] = state.put(s.name, key, cut_recording(job))
                run.report.computed["clips"] += 1
                advance()

    clips: list[Clip] = []
    ids: set[str] = set()
    for s in sources:
        record = done.get(s.name)
        if record is None or seen.get(s.name) != s.path:
            continue
        for d in record["dropped"]:
            run.drop(d["where"], "clips", d["reason"])
        for c in record["clips"]:
            if c["id"] in ids:
                run.drop(f"{s.path} [{c['start']}-{c['end']} s]", "clips", f"duplicate id {c['id']!r}")
                continue
            ids.add(c["id"])
            clips.append(
                Clip(
                    id=c["id"],
                    source=s,
                    start=c["start"],
                    end=c["end"],
                    duration=c["duration"],
                    sha=c["sha"],
                    text=s.text,
                    speaker=s.speaker,
                    language=s.language,
                )  # fmt: skip
            )
    state.prune(set(seen))
    return clips


def _stage_transcripts(run: _Run, clips: list[Clip]) -> None:
    """Apply the user's edits of transcripts.list, then transcribe what still has no text (ASR).

    Precedence: an edited line of transcripts.list (kept while the input transcript it replaced is unchanged),
    then the input transcript, then the line transcripts.list already holds (an earlier ASR result, maybe
    proofread), then a new ASR run.
    """
    cfg = run.cfg
    list_path = run.out / TRANSCRIPTS
    tstate = StageState(run.out, "transcripts")
    memory = tstate.get("written", "transcripts") or {}
    written: dict[str, list[str]] = memory.get("rows", {})
    edits: dict[str, list] = memory.get("edits", {})
    listed: dict[str, list[str]] = {}
    if list_path.is_file():
        entries, problems = read_transcripts(list_path)
        for p in problems:
            run.report.warnings.append(f"{p.where}: {p.reason} (line ignored)")
        for t in entries:
            listed[t.audio.stem] = _row(t.speaker or "", t.language or "", t.text)
    for c in clips:
        base = c.text
        row = listed.get(c.id)
        if row is not None and base is not None and written.get(c.id) not in (None, row):
            edits[c.id] = [*row, base]  # the user changed this line since it was written
        edit = edits.get(c.id)
        if edit is not None and base is not None and edit[3] == base:
            row = edit[:3]
        elif base is not None:
            edits.pop(c.id, None)
            continue
        if row is not None:
            c.speaker = row[0] or c.speaker
            c.language = normalize_language(row[1]) or c.language
            c.text = row[2]
    tstate.put("written", "transcripts", {"rows": written, "edits": {k: v for k, v in edits.items()}})

    need = [c for c in clips if c.text is None]
    if need and not cfg.asr_model and run.models.transcriber is None:
        raise missing_transcripts_error(len(need), str(need[0].source.path))
    state = StageState(run.out, "asr")
    asr_hash = run.model_hash(cfg.asr_model)
    todo = []
    for c in need:
        key = digest("asr", PREPARE_VERSION, c.sha, asr_hash, c.language)
        record = state.get(c.id, key)
        if record is not None:
            c.text = record["text"]
            run.report.reused["asr"] += 1
        else:
            todo.append((c, key))
    with run.bar("asr", len(todo)) as advance:
        for c, key in todo:
            from gsvkit.audio.io import load_audio

            text = run.models.get_transcriber()(load_audio(run.out / "clips" / f"{c.id}.wav", 16000), c.language)
            state.put(c.id, key, {"text": text})
            c.text = text
            run.report.computed["asr"] += 1
            advance()


def _row(speaker: str, language: str, text: str) -> list[str]:
    """A transcripts.list line as it reads back (the writer collapses whitespace and `|`)."""

    def clean(s: str) -> str:
        return " ".join(s.replace("|", " ").split())

    return [clean(speaker), normalize_language(language) or "", clean(text)]


def _write_transcripts(run: _Run, clips: list[Clip]) -> None:
    """Write the editable transcripts.list and remember what it says, to recognise later edits."""
    state = StageState(run.out, "transcripts")
    memory = state.get("written", "transcripts") or {}
    rows = {c.id: _row(c.speaker, c.language, c.text or "") for c in clips}
    if memory.get("rows") != rows or not (run.out / TRANSCRIPTS).is_file():
        lines = []
        for c in clips:
            speaker, language, text = rows[c.id]
            lines.append((f"clips/{c.id}.wav", speaker, language, text))
        write_list(run.out / TRANSCRIPTS, lines)
        ids = set(rows)
        edits = {k: v for k, v in memory.get("edits", {}).items() if k in ids}
        state.put("written", "transcripts", {"rows": rows, "edits": edits})


def _stage_text(run: _Run, clips: list[Clip]) -> list[Clip]:
    from gsvkit import __version__
    from gsvkit.data.stages import BERT_LANGUAGES, bert_features, save_tensors, text_to_phones

    cfg, state, bert_state = run.cfg, StageState(run.out, "text"), StageState(run.out, "bert")
    bert_hash = run.model_hash(cfg.bert) if cfg.bert else ""
    kept: list[Clip] = []
    todo, bert_todo = [], []
    for c in clips:
        key = digest("text", PREPARE_VERSION, __version__, cfg.text_version, c.text, c.language)
        record = state.get(c.id, key)
        if record is None:
            todo.append((c, key))
        else:
            c.phones = record
            run.report.reused["text"] += 1
    with run.bar("text", len(todo)) as advance:
        for c, key in todo:
            try:
                phones = text_to_phones(c.text or "", c.language, run.models.get_text_fn())
                c.phones = state.put(c.id, key, {"ok": True, **phones})
            except Exception as err:  # one transcript the frontend cannot handle must not stop the run
                c.phones = state.put(c.id, key, {"ok": False, "reason": drop_reason(err)})
            run.report.computed["text"] += 1
            advance()
    for c in clips:
        if not c.phones.get("ok"):
            run.drop(c.where(), "text", c.phones.get("reason", "text failed"))
            continue
        kept.append(c)
        if c.language in BERT_LANGUAGES and (cfg.bert or run.models.bert is not None):
            key = digest("bert", c.phones["key"], bert_hash)
            path = run.out / "features" / f"{c.id}.bert.safetensors"
            if bert_state.get(c.id, key) is not None and path.is_file():
                run.report.reused["bert"] += 1
            else:
                bert_todo.append((c, key, path))
    if any(c.language in BERT_LANGUAGES for c in kept) and not (cfg.bert or run.models.bert is not None):
        run.report.warnings.append("zh utterances without --bert: their BERT features are zeros (upstream needs them; "
                                   "`gsv models fetch bert` puts BERT where prepare finds it)")
    failed: set[str] = set()
    with run.bar("bert", len(bert_todo)) as advance:
        for c, key, path in bert_todo:
            try:
                feats = bert_features(c.phones["norm_text"], c.phones["word2ph"], run.models.get_bert(),
                                      len(c.phones["phones"]))  # fmt: skip
                save_tensors(path, {"bert": feats})
                bert_state.put(c.id, key, {})
                run.report.computed["bert"] += 1
            except Exception as err:
                run.drop(c.where(), "bert", drop_reason(err))
                failed.add(c.id)
            advance()
    state.prune({c.id for c in clips})
    bert_state.prune({c.id for c in kept if c.id not in failed})
    return [c for c in kept if c.id not in failed]


def _stage_features(run: _Run, clips: list[Clip]) -> list[Clip]:
    from gsvkit.audio.features import PREPARE_INPUT_SCALE
    from gsvkit.data.stages import cached_feature_stage, hubert_features, load_tensor, semantic_tokens

    cfg = run.cfg
    use_hubert = bool(cfg.hubert) or run.models.featurizer is not None
    use_s2 = bool(cfg.s2) or run.models.quantizer is not None
    if not use_hubert:
        run.report.warnings.append("no --hubert: HuBERT features and semantic tokens were not computed "
                                   "(`gsv models fetch v2` puts HuBERT and s2 where prepare finds them)")
        return clips
    feats = run.out / "features"
    hubert_hash, s2_hash = run.model_hash(cfg.hubert), run.model_hash(cfg.s2)

    def hubert_key(c: Clip) -> str:
        c.hubert_key = digest("hubert", PREPARE_VERSION, c.sha, hubert_hash, PREPARE_INPUT_SCALE, run.hop)
        return c.hubert_key

    def hubert(c: Clip) -> tuple[dict, dict]:
        clip = run.out / "clips" / f"{c.id}.wav"
        ssl = hubert_features(clip, run.models.get_featurizer(), PREPARE_INPUT_SCALE, run.hop)
        return {"ssl": ssl}, {"frames": int(ssl.shape[-1])}

    def semantic(c: Clip) -> tuple[dict, dict]:
        codes = semantic_tokens(load_tensor(feats / f"{c.id}.hubert.safetensors", "ssl"), run.models.get_quantizer())
        return {"codes": codes}, {"tokens": int(codes.numel())}

    clips = cached_feature_stage(run, "hubert", clips, hubert_key, hubert)
    if not use_s2:
        run.report.warnings.append("no --s2: semantic tokens were not computed (s1 training needs them)")
        return clips
    return cached_feature_stage(run, "semantic", clips, lambda c: digest("semantic", c.hubert_key, s2_hash), semantic,
                                drop_failed=False)


def _remove_stale(out: Path, clip_ids: set[str], feature_ids: set[str]) -> None:
    """Delete clips and features of ids that are no longer produced (changed or removed inputs)."""
    for path in (out / "clips").glob("*.wav"):
        if path.stem not in clip_ids:
            os.remove(path)
    for path in (out / "features").glob("*.safetensors"):
        if path.name.split(".", 1)[0] not in feature_ids:
            os.remove(path)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("gsvkit", "torch", "transformers", "numpy", "soundfile", "soxr", "noisereduce", "faster-whisper"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


# ------------------------------------------------------------------------------------------------------ entry
def prepare(
    cfg: PrepareConfig,
    *,
    text_fn: Callable | None = None,
    featurizer: Callable | None = None,
    quantizer: Any = None,
    transcriber: Callable | None = None,
    bert: Callable | None = None,
    sv: Any = None,
    progress: bool = False,
) -> PrepareResult:
    """Build or update the dataset `cfg.out` from `cfg.inputs`; returns the utterances and the run's report.

    `text_fn(text, language) -> {norm_text, phones, phone_ids, word2ph}`, `featurizer(wav16k) -> [1, C, T]`,
    `quantizer` (an object with `extract_latent` or a callable), `transcriber(wav16k, language) -> str` and
    `bert(norm_text, word2ph) -> [1024, n]` and `sv` (a `SpeakerEncoder`) replace the models named in `cfg` when
    given.
    """
    from gsvkit.data.upstream_layout import import_upstream, is_upstream_folder, write_upstream_layout

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    models = Models(cfg, text_fn, featurizer, quantizer, transcriber, bert, sv)
    run = _Run(cfg, models, progress)
    for path in (cfg.hubert, cfg.bert):
        if path:
            from gsvkit.audio.features import check_model_dir

            check_model_dir(path, ("hubert",) if path == cfg.hubert else ("bert", "roberta"),
                            "HuBERT" if path == cfg.hubert else "BERT")  # fmt: skip
    if cfg.denoise and importlib.util.find_spec("noisereduce") is None:
        raise DataError("--denoise needs the noisereduce package: pip install noisereduce")
    if len(cfg.inputs) == 1 and is_upstream_folder(Path(cfg.inputs[0])):
        return import_upstream(Path(cfg.inputs[0]), cfg, run.report)

    sources, problems = discover(cfg.inputs, cfg.transcripts, out, cfg.language, cfg.speaker)
    for p in problems:
        run.drop(p.where, "input", p.reason)
    for s in sources:
        s.sha = run.hashes.sha(s.path)
    run.report.sources = len(sources)
    s2_sr, s2_hop = _s2_rates(cfg)
    sr = cfg.clip_rate(s2_sr)
    run.hop = s2_hop if s2_sr == sr else None

    clips = _stage_clips(run, sources, sr)
    _stage_transcripts(run, clips)
    _write_transcripts(run, clips)
    kept = _stage_text(run, clips)
    kept = _stage_features(run, kept)
    if cfg.sv or sv is not None:
        from gsvkit.data.speaker_stage import stage_speaker

        kept = stage_speaker(run, kept, PREPARE_VERSION, sr)
    run.hashes.save()

    split = assign_split([(c.id, c.speaker) for c in kept], cfg.val_fraction, cfg.seed, cfg.val)
    items = [
        Utterance(
            id=c.id,
            speaker=c.speaker,
            language=c.language,
            text=c.text or "",
            norm_text=c.phones["norm_text"],
            phones=c.phones["phones"],
            phone_ids=c.phones["phone_ids"],
            word2ph=c.phones["word2ph"],
            source=str(c.source.path),
            start=c.start,
            end=c.end,
            duration=c.duration,
            split=split[c.id],
            clip=f"clips/{c.id}.wav",
        )  # fmt: skip
        for c in kept
    ]
    if not items:
        run.report.warnings.append("no utterance survived preparation; see the dropped items")
    elif not any(u.split == "val" for u in items):
        run.report.warnings.append("no validation utterance (too few items or --val-fraction 0)")
    _remove_stale(out, {c.id for c in clips}, {c.id for c in kept})
    manifest_text = "".join(json.dumps(u.model_dump(mode="json"), ensure_ascii=False) + "\n" for u in items)
    if not (out / MANIFEST).is_file() or (out / MANIFEST).read_text(encoding="utf-8") != manifest_text:
        write_manifest(out / MANIFEST, items)
    info = {
        "format_version": PREPARE_VERSION,
        "config": cfg.model_dump(mode="json"),
        "sample_rate": sr,
        "versions": _versions(),
        "inputs": {str(s.path): s.sha for s in sources},
        "models": {
            k: run.model_hash(v) for k in ("hubert", "s2", "bert", "asr_model", "sv") if (v := getattr(cfg, k))
        },
        "utterances": len(items),
    }
    _write_if_changed(out / "prepare.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    if cfg.upstream_layout:
        write_upstream_layout(out, items, sr)
    run.report.write(out, items)
    run.hashes.save()
    return PrepareResult(out, items, run.report)
