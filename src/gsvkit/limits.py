"""Budgets for everything gsvkit reads from outside: weight files, archives, YAML, configs, uploads, audio.

Each limit is a named constant; the error that enforces it (`LimitError`) names the constant, so a legitimate
input over a budget can be let through by raising it (`gsvkit.limits.NAME = ...` before the call).
Values are far above anything the official models or real datasets need, and far below what exhausts a machine.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

from gsvkit.errors import LimitError

# --- pickles inside torch zip checkpoints (checkpoint/unpickler.py)
MAX_PICKLE_BYTES = 256 * 1024 * 1024  # the data.pkl entry (an s2 v2 file's is about 100 KB)
MAX_PICKLE_OBJECTS = 5_000_000  # objects in the unpickled tree, shared references counted each time they occur
MAX_PICKLE_DEPTH = 200  # container nesting
MAX_PICKLE_CONTAINER = 1_000_000  # items in one list/tuple/dict/set
# --- zip archives (torch checkpoints)
MAX_ZIP_RATIO = 50  # declared inflated size / compressed size of one entry (torch stores entries uncompressed)
MAX_ZIP_ENTRIES = 100_000
# --- architectures read from a config (a weight file's or a YAML's), checked before any tensor is allocated
MAX_LAYERS = 256  # any *layers field, s1 n_layer, and list lengths such as upsample_rates
MAX_WIDTH = 65536  # any channel / dim / vocabulary / kernel field
MAX_LIST_ITEMS = 64  # architecture lists (upsample rates, resblock kernels)
# --- YAML (configs, --set values, key files, prepare configs)
MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_NODES = 100_000  # nodes after alias expansion (a 600-byte "billion laughs" expands to billions)
# --- HTTP model switches (serve/http.py)
MAX_SWITCH_FILE_BYTES = 8 * 1024**3  # a weight file a switch may load
MAX_SWITCH_SECONDS = 300.0  # a switch that takes longer is abandoned and its slot released
# --- audio and transcripts (prepare, references)
MIN_SAMPLE_RATE = 8000  # Hz
MAX_CHARS_PER_SECOND = 40.0  # transcript characters per second of audio (fast speech is about 20)


def over(limit: str, what: str, value: float, bound: float) -> LimitError:
    """The error for `what` exceeding the named limit `limit` (a constant of this module)."""
    return LimitError(
        f"{what}: {value:,} exceeds the limit {limit}={bound:,}; if the input is genuine, raise gsvkit.limits.{limit}"
    )


def short_repr(value: Any, width: int = 80) -> str:
    """repr() bounded in size and nesting: an error message never prints an expanded value."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxstring, r.maxother = 3, 6, 6, 6, width, width
    text = r.repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------------------------------------------ YAML
def load_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load` with alias expansion bounded by MAX_YAML_NODES (checked on the node graph, before
    any Python object is built). Raises `yaml.YAMLError` for bad syntax, `LimitError` over a budget."""
    import yaml

    if len(text) > MAX_YAML_BYTES:
        raise over("MAX_YAML_BYTES", f"{source}: YAML size", len(text), MAX_YAML_BYTES)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_nodes(node)
        if expanded > MAX_YAML_NODES:
            raise LimitError(
                f"{source}: its aliases expand to more than MAX_YAML_NODES={MAX_YAML_NODES:,} nodes; if the "
                "file is genuine, raise gsvkit.limits.MAX_YAML_NODES"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml_file(path: Path, error: type[Exception], what: str) -> Any:
    """Read and parse the YAML file `path` with `load_yaml`'s budgets; every failure (missing, unreadable, over
    MAX_YAML_BYTES, not UTF-8, bad syntax) is raised as `error` with a message naming the file and `what` it is."""
    import yaml

    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise over("MAX_YAML_BYTES", f"{path}: YAML size", size, MAX_YAML_BYTES)
        return load_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def _expanded_nodes(root: Any) -> int:
    """Nodes of the tree the graph stands for (aliases expanded), computed in linear time with memoisation."""
    import yaml

    sizes: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are being counted: meeting one again means a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if not done and id(node) in open_:
            raise LimitError("YAML with a recursive alias (a node that contains itself) is not supported")
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            sizes[id(node)] = 1
            continue
        if done:
            open_.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes.get(id(c), 1) for c in children), MAX_YAML_NODES + 1)
        else:
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


# ------------------------------------------------------------------------------------------------ architecture
def check_architecture(model: Any, source: str) -> None:
    """Refuse a model config whose sizes no real model has (thousands of layers, million-wide layers)."""
    for name, value in model:
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            limit = "MAX_LAYERS" if "layer" in name else "MAX_WIDTH"
            bound = MAX_LAYERS if "layer" in name else MAX_WIDTH
            if name == "sv_dim":  # the Pro speaker embedding is 20480 wide and scales with the ERes2Net width
                bound = MAX_WIDTH * 4
            if value > bound:
                raise over(limit, f"{source}: model.{name}", value, bound)
        elif isinstance(value, list):
            flat = [v for item in value for v in (item if isinstance(item, list) else [item])]
            if len(value) > MAX_LIST_ITEMS or len(flat) > MAX_LIST_ITEMS:
                raise over("MAX_LIST_ITEMS", f"{source}: model.{name} items", len(flat), MAX_LIST_ITEMS)
            for v in flat:
                if isinstance(v, int) and v > MAX_WIDTH:
                    raise over("MAX_WIDTH", f"{source}: model.{name}", v, MAX_WIDTH)
