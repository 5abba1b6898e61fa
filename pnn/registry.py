"""One registry of every physical system, task and trainer.

The CLI, the comparison harness, the experiment runner and the conformance tests all look names
up here, so adding a simulator or a trainer means adding one entry.

* ``SYSTEMS[name]`` is a :class:`System`: a typed record of one physical system (its factory,
  its physical parameters with units, the parameter drift acts on, the levers a tuner searches,
  the name a reader knows). Calling it, ``SYSTEMS[name](n_in, n_out, *, seed, name)``, builds a
  :class:`~pnn.layer.PhysicalLayer`. Every caller (experiments, compare, tune, adapt, figures,
  characterize) reads the record; there is no other table of systems.
  A system is named in one of four ways (:func:`resolve_system`): a name in ``SYSTEMS``
  (:func:`register_system` adds one); a name that an installed package declares in the
  ``pnn.systems`` entry-point group (``[project.entry-points."pnn.systems"] my-rig =
  "my_lab.rig:factory"`` in its ``pyproject.toml``, a factory or a :class:`System`: no edit
  of pnn); ``module:factory``, a factory importable from Python; ``recorded:PATH``, recorded
  input/output pairs served by a fitted surrogate (:func:`pnn.layers.recorded_system`).
* ``TASKS[name](**options)`` returns a :class:`~pnn.data.vowels.Dataset`.
* ``TRAINERS[name]`` is a :class:`Trainer`: a small typed record (in the manner of optax's
  ``GradientTransformation``) declaring what a method offers (its flags, the name a reader knows,
  its colour in figures, its settings in a quick comparison). Callers read the record; no caller
  compares method names. :func:`register_trainer` adds one (a user's own, or a test's).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
from typing import Any, Callable

from pnn.config import search_space as _search_space

#: the entry-point group through which installed packages register systems
SYSTEM_ENTRY_POINTS = "pnn.systems"


def _resolve(ref):
    """``"module:attr"`` -> the object; anything else is returned as it is.

    The built-in records and factories name simulators, trainers and loaders this way, imported
    on first use: they load JAX, which importing this module (and ``pnn --help``) must not."""
    if isinstance(ref, str) and ":" in ref:
        mod, _, attr = ref.partition(":")
        return getattr(importlib.import_module(mod), attr)
    return ref


def _acoustic(n_in: int, n_out: int, *, seed: int = 0, name: str = "acoustic", **kw):
    kw.setdefault("ny", max(36, max(n_in, n_out) + 14))
    return _resolve("pnn.sim.acoustic:AcousticLayer")(n_in, n_out, seed=seed, name=name, **kw)


def _optical(n_in: int, n_out: int, *, seed: int = 0, name: str = "optical", **kw):
    # As a network layer we use a milder Kerr nonlinearity than the class default (soliton order
    # about 1.6 instead of 3): measured with PhyLL on the demo's vowel split (seed 0, 12 epochs),
    # gamma = 0.003 /(W m) gave 83.5 % test accuracy against 81.3 % at gamma = 0.01.
    kw.setdefault("gamma", 0.003)
    return _resolve("pnn.sim.optical:OpticalLayer")(n_in, n_out, seed=seed, name=name, **kw)


def _microwave(n_in: int, n_out: int, *, seed: int = 0, name: str = "microwave", **kw):
    return _resolve("pnn.sim.microwave:MicrowaveLayer")(n_in, n_out, seed=seed, name=name, **kw)


def _vowels(**kw):
    return _resolve("pnn.data.vowels:load_vowels")(**kw)


def _audio_vowels(**kw):
    """The waveform vowel task (:func:`pnn.data.audio.load_audio_vowels`), without the options
    it has no use for (``download``)."""
    kw = {k: v for k, v in kw.items() if k in ("source", "classes", "groups", "seed",
          "test_fraction", "val_fraction", "path", "sample_rate", "duration")}
    return _resolve("pnn.data.audio:load_audio_vowels")(**kw)


def _none(n_in: int, n_out: int, *, seed: int = 0, name: str = "none", level: float = 0.0):
    return _resolve("pnn.sim.ablation:NoPhysics")(n_in, n_out, seed=seed, name=name, level=level)


def _random_linear(n_in: int, n_out: int, *, seed: int = 0, name: str = "random_linear",
                   gain: float = 1.0):
    return _resolve("pnn.sim.ablation:RandomLinear")(n_in, n_out, seed=seed, name=name,
                                                     gain=gain)


def _random_nonlinear(n_in: int, n_out: int, *, seed: int = 0, name: str = "random_nonlinear",
                      kind: str = "speckle", gain: float = 1.0, strength: float = 1.0,
                      hidden: int | None = None):
    return _resolve("pnn.sim.ablation:RandomNonlinear")(
        n_in, n_out, seed=seed, name=name, kind=kind, gain=gain, strength=strength,
        hidden=hidden)


@dataclasses.dataclass(frozen=True)
class Param:
    """One physical parameter of a system, for people: ``label`` in words, ``unit`` (SI, or
    ``""`` for a dimensionless factor), ``relative``: changes of it read best as fractions of
    its value (a drift of ``rate=0.02`` is +2 %/epoch)."""

    name: str
    label: str
    unit: str = ""
    relative: bool = False


@dataclasses.dataclass(frozen=True)
class System:
    """Everything pnn knows about one physical system, declared once.

    Attributes:
        name: the name it is offered by (``--system NAME``).
        factory: ``factory(n_in, n_out, *, seed, name, **params)`` returning a
            :class:`~pnn.layer.PhysicalLayer`, or ``"module:attr"``.
        display_name: the name a reader knows (figures, reports).
        simulator: the simulator class (or ``"module:Class"``) whose constructor's keywords are
            the system's physical parameters; ``None``: the factory's own keywords are.
        params: the parameters worth explaining, with units (:class:`Param`).
        drift_param: the parameter an adaptation event (``pnn adapt``) moves by default.
        levers: ``{parameter: search spec}`` (:mod:`pnn.config` form) a tuner searches beside a
            method's own fields: the strength of the system's nonlinearity.
        variants: display names of parameter variants, ``{"kind=tanh": "..."}`` for
            ``name[kind=tanh]`` in ablation tables.
        ablation: the physics replaced by a stand-in (``sim/ablation.py``), not a wave system.
        energy_per_query_j: modelled energy of one physical query (one sample through one
            layer) in J, for the modelled-energy column of comparisons; ``None``: not modelled.
    """

    name: str
    factory: Any
    display_name: str = ""
    simulator: Any = None
    params: tuple = ()
    drift_param: str | None = None
    levers: Any = dataclasses.field(default_factory=dict)
    variants: Any = dataclasses.field(default_factory=dict)
    ablation: bool = False
    energy_per_query_j: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or ":" in self.name \
                or self.name != self.name.strip():
            raise ValueError(f"System: name must be a non-empty string without ':' or "
                             f"surrounding spaces (':' marks 'module:factory'), got {self.name!r}")
        if not (callable(self.factory) or isinstance(self.factory, str)):
            raise TypeError(f"System({self.name!r}): factory must be callable as "
                            f"factory(n_in, n_out, *, seed, name, **params) or 'module:attr', "
                            f"got {type(self.factory).__name__}")
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)

    def __call__(self, n_in: int, n_out: int, **kw):
        return self.build(n_in, n_out, **kw)

    def build(self, n_in: int, n_out: int, **kw):
        """The layer ``factory(n_in, n_out, **kw)``."""
        return _resolve(self.factory)(n_in, n_out, **kw)

    def param_names(self) -> list[str]:
        """The physical parameters one may set: the simulator constructor's keyword arguments
        (or the factory's), less the shapes, seed and name; ``["*"]`` if it takes any."""
        target = _resolve(self.simulator).__init__ if self.simulator else _resolve(self.factory)
        params = inspect.signature(target).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return ["*"]
        return [p.name for p in params if p.name not in _RESERVED
                and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def param(self, name: str) -> Param:
        """The declared :class:`Param` called ``name`` (a bare one when it is not declared)."""
        for p in self.params:
            if p.name == name:
                return p
        return Param(name, name)

    def describe(self, variant: str = "") -> str:
        """The display name of ``name`` or of a variant ``name[k=v,...]``."""
        if variant in self.variants:
            return self.variants[variant]
        return f"{self.display_name} [{variant}]" if variant else self.display_name


#: constructor arguments that pnn sets itself (shapes, seeds, names), never system parameters
_RESERVED = ("self", "n_in", "n_out", "seed", "name")

SYSTEMS: dict[str, System] = {}


def register_system(system, factory: Callable | None = None, *, replace: bool = False):
    """Add a physical system: ``register_system(System(...))``, or the short form
    ``register_system(name, factory)`` for a bare ``factory(n_in, n_out, *, seed, name,
    **params)`` returning a :class:`~pnn.layer.PhysicalLayer`. The command line, experiments,
    compare, tune, adapt and characterize then offer it as ``--system NAME``. Returns the
    :class:`System` record."""
    if isinstance(system, System):
        if factory is not None:
            raise TypeError("register_system(System(...)) takes no factory: it is in the record")
        record = system
    else:
        if factory is None or not callable(factory):
            raise TypeError(f"register_system({system!r}): factory must be callable as "
                            f"factory(n_in, n_out, *, seed, name, **params), got "
                            f"{type(factory).__name__}")
        record = System(system, factory)
    old = SYSTEMS.get(record.name)
    if old is not None and not replace and old.factory is not record.factory:
        raise ValueError(f"a system named {record.name!r} is already registered; pass "
                         f"replace=True to replace it")
    SYSTEMS[record.name] = record
    return record


# Modelled energy per query: order-of-magnitude assumptions, not measurements. Acoustic, a few ms
# of audio through a powered speaker and microphone at ~1 W; optical, a ~10 ns pulse train of a
# ~100 mW fibre laser plus photodetection; microwave, ~10 us of a ~1 W source and receiver. The
# ablation stand-ins are small digital maps (about 10^3 FLOPs a sample at the usual widths):
# 10^3 FLOPs x pnn.stats.ENERGY_PER_FLOP_J.
for _s in (
    System("acoustic", _acoustic, "acoustic simulator", "pnn.sim.acoustic:AcousticLayer",
           params=(Param("c0", "background sound speed", "m/s"),
                   Param("c_nl", "nonlinear speed coefficient", "m/s/Pa²"),
                   Param("speed_scale", "sound-speed scale", "× c0", relative=True)),
           drift_param="speed_scale", levers={"c_nl": ("log", 30.0, 1500.0)},
           energy_per_query_j=5e-3),
    # the drive row played as n_sources sampled waveforms (10 kHz by default, the audio vowel
    # task's rate), probe intensities read; an optional design region of trainable speed
    # (sim/acoustic_design.py). Energy: ~50 ms of audio through a ~1 W speaker and microphone.
    System("acoustic_waveform", "pnn.sim.acoustic_design:DesignedAcousticLayer",
           "waveform-driven acoustic simulator", "pnn.sim.acoustic_design:DesignedAcousticLayer",
           params=(Param("c0", "background sound speed", "m/s"),
                   Param("c_nl", "nonlinear speed coefficient", "m/s/Pa²"),
                   Param("speed_scale", "sound-speed scale", "× c0", relative=True),
                   Param("sample_rate", "waveform sample rate", "Hz"),
                   Param("design_c_min", "slowest design-region speed", "m/s"),
                   Param("design_c_max", "fastest design-region speed", "m/s")),
           drift_param="speed_scale", energy_per_query_j=5e-2),
    # Ranges stay inside each simulator's stability checks at its default grid (the optical
    # split step: gamma * P0 * length / n_steps <= 0.5 rad at P0 = 900 W, 40 steps).
    System("optical", _optical, "optical simulator", "pnn.sim.optical:OpticalLayer",
           params=(Param("gamma", "fibre nonlinearity γ", "W⁻¹ m⁻¹", relative=True),),
           drift_param="gamma", levers={"gamma": ("log", 0.003, 0.02)}, energy_per_query_j=1e-6),
    System("microwave", _microwave, "microwave simulator", "pnn.sim.microwave:MicrowaveLayer",
           params=(Param("detuning", "cavity detuning", "MHz"),
                   Param("kerr", "Kerr coefficient χ", "MHz/nJ")),
           drift_param="detuning", levers={"kerr": ("log", 100.0, 3000.0)},
           energy_per_query_j=1e-5),
    # ablations (sim/ablation.py): the physics replaced by nothing, a random linear map, a
    # random nonlinear map; same shapes and drive range
    System("none", _none, "no physics (zero reading)", ablation=True, energy_per_query_j=1e-7),
    System("random_linear", _random_linear, "fixed random linear map", ablation=True,
           energy_per_query_j=1e-7),
    System("random_nonlinear", _random_nonlinear, "fixed random speckle map |Gd|²",
           variants={"kind=tanh": "fixed random tanh network"}, ablation=True,
           energy_per_query_j=1e-7),
):
    register_system(_s)


def system_record(name: str) -> System | None:
    """The :class:`System` of a registered name or of an installed package's entry point
    (``None`` for ``module:factory``, ``recorded:PATH`` and unknown names)."""
    if name in SYSTEMS:
        return SYSTEMS[name]
    if ":" in name:
        return None
    ep = _entry_points().get(name)
    if ep is None:
        return None
    obj = ep.load()
    return obj if isinstance(obj, System) else System(name, obj)


def names_code(system) -> bool:
    """Whether a system name would import a module (``package.module:factory``): a file (a
    model, a record) that names one must not run it unless the user asks by name."""
    return isinstance(system, str) and ":" in system and not system.startswith("recorded:")


def check_no_import(system, where: str, how: str) -> None:
    """Refuse a ``module:factory`` system read from a file (``where``) unless allowed.

    Raises:
        ValueError: naming the system, the file and ``how`` to allow it."""
    if names_code(system):
        raise ValueError(f"{where}: names the system {system!r}, which would import and run "
                         f"the module {system.partition(':')[0]!r}; pnn does not run code named "
                         f"by a file. If you trust it, {how}; or register the system "
                         f"(pnn.registry.register_system) or install its package's "
                         f"'{SYSTEM_ENTRY_POINTS}' entry point and name it by that name")


def energy_per_query() -> dict[str, float]:
    """``{system: J}`` for every registered system that declares a per-query energy."""
    return {n: s.energy_per_query_j for n, s in SYSTEMS.items()
            if s.energy_per_query_j is not None}


def levers(system: str) -> dict:
    """The physical levers a tuner searches for ``system`` (``{}`` when it declares none)."""
    record = system_record(system)
    return dict(record.levers) if record is not None else {}


def system_keys(system: str) -> list[str]:
    """The physical parameters of ``system`` (see :meth:`System.param_names`); ``["*"]`` for a
    plug-in named by ``module:factory`` or ``recorded:PATH``, whose factory validates them."""
    record = system_record(system)
    return record.param_names() if record is not None else ["*"]


def describe_system(code: str) -> str:
    """The display name of a system code as records write it: ``acoustic``,
    ``random_nonlinear[kind=tanh]``, ``digital``."""
    base, _, variant = code.partition("[")
    record = SYSTEMS.get(base)
    if record is None:
        return code
    return record.describe(variant.rstrip("]"))


def describe_param(param: str, system: str | None = None) -> Param:
    """The declared :class:`Param` ``param`` of ``system`` (or of any registered system)."""
    for record in ([SYSTEMS[system]] if system in SYSTEMS else []) + list(SYSTEMS.values()):
        for p in record.params:
            if p.name == param:
                return p
    return Param(param, param)


def _images(*, source: str = "digits", n_features: int = 8, reduce: str = "pca", **kw):
    kw = {k: v for k, v in kw.items()
          if k in ("seed", "test_fraction", "val_fraction", "path", "download")}
    if source in ("mnist", "fashion_mnist"):
        kw.pop("test_fraction", None)
        kw.setdefault("n_train", 5000)
        kw.setdefault("n_test", 1000)
    return _resolve("pnn.data.images:load_images")(source, n_features=n_features, reduce=reduce,
                                                   **kw)


TASKS: dict[str, Callable] = {"vowels": _vowels, "images": _images,
                             "audio_vowels": _audio_vowels}


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
        display_name: the name a reader knows (figures, reports); default: ``name``.
        colour: its colour in every figure (a matplotlib colour); default: the cycle's.
        compare_defaults: config values that keep a quick comparison (``pnn compare`` without
            ``--tune``) within minutes on 2 CPU cores.
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
    display_name: str = ""
    colour: str | None = None
    compare_defaults: Any = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)

    @property
    def Config(self):
        return _resolve(self.config)

    @property
    def Algorithm(self):
        return _resolve(self.algorithm)

    def shapes(self, config, n_features: int, n_classes: int) -> list[tuple[int, int]]:
        return list(_resolve(self.layer_shapes)(config, n_features, n_classes))

    def search_space(self) -> dict:
        return _search_space(self.Config)

    def train(self, layers, data, config=None, *, seed: int = 0, **kw):
        """Run the method through the run loop (:func:`pnn.train.loop.fit`); returns
        ``(record, model)``. ``kw``: ledger, progress, on_batch, on_step, checkpoint_dir,
        checkpoint_every, resume, fingerprint_extra, options (trainer-specific)."""
        from pnn.train.loop import fit  # the run loop loads JAX, which `pnn --help` must not

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
            uses_physical_layers=True, runs_on_instruments=True, display_name="PhyLL",
            colour="#d62728", compare_defaults={"epochs": 12, "eval_train_max": 100}),
    Trainer("pat", "pnn.train.pat:Config", "pnn.train.pat:PAT", "pnn.train.pat:layer_shapes",
            "physics-aware training: physical forward pass, backward through a learned twin",
            uses_physical_layers=True, runs_on_instruments=True, has_digital_twin=True,
            display_name="physics-aware training", colour="#1f77b4",
            compare_defaults={"epochs": 12}),
    Trainer("insilico", "pnn.train.insilico:Config", "pnn.train.insilico:InSilico",
            "pnn.train.insilico:layer_shapes",
            "backpropagation through the differentiable simulator, deployed on the layer",
            uses_physical_layers=True, needs_differentiable_model=True,
            display_name="in-silico backprop", colour="#2ca02c",
            compare_defaults={"epochs": 12}),
    Trainer("zo", "pnn.train.zo:Config", "pnn.train.zo:SPSA", "pnn.train.zo:layer_shapes",
            "zeroth-order (SPSA) estimates from forward passes only",
            uses_physical_layers=True, runs_on_instruments=True,
            display_name="zeroth-order (SPSA)", colour="#9467bd",
            compare_defaults={"epochs": 6, "lr": 3e-3}),
    Trainer("dfa", "pnn.train.dfa:Config", "pnn.train.dfa:DFA", "pnn.train.dfa:layer_shapes",
            "direct feedback alignment: measured forward pass, output error sent to each block "
            "through a fixed random matrix", uses_physical_layers=True, runs_on_instruments=True,
            display_name="direct feedback alignment", colour="#bcbd22",
            compare_defaults={"epochs": 12}),
    Trainer("ffzero", "pnn.train.ffzero:Config", "pnn.train.ffzero:FFzero",
            "pnn.train.ffzero:layer_shapes",
            "FFzero: each block's prototype loss on its measured input, minimised by "
            "forward-only directional derivatives", uses_physical_layers=True,
            runs_on_instruments=True, display_name="FFzero", colour="#e377c2",
            compare_defaults={"epochs": 12}),
    Trainer("bp", "pnn.train.bp:BPConfig", "pnn.train.bp:MLPTrainer", _digital_shapes,
            "digital MLP of matched size, backpropagation, early stopping on validation",
            uses_physical_layers=False, matches_parameter_budget=True,
            display_name="digital MLP (backprop)", colour="#ff7f0e"),
    Trainer("linear", "pnn.train.bp:LinearConfig", "pnn.train.bp:Linear", _digital_shapes,
            "logistic regression by L-BFGS, C chosen on validation (converged reference)",
            uses_physical_layers=False, display_name="logistic regression", colour="#7f7f7f"),
    Trainer("ff", "pnn.train.ff:Config", "pnn.train.ff:ForwardForward", _digital_shapes,
            "digital Forward-Forward (Hinton 2022)", uses_physical_layers=False,
            display_name="Forward-Forward", colour="#8c564b"),
    Trainer("mf", "pnn.train.mf:Config", "pnn.train.mf:MonoForwardTrainer", _digital_shapes,
            "digital Mono-Forward (Gong et al. 2025)", uses_physical_layers=False,
            display_name="Mono-Forward", colour="#17becf"),
):
    register_trainer(_t)

