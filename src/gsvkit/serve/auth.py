"""Who is calling the server, and what they may reach.

Three modes:
- no key: every caller is "anonymous" and sees the server's voices and models folders;
- one key (`--api-key` / `GSVKIT_API_KEY`): callers with it are "api-key"; an empty key is refused at start, since
  an empty `GSVKIT_API_KEY` would otherwise silently mean "authentication off";
- a keys file (`--keys keys.yaml`): each key has a name and its own voices and models folders, and its own loaded
  models. A key lists and uses only the voices in its folder (any other voice name answers 403, whether or not it
  exists elsewhere), switches weights only inside its models folder, and a switch changes only its own models.

```yaml
keys:
  - name: alice
    key: "a long random secret"        # or key_sha256: <hex sha256 of the secret>, so the file holds no secret
    voices_dir: voices/alice           # relative paths are relative to the keys file
    models_dir: models/alice
```
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gsvkit.errors import AuthError

ENV_KEY = "GSVKIT_API_KEY"


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    key: str | None = Field(None, description="the secret itself")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="or its sha256 (hex)")
    voices_dir: Path | None = None
    models_dir: Path | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> KeyEntry:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key and key_sha256")
        if self.key is not None:
            check_key_value(self.key, f"key of {self.name!r}", in_file=True)
        return self

    @property
    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.encode()).digest()
        return bytes.fromhex(self.key_sha256 or "")


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry] = Field(min_length=1)


def check_key_value(value: str | None, what: str = "the API key", in_file: bool = False) -> str:
    """A key that would protect nothing (empty or blank) is an error, not "authentication off"."""
    if value is None or not value.strip():
        unset = f", or leave it unset (unset {ENV_KEY}, drop --api-key) to serve without authentication"
        hint = "" if in_file else unset
        raise AuthError(f"{what} is empty: give a secret{hint}")
    return value


def env_api_key() -> str | None:
    """`GSVKIT_API_KEY` when set; set but empty is an error (the CLI layer would otherwise read it as unset)."""
    if ENV_KEY not in os.environ:
        return None
    return check_key_value(os.environ[ENV_KEY], f"{ENV_KEY}")


def load_keys(path: str | os.PathLike) -> KeysFile:
    """Read and check a keys file; folders are resolved relative to it; names and secrets must be unique."""
    from gsvkit.limits import read_yaml_file

    path = Path(path)
    raw = read_yaml_file(path, AuthError, "keys file")
    try:
        keys = KeysFile.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise AuthError(f"{path}: {loc}: {first['msg']} (see `gsv serve --help` for the keys file format)") from None
    names = [k.name for k in keys.keys]
    if len(set(names)) != len(names):
        raise AuthError(f"{path}: key names must be unique")
    if len({k.digest for k in keys.keys}) != len(keys.keys):
        raise AuthError(f"{path}: two entries share one secret; give every key its own")
    for k in keys.keys:
        for attr in ("voices_dir", "models_dir"):
            d = getattr(k, attr)
            if d is not None:
                d = d if d.is_absolute() else path.parent / d
                if not d.is_dir():
                    raise AuthError(f"{path}: {attr} of {k.name!r} ({d}) is not a folder")
                setattr(k, attr, d.resolve())
    return keys


@dataclass
class Principal:
    """One caller's view of the server: a name for the audit log, its folders, and its backend."""

    name: str
    voices_dir: Path | None
    models_dir: Path | None
    backend: Any
    switch_lock: threading.Lock = field(default_factory=threading.Lock)


class Gatekeeper:
    """Maps a request's key to its `Principal` (None when the key is missing or wrong)."""

    def __init__(
        self,
        default: Principal,
        keys: KeysFile | None = None,
        api_key: str | None = None,
        backend_factory: Callable[[KeyEntry], Any] | None = None,
    ) -> None:
        self.default = default
        self.api_key = api_key
        self.keys = keys
        self._factory = backend_factory
        self._principals: dict[str, Principal] = {}
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.keys is None and not self.api_key

    def identify(self, given: str) -> Principal | None:
        if self.open:
            return self.default
        if self.keys is None:
            ok = hmac.compare_digest(given.encode(), (self.api_key or "").encode())
            return self.default if ok else None
        digest = hashlib.sha256(given.encode()).digest()
        match = None
        for entry in self.keys.keys:  # compare against every entry: the time taken says nothing about which
            if hmac.compare_digest(digest, entry.digest):
                match = entry
        return self._principal(match) if match is not None else None

    def _principal(self, entry: KeyEntry) -> Principal:
        with self._lock:
            p = self._principals.get(entry.name)
            if p is None:
                backend = self._factory(entry) if self._factory is not None else self.default.backend
                p = Principal(f"key:{entry.name}", entry.voices_dir, entry.models_dir, backend)
                self._principals[entry.name] = p
            return p
