"""Durable checkpoints for training runs: atomic, checksummed, with retention.

A run's state is a dict of named entries. Each entry is stored according to what it is:

* plain data (``None``, bool, int, float, str, and lists, tuples and str-keyed dicts of those;
  numpy scalars are accepted): JSON. It comes back as JSON gives it: tuples as lists, numpy
  scalars as Python scalars, dict subclasses (``defaultdict``) as plain dicts; floats exactly.
* a :class:`numpy.random.Generator` (PCG64 or PCG64DXSM): its bit-generator state and seed
  sequence (:func:`rng_state`), so that draws, and ``spawn``, continue exactly.
* any other pytree (equinox modules, optax states, lists of them): flattened with
  :func:`jax.tree_util.tree_flatten`. Array leaves (``jax.Array``, ``np.ndarray``, numpy scalars)
  are stored bit for bit with their dtype and JAX weak type (typed PRNG keys as their key data;
  dtypes that ``.npy`` cannot describe, such as bfloat16, as raw bytes); bool/int/float/str
  leaves go to the JSON part; callable leaves (an activation function held by a module) are
  configuration, not state: only their name is stored, and on load the template's own callable
  is used after checking the name. Any other leaf raises ``TypeError`` at save.

File format (version 1): ``ckpt-{step:08d}.npz`` is an ordinary uncompressed zip archive that
:func:`numpy.load` opens, holding ``meta.json`` (format, version, step, library versions, and a
description of every entry: kind, node types, leaf paths, shapes, dtypes) and one
``leaf_NNNNN.npy`` per array leaf. Its zip archive comment, the last bytes of the file, is
``pnn-checkpoint sha256=`` followed by 64 hex digits: the SHA-256 of every byte of the file
before those digits. A file whose trailer is missing (truncated) or whose hash differs
(corrupt) is refused. The bytes are a function of the state alone (no timestamps).

Durability: the file is written to a temporary name in the same directory, flushed and
``fsync``-ed, renamed over the final name with :func:`os.replace` (atomic: a reader sees the old
file or the new one, never a part), and the directory is ``fsync``-ed so the rename survives a
power cut. Only then are old checkpoints deleted. One writer per directory is assumed: temporary
files left by a crashed writer are removed by the next successful save.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import secrets
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox
import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "rng_from_state",
    "CheckpointError",
    "CheckpointWarning",
]

FORMAT = "pnn-checkpoint"
VERSION = 1
_TRAILER = b"pnn-checkpoint sha256="
_DIGEST_LEN = 64  # hex digits of a SHA-256
_NAME = re.compile(r"^ckpt-(\d{8,})\.npz$")
_TMP = re.compile(r"^\.ckpt-\d{8,}\.npz\.tmp-")
_RNGS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM}


class CheckpointError(RuntimeError):
    """Checkpoints exist but none of them can be used (every one was refused)."""


class CheckpointWarning(UserWarning):
    """A checkpoint was refused (corrupt, truncated, unreadable) and an older one is used."""


class _Refused(Exception):
    """Internal: why one checkpoint file cannot be used."""


# --------------------------------------------------------------------------- rng


def rng_state(gen: np.random.Generator) -> dict:
    """JSON-serialisable state of a numpy Generator: bit-generator state plus seed sequence.

    Raises:
        TypeError: when ``gen`` is not a :class:`numpy.random.Generator`.
        ValueError: when its bit generator is not one of PCG64, PCG64DXSM.
    """
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"rng_state expects a numpy.random.Generator, got {type(gen).__name__}; "
                        "create one with numpy.random.default_rng(seed)")
    bg = gen.bit_generator
    name = type(bg).__name__
    if name not in _RNGS:
        raise ValueError(f"rng_state supports bit generators {sorted(_RNGS)}, got {name}")
    ss = bg.seed_seq
    seq = None
    if isinstance(ss, np.random.SeedSequence):
        entropy = ss.entropy
        if entropy is not None and not isinstance(entropy, int):
            entropy = [int(e) for e in np.atleast_1d(entropy)]
        seq = {"entropy": entropy, "spawn_key": [int(k) for k in ss.spawn_key],
               "pool_size": int(ss.pool_size), "n_children_spawned": int(ss.n_children_spawned)}
    return {"bit_generator_state": _jsonable(bg.state), "seed_sequence": seq}


def rng_from_state(state: Mapping) -> np.random.Generator:
    """A Generator that continues exactly where the one given to :func:`rng_state` stood.

    ``state`` may also be a bare ``bit_generator.state`` dict (then ``spawn`` is not restored).

    Raises:
        ValueError: when ``state`` is not such a dict or names an unsupported bit generator.
    """
    if not isinstance(state, Mapping):
        raise ValueError("rng_from_state expects a dict from rng_state, got "
                         f"{type(state).__name__}")
    bg_state = state.get("bit_generator_state", state)
    seq = state.get("seed_sequence")
    name = bg_state.get("bit_generator") if isinstance(bg_state, Mapping) else None
    if name not in _RNGS:
        raise ValueError(f"rng_from_state: unsupported or missing bit generator {name!r}; "
                         f"supported: {sorted(_RNGS)}")
    try:
        ss = None
        if seq is not None:
            ss = np.random.SeedSequence(seq["entropy"], spawn_key=tuple(seq["spawn_key"]),
                                        pool_size=seq["pool_size"],
                                        n_children_spawned=seq["n_children_spawned"])
        bg = _RNGS[name](ss)
        bg.state = dict(bg_state)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"rng_from_state: invalid {name} state ({type(e).__name__}: {e})") from e
    return np.random.Generator(bg)


# --------------------------------------------------------------------------- describing state


def _is_plain(x) -> bool:
    if x is None or isinstance(x, (bool, int, float, str, np.bool_, np.integer, np.floating)):
        return True
    if isinstance(x, (list, tuple)):
        return all(_is_plain(v) for v in x)
    if isinstance(x, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in x.items())
    return False


def _jsonable(x):
    if isinstance(x, (np.bool_, np.integer, np.floating)):
        return x.item()
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


def _kind(value) -> str:
    if isinstance(value, np.random.Generator):
        return "rng"
    return "json" if _is_plain(value) else "pytree"


def _node_types(treedef) -> list[str]:
    """Pre-order node types with their arity; class names only, so modules may move."""
    data = treedef.node_data()
    if data is None:
        return ["*"]
    children = treedef.children()
    out = [f"{data[0].__qualname__}/{len(children)}"]
    for c in children:
        out.extend(_node_types(c))
    return out


def _is_key(dtype) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _describe_leaf(leaf) -> dict:
    """The part of a leaf that must agree between checkpoint and template."""
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
        return {"kind": "array", "shape": [int(s) for s in np.shape(leaf)],
                "dtype": str(leaf.dtype)}
    if isinstance(leaf, (bool, int, float, str)):
        return {"kind": "py", "type": type(leaf).__name__}
    if callable(leaf):
        return {"kind": "callable",
                "name": getattr(leaf, "__qualname__", None) or type(leaf).__qualname__}
    return {"kind": "object", "type": type(leaf).__qualname__}


def _leaf_text(d: dict) -> str:
    if d["kind"] == "array":
        return f"an array of shape {tuple(d['shape'])} and dtype {d['dtype']}"
    if d["kind"] == "py":
        return f"a Python {d['type']}"
    if d["kind"] == "callable":
        return f"the callable {d['name']!r}"
    return f"an object of type {d['type']}"


def _npy_roundtrips(dtype) -> bool:
    try:
        descr = np.lib.format.dtype_to_descr(dtype)
        return np.lib.format.descr_to_dtype(descr) == dtype
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- encoding


def _encode(state: Mapping[str, Any], step: int) -> bytes:
    entries, members = [], []
    for name, value in state.items():
        kind = _kind(value)
        if kind == "json":
            entries.append({"name": name, "kind": kind, "value": _jsonable(value)})
            continue
        if kind == "rng":
            entries.append({"name": name, "kind": kind, "state": rng_state(value)})
            continue
        with_path, treedef = jax.tree_util.tree_flatten_with_path(value)
        leaves = []
        for path, leaf in with_path:
            where = f"state[{name!r}] leaf {jax.tree_util.keystr(path) or '(root)'}"
            d = {"path": jax.tree_util.keystr(path), **_describe_leaf(leaf)}
            if d["kind"] == "array":
                d["weak"] = bool(getattr(leaf, "weak_type", False))
                d["jax"] = isinstance(leaf, jax.Array)
                arr = leaf
                if _is_key(leaf.dtype):
                    d["prng_impl"] = str(jax.random.key_impl(leaf))
                    arr = jax.random.key_data(leaf)
                arr = np.asarray(arr)
                if arr.dtype.hasobject:
                    raise TypeError(f"{where}: object arrays cannot be checkpointed; convert it "
                                    "to a numeric dtype")
                if not _npy_roundtrips(arr.dtype):
                    # e.g. bfloat16: .npy would read it back as void; keep the bytes exactly
                    d["raw"] = str(arr.dtype)
                    arr = np.ascontiguousarray(arr).view(np.dtype(f"u{arr.dtype.itemsize}"))
                d["member"] = f"leaf_{len(members):05d}.npy"
                members.append((d["member"], arr))
            elif d["kind"] == "py":
                d["value"] = leaf
            elif d["kind"] == "object":
                hint = (" store the Generator as its own top-level entry"
                        if isinstance(leaf, np.random.Generator) else
                        " only arrays, bool/int/float/str and callables can be pytree leaves")
                raise TypeError(f"{where} has type {type(leaf).__qualname__}, which cannot be "
                                f"checkpointed:{hint}")
            leaves.append(d)
        entries.append({"name": name, "kind": kind, "treedef": repr(treedef),
                        "nodes": _node_types(treedef), "leaves": leaves})

    meta = {"format": FORMAT, "version": VERSION, "step": step,
            "versions": {"jax": jax.__version__, "numpy": np.__version__,
                         "equinox": equinox.__version__, "optax": optax.__version__},
            "entries": entries}
    try:
        meta_bytes = json.dumps(meta, indent=1, allow_nan=True).encode()
    except TypeError as e:  # pragma: no cover - _is_plain keeps this from happening
        raise TypeError(f"checkpoint metadata is not JSON-serialisable: {e}") from e

    buf = io.BytesIO()
    # ZipInfo with the default 1980 date: no timestamps, so the bytes depend on the state alone
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(zipfile.ZipInfo("meta.json"), meta_bytes)
        for member, arr in members:
            with zf.open(zipfile.ZipInfo(member), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
        zf.comment = _TRAILER + b"0" * _DIGEST_LEN
    data = buf.getvalue()
    body = data[:-_DIGEST_LEN]
    return body + hashlib.sha256(body).hexdigest().encode()


# --------------------------------------------------------------------------- reading


def _read_verified(path: Path) -> tuple[dict, zipfile.ZipFile]:
    """Read, verify the checksum, parse the metadata; raises _Refused saying why not."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _Refused(f"cannot be read ({e.strerror or e})") from e
    n = len(_TRAILER) + _DIGEST_LEN
    if len(data) < n or data[-n:-_DIGEST_LEN] != _TRAILER:
        raise _Refused(f"no checksum trailer at its end ({len(data)} bytes): the file is "
                       "truncated, or was not written by pnn.checkpoint")
    stored = data[-_DIGEST_LEN:].decode("ascii", "replace")
    actual = hashlib.sha256(data[:-_DIGEST_LEN]).hexdigest()
    if stored != actual:
        raise _Refused(f"checksum mismatch (stored sha256 {stored[:12]}..., contents hash to "
                       f"{actual[:12]}...): the file is corrupt")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        meta = json.loads(zf.read("meta.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise _Refused(f"checksum verifies but the archive cannot be parsed ({e})") from e
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise _Refused(f"format {meta.get('format')!r} version {meta.get('version')!r}; this "
                       f"reader supports {FORMAT!r} version {VERSION}")
    m = _NAME.match(path.name)
    if m and int(m.group(1)) != meta.get("step"):
        raise _Refused(f"its name says step {int(m.group(1))} but it holds step "
                       f"{meta.get('step')} (renamed?)")
    return meta, zf


def _list(directory: Path) -> list[tuple[int, Path]]:
    """Checkpoint files in the directory, newest step first."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, key=lambda sp: sp[0], reverse=True)


def _mismatch(path: Path, step: int, what: str) -> ValueError:
    return ValueError(
        f"checkpoint {path.name} (step {step}) does not match this configuration: {what}. "
        "Build `like` from the configuration the run was saved with, or start this "
        "configuration in a fresh directory.")


def _restore_array(d: dict, arr: np.ndarray, template):
    if "raw" in d:
        arr = arr.view(jnp.dtype(d["raw"]))
    if "prng_impl" in d:
        out = jax.random.wrap_key_data(jnp.asarray(arr), impl=d["prng_impl"])
    elif isinstance(template, (jax.Array, jax.ShapeDtypeStruct)):
        out = jnp.asarray(arr)
        if d.get("weak"):
            # only the default dtype of a Python scalar can be weak; rebuild it that way
            zero = {"i": 0, "u": 0, "f": 0.0, "c": 0j}.get(arr.dtype.kind)
            base = jnp.full(arr.shape, zero) if zero is not None else None
            if base is not None and base.dtype == arr.dtype and base.weak_type:
                out = jnp.asarray(arr.item()) if arr.ndim == 0 else base.at[...].set(out)
    elif isinstance(template, np.generic):
        return arr[()]
    else:
        return arr
    sharding = getattr(template, "sharding", None)
    return jax.device_put(out, sharding) if sharding is not None else out


def _decode_pytree(entry: dict, template, zf: zipfile.ZipFile, path: Path, step: int):
    name = entry["name"]
    with_path, treedef = jax.tree_util.tree_flatten_with_path(template)
    nodes = _node_types(treedef)
    if nodes != entry["nodes"]:
        i = next((k for k, (a, b) in enumerate(zip(entry["nodes"], nodes)) if a != b),
                 min(len(nodes), len(entry["nodes"])))
        saved = entry["nodes"][i] if i < len(entry["nodes"]) else "(end)"
        here = nodes[i] if i < len(nodes) else "(end)"
        raise _mismatch(path, step, f"entry {name!r} has a different pytree structure: node "
                        f"{i} (pre-order) is {saved} in the checkpoint but {here} in the "
                        f"template (type/number of children)")
    if len(with_path) != len(entry["leaves"]):  # pragma: no cover - implied by equal nodes
        raise _mismatch(path, step, f"entry {name!r} has {len(entry['leaves'])} leaves in the "
                        f"checkpoint but {len(with_path)} in the template")
    bad = []
    for (kp, leaf), d in zip(with_path, entry["leaves"]):
        want = {"path": jax.tree_util.keystr(kp), **_describe_leaf(leaf)}
        have = {k: d[k] for k in want if k in d}
        if want != have:
            bad.append((d, want))
    if bad:
        d, want = bad[0]
        more = f" ({len(bad) - 1} more leaves differ)" if len(bad) > 1 else ""
        raise _mismatch(path, step, f"entry {name!r} leaf {d['path'] or '(root)'} is "
                        f"{_leaf_text(d)} in the checkpoint but {_leaf_text(want)} in the "
                        f"template{more}")
    leaves = []
    for (_, leaf), d in zip(with_path, entry["leaves"]):
        if d["kind"] == "array":
            arr = np.lib.format.read_array(zf.open(d["member"]), allow_pickle=False)
            leaves.append(_restore_array(d, arr, leaf))
        elif d["kind"] == "py":
            leaves.append(d["value"])
        else:  # callable: configuration, taken from the template (its name was checked)
            leaves.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _decode(meta: dict, zf: zipfile.ZipFile, like: Mapping, path: Path, step: int) -> dict:
    entries = {e["name"]: e for e in meta["entries"]}
    missing, extra = sorted(set(like) - set(entries)), sorted(set(entries) - set(like))
    if missing or extra:
        raise _mismatch(path, step, f"the checkpoint holds entries {sorted(entries)}, the "
                        f"template asks for {sorted(like)} (missing from the checkpoint: "
                        f"{missing}; not in the template: {extra})")
    out = {}
    for name, template in like.items():
        e = entries[name]
        kind = _kind(template)
        if kind != e["kind"]:
            text = {"json": "plain data", "rng": "a numpy Generator", "pytree": "a pytree"}
            raise _mismatch(path, step, f"entry {name!r} is {text[e['kind']]} in the checkpoint "
                            f"but {text[kind]} in the template")
        if kind == "json":
            out[name] = e["value"]
        elif kind == "rng":
            out[name] = rng_from_state(e["state"])
        else:
            out[name] = _decode_pytree(e, template, zf, path, step)
    return out


# --------------------------------------------------------------------------- public API


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        # some filesystems do not support fsync on directories; nothing more can be done there
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def save_checkpoint(directory: str | os.PathLike, state: Mapping[str, Any], *, step: int,
                    keep: int = 2) -> Path:
    """Write ``state`` atomically as ``directory/ckpt-{step:08d}.npz`` and prune old ones.

    Args:
        directory: created if missing.
        state: entries by name (see the module docstring for what each kind of value becomes).
        step: a non-negative integer that orders checkpoints (the newest is resumed). Saving
            the same step again replaces that checkpoint.
        keep: how many good (verifying) checkpoints to keep, the new one included. Older ones,
            and any that fail verification, are deleted once the new one is safely in place.

    Returns: the path of the new checkpoint.

    Raises:
        ValueError: for a bad ``step``/``keep``/``state``, or when the directory already holds
            a good checkpoint with a larger step (another run, or a later point of this one).
        TypeError: for a state value that cannot be stored (a leaf that is not an array,
            bool/int/float/str or callable).
        CheckpointError: when the file just written does not read back intact.
        OSError: from the filesystem; the previous checkpoints are then untouched.
    """
    _check_save(state, step, keep)
    step = int(step)
    payload = _encode(state, step)  # before touching the disk: a bad state leaves no trace
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _refuse_a_later_checkpoint(directory, step)
    final = directory / f"ckpt-{step:08d}.npz"
    _write_durably(directory, final, payload)
    try:
        _read_verified(final)
    except _Refused as e:
        raise CheckpointError(f"the checkpoint just written, {final}, does not read back: {e}; "
                              "older checkpoints were left in place") from e
    _prune(directory, final, keep)
    return final


def _check_save(state, step, keep) -> None:
    """Refuse a bad ``step``, ``keep`` or ``state`` (see :func:`save_checkpoint`)."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    if not isinstance(state, Mapping):
        raise ValueError(f"state must be a dict of named entries, got {type(state).__name__}")
    bad_keys = [k for k in state if not (isinstance(k, str) and k)]
    if bad_keys:
        raise ValueError(f"state keys must be non-empty strings, got {bad_keys!r}")


def _refuse_a_later_checkpoint(directory: Path, step: int) -> None:
    """Raise ``ValueError`` when ``directory`` holds a good checkpoint past ``step`` (a refused
    one is superseded, and pruned after the save)."""
    for s, p in _list(directory):
        if s <= step:
            break
        try:
            _read_verified(p)
        except _Refused:
            continue
        raise ValueError(f"{directory} already holds a good checkpoint at step {s} > {step} "
                         f"({p.name}): it belongs to another run or a later point of this one. "
                         "Resume it with load_checkpoint, or save this run in a fresh directory.")


def _write_durably(directory: Path, final: Path, payload: bytes) -> None:
    """Write ``payload`` to a private temporary name, fsync it, rename it to ``final`` and fsync
    the directory: ``final`` is either absent or whole, whenever the process stops."""
    tmp = directory / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "xb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def _prune(directory: Path, final: Path, keep: int) -> None:
    """Keep ``final`` and the newest ``keep - 1`` other checkpoints that verify; delete the rest
    and any temporary file a crashed writer left."""
    good = 1
    for s, p in _list(directory):
        if p == final:
            continue
        if good < keep:
            try:
                _read_verified(p)
                good += 1
                continue
            except _Refused:
                pass
        p.unlink(missing_ok=True)
    for p in directory.iterdir():
        if _TMP.match(p.name):  # left by a writer that crashed before its rename
            p.unlink(missing_ok=True)
    _fsync_dir(directory)


def load_checkpoint(directory: str | os.PathLike,
                    like: Mapping[str, Any]) -> tuple[dict, int] | None:
    """Load the newest checkpoint in ``directory`` that verifies.

    Args:
        like: the same entry names as the saved state; for pytree entries a template with the
            same structure, leaf shapes and dtypes (a freshly initialised state, or
            ``jax.ShapeDtypeStruct`` leaves from ``eqx.filter_eval_shape``). Restored arrays
            take the template leaf's type (jax or numpy) and sharding. For plain-data entries
            any plain value (e.g. ``None``), for generators any Generator.

    Returns: ``(state, step)``, or ``None`` when the directory holds no checkpoint at all.

    Warns:
        CheckpointWarning: for each newer checkpoint that was refused (naming the file and
            why) when an older good one is used instead.

    Raises:
        CheckpointError: when checkpoints exist but every one is refused (the message lists
            each file and the reason).
        ValueError: when the newest good checkpoint does not match ``like`` (other entries,
            pytree structure, leaf shapes or dtypes): a configuration problem, not corruption,
            so no fallback is attempted.
    """
    if not isinstance(like, Mapping):
        raise ValueError(f"like must be a dict of templates, got {type(like).__name__}")
    directory = Path(directory)
    files = _list(directory)
    if not files:
        return None
    refused = []
    for step, path in files:
        try:
            meta, zf = _read_verified(path)
        except _Refused as e:
            refused.append((path, str(e)))
            continue
        for p, why in refused:
            warnings.warn(f"refusing checkpoint {p}: {why}; falling back to {path.name} "
                          f"(step {step})", CheckpointWarning, stacklevel=2)
        with zf:
            return _decode(meta, zf, like, path, step), step
    lines = "\n".join(f"  {p.name}: {why}" for p, why in refused)
    raise CheckpointError(f"no usable checkpoint in {directory}: all {len(refused)} found were "
                          f"refused:\n{lines}\nRestart the run from scratch in a fresh directory "
                          "(or restore these files from a backup).")
