"""One registry of every physical system, task and trainer.

The CLI, the comparison harness, the experiment runner and the conformance tests all look names
up here, so adding a simulator or a trainer means adding one entry.

* ``SYSTEMS[name](n_in, n_out, *, seed, name)`` builds a :class:`~pnn.layer.PhysicalLayer`.
  A system is named in one of four ways (:func:`resolve_system`): a name in ``SYSTEMS``
  (:func:`register_system` adds one); a name that an installed package declares in the
  ``pnn.systems`` entry-point group (``[project.entry-points."pnn.systems"] my-rig =
  "my_lab.rig:factory"`` in its ``pyproject.toml``: no edit of pnn); ``module:factory``, a
  factory importable from Python; ``recorded:PATH``, recorded input/output pairs served by a
  fitted surrogate (:func:`pnn.layers.recorded_system`).
* ``TASKS[name](**options)`` returns a :class:`~pnn.data.vowels.Dataset`.
* ``TRAINERS[name]`` is a :class:`Trainer`: a small typed record (in the manner of optax's
  ``GradientTransformation``) declaring what a method offers. Callers read its flags; no caller
  compares method names. :func:`register_trainer` adds one (a user's own, or a test's).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable


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


#: the entry-point group through which installed packages register systems
SYSTEM_ENTRY_POINTS = "pnn.systems"


def _vowels(**kw):
    from pnn.data.vowels import load_vowels

    return load_vowels(**kw)


def _none(n_in: int, n_out: int, *, seed: int = 0, name: str = "none", level: float = 0.0):
    from pnn.sim.ablation import NoPhysics

    return NoPhysics(n_in, n_out, seed=seed, name=name, level=level)


def _random_linear(n_in: int, n_out: int, *, seed: int = 0, name: str = "random_linear",
                   gain: float = 1.0):
    from pnn.sim.ablation import RandomLinear

    return RandomLinear(n_in, n_out, seed=seed, name=name, gain=gain)


def _random_nonlinear(n_in: int, n_out: int, *, seed: int = 0, name: str = "random_nonlinear",
                      kind: str = "speckle", gain: float = 1.0, strength: float = 1.0,
                      hidden: int | None = None):
    from pnn.sim.ablation import RandomNonlinear

    return RandomNonlinear(n_in, n_out, seed=seed, name=name, kind=kind, gain=gain,
                           strength=strength, hidden=hidden)


SYSTEMS: dict[str, Callable] = {
    "acoustic": _acoustic,
    "optical": _optical,
    "microwave": _microwave,
    # ablations (sim/ablation.py): the physics replaced by nothing, a random linear map, a
    # random nonlinear map; same shapes and drive range
    "none": _none,
    "random_linear": _random_linear,
    "random_nonlinear": _random_nonlinear,
}

#: the physical levers a tuner searches beside a method's own fields (``system.KEY`` in a
#: study): the strength of each simulator's nonlinearity, in the search-spec form of
#: :mod:`pnn.config`. Ranges stay inside each simulator's stability checks at its default grid
#: (the optical split step: gamma * P0 * length / n_steps <= 0.5 rad at P0 = 900 W, 40 steps).
#: The drive's own lever, ``drive_gain``, is a field of the methods' configs.
SYSTEM_LEVERS: dict[str, dict] = {
    "acoustic": {"c_nl": ("log", 30.0, 1500.0)},
    "optical": {"gamma": ("log", 0.003, 0.02)},
    "microwave": {"kerr": ("log", 100.0, 3000.0)},
}

def _images(*, source: str = "digits", n_features: int = 8, reduce: str = "pca", **kw):
    from pnn.data.images import load_images

    kw = {k: v for k, v in kw.items()
          if k in ("seed", "test_fraction", "val_fraction", "path", "download")}
    if source in ("mnist", "fashion_mnist"):
        kw.pop("test_fraction", None)
        kw.setdefault("n_train", 5000)
        kw.setdefault("n_test", 1000)
    return load_images(source, n_features=n_features, reduce=reduce, **kw)


TASKS: dict[str, Callable] = {"vowels": _vowels, "images": _images}


def _resolve(ref):
    """``"module:attr"`` -> the object; anything else is returned as it is."""
    if isinstance(ref, str) and ":" in ref:
        mod, _, attr = ref.partition(":")
        return getattr(importlib.import_module(mod), attr)
    return ref


@dataclasses.dataclass(frozen=True)
class Trainer:
    """What a training method offers, declared.

    Attributes:
        name: the method's name (``--method``).
        config: its Config class (a validated dataclass, :mod:`pnn.config`), or
            ``"module:attr"``.
        algorithm: its :class:`pnn.train.loop.Algorithm` subclass, or ``"module:attr"``.
        layer_shapes: ``layer_shapes(config, n_features, n_classes) -> [(n_in, n_out), ...]``,
            one physical layer per entry (empty for digital methods), or ``"module:attr"``.
        description: one line for ``--help`` and reports.
        uses_physical_layers: trains a network that contains physical layers.
        needs_differentiable_model: needs a differentiable model of its layers (takes the
            option ``model_layers``: the ideal simulators it backpropagates through).
        runs_on_instruments: can be trained on real instruments (only measures its layers).
        has_digital_twin: learns a digital model of its layers from measurements (takes the
            option ``refit_at_steps``).
        matches_parameter_budget: a digital reference sized to the trainable-parameter count
            of the physical methods it is compared with (its config has ``n_params``).
    """

    name: str
    config: Any
    algorithm: Any
    layer_shapes: Any
    description: str
    uses_physical_layers: bool
    needs_differentiable_model: bool = False
    runs_on_instruments: bool = False
    has_digital_twin: bool = False
    matches_parameter_budget: bool = False

    @property
    def Config(self):
        return _resolve(self.config)

    @property
    def Algorithm(self):
        return _resolve(self.algorithm)

    def shapes(self, config, n_features: int, n_classes: int) -> list[tuple[int, int]]:
        return list(_resolve(self.layer_shapes)(config, n_features, n_classes))

    def search_space(self) -> dict:
        from pnn.config import search_space

        return search_space(self.Config)

    def train(self, layers, data, config=None, *, seed: int = 0, **kw):
        """Run the method through the run loop (:func:`pnn.train.loop.fit`); returns
        ``(record, model)``. ``kw``: ledger, progress, on_batch, on_step, checkpoint_dir,
        checkpoint_every, resume, fingerprint_extra, options (trainer-specific)."""
        from pnn.train.loop import fit

        config = self.Config() if config is None else config
        if not self.uses_physical_layers:
            layers = []
        return fit(self.name, self.Algorithm, layers, data, config, seed=seed, **kw)


def _digital_shapes(config, n_features, n_classes):
    return []


TRAINERS: dict[str, Trainer] = {}


def register_trainer(trainer: Trainer, *, replace: bool = False) -> Trainer:
    """Add a trainer to the registry (the CLI, compare, tune and run then offer it)."""
    if not isinstance(trainer, Trainer):
        raise TypeError(f"register_trainer expects a pnn.registry.Trainer, got "
                        f"{type(trainer).__name__}")
    if trainer.name in TRAINERS and not replace:
        raise ValueError(f"a trainer named {trainer.name!r} is already registered; pass "
                         "replace=True to replace it")
    TRAINERS[trainer.name] = trainer
    return trainer


for _t in (
    Trainer("phyll", "pnn.train.phyll:PhyLLConfig", "pnn.train.phyll:PhyLL",
            "pnn.train.phyll:layer_shapes",
            "model-free forward-forward (PhyLL): local contrastive loss on measured outputs",
            uses_physical_layers=True, runs_on_instruments=True),
    Trainer("pat", "pnn.train.pat:Config", "pnn.train.pat:PAT", "pnn.train.pat:layer_shapes",
            "physics-aware training: physical forward pass, backward through a learned twin",
            uses_physical_layers=True, runs_on_instruments=True, has_digital_twin=True),
    Trainer("insilico", "pnn.train.insilico:Config", "pnn.train.insilico:InSilico",
            "pnn.train.insilico:layer_shapes",
            "backpropagation through the differentiable simulator, deployed on the layer",
            uses_physical_layers=True, needs_differentiable_model=True),
    Trainer("zo", "pnn.train.zo:Config", "pnn.train.zo:SPSA", "pnn.train.zo:layer_shapes",
            "zeroth-order (SPSA) estimates from forward passes only",
            uses_physical_layers=True, runs_on_instruments=True),
    Trainer("bp", "pnn.train.bp:BPConfig", "pnn.train.bp:MLPTrainer", _digital_shapes,
            "digital MLP of matched size, backpropagation, early stopping on validation",
            uses_physical_layers=False, matches_parameter_budget=True),
    Trainer("linear", "pnn.train.bp:LinearConfig", "pnn.train.bp:Linear", _digital_shapes,
            "logistic regression by L-BFGS, C chosen on validation (converged reference)",
            uses_physical_layers=False),
    Trainer("ff", "pnn.train.ff:Config", "pnn.train.ff:ForwardForward", _digital_shapes,
            "digital Forward-Forward (Hinton 2022)", uses_physical_layers=False),
    Trainer("mf", "pnn.train.mf:Config", "pnn.train.mf:MonoForwardTrainer", _digital_shapes,
            "digital Mono-Forward (Gong et al. 2025)", uses_physical_layers=False),
):
    register_trainer(_t)

#: kept for callers that list method names
METHODS = TRAINERS


def _lookup(table: dict, kind: str, name: str):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(table))}")
    return table[name]


def register_system(name: str, factory: Callable, *, replace: bool = False) -> Callable:
    """Add a physical system: ``factory(n_in, n_out, *, seed, name, **params)`` returns a
    :class:`~pnn.layer.PhysicalLayer` (the CLI, experiments, compare and tune then offer it
    as ``--system NAME``). Returns ``factory``."""
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        raise ValueError(f"register_system: name must be a non-empty string without ':' or "
                         f"surrounding spaces (':' marks 'module:factory'), got {name!r}")
    if not callable(factory):
        raise TypeError(f"register_system({name!r}): factory must be callable as "
                        f"factory(n_in, n_out, *, seed, name, **params), got "
                        f"{type(factory).__name__}")
    if name in SYSTEMS and not replace and SYSTEMS[name] is not factory:
        raise ValueError(f"a system named {name!r} is already registered; pass replace=True "
                         f"to replace it")
    SYSTEMS[name] = factory
    return factory


def _entry_points() -> dict:
    """The ``pnn.systems`` entry points of the installed packages, by name (not loaded)."""
    import importlib.metadata

    try:
        eps = importlib.metadata.entry_points(group=SYSTEM_ENTRY_POINTS)
    except TypeError:  # pragma: no cover - Python < 3.10 selection API
        eps = importlib.metadata.entry_points().get(SYSTEM_ENTRY_POINTS, [])
    return {ep.name: ep for ep in eps}


def system_names() -> list[str]:
    """Every system offered by name: registered ones and installed packages' entry points."""
    return sorted(set(SYSTEMS) | set(_entry_points()))


