import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from intra-op threads, and on a 2-core CPU shared with
    # other processes two OpenMP threads can make each small op 100x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_compilation_unless_tested(request, monkeypatch):
    """Derived CPU presets compile their priors, and `msgnet run` its U-Nets; a test that does not test compilation should not pay
    torch.compile's cold cache (minutes on a fresh machine). Tests marked ``compiles`` keep it."""
    if request.node.get_closest_marker("compiles") is None:
        import msgnet.evaluation.benchmark.training as unet_training
        import msgnet.preset_derivation as derivation

        monkeypatch.setattr(derivation, "compiler_available", lambda device: False)
        monkeypatch.setattr(unet_training, "compiler_available", lambda device: False)  # msgnet run's U-Nets


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
