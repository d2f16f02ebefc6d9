"""Stage `train@<method>-<seed>`: sparse training of one mask.

    python stages/train.py METHOD SEED     -> runs/METHOD-SEED.json
"""
import sys

import torch

import common
import dpai
from dpai.io import write_json

INITS = ("fresh", "same")
# fresh inits come from another seed stream than the init the mask was computed on
FRESH_OFFSET = 1_000_000


def main(method: str, seed: int) -> None:
    params = common.load_params()
    train = dict(params["train"])
    device = common.device(train.pop("device"))
    init = train.pop("init")
    if init not in INITS:
        common.fail(f"train.init={init!r} is not one of {list(INITS)}")
    try:
        config = dpai.TrainConfig.from_dict(train)
    except (TypeError, ValueError) as exc:
        common.fail(str(exc))
    common.set_threads()
    meta = common.data_meta(params)
    mask = dpai.Mask.load(common.mask_path(method, seed))
    init_seed = seed + FRESH_OFFSET if init == "fresh" else seed
    model = common.build_model(params, meta, init_seed).to(device)
    data = dpai.data.load(common.data_folder(params), meta["dataset"], device=device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    result = dpai.train(
        model, mask,
        lambda epoch: data.train_batches(config.batch_size, generator=generator, device=device),
        lambda: data.test_batches(config.batch_size, device=device),
        config, device=device)
    run = {"method": method, "seed": seed, "sparsity": mask.info["sparsity"],
           "density": mask.density, "init": init, "init_seed": init_seed,
           "dataset": meta["dataset"], "model": params["model"]["name"],
           "device": str(device), "config": config.to_dict(), **result}
    write_json(common.run_path(method, seed), run)
    print(f"{method} seed {seed}: final test accuracy {result['final_test_acc']:.2f} % "
          f"(best {result['best_test_acc']:.2f} % at epoch {result['best_epoch']})")


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        common.fail("usage: python stages/train.py METHOD SEED")
    main(sys.argv[1], int(sys.argv[2]))
