"""``dpai-repro``: run every pending item of the DVC pipeline, phase by phase, in parallel.

The phases are the topological generations of DVC's own stage graph (for this project:
``data``, then every ``mask@*``, then every ``train@*``, then ``report``). At the start of
each phase the runner asks DVC which of the phase's items are changed (``dvc status``) and
runs each of them through DVC itself, ``dvc --wait-for-lock repro -s ITEM``, so DVC hashes,
caches and writes ``dvc.lock`` exactly as a plain ``dvc repro`` does. DVC releases its repo
lock while a stage's command runs, so several such processes run side by side; a lock error
(DVC holds the lock briefly before and after each command) is retried.

Two executors:

- ``threads`` (default): ``-j N`` worker threads on this machine, each launching one DVC
  process at a time, one GPU per worker (round-robin, ``CUDA_VISIBLE_DEVICES``). Every stage
  uses ``compute.threads`` torch threads (a parameter: results depend on it), so the default
  is cores // compute.threads workers, and the runner warns when workers x threads exceeds
  the cores (oversubscribed cores make every step many times slower).
- ``submitit``: each pending item of a phase is one submitit job (SLURM, or submitit's local
  and debug executors); the runner waits for the phase's jobs before the next phase. The repo
  folder must be on a filesystem the jobs share. With ``--remote NAME`` every job pushes its
  outputs and the run-cache (``dvc push --run-cache -r NAME``) so that any other clone
  restores every item with ``dvc pull --run-cache && dvc repro`` without running it.

Logs: one file per item (stdout and stderr of its DVC commands) under
``.dvc/tmp/dpai-repro/logs/``, which no stage hashes and git ignores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import queue
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

STATE_DIR = Path(".dvc") / "tmp" / "dpai-repro"
LOCK_ERRORS = ("Unable to acquire lock", "is busy")
CLUSTERS = ("slurm", "local", "debug")


# --------------------------------------------------------------------------- DAG and status

def _open_repo(root):
    from dvc.repo import Repo

    return Repo(str(root))


def _plan(repo):
    """(graph, steps): DVC's active stage graph and the stages a plain ``dvc repro`` visits,
    in the order it visits them (DVC's own planner)."""
    import networkx as nx

    try:
        from dvc.dvcfile import PROJECT_FILE
        from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

        graph = get_active_graph(repo.index.graph)
        targets = collect_stages(repo, [PROJECT_FILE]) if os.path.exists(
            os.path.join(repo.root_dir, PROJECT_FILE)) else list(graph.nodes)
        steps = plan_repro(graph, targets)
    except ImportError:  # DVC moved its internals: same rule, written out
        graph = repo.index.graph
        steps = list(nx.dfs_postorder_nodes(graph))
    return graph, [s for s in steps if getattr(s, "cmd", None)]


@dataclasses.dataclass
class Plan:
    phases: list  # list of lists of items, in dependency order
    order: list  # items in the order a sequential `dvc repro` visits them
    downstream: dict  # item -> items depending on it, directly or not


def plan(root=".") -> Plan:
    """Phases = topological generations of DVC's stage graph, restricted to the stages a plain
    ``dvc repro`` reproduces; stages without a command (``.dvc`` files) order the graph but
    are not items."""
    import networkx as nx

    with _open_repo(root) as repo:
        graph, steps = _plan(repo)
        items = {s.addressing for s in steps}
        phases = []
        # edges point from a stage to the stages it depends on
        for generation in nx.topological_generations(graph.reverse(copy=False)):
            phase = sorted(s.addressing for s in generation if s.addressing in items)
            if phase:
                phases.append(phase)
        downstream = {s.addressing: {d.addressing for d in nx.ancestors(graph, s)
                                     if d.addressing in items} for s in steps}
        return Plan(phases, [s.addressing for s in steps], downstream)


def phases(root=".") -> list[list[str]]:
    return plan(root).phases


def pending(root=".") -> set[str]:
    """Items that ``dvc status`` reports changed now."""
    with _open_repo(root) as repo:
        return set(repo.status())


def preignore(root, items) -> None:
    """Write DVC's ``.gitignore`` entries for the outputs of ``items`` now, in the order a
    sequential ``dvc repro`` would add them.

    DVC appends an output's entry to the ``.gitignore`` of its folder when the output is
    first saved, so parallel items would order those lines by finishing time; a stage that
    depends on the folder (e.g. ``report`` on ``runs/``) would then hash a different
    ``.gitignore`` than after a sequential run. DVC skips entries that exist already.
    """
    items = set(items)
    with _open_repo(root) as repo:
        _, steps = _plan(repo)
        for stage in steps:
            if stage.addressing not in items:
                continue
            for out in stage.outs:
                if not (out.protocol == "local" and out.use_scm_ignore):
                    continue
                try:
                    os.makedirs(os.path.dirname(out.fs_path), exist_ok=True)
                    out.ignore()
                except Exception:  # DVC reports a tracked or invalid output itself
                    continue


def lock_stages(root) -> list[str]:
    """The stage entries of dvc.lock, in file order ([] without one)."""
    import yaml

    path = Path(root) / "dvc.lock"
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    return list((data or {}).get("stages") or {})


def order_lock(root, order: list[str], before: list[str]) -> None:
    """Put dvc.lock's entries in the order a sequential ``dvc repro`` leaves them: the entries
    that were there before the run where they were, then the new ones in DVC's planning order
    ``order``. DVC updates an entry in place and appends a new one when its stage finishes,
    so parallel workers would otherwise order the file by finishing time (same content,
    other bytes). Rewritten with DVC's own round-trip YAML (formatting kept)."""
    from dvc.utils.serialize import modify_yaml

    path = Path(root) / "dvc.lock"
    if not path.exists():
        return
    rank = {name: i for i, name in enumerate(order)}
    with modify_yaml(str(path)) as data:
        stages = data.get("stages") or {}
        new = sorted((k for k in stages if k not in before), key=lambda k: rank.get(k, len(rank)))
        entries = [(k, stages[k]) for k in [*(k for k in before if k in stages), *new]]
        for key in list(stages):
            del stages[key]
        for key, value in entries:
            stages[key] = value


def phase_label(items) -> str:
    names = sorted({item.rsplit(":", 1)[-1].split("@", 1)[0] + ("@*" if "@" in item else "")
                    for item in items})
    return ", ".join(names)


# --------------------------------------------------------------------------- workers

def detect_gpus() -> list[str]:
    """GPU ids to hand out: CUDA_VISIBLE_DEVICES if set, else every GPU ``nvidia-smi`` lists.

    (``nvidia-smi`` rather than torch: importing torch would cost the runner seconds.)
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_plan(workers: int, gpus: list[str] | None = None) -> list[dict[str, str]]:
    """Environment overrides of each worker slot: slot i gets ``gpus[i % len(gpus)]`` (so
    with K workers per GPU, K slots share each device); nothing else (the thread count is the
    compute.threads parameter, which every stage applies)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {}
            for i in range(workers)]


