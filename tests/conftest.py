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


def pytest_runtest_setup(item):
    """The pipeline, parallel and collapse tests build on each other inside one module-scoped
    repo, so `--dist loadgroup` must keep each xdist_group on one worker. pytest 9.2 with
    pytest-xdist 3.8 silently stops grouping (pytest-dev/pytest-xdist#1386): the later tests
    would get a fresh repo and fail at random. Say so instead."""
    if (getattr(item.config.option, "loadgroup", False)   # set on xdist workers only
            and item.get_closest_marker("xdist_group") and "@" not in item.nodeid):
        import pytest
        pytest.fail(f"--dist loadgroup is not grouping this test (pytest {pytest.__version__}, "
                    "pytest-dev/pytest-xdist#1386): pip install -e '.[test]' pins pytest<9.2",
                    pytrace=False)
