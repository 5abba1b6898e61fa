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
import jax
import jax.numpy as jnp
import optax

from pnn.cost import Ledger, adam_flops
from pnn.network import to_drive
from pnn.train.common import Progress
from pnn.train.hybrid import (HybridConfig, encode, hybrid_layer_shapes, init_calibrated,
                              run_epochs)

__all__ = ["Config", "train", "layer_shapes"]


@dataclasses.dataclass(frozen=True)
class Config(HybridConfig):
    pass


layer_shapes = hybrid_layer_shapes


def train(layers, data, config: Config = Config(), *, seed: int = 0, ledger: Ledger | None = None,
          progress: Progress | None = None, model_layers=None, on_step=None) -> dict:
    """Backpropagate through ``model_layers`` (default: ``layers``), evaluate on ``layers``.

    Raises:
        ValueError: when a model layer is not a differentiable JAX module (e.g. a driver or a
            host-side wrapper); pass the simulators it stands for as ``model_layers``.
    """
    ledger = ledger or Ledger()
    model_layers = list(model_layers) if model_layers is not None else list(layers)
    for layer in model_layers:
        if not isinstance(layer, eqx.Module):
            raise ValueError(
                f"insilico: {layer.spec.name!r} is not a differentiable simulator "
                f"({type(layer).__name__}); pass model_layers=[the simulators it stands for]")
    # calibrated on the model (a simulation, so not charged as physical queries)
    net, rng = init_calibrated(config, layers, data, seed, Ledger(), calibrate_on=model_layers)
    opt = optax.adam(config.lr)
    filt = net.trainable()
    params, static = eqx.partition(net, filt)
    state = opt.init(params)
    specs = [layer.spec for layer in model_layers]

    @eqx.filter_jit
    def update(params, state, x0, y, model_layers):
        def loss_fn(p):
            n = eqx.combine(p, static)
            logits = n.forward(
                x0, lambda k, a: model_layers[k]._forward(to_drive(a, specs[k].lo, specs[k].hi)))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, state = opt.update(g, state, params)
        return eqx.apply_updates(params, upd), state, loss

    sim_flops = sum(getattr(layer, "flops_per_sample", 0) for layer in model_layers)

    def step(net, state, idx):
        params = eqx.filter(net, filt)
        params, state, loss = update(params, state, encode(data.x_train[idx]),
                                     jnp.asarray(data.y_train[idx]), model_layers)
        ledger.add_flops(3 * sim_flops * len(idx), "simulator")
        ledger.add_flops(3 * net.forward_flops(len(idx)) + adam_flops(net.n_params),
                         "trainable update")
        return eqx.combine(params, static), state, loss

    return run_epochs(method="insilico", net=net, layers=layers, data=data, config=config,
                      seed=seed, ledger=ledger, progress=progress, step=step, state=state,
                      rng=rng, extra={"model_layers": [s.name for s in specs]},
                      on_step=on_step)
