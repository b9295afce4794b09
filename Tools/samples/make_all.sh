#!/usr/bin/env bash
# Remake every sample run in SampleCheckpoints/ from real training, then
# check that each shows what it should. Needs: numpy, h5py, torch, keras 3
# and jax (pip install h5py torch keras "jax[cpu]"); CPU only, ~1 minute.
# The optional tf-keras run uses $TF_PYTHON (default: $PYTHON or python3), an
# interpreter with tensorflow-cpu and tf-keras; it is skipped when that
# interpreter lacks them (they pin their own numpy/keras: a venv suits them).
# The Hugging Face Trainer run needs transformers and accelerate; skipped without them.
#   Tools/samples/make_all.sh            # all runs
#   Tools/samples/make_all.sh healthy    # only the scripts named
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TF_PY=${TF_PYTHON:-$PY}
export KERAS_BACKEND=jax
export PYTHONHASHSEED=0
runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then
  runs=(healthy ctr_plateau frozen_layer dead_relu exploding_nan vanishing_sigmoid
        weight_decay_collapse dead_middle explode_then_dead keras_weights_h5 keras_legacy_h5 keras_mixed_precision
        tf_keras_legacy_h5 trainer_high_lr)
fi
for r in "${runs[@]}"; do
  r=${r//-/_}
  if [ "$r" = tf_keras_legacy_h5 ]; then
    if TF_USE_LEGACY_KERAS=1 "$TF_PY" -c "import tensorflow, tf_keras" >/dev/null 2>&1; then
      "$TF_PY" "$r.py"
    else
      echo "tf-keras-legacy-h5: skipped ($TF_PY lacks tensorflow/tf-keras; set TF_PYTHON)"
    fi
  elif [ "$r" = trainer_high_lr ]; then
    if "$PY" -c "import torch, transformers, accelerate" >/dev/null 2>&1; then
      "$PY" "$r.py"
    else
      echo "trainer-high-lr: skipped ($PY lacks transformers/accelerate)"
    fi
  else
    "$PY" "$r.py"
  fi
done
"$PY" verify_samples.py
