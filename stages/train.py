"""Stage `train@<method>-<sparsity>-<seed>`: sparse training of one mask.

    python stages/train.py METHOD SPARSITY SEED   -> runs/METHOD-SPARSITY-SEED.json

`train.init: same` (default) trains the very weights the mask was computed on (the init of
the mask's seed), as the baselines' reference code does; `fresh` builds a new init (the DPaI
authors' code; with mask.transform=shuffle, the usual sanity checks). A checkpoint is saved
every DPAI_CHECKPOINT_EVERY epochs (default 1; 0: never) under checkpoints/, and a rerun
after a kill resumes from it. A non-finite loss stops the run (exit 1), writes no result and
keeps the last good checkpoint.

Data-parallel: `torchrun --nproc_per_node N stages/train.py METHOD SPARSITY SEED` (or several
machines, torchrun's --nnodes) trains the same item with DDP (dpai.training.distributed): the
global batch is train.batch_size, `train.sync_bn` synchronises BatchNorm, rank 0 writes the
run file and the checkpoints, each process uses compute.threads threads. The run file records
the world size.
"""
import sys

import torch

import common
from dpai import data as datasets
from dpai.core.mask import Mask
from dpai.files.atomic import write_json
from dpai.training import NonFiniteLoss, TrainParams, train, train_ddp
from dpai.training.ddp import is_main, setup, world_size

# fresh inits come from another seed stream than the init the mask was computed on
FRESH_OFFSET = 1_000_000


def main(argv: list[str]) -> None:
    params = common.start(train=TrainParams)
    method, sparsity, seed = common.parse_item(params, argv)
    name = common.item(method, sparsity, seed)
    device = common.device(params.train.device)
    init = params.train.init
    config = params.train.config()
    world = world_size()
    if world > 1:
        _, _, device = setup(device=device.type)
    meta = common.data_meta(params)
    mask_file = common.mask_path(name)
    mask = Mask.load(mask_file)
    init_seed = seed + FRESH_OFFSET if init == "fresh" else seed
    model = common.build_model(params, meta, init_seed).to(device)
    data = datasets.load(params.data.folder, meta["dataset"], device=device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    ckpt = common.checkpoint(
        "train", name, {"mask": common.file_digest(mask_file), "data": common.data_digest(meta),
                        "model": params.model.to_dict(), "train": params.train.to_dict(),
                        "init": init, "device": device.type, "world_size": world},
        every=common.env_int("DPAI_CHECKPOINT_EVERY", 1))
    try:
        if world > 1:
            result = train_ddp(model, mask, data, config, seed=seed, checkpoint=ckpt,
                               device=device)
        else:
            result = train(
                model, mask,
                lambda epoch: data.train_batches(config.batch_size, generator=generator,
                                                 device=device),
                lambda: data.test_batches(config.batch_size, device=device),
                config, device=device, checkpoint=ckpt, generators=[generator])
    except NonFiniteLoss as exc:
        common.fail(f"{name}: {exc}", status=1)
    if not is_main():
        return  # rank 0 writes the run file
    timing = {"seconds": (timing := result.pop("timing"))["train_seconds"], **timing}
    environment = common.environment(device, world_size=world,
                                     deterministic=torch.are_deterministic_algorithms_enabled())
    run = {"method": method, "seed": seed, "sparsity": sparsity, "density": mask.density,
           "init": init, "init_seed": init_seed, "dataset": meta["dataset"],
           "model": params.model.name, "config": config.to_dict(),
           "environment": environment, **result}
    write_json(common.run_path(name), run)
    common.write_timing("train", name, timing)
    ckpt.remove()
    print(f"{name}: final test accuracy {result['final_test_acc']:.2f} % "
          f"(best {result['best_test_acc']:.2f} % at epoch {result['best_epoch']})")


if __name__ == "__main__":
    main(sys.argv[1:])
