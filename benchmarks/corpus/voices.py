"""The Debian text-to-speech voices the corpus renders, and which human speaker each one is.

Several engines were built from recordings of the same person: CMU ARCTIC's `slt` is festival's HTS voice,
flite's `slt` and RHVoice's `slt`; `awb` (flite) is RHVoice's `alan`; `kal` is both festival's and flite's
diphone voice; `rab` (festival) is mbrola's `en1`. `human` names that person, so a speaker held out of training
can be held out across every engine that speaks with their voice. espeak-ng variants are formant settings,
not recordings; each is its own "human".

Free voices come from Debian main. The non-free ones (RHVoice, SVOX pico, mbrola, festival's rab) need the
contrib/non-free sources that `install.sh --non-free` adds, and are only used with `--non-free`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class VoiceSpec:
    """One engine voice. `name` is the corpus speaker id (unique, file-name safe)."""

    name: str
    engine: str  # espeak-ng, flite, festival, rhvoice, pico, mbrola
    voice: str  # the engine's own name for it
    human: str  # who the recordings are of; the unit a held-out split must keep together
    gender: str  # F or M, as the voice's documentation states
    free: bool  # in Debian main
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _espeak(variant: str, gender: str, base: str = "en-us") -> VoiceSpec:
    return VoiceSpec(f"espeak_{base.replace('-', '')}_{variant}", "espeak-ng", f"{base}+{variant}",
                     f"espeak-{base}-{variant}", gender, True, "formant synthesis; no recorded human")


VOICES: tuple[VoiceSpec, ...] = (
    VoiceSpec("festival_slt", "festival", "cmu_us_slt_arctic_hts", "slt", "F", True, "HTS, 32 kHz, CMU ARCTIC slt"),
    VoiceSpec("festival_kal", "festival", "kal_diphone", "kal", "M", True, "diphone, 16 kHz"),
    VoiceSpec("festival_ked", "festival", "ked_diphone", "ked", "M", True, "diphone, 16 kHz"),
    VoiceSpec("flite_slt", "flite", "slt", "slt", "F", True, "clustergen, CMU ARCTIC slt"),
    VoiceSpec("flite_awb", "flite", "awb", "awb", "M", True, "clustergen, CMU ARCTIC awb (Scottish English)"),
    VoiceSpec("flite_rms", "flite", "rms", "rms", "M", True, "clustergen, CMU ARCTIC rms"),
    VoiceSpec("flite_kal", "flite", "kal16", "kal", "M", True, "diphone, 16 kHz, same recordings as festival kal"),
    _espeak("m1", "M"),
    _espeak("m3", "M"),
    _espeak("m7", "M"),
    _espeak("f2", "F"),
    _espeak("f4", "F"),
    _espeak("m2", "M", "en-gb"),
    _espeak("f3", "F", "en-gb"),
    # Non-free (contrib/non-free sources; install.sh --non-free).
    VoiceSpec("rhvoice_slt", "rhvoice", "slt", "slt", "F", False, "RHVoice, CMU ARCTIC slt"),
    VoiceSpec("rhvoice_alan", "rhvoice", "alan", "awb", "M", False, "RHVoice alan = CMU ARCTIC awb"),
    VoiceSpec("rhvoice_bdl", "rhvoice", "bdl", "bdl", "M", False, "RHVoice, CMU ARCTIC bdl"),
    VoiceSpec("rhvoice_clb", "rhvoice", "clb", "clb", "F", False, "RHVoice, CMU ARCTIC clb"),
    VoiceSpec("pico_us", "pico", "en-US", "pico-en-US", "F", False, "SVOX pico"),
    VoiceSpec("pico_gb", "pico", "en-GB", "pico-en-GB", "F", False, "SVOX pico"),
    VoiceSpec("mbrola_us1", "mbrola", "mb-us1", "mbrola-us1", "F", False, "mbrola diphones via espeak-ng"),
    VoiceSpec("mbrola_us2", "mbrola", "mb-us2", "mbrola-us2", "M", False, "mbrola diphones via espeak-ng"),
    VoiceSpec("mbrola_us3", "mbrola", "mb-us3", "mbrola-us3", "M", False, "mbrola diphones via espeak-ng"),
    VoiceSpec("mbrola_en1", "mbrola", "mb-en1", "rab", "M", False, "mbrola en1 = festival rab"),
    VoiceSpec("festival_rab", "festival", "rab_diphone", "rab", "M", False, "festvox-rablpc16k (festlex-oald)"),
)


def select(names: list[str] | None, non_free: bool) -> list[VoiceSpec]:
    """The voices named (all free ones, plus the non-free ones with `non_free`, when `names` is None)."""
    by_name = {v.name: v for v in VOICES}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown voice(s) {unknown}; known: {', '.join(by_name)}")
        chosen = [by_name[n] for n in names]
        blocked = [v.name for v in chosen if not v.free and not non_free]
        if blocked:
            raise SystemExit(f"{blocked} are non-free voices; pass --non-free to use them")
        return chosen
    return [v for v in VOICES if v.free or non_free]


# ------------------------------------------------------------------------------------------------ rendering


def available(spec: VoiceSpec) -> str | None:
    """None when the voice can be rendered here, else what is missing."""
    exe = {"espeak-ng": "espeak-ng", "mbrola": "mbrola", "flite": "flite", "festival": "text2wave",
           "rhvoice": "RHVoice-test", "pico": "pico2wave"}[spec.engine]
    if shutil.which(exe) is None:
        return f"{exe} not installed"
    if spec.engine == "mbrola":
        if shutil.which("espeak-ng") is None:
            return "espeak-ng not installed"
        if not any(Path(d, spec.voice.removeprefix("mb-")).exists() for d in MBROLA_DIRS):
            return f"mbrola voice {spec.voice} not installed"
    if spec.engine == "festival":
        found = list(Path("/usr/share/festival/voices").glob(f"*/{spec.voice}"))
        if not found:
            return f"festival voice {spec.voice} not installed"
    return None


MBROLA_DIRS = ("/usr/share/mbrola", "/usr/share/mbrola/voices")


def render(spec: VoiceSpec, text: str, out_wav: Path, workdir: Path) -> None:
    """Speak `text` with `spec` into `out_wav` (the engine's own sampling rate). Raises on engine failure."""
    text_file = workdir / (out_wav.stem + ".txt")
    text_file.write_text(text + "\n", encoding="utf-8")
    if spec.engine in ("espeak-ng", "mbrola"):
        cmd = ["espeak-ng", "-v", spec.voice, "-w", str(out_wav), "-f", str(text_file)]
    elif spec.engine == "flite":
        cmd = ["flite", "-voice", spec.voice, "-f", str(text_file), "-o", str(out_wav)]
    elif spec.engine == "festival":
        cmd = ["text2wave", "-eval", f"(voice_{spec.voice})", str(text_file), "-o", str(out_wav)]
    elif spec.engine == "rhvoice":
        cmd = ["RHVoice-test", "-p", spec.voice, "-i", str(text_file), "-o", str(out_wav)]
    elif spec.engine == "pico":
        # pico2wave insists on a .wav name and takes the text as an argument; a leading space keeps a
        # sentence that starts with "-" from being read as an option.
        cmd = ["pico2wave", "-l", spec.voice, "-w", str(out_wav), " " + text]
    else:
        raise ValueError(spec.engine)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    text_file.unlink(missing_ok=True)
    if proc.returncode != 0 or not out_wav.is_file() or out_wav.stat().st_size <= 44:
        raise RuntimeError(f"{spec.name}: {' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr[-300:]}")
