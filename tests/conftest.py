import os

import pytest
import torch

# Tiny models: one intra-op thread is faster than two here (no OpenMP spin on a shared 2-core box).
torch.set_num_threads(1)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
