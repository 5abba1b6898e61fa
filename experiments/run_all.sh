#!/usr/bin/env bash
# Every measured result in README.md and experiments/results/ comes from these commands
# (run from the repository root after `make install`; 2 CPU cores, no GPU).
set -euo pipefail
PNN=.venv/bin/pnn
R=experiments/results

# issue: comparison harness (PhyLL vs PAT vs in-silico vs ZO vs digital references)
$PNN compare --system acoustic --task vowels --seeds 3 --out $R/compare_acoustic_vowels
$PNN compare --system acoustic --task images --seeds 3 --out $R/compare_acoustic_images

# issue: optical and microwave simulators, PhyLL on vowels (compare with the linear classifier
# printed by `make demo` on the same split: 82.2 %)
$PNN train --system optical --task vowels --method phyll --epochs 12 --seed 0 --out $R/train_optical_vowels.json
$PNN train --system microwave --task vowels --method phyll --epochs 12 --seed 0 --out $R/train_microwave_vowels.json

# issue: adaptation to a changing physical system (a jump half-way through epoch 11, then a slow
# drift from half-way through epoch 16; test accuracy measured 3 times per epoch)
$PNN adapt --system acoustic --task vowels --epochs 20 --event jump:epoch=10.5,factor=1.05 \
    --event drift:epoch=15.5,rate=0.005 --out $R/adapt_acoustic
$PNN adapt --system optical --task vowels --epochs 20 --event jump:epoch=10.5,factor=1.3 \
    --event drift:epoch=15.5,rate=0.03 --out $R/adapt_optical
$PNN adapt --system microwave --task vowels --epochs 20 --event jump:epoch=10.5,offset=0.5 \
    --event drift:epoch=15.5,rate=0.1 --out $R/adapt_microwave
# the acoustic system again with a larger change: the waves slow down (a faster speed than
# x1.088 would break the fixed time step's Courant limit and is refused). How much each jump
# changes the measured outputs (.venv/bin/python experiments/perturbation_size.py): acoustic
# x1.05 11 %, x0.92 22 %, optical x1.3 24 %, microwave +0.5 MHz 11 % RMS
$PNN adapt --system acoustic --task vowels --epochs 20 --event jump:epoch=10.5,factor=0.92 \
    --event drift:epoch=15.5,rate=-0.01 --out $R/adapt_acoustic_x0.92
# two more seeds of the optical and microwave runs, for the spread of the adaptation numbers
for seed in 1 2; do
  $PNN adapt --system optical --task vowels --epochs 20 --seed $seed --event jump:epoch=10.5,factor=1.3 \
      --event drift:epoch=15.5,rate=0.03 --out $R/adapt_optical_seed$seed
  $PNN adapt --system microwave --task vowels --epochs 20 --seed $seed --event jump:epoch=10.5,offset=0.5 \
      --event drift:epoch=15.5,rate=0.1 --out $R/adapt_microwave_seed$seed
done
