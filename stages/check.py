"""Stage `check`: validate the whole params.yaml before any other stage runs or DVC deletes
any output (DVC removes a stage's outputs before running it, so a stage that failed on a bad
value would already have cost its old result).

    python stages/check.py      -> checks/params.ok (constant content: nothing reruns)

It depends on params.yaml itself, so every change of a parameter is checked first; a matrix
over an empty list (which DVC silently expands to zero stages) is caught here too.
"""
from pathlib import Path

import common
from dpai.io import write_text


def main() -> None:
    common.start()
    write_text(Path("checks/params.ok"), "params.yaml is valid (dpai.config.validate)\n")


if __name__ == "__main__":
    main()
