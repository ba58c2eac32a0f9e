"""Read PyTorch zip checkpoints (`torch.save` files) without running any code they name.

A `.pth`/`.ckpt` file is a zip archive: `<folder>/data.pkl` is a pickle describing the object tree, and each
tensor's bytes live in `<folder>/data/<key>`. Unpickling with plain `pickle`/`torch.load(weights_only=False)`
calls whatever global the pickle names — an official file could run `os.system`. Here every global goes through
an allow-list that maps it to one of our own harmless builders (tensor rebuild, ordered dict, a plain-dict stand-in
for upstream's `utils.HParams` config object); any other global is refused before anything is called, with an
error naming it. Tensor bytes are read by us from the zip entries, so no torch deserialisation code runs either.

GPT-SoVITS also writes files whose first two bytes `PK` are replaced by a version tag (`HEADER_VERSIONS`); they
are read by putting `PK` back, as upstream does.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gsvkit import limits
from gsvkit.errors import CheckpointError, LimitError

# First two bytes written by upstream's `my_save2` in place of the zip magic "PK".
HEADER_VERSIONS: dict[bytes, str] = {
    b"00": "v1",
    b"01": "v2",
    b"02": "v3",
    b"03": "v3-LoRA",
    b"04": "v4-LoRA",
    b"05": "v2Pro",
    b"06": "v2ProPlus",
    b"07": "v5dev",
    b"08": "v5turbo",
}

# torch.<Name>Storage pickled as the storage "type" of each tensor; it only tells us the element dtype.
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_TORCH_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, name)
    for name in ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
}
# Module names under which upstream's config class is pickled (`utils.HParams`, depending on how it was run).
_HPARAMS_MODULES = ("utils", "GPT_SoVITS.utils", "module.utils")
# Lightning pickles its hyper-parameter container by reference; it is a plain dict with attribute access.
_ATTRIBUTE_DICT_MODULES = (
    "pytorch_lightning.utilities.parsing",
    "lightning.pytorch.utilities.parsing",
    "lightning.fabric.utilities.data",
    "lightning_fabric.utilities.data",
)


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it, before (or without) reading its bytes: enough for `gsv info`."""

    storage_key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class TorchFile:
    """What `read_torch_file` found: the unpickled object tree plus how the container looked."""

    obj: Any
    header_version: str | None  # "v2Pro" etc. when the file starts with a version tag instead of "PK"
    folder: str  # the archive's inner folder name (it varies: "archive", a timestamp, the file stem)
    entries: list[str]


class PlainRecord(dict):
    """Stand-in for pickled config objects (`utils.HParams`, Lightning's `AttributeDict`): just their fields."""

    def __setstate__(self, state: Any) -> None:
        # HParams pickles its attributes as a `__dict__` state; a (dict_state, slots_state) pair is also legal.
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.update(state)


def plain(obj: Any) -> Any:
    """Turn `PlainRecord`s (and their nesting) into ordinary dicts; tuples become lists (JSON-friendly)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


class _NoState:
    """Our placeholders refuse pickle's BUILD, so a crafted file cannot overwrite their fields."""

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"unexpected state for {type(self).__name__}")