_SYSTEM_FORMS = ("a registered name, a name from an installed package's 'pnn.systems' entry "
                 "points, 'package.module:factory', or 'recorded:PATH' (.npz or .csv)")


def resolve_system(system: str) -> Callable:
    """The factory a system name stands for (see the module docstring for the four forms).

    Raises:
        ValueError: unknown name, a module or attribute that cannot be imported, an entry
            point that fails to load, or a factory that is not callable.
        FileNotFoundError: ``recorded:PATH`` names no file.
    """
    if not isinstance(system, str) or not system:
        raise ValueError(f"system must be a name, got {system!r}; valid forms: {_SYSTEM_FORMS}")
    if system in SYSTEMS:
        return SYSTEMS[system]
    if system.startswith("recorded:"):
        from pnn.layers import recorded_system

        path = system.partition(":")[2]
        if not path:
            raise ValueError("system 'recorded:': give the recorded data's path, e.g. "
                             "recorded:cavity.npz")
        return recorded_system(path)
    eps = _entry_points()
    if system in eps:
        ep = eps[system]
        try:
            factory = ep.load()
        except Exception as e:
            raise ValueError(f"system {system!r}: the entry point {ep.value!r} (group "
                             f"{SYSTEM_ENTRY_POINTS}) failed to load: {type(e).__name__}: {e}"
                             ) from e
        where = f"entry point {system!r} = {ep.value!r}"
    elif ":" in system:
        mod, _, attr = system.partition(":")
        try:
            factory = importlib.import_module(mod)
            for part in attr.split("."):
                factory = getattr(factory, part)
        except ImportError as e:
            raise ValueError(f"system {system!r}: cannot import module {mod!r} ({e}); check "
                             f"the spelling and that its package is installed or on "
                             f"PYTHONPATH") from None
        except AttributeError:
            raise ValueError(f"system {system!r}: module {mod!r} has no attribute {attr!r}; "
                             f"expected 'package.module:factory'") from None
        where = system
    else:
        raise ValueError(f"unknown system {system!r}; valid systems: "
                         f"{', '.join(system_names())}; or {_SYSTEM_FORMS}")
    if not callable(factory):
        raise ValueError(f"system {system!r}: {where} is a {type(factory).__name__}, not a "
                         f"factory(n_in, n_out, *, seed, name, **params)")
    return factory


