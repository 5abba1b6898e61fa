#!/usr/bin/env bash
# Every measured result in README.md and experiments/results/ comes from the experiment files
# beside this script (run from the repository root after `make install`; 2 CPU cores, no GPU):
#
#   compare_acoustic_{vowels,images}.toml   comparison harness: every method, 3 seeds
#   protocol_{system}_{task}.toml           the comparison protocol on {acoustic, optical,
#                                           microwave} x {vowels, images}: every method tuned
#                                           (6 trials), 5 seeds, a split each. The acoustic
#                                           vowels run took about 35 min on a loaded 2-core
#                                           machine (its record: compare_acoustic_vowels_tuned,
#                                           from the same command); the other five have not
#                                           been run yet
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
