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
import dpai


def main(argv: list[str]) -> None:
    params = common.start()
    method, sparsity, seed = common.parse_item(params, argv)
    name = common.item(method, sparsity, seed)
    method_params = dict(params["mask"][method] or {})
    if "scoring_batch_size" in dpai.method_params(method):
        method_params["scoring_batch_size"] = params["mask"]["scoring_batch_size"]
    device = common.device(params["mask"]["device"])
    meta = common.data_meta(params)
    data = (dpai.data.load(common.data_folder(params), meta["dataset"], device=device)
            if method in dpai.DATA_DRIVEN else None)
    model = common.build_model(params, meta, seed).to(device)
    sample = None
    if data is not None:
        sample = dpai.scoring_batches(data, num_classes=meta["num_classes"], seed=seed,
                                      per_class=params["mask"]["scoring_per_class"],
                                      device=device)
    runtime = {}
    if method == "dpai":
        every = common.env_int("DPAI_SEARCH_CHECKPOINT_EVERY", 500)
        runtime = {"progress": True, "checkpoint": common.checkpoint(
            "mask", name, {"params": method_params, "model": params["model"],
                           "data": common.data_digest(meta), "device": device.type}, every)}
    try:
        mask = dpai.prune(model, method, sparsity, seed=seed, data=sample, **method_params,
                          **runtime)
    except (ValueError, FloatingPointError) as exc:
        common.fail(f"{name}: {exc}", status=1)
    seconds = mask.info.pop("seconds")
    if sample is not None:
        mask.info["scoring"] = sample.info
    if params["mask"]["transform"] == "shuffle":
        mask = mask.shuffle(seed)
    start = time.perf_counter()
    topology = dpai.topology(model, mask)
    topology_seconds = time.perf_counter() - start
    flops = dpai.flops(model, mask, topology)
    flops.pop("layers")
    path = mask.save(common.mask_path(name), topology=topology, flops=flops)
    common.write_timing("mask", name, {"seconds": seconds, "topology_seconds": topology_seconds})
    if runtime:
        runtime["checkpoint"].remove()
    print(f"{name}: density {mask.density:.5f}, effective nodes {topology['effective_nodes']}, "
          f"log-paths (exact) {topology['log_paths_exact']:.2f}, collapsed layers "
          f"{len(topology['collapsed_layers'])}, {seconds:.1f} s -> {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
