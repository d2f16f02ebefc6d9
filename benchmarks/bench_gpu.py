"""Training throughput of the data paths and fused training, run times extrapolated, DPaI steps.

    python benchmarks/bench_gpu.py                      # on the GPU, all three shapes
    python benchmarks/bench_gpu.py --device cpu --quick # a small check of the script on a CPU
    ... [--table PATH]                                  # also append the table to PATH

For each shape (ResNet-20/CIFAR-10, VGG-19-BN/CIFAR-100, ResNet-18/Tiny-ImageNet) it writes
synthetic data in dpai.data's on-disk format (meta.json, train.pt, test.pt: uint8 images,
int64 labels) and loads it with dpai.data.load, then measures in the same run, on the same
99 %-sparse random ERK mask, training images/s of
  device    dpai.train on Data.train_batches (on CUDA: GPU-resident uint8, batched crop/flip,
            channels_last, bf16 autocast)
  loader    dpai.train on Data.loader_batches (DataLoader, torchvision per-image transforms,
            --workers processes, pinned memory)
  fused K   dpai.training.fused.train_fused of K models (own init, mask and data order each), for every
            K of --fused; images/s counts all K models' images
  procs K   K separate processes each running the device path at once (--procs; start CUDA
            MPS beforehand to measure with it: the line says whether a daemon pipe is found)
Then, for ResNet-20/CIFAR-10: seconds of a 160-epoch run extrapolated from measured epochs
(full epochs with the test pass; --quick: from the device-path images/s), the GPU-hours of the
120-run CIFAR-10 figure (120 runs one by one, and with the best fused K), and seconds per DPaI
step (ResNet-20, 99 %, eager and with --compile also compiled). Prints the figures as they come,
then a Markdown table (machine, date, command in every row; benchmarks/table.py); asserts nothing.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import dpai  # noqa: E402
from dpai.data import load  # noqa: E402
from dpai.training.fused import train_fused  # noqa: E402
from dpai.files.atomic import write_json  # noqa: E402
from dpai.methods.dpai_method import DPaI  # noqa: E402
from dpai.training import TrainConfig, train  # noqa: E402
from table import emit, secs  # noqa: E402  (benchmarks/, sys.path[0] when run as a script)

# name: (model, dataset, classes, image size, n_train, n_test)
SHAPES = {"resnet20-cifar10": ("resnet20", "cifar10", 10, 32, 50000, 10000),
          "vgg19_bn-cifar100": ("vgg19_bn", "cifar100", 100, 32, 50000, 10000),
          "resnet18-tiny-imagenet": ("resnet18", "tiny-imagenet", 200, 64, 100000, 10000)}
EPOCHS, FIGURE_RUNS = 160, 120


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_synthetic(root: Path, dataset, classes, size, n_train, n_test):
    """Random uint8 images in the prepared layout (root/<dataset>/{meta.json,train,test}.pt)."""
    out = root / dataset
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("test", n_test)):
        torch.save({"x": torch.randint(0, 256, (n, 3, size, size), generator=g,
                                       dtype=torch.uint8),
                    "y": torch.randint(0, classes, (n,), generator=g)}, out / f"{split}.pt")
    write_json(out / "meta.json", {
        "dataset": dataset, "num_classes": classes, "in_channels": 3, "image_size": size,
        "mean": [0.5] * 3, "std": [0.25] * 3, "n_train": n_train, "n_test": n_test,
        "crop_padding": 4, "flip": True, "source": "synthetic", "format": 1})
    return out


def setup(model_name, classes, size, device, seed=0):
    model = dpai.create_model(model_name, classes, 3, size, seed=seed).to(device)
    return model, dpai.prune(model, "random_erk", 0.99, seed=seed)


def timed(model, mask, batches_fn, test_fn, steps, warmup, batch, amp=True):
    """images/s of `steps` optimizer steps after `warmup` (epoch 0), via dpai.train."""
    counts = {0: warmup, 1: steps}
    cfg = TrainConfig(epochs=2, batch_size=batch, milestones=[100], amp=amp)
    res = train(model, mask, lambda e: itertools.islice(batches_fn(e), counts[e]), test_fn, cfg,
                progress=False, log=None)
    return steps * batch / res["timing"]["step_seconds"][1]


def fused_rate(model_name, classes, size, data, device, k, steps, warmup, batch):
    models, masks = zip(*(setup(model_name, classes, size, device, seed=s) for s in range(k)))
    gens = [torch.Generator().manual_seed(100 + s) for s in range(k)]
    counts = {0: warmup, 1: steps}
    streams = [lambda e, g=g: itertools.islice(data.train_batches(batch, generator=g,
                                                                  device=device), counts[e])
               for g in gens]
    cfg = TrainConfig(epochs=2, batch_size=batch, milestones=[100])
    res = train_fused(list(models), list(masks), streams,
                      lambda: itertools.islice(data.test_batches(batch, device=device), 1),
                      cfg, log=None)
    return k * steps * batch / res[0]["epochs"][1]["step_seconds"]


def measure_shape(name, args, device, root):
    model_name, dataset, classes, size, n_train, n_test = SHAPES[name]
    if args.quick:
        n_train, n_test = args.batch * (args.steps + args.warmup + 1), args.batch
    folder = write_synthetic(root, dataset, classes, size, n_train, n_test)
    data = load(folder, dataset, device=device)
    b, steps, warm = args.batch, args.steps, args.warmup

    def test_fn():
        return itertools.islice(data.test_batches(b, device=device), 1)

    rates = {}
    g = torch.Generator().manual_seed(0)
    rates["device"] = timed(*setup(model_name, classes, size, device),
                            lambda e: data.train_batches(b, generator=g, device=device),
                            test_fn, steps, warm, b)
    g = torch.Generator().manual_seed(0)
    rates["loader"] = timed(*setup(model_name, classes, size, device),
                            lambda e: data.loader_batches(b, generator=g, device=device,
                                                          num_workers=args.workers),
                            test_fn, steps, warm, b)
    for k in args.fused:
        rates[f"fused {k}"] = fused_rate(model_name, classes, size, data, device, k, steps,
                                         warm, b)
    for k in args.procs:
        rates[f"procs {k}"] = procs_rate(name, args, k)
    return rates, data


def procs_rate(name, args, k):
    """K concurrent processes, each the device path; the sum of their images/s."""
    cmd = [sys.executable, __file__, "--worker", name, "--device", args.device,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch)]
    if args.quick:
        cmd.append("--quick")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    return sum(json.loads(p.communicate()[0].strip().splitlines()[-1])["device"] for p in procs)


def epoch_seconds(data, device, batch, epochs):
    """Wall seconds per full ResNet-20 epoch (train + test pass), after one warm-up epoch."""
    model, mask = setup("resnet20", data.num_classes, data.image_size, device)
    g = torch.Generator().manual_seed(0)
    cfg = TrainConfig(epochs=epochs + 1, batch_size=batch, milestones=[100])
    res = train(model, mask, lambda e: data.train_batches(batch, generator=g, device=device),
                lambda: data.test_batches(512, device=device), cfg, progress=False, log=None)
    return sum(r["seconds"] for r in res["epochs"][1:]) / epochs


def dpai_step_seconds(device, steps, compile_):
    model = dpai.create_model("resnet20", 10, 3, 32, seed=0).to(device)
    search = DPaI(model, 0.99, seed=0, compile=compile_)
    search.run(5)  # warm-up (and compilation)
    sync(device)
    t0 = time.perf_counter()
    search.run(steps)  # run() syncs once at the end (the trajectory comes to the host)
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--quick", action="store_true",
                    help="small synthetic sets, ResNet-20 shape only unless --shapes; for CPUs")
    ap.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=None)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 100, quick 6)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (10, quick 2)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (8, quick 0)")
    ap.add_argument("--fused", type=int, nargs="*", default=None, help="K values (2 4 8; quick 2 4)")
    ap.add_argument("--procs", type=int, nargs="*", default=[], help="K processes, e.g. 2 4")
    ap.add_argument("--epochs", type=int, default=2, help="full epochs timed for the 160-epoch "
                    "extrapolation (not in --quick)")
    ap.add_argument("--dpai-steps", type=int, default=None, help="timed DPaI steps (200, quick 5)")
    ap.add_argument("--compile", action="store_true", help="also time the compiled DPaI step")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", metavar="PATH", help="also append the table to this .md file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    q = args.quick
    args.steps = args.steps or (6 if q else 100)
    args.warmup = args.warmup if args.warmup is not None else (2 if q else 10)
    args.workers = args.workers if args.workers is not None else (0 if q else 8)
    args.fused = args.fused if args.fused is not None else ([2, 4] if q else [2, 4, 8])
    args.dpai_steps = args.dpai_steps or (5 if q else 200)
    torch.set_num_threads(args.threads)
    device = dpai.resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory(prefix="bench_gpu.") as tmp:
        if args.worker:  # one of --procs' processes
            args.fused, args.procs = [], []
            rates, _ = measure_shape(args.worker, args, device, Path(tmp))
            print(json.dumps({"device": rates["device"]}))
            return
        shapes = args.shapes or (["resnet20-cifar10"] if q else list(SHAPES))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        mps = any(Path(p).exists() for p in (os.environ.get("CUDA_MPS_PIPE_DIRECTORY", ""),
                                              "/tmp/nvidia-mps") if p)
        print(f"device {name} ({device}), torch {torch.__version__}, threads {args.threads}, "
              f"batch {args.batch}, {args.steps} timed steps after {args.warmup}, loader "
              f"workers {args.workers}, MPS pipe {'found' if mps else 'not found'}"
              f"{', QUICK (small synthetic sets)' if q else ''}")
        print(f"{'shape':<24}{'path':<10}{'images/s':>12}{'vs device':>10}")
        settings = (f"batch {args.batch}, {args.steps} timed steps after {args.warmup}, loader "
                    f"workers {args.workers}, threads {args.threads}, MPS pipe "
                    f"{'found' if mps else 'not found'}{', quick' if q else ''}")
        table, r20 = [], None
        for shape in shapes:
            rates, data = measure_shape(shape, args, device, Path(tmp))
            for path, rate in rates.items():
                print(f"{shape:<24}{path:<10}{rate:>12.1f}{rate / rates['device']:>10.2f}")
                table.append([str(device), shape, f"{path} images/s", f"{rate:.1f}",
                              f"{rate / rates['device']:.2f}", settings])
            if shape == "resnet20-cifar10":
                r20 = (rates, data)
        if r20 is not None:
            rates, data = r20
            n = SHAPES["resnet20-cifar10"][4]
            if q:
                per_epoch = n / rates["device"]
                how = f"from the device path's images/s x {n} images (no test pass)"
            else:
                per_epoch = epoch_seconds(data, device, args.batch, args.epochs)
                how = f"from {args.epochs} measured full epochs (train + test)"
            run = EPOCHS * per_epoch
            fused = {k: v for k, v in rates.items() if k.startswith("fused")}
            best = max(fused, key=fused.get) if fused else None
            gain = max(1.0, fused[best] / rates["device"]) if best else 1.0
            print(f"resnet20 cifar10 {EPOCHS}-epoch run: {run:.1f} s ({how})")
            print(f"{FIGURE_RUNS}-run CIFAR-10 figure: {FIGURE_RUNS * run / 3600:.2f} GPU-hours one "
                  f"run at a time; {FIGURE_RUNS * run / 3600 / gain:.2f} with {best or 'no fusion'}"
                  f" ({gain:.2f}x)")
            hours, figure = FIGURE_RUNS * run / 3600, f"{FIGURE_RUNS}-run figure (GPU-hours)"
            for what, value in ((f"{EPOCHS}-epoch run (s), {how}", run),
                                (f"{figure}, one run at a time", hours),
                                (f"{figure}, {best or 'no fusion'} ({gain:.2f}x)", hours / gain)):
                table.append([str(device), "resnet20-cifar10", what, secs(value), "", settings])
        for compile_ in ([False, True] if args.compile else [False]):
            s = dpai_step_seconds(device, args.dpai_steps, compile_)
            print(f"dpai step resnet20 99% ({'compiled' if compile_ else 'eager'}): "
                  f"{s * 1000:.2f} ms")
            table.append([str(device), "resnet20, 99 % sparse",
                          f"dpai step, {'compiled' if compile_ else 'eager'} (s)", secs(s), "",
                          f"{args.dpai_steps} timed steps after 5, threads {args.threads}"])
        emit(["device", "shape", "figure", "value", "vs device", "settings"], table, args.table,
             device)


if __name__ == "__main__":
    main()
