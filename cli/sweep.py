"""`python run.py sweep`: a hyperparameter search in one command, one resumable run per setting.

    python run.py sweep --grid lr=1e-6,1e-5,5e-5 --grid batch-size=8,32 --out-dir runs/sonnet-lr \\
        sonnet --model gpt2 --epochs 200 --patience 20

runs `python run.py sonnet --model gpt2 --epochs 200 --patience 20 --lr L --batch-size B --out-dir
runs/sonnet-lr/lr=L_batch-size=B` for each of the 3 x 2 settings (the grid: every combination, the first --grid
varying slowest), one after the other, each in its own process, then prints the runs ranked by the task's dev
metric (sonnet: dev chrF; sentiment, paraphrase: dev accuracy; multitask: mean dev accuracy) and writes that table
to <out-dir>/sweep.json.

Stopping and restarting: rerunning the command after Ctrl-C, a crash or a lost machine picks up where the sweep
stopped. A finished run (its result.json written) is reused only when its run record (in last.pt: every flag, the
data and model files' hashes, training/run_settings.py) equals what the sweep would run now; a run recorded with
other settings (the shared flags changed, a data file edited) is refused before anything runs, listing the
differences as --resume does, rather than rerun: rerunning would write over a finished run that still answers
its own question. An interrupted run (last.pt, no result) continues with --resume, as does a finished one whose
result.json is damaged (the final evaluation writes it again); a run that left no record (--epochs 0 writes no
last.pt) runs again. A run that fails (a learning rate that diverges, say) is reported and the sweep goes on.

Several GPUs: `--gpus 0,1,2,3` runs four settings at a time, each child seeing only its own GPU, with its output
in <out-dir>/<run>.log instead of the terminal (beside the run's directory, which holds only what the run
writes).

Switches (flags without a value, like --use-mean-sim) take the values on and off: --grid use-mean-sim=off,on.
Every setting is checked against the task's own flags before the first run starts, so a typo fails at once.
Decoding settings can be searched the same way on a trained model with `--epochs 0`, and `--grid seed=1,2,3` shows
how much of a difference between two settings is the luck of one seed.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minigpt.files import atomic_write_text
from tasks.protocol import resolve_protocol
from training.checkpointing import LAST, RESULT
from training.config import config_from_args
from training.run_settings import differences_before_start, run_settings

ROOT = Path(__file__).resolve().parents[1]  # where run.py is
# task -> the scores its result.json holds (higher is better), the first one ranking its runs by default
_CLASSIFY = ("dev_accuracy", "dev_macro_f1")
TASKS = {"sonnet": ("dev_chrf", "dev_chrf_mean", "floor_prompts", "floor_random_lines"),
         "sentiment": _CLASSIFY, "paraphrase": _CLASSIFY,
         "multitask": ("dev_mean_accuracy", *(f"{t}_{m}" for t in ("sst", "quora") for m in _CLASSIFY))}
OWNED = ("--out-dir", "--resume")  # the sweep sets these for each run


@dataclass
class Run:
    name: str  # also the run's directory under --out-dir
    settings: dict[str, str]  # flag (without --) -> value, as given to --grid
    argv: list[str]  # the task's command line: run.py TASK argv


def add_arguments(parser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--grid", action="append", required=True, metavar="FLAG=V1,V2,...",
                        help="a task flag (without its dashes) and the values to try; repeat for more flags")
    parser.add_argument("--out-dir", required=True, help="each run goes to OUT_DIR/<its settings>")
    parser.add_argument("--metric", default=None,
                        help="the result.json score that ranks the runs (default: the task's dev metric; sonnet: "
                             "dev_chrf, sentiment and paraphrase: dev_accuracy, multitask: dev_mean_accuracy)")
    parser.add_argument("--gpus", default=None, metavar="0,1,...",
                        help="run settings side by side, one per listed GPU (each run sees only its GPU; its output "
                             "goes to OUT_DIR/<run>.log); default: one run at a time, output shown live")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("task", choices=sorted(TASKS), help="the task every run trains")
    parser.add_argument("task_args", nargs=argparse.REMAINDER, help="flags every run shares")


# ----- the plan: one Run per combination of the grid's values --------------------------------------------------
def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """["lr=1e-5,5e-5", "batch-size=8"] -> {"lr": ["1e-5", "5e-5"], "batch-size": ["8"]}."""
    grid = {}
    for spec in specs:
        flag, sep, values = spec.partition("=")
        flag = flag.strip().lstrip("-")
        items = [v.strip() for v in values.split(",")]
        if not sep or not flag or not all(items):
            raise ValueError(f"--grid {spec!r}: write FLAG=V1,V2,... (e.g. --grid lr=1e-5,5e-5), no empty values")
        if flag in grid:
            raise ValueError(f"--grid: the flag {flag!r} is given twice; put all its values in one --grid")
        if len(set(items)) < len(items):
            raise ValueError(f"--grid {spec!r}: a value is listed twice")
        grid[flag] = items
    return grid


def run_name(settings: dict[str, str]) -> str:
    """{"lr": "1e-5", "batch-size": "8"} -> "lr=1e-5_batch-size=8" (characters unsafe in a path become -)."""
    return "_".join(re.sub(r"[^A-Za-z0-9.+=-]", "-", f"{flag}={value}") for flag, value in settings.items())


def plan(grid: dict[str, list[str]], task: str, task_args: list[str], out_dir: str) -> list[Run]:
    """Every combination of the grid, the first flag varying slowest; each checked against the task's parser."""
    task_args = task_args[1:] if task_args[:1] == ["--"] else task_args
    given = {a.split("=")[0] for a in task_args if a.startswith("--")}
    if given & set(OWNED):
        raise ValueError(f"{min(given & set(OWNED))} is set by the sweep for each run; leave it out of the task's "
                         "flags")
    for flag in grid:
        if f"--{flag}" in OWNED:
            raise ValueError(f"--grid {flag}: the sweep sets --{flag} for each run (its directory "
                             "OUT_DIR/<its settings>, --resume when it was interrupted); it cannot be varied")
        if f"--{flag}" in given:
            raise ValueError(f"--{flag} is both in --grid and in the task's flags; keep one")
    parser = task_parser(task)
    runs = []
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        name = run_name(settings)
        argv = [*task_args, *setting_flags(settings, parser), "--out-dir", str(Path(out_dir) / name)]
        try:
            parser.parse_args(argv)  # a typo in a flag or a value fails now, not after hours of other runs
        except ValueError as e:
            raise ValueError(f"setting {name}: {e}") from None
        runs.append(Run(name, settings, argv))
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"two settings give the same run directory name {twice}; use values that differ in "
                         "letters or digits")
    return runs


