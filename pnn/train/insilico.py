"""In-silico backpropagation: train through a differentiable simulator, deploy on the layer.

The ideal-model baseline. The network of :mod:`pnn.train.hybrid` is trained with exact
gradients through ``model_layers`` (differentiable JAX simulators; by default the deployed layers
themselves when they are simulators), and every accuracy in the record is measured on the
deployed ``layers``. When the deployed system differs from the model (drift, noise, a
perturbation wrapper, real hardware) the gap between the two is the reality gap.

Cost: simulator work is digital (``flops_by_item["simulator"]``, from the simulator's
``flops_per_sample`` when it declares one; backward counted as 2x forward); physical queries are
only the evaluations on the deployed layers.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp

from pnn.cost import Ledger, adam_flops
from pnn.network import to_drive
from pnn.train.common import Progress
from pnn.train.hybrid import HybridAlgorithm, HybridConfig, encode, hybrid_layer_shapes
from pnn.train.loop import Result, fit

__all__ = ["Config", "InSilico", "train", "layer_shapes"]


@dataclasses.dataclass(frozen=True)
class Config(HybridConfig):
    pass


layer_shapes = hybrid_layer_shapes


class InSilico(HybridAlgorithm):
    """Backpropagation through ``model_layers`` (default: the deployed layers themselves).

    Raises:
        ValueError: when a model layer is not a differentiable JAX module (e.g. a driver or a
            host-side wrapper); pass the simulators it stands for as ``model_layers``.
    """

    def __init__(self, layers, data, config, *, seed, ledger, model_layers=None):
        model_layers = list(model_layers) if model_layers is not None else list(layers)
        for layer in model_layers:
            if not isinstance(layer, eqx.Module):
                raise ValueError(
                    f"insilico: {layer.spec.name!r} is not a differentiable simulator "
                    f"({type(layer).__name__}); pass model_layers=[the simulators it stands "
                    "for]")
        super().__init__(layers, data, config, seed=seed, ledger=ledger,
                         calibrate_on=model_layers)
        self.model_layers = model_layers
        self.specs = [layer.spec for layer in model_layers]
        self.sim_flops = sum(getattr(layer, "flops_per_sample", 0) for layer in model_layers)

    def measure(self, net, k, a, model_layers):
        spec = self.specs[k]
        return model_layers[k]._forward(to_drive(a, spec.lo, spec.hi, net.gain))

    def step(self, state, x, y):
        params, opt_state, loss = self.gradient_step(
            state["params"], state["opt"], encode(x), jnp.asarray(y), self.model_layers)
        net = self.net(state)
        self.ledger.add_flops(3 * self.sim_flops * len(y), "simulator")
        self.ledger.add_flops(3 * net.forward_flops(len(y)) + adam_flops(net.n_params),
                              "trainable update")
        return {**state, "params": params, "opt": opt_state}, float(loss)

    def extra(self, state):
        return {"model_layers": [s.name for s in self.specs]}


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, model_layers=None, on_step=None, **kw) -> Result:
    """Backpropagate through ``model_layers`` (default: ``layers``), evaluate on ``layers``;
    returns ``(record, model)``."""
    return fit("insilico", InSilico, layers, data, config, seed=seed, ledger=ledger,
               progress=progress, on_step=on_step, options={"model_layers": model_layers},
               **kw)
