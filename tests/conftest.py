import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the suite runs on 2 cores: one thread per test process keeps timings sane
torch.set_num_threads(int(os.environ.get("DPAI_TEST_THREADS", "1")))