def setting_flags(settings: dict[str, str], parser: argparse.ArgumentParser) -> list[str]:
    """The command-line flags of one setting: --flag value, or for a switch --flag (on) or nothing (off)."""
    actions = {option: action for action in parser._actions for option in action.option_strings}
    flags = []
    for flag, value in settings.items():
        if f"--{flag}" not in actions:
            raise ValueError(f"--grid {flag}: `run.py {parser.prog.split()[-1]}` has no flag --{flag}")
        if actions[f"--{flag}"].nargs == 0:  # a switch (store_true / store_false): present or absent
            if value not in ("on", "off"):
                raise ValueError(f"--grid {flag}: --{flag} is a switch; its values are on and off, got {value!r}")
            flags += [f"--{flag}"] if value == "on" else []
        else:
            flags += [f"--{flag}", value]
    return flags


class _ParserError(argparse.ArgumentParser):
    """The task's parser, raising instead of exiting, so a bad setting is reported as the sweep's error."""

    def error(self, message):
        raise ValueError(f"the task would reject this setting: {message}")


def task_parser(task: str) -> argparse.ArgumentParser:
    from tasks import multitask, paraphrase, sentiment, sonnet  # here: `run.py sweep --help` stays fast (torch)

    modules = {"sonnet": sonnet, "sentiment": sentiment, "paraphrase": paraphrase, "multitask": multitask}
    parser = _ParserError(prog=f"run.py {task}")
    modules[task].add_arguments(parser)
    return parser


