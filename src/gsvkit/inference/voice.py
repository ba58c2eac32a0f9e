"""A *voice*: one directory holding everything needed to speak as one person.

```
alice/
  voice.json          VoiceInfo below: names of the files, default reference, languages, provenance/consent
  s1.safetensors      GPT (text -> semantic tokens), gsvkit checkpoint format
  s2.safetensors      SoVITS (semantic tokens -> waveform), gsvkit checkpoint format
  reference.wav       default reference clip (3-10 s; its transcript and language are in voice.json)
  prompt.safetensors  optional: the reference's semantic tokens, so synthesis needs no HuBERT model
  speaker.safetensors v2Pro/v2ProPlus: the speaker embedding of the reference and aux clips, so synthesis needs no
                      speaker-verification model
```

Every file a voice names lives inside its directory (relative names only), so a voice can be copied, zipped or
served from a voices directory without reaching anywhere else on disk. Only the shared feature models (HuBERT,
BERT, the speaker-verification model) may be named by absolute path, because they are large and shared between voices.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gsvkit.errors import CheckpointError, DataError
from gsvkit.inference.params import LANGUAGES, check_language
from gsvkit.safety.consent import Consent, coerce_consent, new_consent
from gsvkit.utils.io import atomic_write_text, sha256_file

VOICE_FILE = "voice.json"
PROMPT_FILE = "prompt.safetensors"
SPEAKER_FILE = "speaker.safetensors"
VOICE_FORMAT = "gsvkit-voice"


class ReferenceInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio: str = Field(description="reference clip, relative to the voice directory")
    text: str = Field("", description="what is said in the clip (empty = reference-free prompt)")
    language: str = Field(description="language of `text`")


class Provenance(BaseModel):
    """Where the voice came from and on what terms. Extra keys are kept, so tools may add their own."""

    model_config = ConfigDict(extra="allow")

    consent: Consent = Field(description="who agreed to be cloned, when, to what, and who recorded it")
    speaker: str | None = None
    source: str | None = Field(None, description="where the training recordings came from")
    license: str | None = None
    created: str = Field(description="ISO-8601 UTC time the voice was bundled")
    tool: str = Field(description="gsvkit version that bundled it")
    s1_sha256: str | None = None
    s2_sha256: str | None = None

    _old_consent = field_validator("consent", mode="before")(coerce_consent)  # a free-text string, as before


class VoiceInfo(BaseModel):
    """Contents of `voice.json`."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["gsvkit-voice"] = VOICE_FORMAT
    format_version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=200)
    version: Literal["v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4"] = Field(
        description="s2 model version (s1 is the matching GPT: v2's for v2Pro/v2ProPlus)"
    )
    s1: str = "s1.safetensors"
    s2: str = "s2.safetensors"
    reference: ReferenceInfo
    aux_references: list[str] = Field(default_factory=list, description="extra clips averaged into the timbre")
    languages: list[str] = Field(description="languages this voice may be asked to speak")
    description: str = ""
    hubert: str | None = Field(None, description="HuBERT model directory (absolute, or relative to the voice)")
    bert: str | None = Field(None, description="Chinese BERT model directory (absolute, or relative to the voice)")
    sv: str | None = Field(None, description="v2Pro: speaker-verification model file (absolute, or relative)")
    vocoder: str | None = Field(None, description="v3/v4: vocoder file (absolute, or relative to the voice)")
    provenance: Provenance


