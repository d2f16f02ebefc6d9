"""Stage `mask@<method>-<sparsity>-<seed>`: one mask, with its sparsity report and topology.

    python stages/mask.py METHOD SPARSITY SEED   -> masks/METHOD-SPARSITY-SEED.pt and .json

Each seed gets its own model init, scoring sample and (for DPaI) scores, as in the reference
where every seed reruns the whole search. DPaI saves its search every DPAI_SEARCH_CHECKPOINT_EVERY
steps (default 500; 0: never) and a rerun resumes it. Wall-clock seconds go to
timings/mask/<item>.json, never into the mask files, so identical inputs give identical bytes.
"""
import sys
import time

import common
from dpai import data as datasets
from dpai.methods import DATA_DRIVEN, prune
from dpai.methods.params import MaskParams
from dpai.paths import flops, topology


def main(argv: list[str]) -> None:
    params = common.start(mask=MaskParams)
    method, sparsity, seed = common.parse_item(params, argv)
    name = common.item(method, sparsity, seed)
    try:
        options = params.mask.options(method)
    except ValueError as exc:
        common.fail(str(exc))
    device = common.device(params.mask.device)
    meta = common.data_meta(params)
    model = common.build_model(params, meta, seed).to(device)
    sample = None
    if method in DATA_DRIVEN:
        data = datasets.load(params.data.folder, meta["dataset"], device=device)
        sample = datasets.scoring_batches(data, num_classes=meta["num_classes"], seed=seed,
                                          per_class=params.mask.scoring_per_class, device=device)
    runtime = {}
    if method == "dpai":
        every = common.env_int("DPAI_SEARCH_CHECKPOINT_EVERY", 500)
        runtime = {"progress": True, "checkpoint": common.checkpoint(
            "mask", name, {"params": options, "model": params.model.to_dict(),
                           "data": common.data_digest(meta), "device": device.type}, every)}
    try:
        mask = prune(model, method, sparsity, seed=seed, data=sample, **options, **runtime)
    except (ValueError, FloatingPointError) as exc:
        common.fail(f"{name}: {exc}", status=1)
    seconds = mask.info.pop("seconds")
    if sample is not None:
        mask.info["scoring"] = sample.info
    if params.mask.transform == "shuffle":
        mask = mask.shuffle(seed)
    start = time.perf_counter()
    structure = topology(model, mask)
    topology_seconds = time.perf_counter() - start
    cost = flops(model, mask, structure)
    cost.pop("layers")
    path = mask.save(common.mask_path(name), topology=structure, flops=cost,
                     environment=common.environment(device))
    common.write_timing("mask", name, {"seconds": seconds, "topology_seconds": topology_seconds})
    if runtime:
        runtime["checkpoint"].remove()
    print(f"{name}: density {mask.density:.5f}, effective nodes {structure['effective_nodes']}, "
          f"log-paths (exact) {structure['log_paths_exact']:.2f}, collapsed layers "
          f"{len(structure['collapsed_layers'])}, {seconds:.1f} s -> {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
