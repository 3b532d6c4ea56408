"""ferkeras: facial expression recognition on FER2013 with a compact Keras CNN."""

import os

__version__ = "0.1.0"

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI or BF16, AVX-VNNI
# or AMX; on an AVX2 CPU its Eigen kernels train ferkeras' CNN 2.7x slower (bench/README.md,
# "Training speed"). Read once, when TensorFlow loads, so it must be set before; a user's setting wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
