"""Trained models as files: :func:`save_model` and :func:`load_model`.

A model file is one file, written atomically (a temporary file in the same folder, fsync,
rename), made of three parts::

    PNN-MODEL <version> <header bytes> <header sha256>\\n      (one ASCII line)
    <header: UTF-8 JSON of exactly <header bytes> bytes>
    <payload: the prediction state's leaves, equinox.tree_serialise_leaves>

The header holds everything needed to rebuild the model without the training data or the
physics: format and version; method, config (as a dict) and seed; the physical layers' specs;
the physical system's name, constructor kwargs and per-layer seeds (so the simulator is rebuilt
as it was), with a digest of the simulator's arrays; the task and its options (so ``pnn eval``
rebuilds the same split); the input preprocessing (feature names, the data's standardisation
mean and std, whatever the algorithm fitted, such as PhyLL's MinMax scaler); class names; package
versions; the record's validation and test accuracy when given; the SHA-256 of the trainable
parameters (``params_sha256``, as in the result record) and the payload's length and SHA-256.

The payload holds only what prediction needs (:meth:`pnn.train.loop.Algorithm.predict_state`):
no optimiser state, no generators, no digital twin. Loading verifies both checksums, rebuilds the
algorithm from the header with a stand-in for the data (never refitting anything, never querying
the physics: :meth:`~pnn.train.loop.Algorithm.template_state`), reads the leaves into that
template and checks the parameters' digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import platform
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from pnn import registry
from pnn.config import config_from_dict
from pnn.cost import Ledger
from pnn.fileio import atomic_write_bytes
from pnn.train.loop import TrainedModel, layer_physics, params_digest

__all__ = ["save_model", "load_model", "read_header", "ModelFileError", "FORMAT", "VERSION",
           "standardise", "SavedData"]

FORMAT = "pnn-model"
VERSION = 1
_MAGIC = b"PNN-MODEL"


class ModelFileError(ValueError):
    """A model file that is not one, is damaged (checksum, truncation) or of another version."""


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("pnn", "jax", "jaxlib", "equinox", "optax", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else list(o) if isinstance(o, (tuple, set)) else str(o)))


def _serialise(tree) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    return buf.getvalue()


def _inner(layer):
    for _ in range(64):
        nxt = getattr(layer, "layer", None)
        if nxt is None or nxt is layer:
            break
        layer = nxt
    return layer


def save_model(model, path, *, record: dict | None = None, system: str | None = None,
               system_kwargs: dict | None = None, data=None, system_seed: int | None = None,
               task: dict | None = None) -> Path:
    """Write ``model`` (a :class:`pnn.train.loop.TrainedModel`) to one file at ``path``.

    Args:
        record: the training record; its validation/test accuracy, selected epoch and
            perturbations are kept in the header (``record["system"]`` is the default system).
        system: the registered simulator the layers were built with (``pnn.registry.SYSTEMS``),
            so :func:`load_model` can rebuild them; ``None`` for a digital method, or for layers
            that cannot be rebuilt (instruments, a user's layer: pass ``layers=`` to load).
        system_kwargs: the simulator's constructor kwargs beyond shape, seed and name.
        system_seed: the seed given to :func:`pnn.registry.build_layers` (layer ``k`` has seed
            ``1000 * system_seed + k``); default: the model's seed.
        data: the dataset (default: the one the model was trained on): class names, feature
            names and the standardisation statistics recorded in ``data.info``.
        task: ``{"name": ..., "options": {...}, "seed": ...}``: how to reload the task's split
            (what ``pnn eval`` uses); optional.

    Returns: the path written.
    """
    algo = model.algorithm
    data = data if data is not None else algo.data
    if system is None and record is not None and record.get("system") in registry.SYSTEMS:
        system = record["system"]
    if not registry.get_trainer(model.method).uses_physical_layers:
        system = None
    if system is not None and system not in registry.SYSTEMS:
        raise ValueError(f"save_model: system must be a registered simulator "
                         f"({', '.join(sorted(registry.SYSTEMS))}) or None, got {system!r}")
    pstate = algo.predict_state(model.state)
    payload = _serialise(pstate)
    seed = int(algo.seed)
    layers = list(algo.layers)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "method": model.method,
        "config": dataclasses.asdict(algo.config),
        "seed": seed,
        "layers": [layer.spec.to_dict() for layer in layers],
        "system": _system_header(system, system_kwargs,
                                 seed if system_seed is None else int(system_seed), layers),
        "trained_on": [type(_inner(layer)).__name__ for layer in layers],
        "perturbations": (record or {}).get("perturbations", []),
        "task": task,
        "data": {"name": getattr(data, "name", None),
                 "describe": data.describe() if hasattr(data, "describe") else {}},
        "classes": [str(c) for c in data.classes],
        "preprocessing": _preprocessing(data, algo.fitted()),
        "versions": _versions(),
        "record": None if record is None else {
            k: record.get(k) for k in ("val_accuracy", "test_accuracy", "train_accuracy",
                                       "selected_epoch", "params_sha256")},
        "params_sha256": params_digest(algo.params(model.state)),
        "payload": {"encoding": "equinox.tree_serialise_leaves", "bytes": len(payload),
                    "sha256": hashlib.sha256(payload).hexdigest(),
                    "entries": sorted(pstate)},
    }
    head = json.dumps(_jsonable(header), indent=1).encode("utf-8")
    first = b"%s %d %d %s\n" % (_MAGIC, VERSION, len(head),
                                 hashlib.sha256(head).hexdigest().encode("ascii"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, first + head + payload)


def _system_header(system: str | None, kwargs: dict | None, seed: int, layers) -> dict | None:
    """How to rebuild the layers: the registered system, its kwargs, the seed of each layer
    (as :func:`pnn.registry.build_layers` gives them) and a digest of each one's physics."""
    if system is None:
        return None
    return {"name": system, "kwargs": dict(kwargs or {}), "seed": seed,
            "layer_seeds": [seed * 1000 + k for k in range(len(layers))],
            "physics": [layer_physics(_inner(layer)) for layer in layers]}


def _preprocessing(data, fitted: dict) -> dict:
    """The features, the data's standardisation (when recorded) and what the algorithm
    fitted: what turns raw feature rows into the model's inputs."""
    info = dict(getattr(data, "info", {}) or {})
    mean, std = info.get("standardisation_mean"), info.get("standardisation_std")
    return {
        "features": [str(f) for f in data.feature_names],
        "standardisation": (None if mean is None or std is None else
                            {"mean": [float(v) for v in mean],
                             "std": [float(v) for v in std],
                             "formula": "(x_raw - mean) / std"}),
        "fitted": fitted,
    }


def _read(path) -> tuple[dict, bytes]:
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {path} does not exist; write one with "
                                f"`pnn train --save {path}` or pnn.save_model") from None
    nl = blob.find(b"\n", 0, 256)
    fields = blob[:nl].split(b" ") if nl > 0 else []
    if len(fields) != 4 or fields[0] != _MAGIC:
        raise ModelFileError(f"{path} is not a pnn model file: expected a first line "
                             f"'PNN-MODEL <version> <header bytes> <sha256>', got "
                             f"{blob[:60]!r}; write models with "
                             "pnn.save_model or `pnn train --save`")
    try:
        version, n_head, head_sha = int(fields[1]), int(fields[2]), fields[3].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise ModelFileError(f"{path}: damaged first line {blob[:nl]!r} (expected "
                             "'PNN-MODEL <version> <header bytes> <sha256>')") from None
    if version != VERSION:
        raise ModelFileError(f"{path} is a pnn model file of format version {version}; this "
                             f"pnn reads version {VERSION}: load it with the pnn that wrote it "
                             "(see its header's 'versions')")
    head = blob[nl + 1:nl + 1 + n_head]
    if len(head) != n_head:
        raise ModelFileError(f"{path} is truncated: expected a {n_head}-byte header, the file "
                             f"holds {len(head)} bytes after its first line; write it again")
    if hashlib.sha256(head).hexdigest() != head_sha:
        raise ModelFileError(f"{path}: the header's SHA-256 does not match the one recorded "
                             "on the first line: the file is damaged; write it again")
    header = json.loads(head.decode("utf-8"))
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: expected format {FORMAT!r}, got "
                             f"{header.get('format')!r}")
    payload = blob[nl + 1 + n_head:]
    want = header["payload"]
    if len(payload) != want["bytes"]:
        raise ModelFileError(f"{path} is {'truncated' if len(payload) < want['bytes'] else 'longer than written'}: "
                             f"expected {want['bytes']} bytes of parameters after the header, "
                             f"found {len(payload)}; write it again")
    if hashlib.sha256(payload).hexdigest() != want["sha256"]:
        raise ModelFileError(f"{path}: the parameters' SHA-256 does not match the header's "
                             f"({want['sha256'][:16]}...): the file is damaged; write it again")
    return header, payload


