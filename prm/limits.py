"""Upper bounds on every number a user can give, so that a typo (``--width 1000000000``) is
refused up front instead of allocating until the machine swaps, or failing deep inside torch
with a traceback. A module of constants only, so the lowest layers (file reading) can use them."""

MAX_WIDTH = 16384
"""Units in one hidden layer (8x the paper's 2000)."""
MAX_LAYERS = 8
"""Masked hidden layers (HAT and PRM use 2)."""
MAX_INPUT = 3072
"""The largest input of any sequence (CIFAR-100, CelebA: 3x32x32), used to bound the weights."""
MAX_WEIGHTS = 200_000_000
"""Hidden weights, counted as MAX_INPUT*w1 + w1*w2 + ...: 800 MB of float32 per copy of the
network (training keeps several: gradients, the best state, DTD's saved state; STL one per task).
The paper's 2 x 2000 set-up has about 10 million."""
MAX_EPOCHS = 100_000
"""Epochs of any phase, and patience: far beyond where the lr schedule stops."""
MAX_BATCH = 1_000_000
"""Batch size; a batch larger than a task's training set is the whole set anyway."""
FLOAT32_MAX = 3.4028234663852886e38
"""Largest float32: every float setting reaches float32 tensors (an lr of 1e39 overflows in SGD)."""
MAX_SEED = 2**32 - 1
"""Seeds reach numpy, torch and UMAP; UMAP (numpy's RandomState) takes 32-bit seeds only."""
