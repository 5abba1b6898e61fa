"""Bring your own physics: physical layers from your own code, from recorded data, and one
apparatus shared by every block.

Three ways in, besides writing a class with ``spec`` and ``__call__`` (:mod:`pnn.layer`):

* :func:`from_function` wraps any callable, a NumPy function, a PyTorch module, a call to a
  remote machine, as a :class:`~pnn.layer.PhysicalLayer`. The function runs on the host; it
  receives a NumPy array of drives that has already passed the shared input validation (shape,
  finiteness, the range ``[lo, hi]``) and its answer is checked (shape, real numbers, finite)
  before a trainer sees it::

      import numpy as np
      from pnn.layers import from_function

      A = np.random.default_rng(0).normal(size=(20, 20))
      layer = from_function(lambda x: np.tanh(x @ A) ** 2, (20, 20), name="my-rig")

  A PyTorch model works the same way (``lambda x: net(torch.from_numpy(x)).detach().numpy()``,
  or return the tensor: tensors are converted). ``batched=False`` calls the function once per
  drive vector, for an apparatus that takes one setting at a time.

* :func:`from_recorded` fits a surrogate (scikit-learn) to recorded input/output pairs of an
  apparatus and serves it as a layer: a stand-in for an apparatus that is not at hand (the lab is
  busy, the device is on another continent, the measurements were published). The fit is
  checked on held-out pairs (``layer.report``: R² per output and overall) and the layer can add
  measurement noise drawn from the held-out residuals, so training sees the apparatus's own
  spread. The drive range defaults to the range of the recorded inputs: the surrogate is never
  asked to extrapolate::

      layer = from_recorded("cavity.npz", model="mlp", noise="residual", seed=0)
      print(layer.report["r2"], layer.report["r2_per_output"])

  Recorded data: arrays ``inputs`` (N, n_in) and ``outputs`` (N, n_out); or an NPZ file with
  those two keys (optionally ``lo`` and ``hi``, the apparatus's drive range); or a CSV file with
  a header row naming the input columns ``in0, in1, ...`` (also ``in_0`` or ``x0``) and the
  output columns ``out0, out1, ...`` (also ``out_0`` or ``y0``), one row per measurement, in
  any order; other columns (a timestamp, a note) are ignored and listed in the report. From the
  command line: ``pnn train --system recorded:cavity.npz``.

* :class:`Shared` lets one apparatus serve several blocks (time-multiplexed: the blocks' queries
  go through the same device in turn), see "Shared layers" below.

Shared layers
-------------
A lab usually has one physical system, and the PhyLL authors send every block through it. Blocks
may share a layer when their drive widths equal the layer's ``n_in``. A block whose drive is
narrower, such as PhyLL's first block (label slots + features + 1 channels, against the hidden
width of the others), is **padded**: its drive is extended with the layer's lower bound ``lo``
(the "off" setting) up to the layer's ``n_in``, appended after the block's own channels; and a
block that reads fewer channels than the layer measures reads the **first** ``n_out`` of them. A
block that needs more drive channels or more measured channels than the layer has is refused,
naming the block, both widths and the fix. :func:`share` builds the per-block views of one
layer; ``pnn train --shared`` (or one ``--instrument`` for a network of several blocks) does so
from the command line. Each view is named ``<device>[block k]``, so the ledger counts queries per
block (``queries_by_layer``) and per device (``queries_by_device``).

Where things live: :mod:`pnn.function_layer`, :mod:`pnn.recorded` (its surrogates in
:mod:`pnn.surrogate`, imported only when one is fitted) and :mod:`pnn.shared_layer`; this module
re-exports every public name.
"""

from __future__ import annotations

from pnn.function_layer import FunctionLayer, from_function
from pnn.recorded import (SURROGATE_MODELS, RecordedLayer, from_recorded, load_recorded,
                          recorded_system)
from pnn.shared_layer import Shared, WidthError, device_name, devices, share

__all__ = ["from_function", "FunctionLayer", "from_recorded", "RecordedLayer", "load_recorded",
           "Shared", "share", "devices", "device_name", "recorded_system", "SURROGATE_MODELS",
           "WidthError"]
