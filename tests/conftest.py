import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the suite runs on 2 cores: one thread per test process keeps timings sane
torch.set_num_threads(int(os.environ.get("DPAI_TEST_THREADS", "1")))


def pytest_addoption(parser):
    parser.addoption("--extended", action="store_true",
                     help="also run the extended tests (hours on a 2-core CPU: every "
                          "torchvision builder x every method, torch.compile equality)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--extended"):
        return
    import pytest
    skip = pytest.mark.skip(reason="extended test: run with --extended")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)
