"""sweetspot: find the sweet spot between a TensorFlow model's scale and its efficiency.

The library behind the jobs in `jobs/`. Importing it (any `cluster.*` module)
sets `TF_USE_LEGACY_KERAS=1` before TensorFlow loads: the model optimization
toolkit and MultiWorkerMirroredStrategy training need Keras 2.
"""

import os

# Keras 3 breaks fit() under MultiWorkerMirroredStrategy and the model
# optimization toolkit supports only Keras 2, so every process that imports
# this package uses tf_keras. Set before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The variables every Ray process of a job needs (driver, Train workers,
# Ray Data tasks); jobs put them in their runtime_env. TensorFlow's C++ log
# (CUDA driver notices, oneDNN notes) and Ray Data's progress bars, redrawn through the
# job's log, would bury the job's own lines; the full logs stay in Ray's log folder.
WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