def default_workers(cores: int, threads: int, gpus: list[str], per_gpu: int) -> int:
    """One worker per GPU x per_gpu; without GPUs, as many as the cores hold at `threads` each."""
    return len(gpus) * per_gpu if gpus else max(1, cores // threads)


def oversubscribed(workers: int, threads: int, cores: int) -> str | None:
    """A warning when the workers' threads together exceed the cores."""
    if workers * threads <= cores:
        return None
    return (f"warning: {workers} workers x compute.threads={threads} = {workers * threads} "
            f"threads on {cores} cores: every stage will run several times slower; use "
            f"-j {max(1, cores // threads)} or -S compute.threads=N")


# --------------------------------------------------------------------------- one item

@dataclasses.dataclass
class ItemResult:
    item: str
    ok: bool
    returncode: int
    seconds: float
    log: str
    attempts: int
    error: str = ""


def log_path(root, item: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9@._=+-]", "_", item)
    return Path(root) / STATE_DIR / "logs" / f"{safe}.log"


def _lock_error(text: str) -> bool:
    return any(line.startswith("ERROR") and any(m in line for m in LOCK_ERRORS)
               for line in text.splitlines())


def _run_dvc(args: list[str], root, env, log, retries: int, backoff: float) -> tuple[int, int]:
    """Run ``dvc --wait-for-lock ARGS`` appending to ``log``; retry DVC's lock errors."""
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", *args]
    for attempt in range(1, retries + 2):
        with open(log, "a") as f:
            f.write(f"$ dvc --wait-for-lock {' '.join(args)}   (attempt {attempt})\n")
            f.flush()
            start = f.tell()
            rc = subprocess.run(cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL).returncode
        if rc == 0:
            return 0, attempt
        with open(log) as f:
            f.seek(start)
            text = f.read()
        if attempt > retries or not _lock_error(text):
            return rc, attempt
        time.sleep(backoff * 2 ** (attempt - 1))
    return rc, attempt  # pragma: no cover


def run_item(item: str, root=".", env_overrides: dict | None = None, remote: str | None = None,
             retries: int = 4, backoff: float = 1.0) -> ItemResult:
    """``dvc --wait-for-lock repro -s ITEM`` in ``root`` (then ``dvc push --run-cache`` to
    ``remote``), output to the item's log file. Runs in a worker thread or a submitit job."""
    root = os.path.abspath(root)
    env = dict(os.environ)
    env.update(env_overrides or {})
    log = log_path(root, item)
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = {k: env[k] for k in ("CUDA_VISIBLE_DEVICES",) if k in env}
    log.write_text(f"# dpai-repro item {item} in {root}\n# env {shown}\n")
    t0 = time.monotonic()
    rc, attempts = _run_dvc(["repro", "-s", item], root, env, log, retries, backoff)
    error = "" if rc == 0 else f"dvc repro -s {item} exited {rc}"
    if rc == 0 and remote:
        rc, more = _run_dvc(["push", "--run-cache", "-r", remote, item], root, env, log,
                            retries, backoff)
        attempts += more
        error = "" if rc == 0 else f"dvc push --run-cache -r {remote} {item} exited {rc}"
    return ItemResult(item, rc == 0, rc, time.monotonic() - t0, str(log), attempts, error)


# --------------------------------------------------------------------------- executors

def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="item", file=sys.stderr, dynamic_ncols=True)


