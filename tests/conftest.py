import os

import pytest
import torch

# Two cores are shared by the whole suite: keep intra-op threads modest and deterministic.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