# ----- what a run's directory holds: reuse, continue or start ---------------------------------------------------
def review(task: str, run: Run, run_dir: Path) -> tuple[str, str]:
    """(action, why): "skip" a finished run whose record (in last.pt) matches the settings it would run with now;
    "resume" an interrupted run (or a finished one whose result.json is damaged: --resume writes it again);
    "start" a new run, or again one that left no record (--epochs 0 trains nothing and writes no last.pt).
    A run recorded with other settings raises ValueError listing the differences, as --resume does."""
    result = read_result(run_dir)
    damaged = f"its {RESULT} is damaged" if result is None and (run_dir / RESULT).exists() else ""
    if not (run_dir / LAST).is_file():
        if result is None:
            return "start", damaged and f"{damaged}: running it again"
        return "start", "finished earlier but left no run record to compare settings with: running it again"
    record = recorded_settings(run_dir / LAST)
    if record is None:  # unreadable, or written before records: the run itself says what it finds on --resume
        return "resume", damaged
    changed = differences_before_start(record, planned_settings(task, run.argv))
    if changed:
        raise ValueError(f"{run_dir} was run with other settings ({'; '.join(changed)}): reusing it would answer "
                         "another question. Use the old values, or a new sweep --out-dir (nothing was run)")
    if result is None:
        return "resume", damaged and f"{damaged}: continuing with --resume, which writes it again"
    return "skip", "finished earlier with the same settings, skipped"


def recorded_settings(last: Path) -> dict | None:
    """The run record a last.pt holds (None: unreadable, or written before records existed). mmap: only the
    record is read, not the weights."""
    try:
        return torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("record")
    except Exception:  # noqa: BLE001 - a damaged file raises many kinds; --resume reports it, naming the file
        return None


def planned_settings(task: str, argv: list[str]) -> dict:
    """The settings a run of `run.py TASK argv` records (training/run_settings.py), before it starts."""
    args = task_parser(task).parse_args(argv, argparse.Namespace(command=task))  # `command`: run.py's subparser
    return run_settings(config_from_args(resolve_protocol(args)))


# ----- running and ranking --------------------------------------------------------------------------------------


def command(task: str, argv: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), task, *argv]


def run_one_by_one(task: str, todo: list[tuple[str, Run, list[str]]]) -> dict[str, int]:
    """Each run in a child process (its memory is freed when it ends), its output shown live; the failed runs'
    exit statuses."""
    failed = {}
    for label, run, argv in todo:
        print(f"{label}: {'continuing (--resume)' if '--resume' in argv else 'starting'}", flush=True)
        child = subprocess.Popen(command(task, argv))
        try:
            code = child.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the child too: let it finish writing its checkpoint
            child.wait()
            raise
        report(label, run, code, failed)
    return failed


def run_on_gpus(task: str, todo: list[tuple[str, Run, list[str]]], gpus: list[str], out_dir: Path) -> dict[str, int]:
    """Up to one run per GPU at a time, each child seeing only its GPU (CUDA_VISIBLE_DEVICES); a run's output
    goes to OUT_DIR/<run>.log. The failed runs' exit statuses."""
    failed, free, queue = {}, list(gpus), list(todo)
    running = {}  # child process -> (label, run, gpu, open log file)
    try:
        while queue or running:
            while queue and free:
                label, run, argv = queue.pop(0)
                gpu = free.pop(0)
                log_path = out_dir / f"{run.name}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = open(log_path, "a", encoding="utf-8")
                child = subprocess.Popen(command(task, argv), stdout=log, stderr=subprocess.STDOUT,
                                         env=os.environ | {"CUDA_VISIBLE_DEVICES": gpu})
                running[child] = (label, run, gpu, log)
                verb = "continuing (--resume)" if "--resume" in argv else "starting"
                print(f"{label}: {verb} on GPU {gpu}, output in {log_path}", flush=True)
            time.sleep(0.2)
            for child in [c for c in running if c.poll() is not None]:
                label, run, gpu, log = running.pop(child)
                log.close()
                free.append(gpu)
                report(label, run, child.returncode, failed)
    except KeyboardInterrupt:  # every child got the Ctrl-C too: let them finish writing their checkpoints
        for child in running:
            child.wait()
        raise
    return failed


