"""Shared fixtures. Tests marked ``gpu`` run only where CUDA is available."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("PD_THREADS", "2")))

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "browser: drives the real app in headless Chromium")
    config.addinivalue_line("markers", "slow: takes more than ~30 s")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def model():
    """The embedded EfficientNet-Lite0 on the CPU (shared, frozen)."""
    from pd_core.models import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def correct_pair(model):
    """Two gallery photos the embedded model classifies correctly, as ``[(path, label index)]``: the
    small folder of the sweep and dose tests."""
    from gallery_cases import correct_gallery_items

    return correct_gallery_items(model, ("imagenet_05_853.jpg", "imagenet_16_251.jpg"))
