"""Stage `data`: download, verify and prepare the dataset into data/<dataset>/.

    python stages/data.py        (reads params.yaml: data.*)
"""
import common
from dpai.data import prepare


def main() -> None:
    params = common.load_params()
    data = params["data"]
    url = data["imagenet_archives"] if data["dataset"] == "imagenet" else data["url"]
    folder = prepare(data["dataset"], data["root"], url=url, split_seed=data["split_seed"])
    print(f"prepared {data['dataset']} in {folder}")


if __name__ == "__main__":
    main()
