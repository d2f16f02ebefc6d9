"""Stage `data`: download, verify and prepare the dataset into data/<dataset>/.

    python stages/data.py        (reads params.yaml: data.*)

A download that fails its checksum is deleted and fetched once more; a prepared folder whose
files no longer match their recorded checksums is rebuilt (dpai/data/prepare.py).
"""
from pathlib import Path

import common
from dpai.data import ChecksumError, prepare


def main() -> None:
    data = common.start().data
    try:
        if data.dataset == "imagenet":
            from dpai.data.imagenet import check_sources
            check_sources(Path(data.imagenet_archives))  # says where to put what
        url = data.imagenet_archives if data.dataset == "imagenet" else data.url
        folder = prepare(data.dataset, data.root, url=url, split_seed=data.split_seed)
    except (FileNotFoundError, ChecksumError) as exc:
        common.fail(str(exc), status=1)
    print(f"prepared {data.dataset} in {folder}")


if __name__ == "__main__":
    main()