def make_system(system: str, n_in: int, n_out: int, *, seed: int = 0, name: str | None = None,
                **kw):
    factory = resolve_system(system)
    try:
        layer = factory(n_in, n_out, seed=seed, name=name or system, **kw)
    except TypeError as e:  # most often a parameter the factory does not take
        given = ", ".join(f"{k}={v!r}" for k, v in kw.items()) or "no parameters"
        raise ValueError(f"system {system!r}: its factory failed with {given}: {e}; check the "
                         f"[system] keys (or --set system.KEY=...) against the factory's "
                         f"parameters") from e
    spec = getattr(layer, "spec", None)
    if spec is None or not callable(layer):
        raise ValueError(f"system {system!r}: its factory returned {type(layer).__name__}, not "
                         f"a physical layer (an object with .spec and __call__)")
    if (spec.n_in, spec.n_out) != (n_in, n_out):
        raise ValueError(f"system {system!r}: asked for a layer with n_in={n_in}, n_out={n_out}, "
                         f"its factory returned {spec.name!r} with n_in={spec.n_in}, "
                         f"n_out={spec.n_out}; a factory must build the shape it is given (wrap "
                         f"a fixed-size device in pnn.layers.Shared to pad narrower drives)")
    return layer


def load_task(task: str, **kw):
    return _lookup(TASKS, "task", task)(**kw)


