"""One prepared command that measures everything that needs a GPU, within a fixed wall-clock budget (issue #13).

Parts, in order (benchmarks/gpu_suite_parts.py): a prepared JPEG fixture; correctness (fp32 against bf16 autocast +
channels_last for SearchRun's arch and weight steps and the trainer's DenseNAS-C step; a one-process torchrun DDP
search step, NCCL on CUDA); `densenas lut` at 224 px, batch 32, with DenseNAS-A/B/C's path sums beside the
official TITAN-XP sums and the paper's measured latencies; LUT-predicted against measured latency of DenseNAS-A/B/C
and 30 random architectures; the search step at the paper's per-GPU batch (88) and the search projected in
GPU-hours; DenseNAS-C retraining throughput and 240 epochs projected; the loader's rate with pinned memory.

Each part runs in its own process group with its own time limit, cut further so that the whole suite ends within
``--budget``; a part that overruns is killed and recorded as "timed out" with what it had measured, a part that
fails records its error, and parts left without time are recorded as skipped. ``suite.json`` and ``summary.md``
under ``--out`` are rewritten after every part, so they exist whatever happens. Nothing is downloaded.

Run: python benchmarks/gpu_suite.py --device cuda --out reports/gpu_suite      # GPU: <= 8 min
     python benchmarks/gpu_suite.py --device cpu --quick --out /tmp/gpu_suite  # CPU rehearsal at tiny sizes
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUITE_BUDGET_S = {"full": 480.0, "quick": 110.0}
KILL_GRACE_S = 3.0       # between SIGTERM and SIGKILL of a part that overran, and again for reaping it
RESERVE_S = 2 * KILL_GRACE_S + 2.0   # a killed part's grace periods plus writing the outputs stay within budget
MIN_PART_S = 5.0         # a part is not started with less than this


@dataclass(frozen=True)
class Budget:
    full_s: float            # a GPU run
    quick_s: float           # the CPU rehearsal
    torchrun: bool = False   # started under torchrun (one process), as a multi-GPU job would be


BUDGETS = {
    "fixture": Budget(40, 15), "correctness": Budget(60, 30), "ddp": Budget(45, 40, torchrun=True),
    "lut": Budget(60, 15), "latency_prediction": Budget(90, 20), "search_step": Budget(90, 30),
    "train_throughput": Budget(45, 15), "data_loading": Budget(35, 15),
}


def environment(device: str) -> dict[str, Any]:
    """torch/CUDA/cuDNN versions, host, commit and date. The device itself is named by the parts (``device_name``):
    this process must not initialise CUDA, or its forks could not use it."""
    import torch

    info: dict[str, Any] = {"date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                            "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
                            "host_cpus": os.cpu_count(), "requested_device": device, "device": None}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def device_name(device: str) -> dict[str, Any]:
    """The device a part runs on; a CUDA part is skipped where there is no CUDA device."""
    import torch
    from gpu_suite_parts import SkipPart

    if device == "cpu":
        from densenas.lut.profile import cpu_model

        return {"name": cpu_model(), "logical_cpus": os.cpu_count()}
    if not torch.cuda.is_available():
        raise SkipPart("CUDA is not available on this machine")
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "driver_cuda": torch.version.cuda}


def part_command(name: str, args: argparse.Namespace, record: Path, limit_s: float) -> list[str]:
    """A fresh interpreter for the part; under torchrun (one process) for a DDP part."""
    own = [str(Path(__file__).resolve()), "--part", name, "--device", args.device, "--out", str(args.out),
           "--part-record", str(record), "--part-limit", f"{limit_s:.1f}", *(["--quick"] if args.quick else [])]
    if BUDGETS[name].torchrun:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", *own]
    return [sys.executable, *own]


def kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_part(name: str, args: argparse.Namespace, record: Path, log: Path,
               limit_s: float) -> subprocess.Popen[bytes] | int:
    """The part's process, leader of its own process group. ``--launch fork`` (CPU default) forks this process,
    which has imported torch and the parts' modules, saving seconds per part; ``exec`` (CUDA default) starts a
    fresh interpreter, so no CUDA state can be inherited whatever an import did. DDP parts always go via torchrun."""
    if BUDGETS[name].torchrun or args.launch == "exec":
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with log.open("w") as out:
            return subprocess.Popen(part_command(name, args, record, limit_s), cwd=REPO, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = child(name, args.device, args.quick, args.out, record, limit_s)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait_exit_code(process: subprocess.Popen[bytes] | int, timeout_s: float) -> int | None:
    """The exit code of the part's process (a Popen, or a forked pid) once it ends, or None if it is still running
    after ``timeout_s``."""
    if isinstance(process, subprocess.Popen):
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
    end = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(process, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= end:
            return None
        time.sleep(0.05)


def run_part(name: str, args: argparse.Namespace, limit_s: float) -> dict[str, Any]:
    """The part in its own process group, killed after ``limit_s``; its record with status and wall time."""
    parts_dir = args.out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    record, log = parts_dir / f"{name}.json", parts_dir / f"{name}.log"
    record.unlink(missing_ok=True)
    start = time.monotonic()
    process = start_part(name, args, record, log, limit_s)
    pid = process.pid if isinstance(process, subprocess.Popen) else process
    code = wait_exit_code(process, limit_s)
    if code is None:
        kill_group(pid, signal.SIGTERM)
        code = wait_exit_code(process, KILL_GRACE_S)
        kill_group(pid, signal.SIGKILL)
        for worker in read_record(record).get("pids", []):  # torchrun's worker runs in a session of its own
            kill_group(worker, signal.SIGKILL)
        # Reaped at once after SIGKILL, unless stuck in the kernel (a hung driver call): then left behind, on record.
        lingering = code is None and wait_exit_code(process, KILL_GRACE_S) is None
        timed_out = True
    else:
        timed_out = lingering = False
    result = read_record(record)
    result.update(seconds=round(time.monotonic() - start, 1), limit_s=round(limit_s, 1), log=str(log))
    if timed_out:
        result["status"] = "timed out"
        result["reason"] = (f"killed after its limit of {limit_s:.0f} s; figures so far are kept"
                            + (f"; process {pid} did not exit after SIGKILL" if lingering else ""))
    elif code != 0 and result.get("status") in (None, "running"):
        result["status"] = "error"
        result["error"] = f"exit code {code}: {tail(log)}"
    return result


def read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def write_outputs(out: Path, suite: dict[str, Any]) -> None:
    from densenas.atomic import write_json, write_text

    write_json(out / "suite.json", suite)
    write_text(out / "summary.md", summary(suite))


def summary(suite: dict[str, Any]) -> str:
    env = suite["environment"]
    lines = [f"# GPU suite ({'quick CPU rehearsal' if suite['quick'] else 'full'}), {env['date_utc']}", "",
             f"Device: {(env.get('device') or {}).get('name')} ({env['requested_device']}); torch {env['torch']}, "
             f"CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}, commit {env.get('commit')}; wall "
             f"{suite.get('wall_s', '?')} s of a {suite['budget_s']:.0f} s budget.", "",
             "| part | status | seconds | limit (s) | note |", "|---|---|---|---|---|"]
    for name, part in suite["parts"].items():
        note = part.get("reason") or part.get("error") or "; ".join(part.get("skipped", []))
        note = note.replace("\n", " ").replace("|", "/")[:200]
        lines.append(f"| {name} | {part['status']} | {part.get('seconds', '')} | {part.get('limit_s', '')} | "
                     f"{note} |")
    for name, part in suite["parts"].items():
        if part.get("lines"):
            lines += ["", f"## {name}", "", *[f"- {line}" for line in part["lines"]]]
    return "\n".join(lines) + "\n"


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    mode = "quick" if args.quick else "full"
    budget = args.budget or SUITE_BUDGET_S[mode]
    start = time.monotonic()
    deadline = start + budget
    args.out.mkdir(parents=True, exist_ok=True)
    suite: dict[str, Any] = {"quick": args.quick, "budget_s": budget, "parts": {}}
    try:
        suite["environment"] = environment(args.device)
    except Exception as exc:  # the outputs are written whatever fails
        suite["environment"] = {"date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                "requested_device": args.device, "torch": None, "cuda": None, "cudnn": None,
                                "python": platform.python_version(), "error": repr(exc)}
    for name, part in BUDGETS.items():
        left = deadline - time.monotonic() - RESERVE_S
        if left < MIN_PART_S:
            suite["parts"][name] = {"status": "skipped", "reason": f"suite budget spent ({max(left, 0):.0f} s left)"}
        else:
            limit = min(args.limits.get(name, part.quick_s if args.quick else part.full_s), left)
            print(f"gpu_suite: {name} (limit {limit:.0f} s)", file=sys.stderr, flush=True)
            suite["parts"][name] = run_part(name, args, limit)
            print(f"gpu_suite: {name}: {suite['parts'][name]['status']} in {suite['parts'][name]['seconds']} s",
                  file=sys.stderr, flush=True)
        if suite["environment"]["device"] is None and suite["parts"][name].get("device"):
            suite["environment"]["device"] = suite["parts"][name]["device"]
        suite["wall_s"] = round(time.monotonic() - start, 1)
        write_outputs(args.out, suite)
    return suite


def child(name: str, device: str, quick: bool, out: Path, record: Path, limit_s: float) -> int:
    """One part, in this process: its record says running, then ok / failed / skipped / error."""
    from gpu_suite_parts import FULL, PARTS, QUICK, PartContext, PartRecord, SkipPart

    if int(os.environ.get("RANK", "0")):
        return 0  # a part is one process; further ranks would have nothing to record
    rec = PartRecord(record)
    started = time.monotonic()
    rec.update(status="running", pids=[os.getpid()])
    ctx = PartContext(device=device, sizes=QUICK if quick else FULL, work=out / "work", rec=rec,
                      deadline=started + limit_s - 2 * KILL_GRACE_S)
    ctx.work.mkdir(parents=True, exist_ok=True)
    try:
        rec.update(device=device_name(device))
        PARTS[name](ctx)
    except SkipPart as exc:
        rec.update(status="skipped", reason=str(exc))
        return 0
    except Exception as exc:
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc().splitlines()[-12:])
        return 1
    failed = [check for check, result in rec.data["checks"].items() if not result["passed"]]
    rec.update(status="failed" if failed else "ok", **({"reason": f"checks failed: {failed}"} if failed else {}))
    return 0


def parse_limit(item: str, parser: argparse.ArgumentParser) -> tuple[str, float]:
    name, _, seconds = item.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if name not in BUDGETS or value <= 0:
        parser.error(f"--limit {item!r}: expected PART=SECONDS with PART one of {', '.join(BUDGETS)}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CPU rehearsal of every part")
    parser.add_argument("--out", type=Path, required=True, help="folder for suite.json, summary.md, parts/, work/")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"wall seconds for the whole suite (default: {SUITE_BUDGET_S['full']:.0f}, "
                             f"quick {SUITE_BUDGET_S['quick']:.0f})")
    parser.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS",
                        help="override one part's time limit (repeatable)")
    parser.add_argument("--launch", choices=["fork", "exec"], default=None,
                        help="how parts start: fork this process (default on CPU) or a fresh interpreter (CUDA)")
    parser.add_argument("--part", choices=sorted(BUDGETS), help=argparse.SUPPRESS)
    parser.add_argument("--part-record", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part-limit", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.limits = dict(parse_limit(item, parser) for item in args.limit)
    if args.part:  # a part started by run_part in a fresh interpreter
        sys.exit(child(args.part, args.device, args.quick, args.out, args.part_record, args.part_limit))
    args.launch = args.launch or ("exec" if args.device == "cuda" else "fork")
    if args.launch == "fork":
        from gpu_suite_parts import preload

        preload()
    suite = run_suite(args)
    print(summary(suite))
    sys.exit(0 if all(part["status"] == "ok" for part in suite["parts"].values()) else 1)


if __name__ == "__main__":
    main()
