"""Re-run the hostile-input battery: every case through the real `gsv` command line, each in its own process.

Hostile files are generated into a temporary folder by `tests/hostile.py` (the builders the tests use). Each case
runs with a timeout; the script counts tracebacks, hangs (timeouts), wrong exit codes and the peak resident
memory of every process (bound: 1.5 GB), then runs the HTTP cases (tests/test_hostile_http.py) the same way.

    python benchmarks/hostile_battery.py [--timeout 60] [--rss-mb 1536]

Exit status 0 when every case answered as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the hostile-file builders shared with the tests

import hostile  # noqa: E402


@dataclass
class Case:
    name: str
    args: list[str]  # arguments of `gsv`, or a full command when it starts with "python"
    expect: int = 2  # exit status of a one-line refusal


def build_cases(d: Path) -> list[Case]:
    laughs = hostile.laughs_checkpoint(d / "laughs.pth")
    bomb = hostile.zip_bomb_checkpoint(d / "bomb.pth", inflated_mb=2000)
    lie = hostile.lying_zip_checkpoint(d / "lie.pth")
    memo = hostile.torch_zip(d / "memo.pth", hostile.memo_bomb_pickle())
    deep = hostile.torch_zip(d / "deep.pth", hostile.deep_pickle(100_000))
    nested = hostile.nested_metadata_safetensors(d / "nested.safetensors")
    layers = hostile.huge_architecture_safetensors(d / "layers.safetensors", n_layer=5000)
    yaml = hostile.yaml_laughs(d / "laughs.yaml")
    latin = d / "latin1.txt"
    latin.write_bytes("Caf\xe9 au lait.".encode("latin-1"))
    folder = d / "in"
    folder.mkdir()
    hostile.wav(folder / "cut.wav", sr=32000, samples=96000, truncate_to=1 / 3)
    hostile.wav(folder / "long.wav", sr=32000, samples=96000)
    (folder / "t.list").write_text("cut.wav|s|EN|Hello there.\nlong.wav|s|EN|" + "word " * 200_000 + "\n")
    empty = d / "empty.list"
    empty.write_text("")
    private = d / "private"
    private.mkdir()
    hostile.wav(private / "v.wav", sr=32000, samples=96000)
    uploads = d / "uploads"
    uploads.mkdir()
    (uploads / "t.list").write_text(f"{private / 'v.wav'}|s|EN|Hello there, how are you.\n")
    cases = []
    for f in (laughs, bomb, lie, memo, deep, nested, layers):
        cases.append(Case(f"info {f.name}", ["info", str(f)]))
        cases.append(Case(f"convert {f.name}", ["convert", str(f), str(d / f"out-{f.stem}.safetensors")]))
    cases += [
        Case("train --pretrained laughs.pth", ["train", "s1", str(d), "-o", str(d / "run"), "--pretrained",
                                               str(laughs)]),
        Case("synth --s1 laughs.pth", ["synth", "Hello.", "--s1", str(laughs), "--s2", str(laughs), "-o",
                                       str(d / "o.wav"), "--device", "cpu"]),
        Case("train -c laughs.yaml", ["train", "s1", str(d), "-o", str(d / "run2"), "-c", str(yaml)]),
        Case("--set python tag", ["train", "s1", str(d), "-o", str(d / "run3"), "--set",
                                  "train.epochs=!!python/object/apply:os.system ['true']"]),
        Case("synth latin-1 --text-file", ["synth", "--text-file", str(latin), "--s1", "a", "--s2", "b"]),
        Case("synth --threads -1", ["synth", "Hi.", "--threads", "-1"]),
        Case("synth --device cuda (no CUDA)", ["synth", "Hi.", "--device", "cuda"]),
        Case("train --devices 0", ["train", "s1", str(d), "-o", str(d / "r"), "--devices", "0"]),
        Case("train --accelerator tpu9", ["train", "s1", str(d), "-o", str(d / "r"), "--accelerator", "tpu9"]),
        Case("serve --max-jobs 0", ["serve", "--max-jobs", "0"]),
        Case("serve --max-upload-mb 0", ["serve", "--max-upload-mb", "0"]),
        Case("serve --port 70000", ["serve", "--port", "70000"]),
        Case("prepare truncated + long transcript", ["prepare", str(folder), str(folder / "t.list"), "-o",
                                                     str(d / "ds1"), "-q"], expect=1),
        Case("prepare empty .list", ["prepare", str(empty), "-o", str(d / "ds2"), "-q"], expect=1),
        Case("prepare .list outside inputs", ["prepare", str(uploads / "t.list"), "-o", str(d / "ds3"), "-q"],
             expect=1),
        Case("HTTP battery (tests/test_hostile_http.py)",
             ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests/test_hostile_http.py")],
             expect=0),
    ]  # fmt: skip
    return cases


def run(case: Case, timeout: float) -> tuple[int | None, float, float, str]:
    """(exit status or None on timeout, seconds, peak RSS in MB, combined output) of one case's process."""
    gsv = [sys.executable, "-m", "gsvkit.cli"]
    cmd = [sys.executable, *case.args[1:]] if case.args[0] == "python" else [*gsv, *case.args]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        status, rss_kb = None, 0
        while True:
            pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rss_kb = os.waitstatus_to_exitcode(code), usage.ru_maxrss
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                _, _, usage = os.wait4(proc.pid, 0)
                rss_kb = usage.ru_maxrss
                break
            time.sleep(0.02)
        proc.returncode = status if status is not None else -9
        seconds = time.monotonic() - start
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return status, seconds, rss_kb / 1024, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--rss-mb", type=float, default=1536.0, help="peak resident memory allowed per case")
    args = ap.parse_args()
    tracebacks = hangs = wrong = heavy = 0
    with tempfile.TemporaryDirectory(prefix="gsv-hostile-") as tmp:
        cases = build_cases(Path(tmp))
        print(f"{'case':48} {'exit':>4} {'want':>4} {'s':>6} {'MB':>6}  first line")
        for case in cases:
            status, seconds, mb, text = run(case, args.timeout)
            tb = "Traceback (most recent call last)" in text and case.expect != 0
            lines = [x.strip() for x in text.splitlines() if x.strip() and set(x.strip()) - set("╭╮╰╯─│ ")]
            said = [x for x in lines if x.startswith(("error:", "│ Invalid value", "Invalid value"))] or lines
            first = (said[0] if said else "").strip("│ ")[:90]
            tracebacks += tb
            hangs += status is None
            wrong += status is not None and status != case.expect
            heavy += mb > args.rss_mb
            flag = " TRACEBACK" if tb else " HANG" if status is None else ""
            print(f"{case.name[:48]:48} {status if status is not None else '-':>4} {case.expect:>4} {seconds:6.1f} "
                  f"{mb:6.0f}  {first}{flag}")  # fmt: skip
    print(
        f"\n{len(cases)} cases: {tracebacks} tracebacks, {hangs} hangs, {wrong} wrong exit codes, "
        f"{heavy} over {args.rss_mb:g} MB RSS"
    )
    return int(bool(tracebacks or hangs or wrong or heavy))


if __name__ == "__main__":
    sys.exit(main())