@dataclass(frozen=True)
class Voice:
    """A loaded voice directory: its parsed `voice.json` plus resolved paths."""

    root: Path
    info: VoiceInfo

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def s1_path(self) -> Path:
        return self.root / self.info.s1

    @property
    def s2_path(self) -> Path:
        return self.root / self.info.s2

    @property
    def reference_audio(self) -> Path:
        return self.root / self.info.reference.audio

    @property
    def reference_text(self) -> str:
        return self.info.reference.text

    @property
    def reference_language(self) -> str:
        return self.info.reference.language

    @property
    def aux_references(self) -> list[Path]:
        return [self.root / p for p in self.info.aux_references]

    @property
    def prompt_cache(self) -> Path:
        return self.root / PROMPT_FILE

    @property
    def speaker_cache(self) -> Path:
        return self.root / SPEAKER_FILE

    @property
    def sv_path(self) -> Path | None:
        return self._model_dir(self.info.sv)

    @property
    def vocoder_path(self) -> Path | None:
        return self._model_dir(self.info.vocoder)

    @property
    def hubert_path(self) -> Path | None:
        return self._model_dir(self.info.hubert)

    @property
    def bert_path(self) -> Path | None:
        return self._model_dir(self.info.bert)

    def _model_dir(self, value: str | None) -> Path | None:
        if not value:
            return None
        p = Path(value)
        return p if p.is_absolute() else self.root / p

    def summary(self) -> dict:
        """Plain data for listings (CLI table, HTTP /voices)."""
        return {
            "name": self.info.name,
            "path": str(self.root),
            "version": self.info.version,
            "languages": list(self.info.languages),
            "reference_text": self.info.reference.text,
            "reference_language": self.info.reference.language,
            "description": self.info.description,
            "speaker": self.info.provenance.speaker,
            "consent": self.info.provenance.consent.describe(),
        }


def models_needed(voice: Voice) -> list[str]:
    """What speaking this voice will need that it does not carry: one line per missing model, saying what to do.

    HuBERT turns the reference clip into prompt tokens unless the voice stores them (`prompt.safetensors`) or
    the reference has no transcript; Chinese text needs the Chinese BERT model.
    """
    needs = []
    if voice.reference_text and voice.hubert_path is None and not voice.prompt_cache.is_file():
        needs.append(
            "it does not store its prompt tokens, so speaking needs a HuBERT model (chinese-hubert-base): "
            "recreate it with --hubert DIR, or give --hubert DIR to every gsv synth / gsv serve"
        )
    if voice.bert_path is None and any(lang in ("zh", "all_zh") for lang in voice.info.languages):
        needs.append(
            "Chinese text needs the Chinese BERT model (chinese-roberta-wwm-ext-large): recreate it with "
            "--bert DIR, pass --bert DIR when speaking Chinese, or limit it with --language"
        )
    return needs


def _inside(name: str, what: str, root: Path) -> str:
    """Check a file name from voice.json stays inside the voice directory."""
    p = PurePosixPath(name.replace("\\", "/"))
    if not name or p.is_absolute() or ".." in p.parts:
        raise DataError(f"{root / VOICE_FILE}: {what} {name!r} must be a file name inside the voice directory")
    return name


def load_voice(path: str | os.PathLike) -> Voice:
    """Read a voice directory (or its `voice.json`) and check the files it names exist.

    Raises `DataError` naming the file and the field when something is missing or malformed.
    """
    path = Path(path)
    root = path.parent if path.name == VOICE_FILE else path
    meta = root / VOICE_FILE
    if not root.is_dir():
        raise DataError(f"{root}: voice directory not found")
    if not meta.is_file():
        raise DataError(f"{root}: not a voice (no {VOICE_FILE}); create one with `gsv voice create`")
    try:
        info = VoiceInfo.model_validate_json(meta.read_bytes())
    except ValidationError as err:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise DataError(f"{meta}: invalid voice file ({fields})") from None
    for what, name in [("s1", info.s1), ("s2", info.s2), ("reference.audio", info.reference.audio)] + [
        ("aux_references", a) for a in info.aux_references
    ]:
        _inside(name, what, root)
        if not (root / name).is_file():
            raise DataError(f"{meta}: {what} file {name!r} is missing from {root}")
    for lang in info.languages:
        check_language(lang, info.version, what="voice.json languages entry")
    check_language(info.reference.language, info.version, what="voice.json reference.language")
    return Voice(root=root.resolve(), info=info)


@dataclass(frozen=True)
class VoiceEntry:
    """One directory found by `scan_voices`: the voice, or why it could not be loaded."""

    path: Path
    voice: Voice | None
    error: str | None


