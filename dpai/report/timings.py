"""Wall-clock seconds of the mask and train items, from the untracked side files
timings/{mask,train}/<method>-<sparsity>-<seed>.json. The tables written from them
(reports/timings.md, .csv) are side files too: no DVC output, nothing depends on them, and
they may differ between two runs on the same inputs."""
import math

import numpy as np
import pandas as pd

from .render import fmt_num, markdown_table, sparsity_label

COLUMNS = ["method", "sparsity", "mask_seconds_mean", "mask_seconds_total", "mask_seeds_timed",
           "train_seconds_mean", "train_seconds_total", "train_seeds_timed", "num_seeds"]


def timings_frame(timings: dict[float, dict[str, dict[str, list]]]) -> pd.DataFrame:
    """One row per (method, sparsity): mean and total seconds over the seeds that have a side
    file (NaN where none has), and how many have one."""
    rows = []
    for sparsity, by_method in timings.items():
        for method, stages in by_method.items():
            row = {"method": method, "sparsity": sparsity}
            for stage in ("mask", "train"):
                found = [s for s in stages[stage] if s is not None]
                row[f"{stage}_seconds_mean"] = float(np.mean(found)) if found else math.nan
                row[f"{stage}_seconds_total"] = float(np.sum(found)) if found else math.nan
                row[f"{stage}_seeds_timed"] = len(found)
                row["num_seeds"] = len(stages[stage])
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def timings_markdown(frame: pd.DataFrame, *, dataset: str, model: str) -> str:
    header = ["method", "sparsity", "mask (s / seed)", "train (s / seed)", "total (s)",
              "seeds timed (mask, train)"]
    rows = []
    for r in frame.itertuples():
        total = np.nansum([r.mask_seconds_total, r.train_seconds_total])
        timed = r.mask_seeds_timed + r.train_seeds_timed
        rows.append([r.method, sparsity_label(r.sparsity), fmt_num(r.mask_seconds_mean, 1),
                     fmt_num(r.train_seconds_mean, 1), fmt_num(total, 0) if timed else "",
                     f"{r.mask_seeds_timed}/{r.num_seeds}, {r.train_seeds_timed}/{r.num_seeds}"])
    return (f"Table: {dataset} / {model}: wall-clock seconds per seed of the mask and train "
            f"items (mean over the seeds with a file in timings/; blank = none). Not a DVC "
            f"output: this file changes from run to run.\n\n"
            + markdown_table(header, rows) + "\n")


def timings_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.6g")