class ThreadRunner:
    def __init__(self, root, plan, remote=None):
        self.root, self.plan, self.remote = root, plan, remote

    def run_phase(self, items, bar) -> list[ItemResult]:
        slots = queue.Queue()
        for env in self.plan:
            slots.put(env)

        def task(item):
            env = slots.get()
            try:
                return run_item(item, self.root, env, self.remote)
            finally:
                slots.put(env)

        results = []
        with ThreadPoolExecutor(max_workers=len(self.plan)) as pool:
            futures = [pool.submit(task, item) for item in items]
            for fut in as_completed(futures):
                results.append(_done(fut.result(), bar))
        return results


class SubmititRunner:
    """One submitit job per item; SLURM gets a job array per phase."""

    def __init__(self, root, cluster, plan, remote=None, workers=None, timeout_min=24 * 60,
                 slurm_partition=None, gpus_per_job=0, threads=None, poll_s=1.0):
        import cloudpickle
        import submitit

        # jobs get run_item by value: unpickling it then needs neither torch nor dpai
        module = sys.modules.get(run_item.__module__)
        if module is not None and module.__name__ != "__main__":
            cloudpickle.register_pickle_by_value(module)
        self.root, self.cluster, self.remote, self.poll_s = root, cluster, remote, poll_s
        folder = Path(root) / STATE_DIR / "submitit" / "%j"
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params = {"timeout_min": int(timeout_min), "name": "dpai-repro"}
        if gpus_per_job:
            params["gpus_per_node"] = int(gpus_per_job)
        if cluster == "slurm":
            params["cpus_per_task"] = int(threads)  # compute.threads
            if slurm_partition:
                params["slurm_partition"] = slurm_partition
            if workers:
                params["slurm_array_parallelism"] = int(workers)
            self.plan = [{}]  # SLURM sets CUDA_VISIBLE_DEVICES
            self.window = None  # SLURM's array parallelism limits concurrency
        else:
            self.plan = plan
            self.window = len(plan)
        self.executor.update_parameters(**params)

    def _submit(self, item, env):
        return self.executor.submit(run_item, item, os.path.abspath(self.root), env, self.remote)

    def _collect(self, item, job, bar):
        try:
            res = job.result()
        except Exception as exc:  # the job died (timeout, node failure, preemption)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            res = ItemResult(item, False, -1, 0.0, str(log_path(self.root, item)), 0,
                             f"submitit job {job.job_id} failed: {first}")
        return _done(res, bar)

    def run_phase(self, items, bar) -> list[ItemResult]:
        results = []
        if self.window is None:
            with self.executor.batch():
                jobs = [(item, self._submit(item, self.plan[0])) for item in items]
            for item, job in jobs:
                results.append(self._collect(item, job, bar))
            return results
        # local / debug: at most one job per worker slot at a time
        todo = list(items)
        running = {}  # slot index -> (item, job)
        free = list(range(self.window))
        while todo or running:
            while todo and free:
                slot = free.pop(0)
                item = todo.pop(0)
                running[slot] = (item, self._submit(item, self.plan[slot]))
            finished = [s for s, (_, job) in running.items()
                        if self.cluster == "debug" or job.done()]
            if not finished:
                time.sleep(self.poll_s)
                continue
            for slot in finished:
                item, job = running.pop(slot)
                results.append(self._collect(item, job, bar))
                free.append(slot)
        return results