#: kept for callers that list method names
METHODS = TRAINERS


def _lookup(table: dict, kind: str, name: str):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(table))}")
    return table[name]


def _entry_points() -> dict:
    """The ``pnn.systems`` entry points of the installed packages, by name (not loaded)."""
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
        path = system.partition(":")[2]
        if not path:
            raise ValueError("system 'recorded:': give the recorded data's path, e.g. "
                             "recorded:cavity.npz")
        return _resolve("pnn.recorded:recorded_system")(path)
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


def check_runs_on_instruments(method: str) -> Trainer:
    """The trainer of ``method`` if it can train on instruments (it only measures its layers).

    Raises:
        ValueError: naming why not and the methods that can."""
    trainer = get_trainer(method)
    if not trainer.runs_on_instruments:
        why = ("needs a differentiable model of its layers" if
               trainer.needs_differentiable_model else "has no physical layer"
               if not trainer.uses_physical_layers else "cannot run on instruments")
        able = [n for n, t in TRAINERS.items() if t.runs_on_instruments]
        raise ValueError(f"--instrument works with the methods that only measure their physical "
                         f"layers ({', '.join(able)}); {method!r} {why}")
    return trainer


def describe_method(code: str) -> str:
    """The display name of a method code (the code itself when no trainer has it)."""
    trainer = TRAINERS.get(code)
    return trainer.display_name if trainer is not None else code