@dataclass(frozen=True)
class _StorageRef(_NoState):
    key: str
    dtype: torch.dtype
    numel: int


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> Any:
    # Mirrors torch._utils._rebuild_tensor_v2's arguments; requires_grad, hooks and metadata carry no data.
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuild without a storage reference")
    return _Rebuild(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_tensor_v3(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, dtype: Any, *_: Any
) -> Any:
    # v3 stores an untyped (byte) storage plus the element dtype separately.
    if not isinstance(storage, _StorageRef) or not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError("tensor rebuild (v3) with unexpected arguments")
    itemsize = torch.empty(0, dtype=dtype).element_size()
    typed = _StorageRef(storage.key, dtype, storage.numel // itemsize)
    return _rebuild_tensor(typed, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    return data  # a Parameter is its data here


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or not isinstance(data, (bytes, bytearray)) or dtype.hasobject:
        raise pickle.UnpicklingError("numpy scalar with unexpected arguments")
    return np.frombuffer(bytes(data), dtype=dtype)[0].item()


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol-2 pickles store `bytes` as `_codecs.encode(str, "latin1")`.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode with unexpected arguments")
    return text.encode("latin1")


def _safe_reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    # copyreg._reconstructor (protocol 0/1 objects): only our own stand-in classes may be created this way.
    if cls is not PlainRecord:
        raise pickle.UnpicklingError("copyreg._reconstructor for an unexpected class")
    return PlainRecord()


@dataclass(frozen=True)
class _Rebuild(_NoState):
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "defaultdict"): defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("torch", "device"): str,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("_codecs", "encode"): _latin1_bytes,
}
# Plain constructors of builtin values: calling them can only build data. (Not bytes/bytearray: `bytes(10**12)`
# would be a one-opcode memory bomb; protocol 2 spells bytes through `_codecs.encode` anyway.)
for _name, _type in (
    ("object", object),
    ("dict", dict),
    ("list", list),
    ("tuple", tuple),
    ("int", int),
    ("float", float),
    ("str", str),
    ("bool", bool),
):
    _ALLOWED[("builtins", _name)] = _type
for _module in _HPARAMS_MODULES:
    _ALLOWED[(_module, "HParams")] = PlainRecord
for _module in _ATTRIBUTE_DICT_MODULES:
    _ALLOWED[(_module, "AttributeDict")] = PlainRecord


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves globals only through an allow-list of harmless builders.

    `find_class` is the single door through which a pickle reaches any Python object (GLOBAL, STACK_GLOBAL, INST,
    OBJ and EXT opcodes all go through it), so refusing there means nothing else can run. Persistent ids (torch's
    tensor storages) become `_StorageRef`s that only name a zip entry.
    """

    def __init__(self, data: bytes, source: str):
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)  # protocol-2 pickles spell a few modules the Python 2 way
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        raise CheckpointError(
            f"{self.source}: refused to load: its pickle references the Python global '{module}.{name}', which a "
            "weight file never needs (it could run arbitrary code). Only load files from sources you trust; "
            "if this is a genuine GPT-SoVITS file, please report it."
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"malformed storage reference {pid!r:.80}")
        return _StorageRef(key, storage_type.dtype, numel)


@dataclass(frozen=True)
class _StorageType(_NoState):
    dtype: torch.dtype


# -------------------------------------------------------------------------------------------- container reading
def sniff(path: Path) -> tuple[str, bytes]:
    """Classify a file by its first bytes: ("safetensors" | "torch-zip" | "torch-legacy" | "unknown", head)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or (head[:2] in HEADER_VERSIONS and head[2:4] == b"\x03\x04"):
        return "torch-zip", head
    if head[:2] == b"\x80\x02" and len(head) >= 3 and head[2:3] == b"\x8a":
        return "torch-legacy", head  # pre-1.6 torch.save: a bare pickle stream starting with a magic number
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors", head
    return "unknown", head


def read_torch_file(path: str | Path, *, lazy: bool = False) -> TorchFile:
    """Unpickle a torch zip file safely. `lazy=True` returns `TensorRef`s and reads no tensor bytes.

    Raises `CheckpointError` naming the file for a bad or truncated archive, missing entries, CRC mismatches,
    storages shorter than their tensors, and any disallowed global.
    """
    path = Path(path)
    kind, head = sniff(path)
    if kind != "torch-zip":
        raise CheckpointError(f"{path}: not a PyTorch zip checkpoint")
    header_version = HEADER_VERSIONS.get(head[:2]) if head[:2] != b"PK" else None
    try:
        if header_version is None:
            zf = zipfile.ZipFile(path)
        else:
            # Upstream's trick: the tag replaced the zip magic; restore it in memory, as upstream's loader does.
            zf = zipfile.ZipFile(io.BytesIO(b"PK" + path.read_bytes()[2:]))
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(
            f"{path}: truncated or corrupted (not a readable zip archive: {err}); re-download or re-export the file"
        ) from None
    with zf:
        _check_archive(zf, path.stat().st_size, str(path))
        entries = zf.namelist()
        pkl = [n for n in entries if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            what = "no" if not pkl else "several"
            raise CheckpointError(f"{path}: zip archive has {what} '<folder>/data.pkl' entry; not a torch checkpoint")
        folder = pkl[0][: -len("/data.pkl")]
        source = str(path)
        data = _read_entry(zf, pkl[0], source)
        byteorder = "little"
        if f"{folder}/byteorder" in entries:
            byteorder = _read_entry(zf, f"{folder}/byteorder", source).decode("ascii", "replace").strip()
        _scan_pickle(data, source)
        try:
            obj = RestrictedUnpickler(data, source).load()
        except CheckpointError:
            raise
        except Exception as err:  # a damaged pickle raises many kinds of errors
            raise CheckpointError(f"{path}: corrupted object table ({folder}/data.pkl: {err})") from None
        _check_tree(obj, source)
        loader = _StorageLoader(zf, folder, byteorder, source)
        try:
            obj = _materialise(obj, loader, lazy)
        except RecursionError:
            raise CheckpointError(f"{path}: corrupted object table (nested too deeply)") from None
    return TorchFile(obj=obj, header_version=header_version, folder=folder, entries=entries)


def _check_archive(zf: zipfile.ZipFile, file_size: int, source: str) -> None:
    """Sizes the central directory declares, checked against the file and MAX_ZIP_RATIO before inflating."""
    infos = zf.infolist()
    if len(infos) > limits.MAX_ZIP_ENTRIES:
        raise limits.over("MAX_ZIP_ENTRIES", f"{source}: zip entries", len(infos), limits.MAX_ZIP_ENTRIES)
    packed = 0
    for info in infos:
        packed += info.compress_size
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise CheckpointError(
                f"{source}: corrupted zip entry '{info.filename}': stored entry declares {info.file_size} bytes "
                f"but occupies {info.compress_size}"
            )
        if info.file_size > max(info.compress_size, 1024) * limits.MAX_ZIP_RATIO:
            raise limits.over(
                "MAX_ZIP_RATIO",
                f"{source}: zip entry '{info.filename}' inflates {info.compress_size:,} bytes to",
                info.file_size,
                max(info.compress_size, 1024) * limits.MAX_ZIP_RATIO,
            )
    if packed > file_size:
        raise CheckpointError(
            f"{source}: corrupted zip archive: entries declare {packed:,} bytes but the file has {file_size:,}"
        )
    for info in infos:
        if info.filename.endswith("/data.pkl") and info.file_size > limits.MAX_PICKLE_BYTES:
            raise limits.over("MAX_PICKLE_BYTES", f"{source}: {info.filename}", info.file_size, limits.MAX_PICKLE_BYTES)


def _scan_pickle(data: bytes, source: str) -> None:
    """Refuse memo indices beyond the pickle's own length before the C unpickler sizes its memo table by them."""
    import pickletools

    count = 0
    try:
        for op, arg, _pos in pickletools.genops(data):
            count += 1
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET") and int(arg or 0) > count:
                raise CheckpointError(f"{source}: corrupted object table (memo index {arg} at opcode {count})")
            if op.name == "STOP":
                return
    except CheckpointError:
        raise
    except Exception as err:  # genops raises ValueError for bad opcodes and truncated arguments
        raise CheckpointError(f"{source}: corrupted object table ({err})") from None


def _check_tree(obj: Any, source: str) -> None:
    """Bound the unpickled tree as its users will walk it: shared references count once per occurrence.

    A "billion laughs" pickle (tuples of tuples of one shared tuple) is a few hundred bytes that stands for
    2**40 objects; counted here in time linear in its distinct objects, with memoised subtree sizes.
    """
    sizes: dict[int, int] = {}
    keep: list[Any] = []  # keeps counted objects alive so their ids stay unique during the walk
    stack: list[tuple[Any, int, bool]] = [(obj, 0, False)]
    cap = limits.MAX_PICKLE_OBJECTS + 1
    while stack:
        node, depth, done = stack.pop()
        if id(node) in sizes and not done:
            continue
        if isinstance(node, dict):
            children = [*node.keys(), *node.values()]
        elif isinstance(node, (list, tuple, set, frozenset)):
            children = list(node)
        else:
            sizes[id(node)] = 1
            keep.append(node)
            continue
        if not done:
            if len(children) > limits.MAX_PICKLE_CONTAINER:
                raise _limit(source, "MAX_PICKLE_CONTAINER", "items in one container", len(children))
            if depth > limits.MAX_PICKLE_DEPTH:
                raise _limit(source, "MAX_PICKLE_DEPTH", "container nesting", depth)
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        if total >= cap:
            raise _limit(source, "MAX_PICKLE_OBJECTS", "objects (shared references expanded)", total)
        sizes[id(node)] = total
        keep.append(node)


def _limit(source: str, name: str, what: str, value: int) -> LimitError:
    err = limits.over(name, f"{source}: refused to load: its pickle has {what}", value, getattr(limits, name))
    return LimitError(f"{err} (a weight file never needs this many)")


def _read_entry(zf: zipfile.ZipFile, name: str, source: str) -> bytes:
    try:
        return zf.read(name)
    except KeyError:
        raise CheckpointError(f"{source}: missing zip entry '{name}' (truncated or incomplete file)") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{source}: corrupted zip entry '{name}' ({err})") from None
    except Exception as err:  # zlib errors for compressed entries
        raise CheckpointError(f"{source}: corrupted zip entry '{name}' ({err})") from None


class _StorageLoader:
    """Reads each storage's bytes once and views tensors into it."""

    def __init__(self, zf: zipfile.ZipFile, folder: str, byteorder: str, source: str):
        self.zf, self.folder, self.byteorder, self.source = zf, folder, byteorder, source
        self.cache: dict[str, torch.Tensor] = {}

    def storage(self, ref: _StorageRef) -> torch.Tensor:
        if ref.key in self.cache:
            return self.cache[ref.key]
        name = f"{self.folder}/data/{ref.key}"
        raw = _read_entry(self.zf, name, self.source)
        itemsize = torch.empty(0, dtype=ref.dtype).element_size()
        expected = ref.numel * itemsize
        if len(raw) < expected:
            raise CheckpointError(
                f"{self.source}: truncated storage '{name}': expected {expected} bytes, found {len(raw)}"
            )
        if expected == 0:
            flat = torch.empty(0, dtype=ref.dtype)
        else:
            buf = torch.frombuffer(bytearray(raw[:expected]), dtype=torch.uint8)
            if self.byteorder == "big" and itemsize > 1:
                buf = buf.view(-1, itemsize).flip(-1).reshape(-1)
            flat = buf.view(ref.dtype)
        self.cache[ref.key] = flat
        return flat

    def tensor(self, rb: _Rebuild) -> torch.Tensor:
        _check_extent(rb, self.source)
        flat = self.storage(rb.storage)
        if rb.offset == 0 and _is_contiguous(rb.shape, rb.stride) and flat.numel() == _numel(rb.shape):
            return flat.view(rb.shape)
        # A view into a shared or larger storage: copy so no two tensors alias (safetensors refuses aliasing).
        return flat.as_strided(rb.shape, rb.stride, rb.offset).clone()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    expected = 1
    for s, st in zip(reversed(shape), reversed(stride), strict=True):
        if s != 1 and st != expected:
            return False
        expected *= s
    return True


def _check_extent(rb: _Rebuild, source: str) -> None:
    if len(rb.shape) != len(rb.stride) or any(s < 0 for s in rb.shape) or any(st < 0 for st in rb.stride):
        raise CheckpointError(f"{source}: corrupted tensor description (shape {rb.shape}, stride {rb.stride})")
    if _numel(rb.shape) == 0:
        return
    last = rb.offset + sum((s - 1) * st for s, st in zip(rb.shape, rb.stride, strict=True))
    if rb.offset < 0 or last >= rb.storage.numel:
        raise CheckpointError(
            f"{source}: corrupted tensor description: shape {rb.shape} at offset {rb.offset} needs "
            f"{last + 1} elements but storage '{rb.storage.key}' holds {rb.storage.numel}"
        )


def _materialise(obj: Any, loader: _StorageLoader, lazy: bool) -> Any:
    """Replace `_Rebuild` placeholders by tensors (or `TensorRef`s), keeping the container structure."""
    if isinstance(obj, _Rebuild):
        if lazy:
            _check_extent(obj, loader.source)
            return TensorRef(obj.storage.key, obj.storage.dtype, obj.shape, obj.stride, obj.offset)
        return loader.tensor(obj)
    if isinstance(obj, PlainRecord):
        out = PlainRecord()
        for k, v in obj.items():
            out[k] = _materialise(v, loader, lazy)
        return out
    if isinstance(obj, dict):
        items = [(k, _materialise(v, loader, lazy)) for k, v in obj.items()]
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, list):
        return [_materialise(v, loader, lazy) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, loader, lazy) for v in obj)
    if isinstance(obj, _StorageRef):
        # A bare storage (not inside a tensor): expose it as a flat tensor.
        return TensorRef(obj.key, obj.dtype, (obj.numel,), (1,), 0) if lazy else loader.storage(obj).clone()
    return obj