def read_header(path) -> dict:
    """The verified header of a model file (both checksums checked)."""
    return _read(path)[0]


@dataclasses.dataclass(frozen=True)
class SavedData:
    """What a loaded model knows of its data: names, sizes and the preprocessing statistics.

    Stands in for the dataset when an algorithm is rebuilt from a model file: the training
    arrays are one zero row (enough to construct; nothing is fitted on them, the fitted
    preprocessing is restored from the header)."""

    classes: tuple
    feature_names: tuple
    name: str
    info: dict

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def x_train(self):
        return np.zeros((1, self.n_features), np.float32)

    @property
    def y_train(self):
        return np.zeros(1, np.int32)

    @property
    def x_val(self):
        return np.zeros((0, self.n_features), np.float32)

    @property
    def y_val(self):
        return np.zeros(0, np.int32)

    def describe(self) -> dict:
        return {"name": self.name, "classes": list(self.classes),
                "features": list(self.feature_names), **self.info}


def rebuild_layers(header: dict, path="model") -> list:
    """The simulator layers the model was trained on, rebuilt from the header (same system,
    kwargs, seeds and names). A warning names any layer whose arrays differ from the ones
    recorded (the simulator's code changed since)."""
    specs = header["layers"]
    if not specs:
        return []
    system = header.get("system")
    if not system:
        raise ValueError(f"{path}: the model was trained on layers that cannot be rebuilt from "
                         f"the file ({', '.join(header.get('trained_on', [])) or 'unknown'}); "
                         f"pass layers=[...] with shapes "
                         f"{[(s['n_in'], s['n_out']) for s in specs]} (for instruments: "
                         "`pnn eval --instrument`)")
    if system["name"] not in registry.system_names():  # never import code a file names
        raise ValueError(f"{path}: the model was trained on the system {system['name']!r}, "
                         f"which is not registered here (registered and installed: "
                         f"{', '.join(registry.system_names())}); pnn does not import or run "
                         f"code named by a model file: register it first "
                         f"(pnn.registry.register_system) or pass layers=[...]")
    layers = [registry.make_system(system["name"], s["n_in"], s["n_out"], seed=seed,
                                   name=s["name"], **system["kwargs"])
              for s, seed in zip(specs, system["layer_seeds"])]
    for k, (layer, want) in enumerate(zip(layers, system.get("physics") or [])):
        got = layer_physics(layer)
        if want and got.get("arrays_sha256") != want.get("arrays_sha256"):
            warnings.warn(f"{path}: the rebuilt {system['name']} layer {k} differs from the one "
                          "the model was trained on (the simulator's code or defaults changed "
                          "since); predictions may differ from the recorded ones", stacklevel=3)
    return layers


