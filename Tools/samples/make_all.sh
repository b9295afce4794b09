#!/usr/bin/env bash
# Remake every sample run in SampleCheckpoints/ from real training, then
# check that each shows what it should. Needs: numpy, h5py, torch, keras 3
# and jax (pip install h5py torch keras "jax[cpu]"); CPU only, ~1 minute.
#   Tools/samples/make_all.sh            # all runs
#   Tools/samples/make_all.sh healthy    # only the scripts named
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
export KERAS_BACKEND=jax
export PYTHONHASHSEED=0
runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then
  runs=(healthy ctr_plateau frozen_layer dead_relu exploding_nan vanishing_sigmoid
        weight_decay_collapse keras_weights_h5 keras_legacy_h5)
fi
for r in "${runs[@]}"; do
  "$PY" "${r//-/_}.py"
done
"$PY" verify_samples.py
