"""Shared fixtures: the embedded tiny model (real weights shipped in the package) and small data."""

import pytest


@pytest.fixture(scope="session")
def tiny_backend():
    from catts.models import load_backend

    return load_backend("tiny", batch_size=8)


@pytest.fixture(scope="session")
def shapes_test():
    from catts.data import load_embedded

    return load_embedded("shapes", "test")


@pytest.fixture(scope="session")
def easyvqa_test():
    from catts.data import load_embedded

    return load_embedded("easyvqa", "test")


@pytest.fixture
def one_thread():
    """The tiny model on a shared CPU: one torch thread is ~50x faster than two contended ones (restored after)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
