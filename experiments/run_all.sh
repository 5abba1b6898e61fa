#!/usr/bin/env bash
# Every measured result in README.md and experiments/results/ comes from the experiment files
# beside this script (run from the repository root after `make install`; 2 CPU cores, no GPU):
#
#   compare_acoustic_{vowels,images}.toml   comparison harness: every method, 3 seeds
#   train_{optical,microwave}_vowels.toml   PhyLL on the optical and microwave simulators
#   adapt_*.toml                            adaptation to a changing physical system (jumps and
#                                           drifts; the optical and microwave runs on 3 seeds)
#
# `pnn run experiments/` runs them in name order and skips those whose record already embeds
# the same experiment and pnn version; pass --force to rerun everything. One experiment:
# `pnn run experiments/adapt_optical.toml`; replay a record: `pnn run <its results.json,
# adapt.json or .json>`.
set -euo pipefail
exec .venv/bin/pnn run experiments/ "$@"
