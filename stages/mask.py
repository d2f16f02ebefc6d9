"""Stage `mask@<method>`: one mask per seed, with its sparsity report and topology.

    python stages/mask.py METHOD     -> masks/METHOD/METHOD-<seed>.pt and .json

Each seed gets its own model init, scoring sample and (for DPaI) scores, as in the reference
where every seed reruns the whole search.
"""
import shutil
import sys
import time

import common
import dpai


def main(method: str) -> None:
    params = common.load_params()
    if method not in params["methods"]:
        common.fail(f"method={method!r} is not in params methods {params['methods']}")
    method_params = dict(params["mask"].get(method) or {})
    if method == "dpai":
        method_params["progress"] = True
    device = common.device(params["mask"]["device"])
    common.set_threads()
    meta = common.data_meta(params)
    data = (dpai.data.load(common.data_folder(params), meta["dataset"], device=device)
            if method in dpai.DATA_DRIVEN else None)
    # stale seeds from an earlier `seeds` list must not survive in this output folder
    shutil.rmtree(common.mask_path(method, 0).parent, ignore_errors=True)
    for seed in params["seeds"]:
        model = common.build_model(params, meta, seed).to(device)
        sample = None
        if data is not None:
            sample = dpai.scoring_batches(data, num_classes=meta["num_classes"], seed=seed,
                                          per_class=params["mask"]["scoring_per_class"],
                                          device=device)
        mask = dpai.prune(model, method, params["sparsity"], seed=seed, data=sample,
                          **method_params)
        mask.info["params"].pop("progress", None)
        if sample is not None:
            mask.info["scoring"] = sample.info
        start = time.perf_counter()
        topology = dpai.topology(model, mask)
        topology["seconds"] = time.perf_counter() - start
        path = mask.save(common.mask_path(method, seed), topology=topology)
        print(f"{method} seed {seed}: density {mask.density:.5f}, effective nodes "
              f"{topology['effective_nodes']}, log-paths (exact) {topology['log_paths_exact']:.2f}, "
              f"collapsed layers {len(topology['collapsed_layers'])}, {mask.info['seconds']:.1f} s "
              f"-> {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        common.fail("usage: python stages/mask.py METHOD")
    main(sys.argv[1])