def load_model(path, *, layers=None, ledger=None):
    """Read a model file written by :func:`save_model`; returns a
    :class:`pnn.train.loop.TrainedModel` predicting exactly as the saved one did.

    Args:
        layers: the physical layers to run on (instruments, a perturbed simulator); default:
            the simulator rebuilt from the header (:func:`rebuild_layers`). Their shapes must
            match the saved specs.
        ledger: counts the physical queries of predictions (default: a fresh one).

    The returned model has a ``header`` attribute (the file's header).

    Raises:
        ModelFileError: not a model file, another format version, a checksum mismatch or a
            truncated file (the message names the file).
        ValueError: layers of the wrong shapes, or layers needed but not rebuildable.
    """
    header, payload = _read(path)
    trainer = registry.get_trainer(header["method"])
    config = config_from_dict(trainer.Config, header["config"], where=f"{path}: config",
                              stored=True)
    if layers is None:
        layers = rebuild_layers(header, path)
    layers = list(layers)
    specs = header["layers"]
    got = [(layer.spec.n_in, layer.spec.n_out) for layer in layers]
    want = [(s["n_in"], s["n_out"]) for s in specs]
    if got != want:
        raise ValueError(f"{path}: the model needs {len(want)} physical layer(s) of shapes "
                         f"(n_in, n_out) {want}, got {got}; give layers of those shapes")
    pre = header["preprocessing"]
    info = {}
    if pre.get("standardisation"):
        info = {"standardisation_mean": pre["standardisation"]["mean"],
                "standardisation_std": pre["standardisation"]["std"]}
    data = SavedData(tuple(header["classes"]), tuple(pre["features"]),
                     header["data"].get("name") or "saved", info)
    ledger = ledger if ledger is not None else Ledger()
    options = {}
    if trainer.needs_differentiable_model and not all(isinstance(lay, eqx.Module)
                                                      for lay in layers):
        # prediction never differentiates: the deployed layers stand in for the model
        options["model_layers"] = rebuild_layers(header, path) if header.get("system") else None
    options = {k: v for k, v in options.items() if v is not None}
    algo = trainer.Algorithm(layers, data, config, seed=int(header["seed"]), ledger=ledger,
                             **options)
    algo.load_fitted(pre.get("fitted") or {})
    template = algo.template_state()
    try:
        pstate = eqx.tree_deserialise_leaves(io.BytesIO(payload), template)
    except Exception as e:
        raise ModelFileError(f"{path}: the saved parameters do not fit the network its header "
                             f"describes ({type(e).__name__}: {e})") from e
    for a, b in zip(jax.tree_util.tree_leaves(template), jax.tree_util.tree_leaves(pstate)):
        if hasattr(a, "shape") and (np.shape(a) != np.shape(b)
                                    or np.asarray(a).dtype != np.asarray(b).dtype):
            raise ModelFileError(f"{path}: a saved array has shape {np.shape(b)} and dtype "
                                 f"{np.asarray(b).dtype}, the network its header describes "
                                 f"needs {np.shape(a)} {np.asarray(a).dtype}")
    state = algo.from_predict_state(pstate)
    digest = params_digest(algo.params(state))
    if digest != header["params_sha256"]:
        raise ModelFileError(f"{path}: the loaded parameters' digest {digest[:16]}... differs "
                             f"from the header's {header['params_sha256'][:16]}...")
    model = TrainedModel(header["method"], algo, state)
    model.header = header
    return model


def standardise(header: dict, x_raw) -> np.ndarray:
    """Raw feature rows -> the standardised inputs the model takes, with the saved statistics."""
    st = header["preprocessing"].get("standardisation")
    if not st:
        raise ValueError("this model file records no standardisation statistics (its data did "
                         "not record them); give standardised inputs (without --raw)")
    x = np.asarray(x_raw, np.float64)
    return ((x - np.asarray(st["mean"])) / np.asarray(st["std"])).astype(np.float32)