def _done(res: ItemResult, bar) -> ItemResult:
    bar.update(1)
    if not res.ok:
        bar.write(f"FAILED {res.item}: {res.error} (log: {res.log})", file=sys.stderr)
    return res


# --------------------------------------------------------------------------- validation

def read_params(root):
    """The repo's params.yaml, validated (dpai.pipeline.validate, without building the model:
    the check stage does that), or None when there is none; ValueError -> exit 2."""
    from .params import read
    from .validate import validate
    path = Path(root) / "params.yaml"
    return validate(read(path) or {}, fit=False) if path.exists() else None


# --------------------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dpai-repro",
        description="Run every pending item of the DVC pipeline in the current directory, "
                    "phase by phase, each through `dvc --wait-for-lock repro -s ITEM`.")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="parallel workers (default: cores // compute.threads, or one per GPU x "
                        "--workers-per-gpu)")
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU ids to hand out (default: CUDA_VISIBLE_DEVICES "
                        "or every CUDA device); 'none' for no GPUs")
    p.add_argument("--workers-per-gpu", type=int, default=1, metavar="K",
                   help="K workers share each GPU (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list phases and pending items")
    p.add_argument("--executor", choices=("threads", "submitit"), default="threads")
    p.add_argument("--cluster", choices=CLUSTERS, default="slurm",
                   help="submitit cluster (default slurm)")
    p.add_argument("--slurm-partition", default=None)
    p.add_argument("--timeout-min", type=int, default=24 * 60,
                   help="submitit job time limit in minutes (default 1440)")
    p.add_argument("--gpus-per-job", type=int, default=0, help="submitit: GPUs per job")
    p.add_argument("--remote", default=None,
                   help="after each item: dvc push --run-cache -r REMOTE ITEM")
    p.add_argument("--no-validate", action="store_true",
                   help="skip validating params.yaml (dpai.pipeline.validate)")
    return p