def report(label: str, run: Run, code: int, failed: dict[str, int]) -> None:
    if code == 0:
        print(f"{label}: finished", flush=True)
    else:
        failed[run.name] = code
        print(f"{label}: failed with exit status {code}; going on", flush=True)


def read_result(run_dir: Path) -> dict | None:
    """The run's result.json as a dict; None when it is missing or damaged."""
    try:
        result = json.loads((run_dir / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def ranked_rows(runs: list[Run], out_dir: Path, metric: str, failed: dict[str, int]) -> list[dict]:
    """One row per run, best first; runs without the metric (failed, not run) last."""
    rows = []
    for run in runs:
        result = read_result(out_dir / run.name) or {}
        state = f"failed (exit {failed[run.name]})" if run.name in failed else ("done" if result else "not run")
        rows.append({"run": run.name, **run.settings, "status": state, **result})
    scored = [r for r in rows if isinstance(r.get(metric), (int, float))]
    return sorted(scored, key=lambda r: -r[metric]) + [r for r in rows if r not in scored]


def print_table(rows: list[dict], metric: str) -> None:
    """The run, the ranking metric, the other dev scores of result.json (e.g. macro-F1), best epoch, status."""
    scores = [k for k in dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, float)) if k != metric]
    columns = ["run", metric, *scores, "best_epoch", "status"]
    width = {c: max(len(c), *(len(cell(r, c)) for r in rows)) for c in columns}
    print("  ".join(c.ljust(width[c]) for c in columns))
    for r in rows:
        print("  ".join(cell(r, c).ljust(width[c]) for c in columns))


def cell(row: dict, column: str) -> str:
    value = row.get(column)
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def ranking_metric(task: str, metric: str | None) -> str:
    """--metric, checked before any run: a score the task's result.json holds (default: its dev metric)."""
    if metric is None:
        return TASKS[task][0]
    if metric not in TASKS[task]:
        raise ValueError(f"--metric {metric}: `run.py {task}` writes no such score into result.json; choose one of "
                         f"{', '.join(TASKS[task])}")
    return metric


def main(args) -> int:
    grid = parse_grid(args.grid)
    metric = ranking_metric(args.task, args.metric)
    gpus = parse_gpus(args.gpus)
    runs = plan(grid, args.task, args.task_args, args.out_dir)
    out_dir = Path(args.out_dir)
    print(f"sweep: {len(runs)} runs of `run.py {args.task}` into {out_dir}/, ranked by {metric}")
    todo = []  # (label, run, its command line) of the runs still to do
    reviews = [review(args.task, run, out_dir / run.name) for run in runs]  # every refusal before any run
    for i, (run, (action, why)) in enumerate(zip(runs, reviews), 1):
        label = f"[{i}/{len(runs)}] {run.name}"
        if why:
            print(f"{label}: {why}")
        if action == "skip":
            continue
        todo.append((label, run, run.argv + (["--resume"] if action == "resume" else [])))
        if args.dry_run:
            print(f"{label}: would {'continue' if action == 'resume' else 'start'}\n"
                  f"    python run.py {shlex.join([args.task, *todo[-1][2]])}")
    if args.dry_run:
        return 0
    try:
        failed = run_on_gpus(args.task, todo, gpus, out_dir) if gpus else run_one_by_one(args.task, todo)
    except KeyboardInterrupt:
        print("\nsweep interrupted; rerun the same command to continue (finished runs are skipped, interrupted "
              "ones resume)", file=sys.stderr)
        return 130
    rows = ranked_rows(runs, out_dir, metric, failed)
    atomic_write_text(out_dir / "sweep.json", json.dumps(rows, indent=2) + "\n")
    print_table(rows, metric)
    print(f"table written to {out_dir / 'sweep.json'}")
    return 1 if failed else 0


def parse_gpus(spec: str | None) -> list[str]:
    """"0,1,3" -> ["0", "1", "3"]; None -> [] (one run at a time, on whatever --device picks)."""
    if spec is None:
        return []
    gpus = [g.strip() for g in spec.split(",")]
    if not all(g.isdigit() for g in gpus) or len(set(gpus)) < len(gpus):
        raise ValueError(f"--gpus {spec!r}: write distinct GPU numbers separated by commas, e.g. --gpus 0,1,2,3")
    return gpus
