"""Stage `check`: validate the whole params.yaml before any other stage runs or DVC deletes
any output (DVC removes a stage's outputs before running it, so a stage that failed on a bad
value would already have cost its old result).

    python stages/check.py      -> checks/params.ok (constant content: nothing reruns)

It depends on params.yaml itself, so every change of a parameter is checked first: every
section, the rules between sections, and that the model takes the data set's input (built
once, here; the other stages read only their own sections). A matrix over an empty list
(which DVC silently expands to zero stages) is caught here too.
"""
from pathlib import Path

import common
from dpai.files.atomic import write_text
from dpai.pipeline.params import read
from dpai.pipeline.validate import validate


def main() -> None:
    common.start()
    try:
        validate(read("params.yaml"))
    except ValueError as exc:
        common.fail(str(exc).splitlines()[0])
    write_text(Path("checks/params.ok"), "params.yaml is valid (dpai.pipeline.validate)\n")


if __name__ == "__main__":
    main()