def scan_voices(root: str | os.PathLike) -> list[VoiceEntry]:
    """Every voice directly under `root` (and `root` itself if it is one), sorted by directory name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: voices directory not found")
    candidates = [root] if (root / VOICE_FILE).is_file() else []
    candidates += sorted(p for p in root.iterdir() if p.is_dir() and (p / VOICE_FILE).is_file())
    entries = []
    for c in candidates:
        try:
            entries.append(VoiceEntry(c, load_voice(c), None))
        except (DataError, OSError) as err:
            entries.append(VoiceEntry(c, None, str(err)))
    return entries


def find_voice(root: str | os.PathLike, name: str) -> Voice:
    """The voice called `name` (directory name or `voice.json` name) under `root`."""
    for entry in scan_voices(root):
        if entry.voice is not None and name in (entry.path.name, entry.voice.name):
            return entry.voice
    raise DataError(f"no voice named {name!r} in {root}; `gsv voice list {root}` shows the available ones")


# ------------------------------------------------------------------------------------------------- creating
def find_run_weights(run_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The s1 and s2 weight files of an exported training run.

    Looks for `s1.safetensors` / `s2.safetensors` in the directory, in its stage folders (`s1/s1.safetensors`,
    `s2/s2.safetensors`, as `gsv train` leaves them) and in `export/`, then for any checkpoint there whose metadata
    says which model it is.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run directory not found")
    for s1, s2 in (
        (run_dir / "s1.safetensors", run_dir / "s2.safetensors"),
        (run_dir / "s1" / "s1.safetensors", run_dir / "s2" / "s2.safetensors"),
        (run_dir / "export" / "s1.safetensors", run_dir / "export" / "s2.safetensors"),
    ):
        if s1.is_file() and s2.is_file():
            return s1, s2
    from gsvkit.checkpoint import load_checkpoint

    found: dict[str, Path] = {}
    for folder in (run_dir, run_dir / "export"):
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.suffix in (".safetensors", ".ckpt", ".pth") and f.is_file():
                try:
                    found.setdefault(load_checkpoint(f).kind, f)
                except CheckpointError:
                    continue
    if "s1" not in found or "s2" not in found:
        raise DataError(f"{run_dir}: no exported s1 and s2 weights found; pass --s1 and --s2 explicitly")
    return found["s1"], found["s2"]


def create_voice(
    out_dir: str | os.PathLike,
    *,
    s1: str | os.PathLike,
    s2: str | os.PathLike,
    ref_audio: str | os.PathLike,
    ref_text: str,
    ref_lang: str,
    consent: str | Consent | dict,
    name: str | None = None,
    languages: Sequence[str] | None = None,
    aux_refs: Sequence[str | os.PathLike] = (),
    speaker: str | None = None,
    source: str | None = None,
    license: str | None = None,
    description: str = "",
    hubert: str | os.PathLike | None = None,
    bert: str | os.PathLike | None = None,
    sv: str | os.PathLike | None = None,
    vocoder: str | os.PathLike | None = None,
    overwrite: bool = False,
    allow_synthetic_reference: bool = False,
) -> Voice:
    """Bundle trained weights and a reference clip into a voice directory.

    The weights may be gsvkit checkpoints or official GPT-SoVITS files; both are written as gsvkit
    `.safetensors`. The reference must be 3-10 s (checked here, not at first use). With `hubert`, the reference's
    semantic tokens are stored too, so the voice then speaks without a HuBERT model at hand. v2Pro/v2ProPlus
    voices need `sv` (upstream's `sv/pretrained_eres2netv2w24s4ep4.ckpt`): the speaker embeddings of the clips are
    stored, so the voice speaks without it.
    `consent` is a statement or a `Consent` record (the speaker defaults to `speaker`); clips that carry the
    output watermark are refused unless `allow_synthetic_reference`.
    """
    from gsvkit import __version__
    from gsvkit.checkpoint import load_checkpoint, save_checkpoint
    from gsvkit.inference.bundle import check_pair
    from gsvkit.inference.reference import load_reference_16k

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"{out_dir}: directory exists and is not empty; choose another name or pass --overwrite")
    consent = new_consent(consent, speaker=speaker)
    ck1, ck2 = load_checkpoint(s1), load_checkpoint(s2)
    if ck1.kind != "s1":
        raise CheckpointError(f"{s1}: holds a {ck1.kind} model, expected s1 (GPT)")
    if ck2.kind != "s2":
        raise CheckpointError(f"{s2}: holds a {ck2.kind} model, expected s2 (SoVITS)")
    check_pair(ck1.config.model, ck2.config.model, s1, s2)
    version = ck2.config.model.version
    if ck2.config.model.is_pro and not sv:
        raise DataError(
            f"{s2}: a {version} voice stores its reference's speaker embedding, which needs the speaker-verification "
            "model: pass sv=PATH (CLI: --sv-model PATH), upstream's sv/pretrained_eres2netv2w24s4ep4.ckpt"
        )
    ref_lang = check_language(ref_lang, version, what="reference language")
    langs = [check_language(x, version) for x in languages] if languages else list(LANGUAGES[version])
    load_reference_16k(ref_audio)  # raises a clear AudioError for missing/short/long/silent clips
    aux_refs = [Path(a) for a in aux_refs]
    for a in aux_refs:
        load_reference_16k(a)
    if not allow_synthetic_reference:
        from gsvkit.safety.watermark import refuse_synthetic

        for clip in [Path(ref_audio), *aux_refs]:
            refuse_synthetic(clip, "this reference clip", "--allow-synthetic-reference")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_checkpoint(tmp / "s1.safetensors", ck1.state_dict, ck1.config, dict(ck1.info or {}))
        save_checkpoint(tmp / "s2.safetensors", ck2.state_dict, ck2.config, dict(ck2.info or {}))
        from gsvkit.inference.bundle import load_bundle

        # the weights really build both models (and a v3/v4 voice finds its vocoder)
        load_bundle(tmp / "s1.safetensors", tmp / "s2.safetensors", vocoder=vocoder)
        ref_name = "reference" + (Path(ref_audio).suffix.lower() or ".wav")
        shutil.copyfile(ref_audio, tmp / ref_name)
        aux_names = []
        for i, a in enumerate(aux_refs):
            aux_names.append(f"aux{i}{a.suffix.lower() or '.wav'}")
            shutil.copyfile(a, tmp / aux_names[-1])
        info = VoiceInfo(
            name=name or out_dir.name,
            version=version,
            reference=ReferenceInfo(audio=ref_name, text=ref_text.strip(), language=ref_lang),
            aux_references=aux_names,
            languages=langs,
            description=description,
            hubert=str(Path(hubert).resolve()) if hubert else None,
            bert=str(Path(bert).resolve()) if bert else None,
            sv=str(Path(sv).resolve()) if sv else None,
            vocoder=str(Path(vocoder).resolve()) if vocoder else None,
            provenance=Provenance(
                consent=consent,
                speaker=speaker,
                source=source,
                license=license,
                created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                tool=f"gsvkit {__version__}",
                s1_sha256=sha256_file(tmp / "s1.safetensors"),
                s2_sha256=sha256_file(tmp / "s2.safetensors"),
            ),
        )
        atomic_write_text(tmp / VOICE_FILE, info.model_dump_json(indent=2) + "\n")
        if hubert:
            from gsvkit.inference.reference import write_prompt_cache

            write_prompt_cache(load_voice(tmp), hubert)
        if ck2.config.model.is_pro:
            from gsvkit.inference.reference import write_speaker_cache

            write_speaker_cache(load_voice(tmp), sv)  # type: ignore[arg-type]
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException as err:
        from gsvkit.utils.io import disk_full, is_disk_full

        written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) if tmp.exists() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full(out_dir, written) from None
        raise
    return load_voice(out_dir)
