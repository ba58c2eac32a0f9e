"""Server isolation: a keys file gives each key its own voices, models and loaded weights; empty keys are refused."""

from __future__ import annotations

import hashlib
import json

import httpx
import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from gsvkit.errors import AuthError
from gsvkit.serve.auth import load_keys
from gsvkit.serve.http import ServerSettings, create_app
from serving import SR, FakeBackend, Server

ALICE, BOB = "alice-secret-1", "bob-secret-2"


def fake_voice(folder, name):
    v = folder / name
    v.mkdir(parents=True)
    for f in ("s1.safetensors", "s2.safetensors"):
        (v / f).write_bytes(b"x")
    sf.write(v / "reference.wav", np.zeros(SR * 4, np.float32), SR)
    info = {
        "name": name,
        "version": "v2",
        "reference": {"audio": "reference.wav", "text": "hello", "language": "en"},
        "languages": ["en"],
        "provenance": {"consent": "signed form", "created": "2026-01-01T00:00:00+00:00", "tool": "t"},
    }
    (v / "voice.json").write_text(json.dumps(info))


@pytest.fixture()
def keyed(tmp_path):
    for who, voice in (("alice", "amy"), ("bob", "ben")):
        fake_voice(tmp_path / who / "voices", voice)
        (tmp_path / who / "models").mkdir()
        (tmp_path / who / "models" / f"{who}.safetensors").write_bytes(b"x")
    keys = {
        "keys": [
            {"name": "alice", "key": ALICE, "voices_dir": "alice/voices", "models_dir": "alice/models"},
            {"name": "bob", "key_sha256": hashlib.sha256(BOB.encode()).hexdigest(), "voices_dir": "bob/voices",
             "models_dir": "bob/models"},
        ]
    }  # fmt: skip
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(keys))
    backends: dict[str, FakeBackend] = {}

    def per_key(entry):
        return backends.setdefault(entry.name, FakeBackend())

    settings = ServerSettings(keys=load_keys(path))
    with Server(create_app(FakeBackend(), settings, per_key)) as url:
        yield url, backends, tmp_path


def test_a_key_reaches_only_its_own_voices_and_models(keyed):
    url, backends, root = keyed
    a, b = {"X-API-Key": ALICE}, {"Authorization": f"Bearer {BOB}"}
    assert [v["name"] for v in httpx.get(f"{url}/voices", headers=a).json()["voices"]] == ["amy"]
    assert [v["name"] for v in httpx.get(f"{url}/voices", headers=b).json()["voices"]] == ["ben"]
    q = {"text": "hello", "text_lang": "en"}
    assert httpx.get(f"{url}/tts", params={**q, "voice": "amy"}, headers=a).status_code == 200
    r = httpx.get(f"{url}/tts", params={**q, "voice": "ben"}, headers=a)  # bob's voice
    assert r.status_code == 403 and "not available to key:alice" in r.json()["message"]
    assert httpx.get(f"{url}/tts", params={**q, "voice": "nobody"}, headers=a).status_code == 403  # same answer
    ref = str(root / "bob" / "voices" / "ben" / "reference.wav")
    r = httpx.get(f"{url}/tts", params={**q, "ref_audio_path": ref, "consent": "x" * 10}, headers=a)
    assert r.status_code == 403  # bob's files are outside alice's folders
    # Model switches stay inside the key's folder and change only that key's loaded models.
    bob_model = str(root / "bob" / "models" / "bob.safetensors")
    assert httpx.get(f"{url}/set_gpt_weights", params={"weights_path": bob_model}, headers=a).status_code == 403
    assert httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "bob.safetensors"}, headers=b).status_code == 200
    assert backends["bob"].loaded and not backends["alice"].loaded
    assert backends["alice"].calls[-1]["user"] == "key:alice"  # who asked, for the audit line
    assert httpx.get(f"{url}/voices").status_code == 401
    assert httpx.get(f"{url}/voices", headers={"X-API-Key": "guess"}).status_code == 401


def test_bad_keys_files(tmp_path):
    p = tmp_path / "keys.yaml"
    for body, match in [
        ({"keys": [{"name": "a", "key": ""}]}, "empty"),
        ({"keys": [{"name": "a", "key": "k1-secret"}, {"name": "a", "key": "k2-secret"}]}, "unique"),
        ({"keys": [{"name": "a", "key": "same-secret"}, {"name": "b", "key": "same-secret"}]}, "own"),
        ({"keys": [{"name": "a", "key": "k1-secret", "voices_dir": "missing"}]}, "not a folder"),
        ({"keys": []}, "keys"),
    ]:
        p.write_text(yaml.safe_dump(body))
        with pytest.raises(AuthError, match=match):
            load_keys(p)


@pytest.mark.parametrize(
    "args, env", [([], {"GSVKIT_API_KEY": ""}), (["--api-key", "  "], {}), (["--api-key", ""], {})]
)
def test_empty_key_is_refused_at_start(args, env, monkeypatch):
    from gsvkit.cli import app

    monkeypatch.delenv("GSVKIT_API_KEY", raising=False)
    r = CliRunner().invoke(app, ["serve", *args], env=env)
    assert r.exit_code == 2 and "empty" in r.output and "Traceback" not in r.output
    with pytest.raises(ValueError, match="empty"):
        ServerSettings(api_key="")