def get_trainer(method: str) -> Trainer:
    return _lookup(TRAINERS, "method", method)


def build_layers(system: str, method: str, config, data, *, seed: int = 0,
                 shared: bool = False, devices: int = 1, **system_kw):
    """The physical layers a method needs for ``data``, one per block, each seeded apart.

    With ``shared=True`` one layer serves every block (one apparatus, time-multiplexed): it is
    built with the widest drive and measurement any block needs (seed ``1000 * seed``, named
    after the system) and each block gets a :class:`pnn.layers.Shared` view of it (narrower
    drives padded with ``lo``, the first ``n_out`` channels read).

    With ``devices=N > 1`` every simulator runs data-parallel over the first N JAX devices
    (:func:`pnn.sharded.data_parallel`: each batch split along its rows; the same outputs as
    one device, to float rounding); a system whose layer is not a pure-JAX simulator is
    refused."""
    shapes = get_trainer(method).shapes(config, data.n_features, data.n_classes)
    if devices != 1 or isinstance(devices, bool):
        from pnn.sharded import check_devices, data_parallel

        check_devices(devices)  # before any layer is built

        def place(layer):
            return data_parallel(layer, devices)
    else:
        def place(layer):
            return layer
    if shared and shapes:
        from pnn.layers import share

        n_in = max(i for i, _ in shapes)
        n_out = max(o for _, o in shapes)
        device = make_system(system, n_in, n_out, seed=seed * 1000, name=system, **system_kw)
        return share(place(device), shapes)
    return [
        place(make_system(system, n_in, n_out, seed=seed * 1000 + k, name=f"{system}[{k}]",
                          **system_kw))
        for k, (n_in, n_out) in enumerate(shapes)
    ]