def _fail(msg: str, code: int) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    root = os.getcwd()
    if args.workers_per_gpu < 1:
        return _fail(f"--workers-per-gpu must be >= 1, got {args.workers_per_gpu}", 2)
    if args.jobs is not None and args.jobs < 1:
        return _fail(f"-j/--jobs must be >= 1, got {args.jobs}", 2)
    try:
        params = None if args.no_validate else read_params(root)
    except ValueError as exc:
        return _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid params", 2)
    threads = params.compute.threads if params is not None else 1

    if args.gpus is None:
        gpus = detect_gpus()
    elif args.gpus.strip().lower() in ("", "none"):
        gpus = []
    else:
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    cores = cpu_count()
    workers = args.jobs or default_workers(cores, threads, gpus, args.workers_per_gpu)
    # slot i gets gpus[i % len(gpus)]: round-robin, K slots per device with K x len(gpus) workers
    plan_env = worker_plan(workers, gpus)
    warning = oversubscribed(workers, threads, cores) if args.executor == "threads" else None
    if warning:
        print(warning, file=sys.stderr)

    try:
        dag = plan(root)
        now = pending(root)
    except Exception as exc:
        return _fail(f"cannot read the DVC pipeline in {root}: {exc}", 2)
    all_phases = dag.phases
    later = set().union(*(dag.downstream.get(i, set()) for i in now)) - now

    if args.dry_run:
        print(f"{len(all_phases)} phases; {workers} worker(s), "
              f"{threads} thread(s) each (compute.threads)"
              + (f", GPUs {','.join(gpus)}" if gpus else ""))
        for k, items in enumerate(all_phases, 1):
            run_now = [i for i in items if i in now]
            maybe = [i for i in items if i in later]
            print(f"phase {k}/{len(all_phases)} [{phase_label(items)}]: {len(run_now)} pending"
                  + (f", {len(maybe)} more if their inputs change" if maybe else ""))
            for i in run_now:
                print(f"  {i}")
            for i in maybe:
                print(f"  {i} (after upstream)")
        return 0

    preignore(root, now | later)
    before = lock_stages(root)
    if args.executor == "threads":
        runner = ThreadRunner(root, plan_env, args.remote)
    else:
        runner = SubmititRunner(root, args.cluster, plan_env, args.remote, workers=args.jobs,
                                timeout_min=args.timeout_min,
                                slurm_partition=args.slurm_partition,
                                gpus_per_job=args.gpus_per_job, threads=threads)

    t0 = time.monotonic()
    results: list[ItemResult] = []
    failed: list[ItemResult] = []
    bar = _progress(0)
    stopped_at = None
    try:
        for k, items in enumerate(all_phases, 1):
            if k > 1:  # what upstream produced decides what is pending now
                now = pending(root)
            todo = [i for i in items if i in now]
            bar.set_description(f"phase {k}/{len(all_phases)} {phase_label(items)}")
            if not todo:
                continue
            bar.total += len(todo)
            bar.refresh()
            res = runner.run_phase(todo, bar)
            results += res
            failed = [r for r in res if not r.ok]
            if failed:
                stopped_at = k
                break
    finally:
        bar.close()
        order_lock(root, dag.order, before)

    wall = time.monotonic() - t0
    print(f"dpai-repro: {len(results)} item(s) run in {wall:.1f} s "
          f"({args.executor}{'/' + args.cluster if args.executor == 'submitit' else ''}, "
          f"{workers} worker(s)); {len(failed)} failed", file=sys.stderr)
    for r in sorted(results, key=lambda r: r.item):
        print(f"  {'ok  ' if r.ok else 'FAIL'} {r.item:40s} {r.seconds:8.1f} s  "
              f"{os.path.relpath(r.log, root)}", file=sys.stderr)
    if failed:
        names = "; ".join(f"{r.item} (log: {os.path.relpath(r.log, root)})"
                          for r in sorted(failed, key=lambda r: r.item))
        rest = len(all_phases) - stopped_at
        return _fail(f"{len(failed)} item(s) failed: {names}"
                     + (f"; {rest} later phase(s) not started" if rest else ""), 1)
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