def width_hint(method: str, shapes) -> str:
    """What to change when ``method``'s blocks (``shapes``) are wider than a fixed-size system
    or instrument can serve: the flags that set the widths."""
    need = "; ".join(f"block {k}: n_in={i}, n_out={o}" for k, (i, o) in enumerate(shapes))
    return (f"{method} needs {need}. The widths follow from the task and the method's config: "
            f"fewer classes (--classes) or input features (--n-features) narrow the first "
            f"block's drive, narrower blocks (--hidden) the later ones', fewer measured "
            f"channels (--n-meas, or --set method.KEY=...) each block's reading")


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
    from pnn.layers import WidthError  # pnn.layers loads JAX, which `pnn --help` must not

    shapes = get_trainer(method).shapes(config, data.n_features, data.n_classes)
    try:
        return _build_layers(system, shapes, seed, shared, devices, system_kw)
    except WidthError as e:
        raise WidthError(f"{e}. {width_hint(method, shapes)}") from None


def _build_layers(system: str, shapes, seed: int, shared: bool, devices: int,
                  system_kw: dict) -> list:
    if devices != 1 or isinstance(devices, bool):
        from pnn.sharded import check_devices, data_parallel  # JAX: not at `pnn --help`

        check_devices(devices)  # before any layer is built

        def place(layer):
            return data_parallel(layer, devices)
    else:
        def place(layer):
            return layer
    if shared and shapes:
        from pnn.layers import share  # JAX: not at `pnn --help`

        n_in = max(i for i, _ in shapes)
        n_out = max(o for _, o in shapes)
        device = make_system(system, n_in, n_out, seed=seed * 1000, name=system, **system_kw)
        return share(place(device), shapes)
    return [
        place(make_system(system, n_in, n_out, seed=seed * 1000 + k, name=f"{system}[{k}]",
                          **system_kw))
        for k, (n_in, n_out) in enumerate(shapes)
    ]
