"""Run many `densenas` command lines as forked children of one process that imports the CLI's modules once.

Reads JSON requests, one a line, on stdin ({"id", "argv", "cwd", "stdout", "stderr"}) until EOF, runs each in a
child as `python -m densenas.cli ARGV` would (exit status; stdout and stderr into the named files; a traceback and
status 1 for an uncaught exception), at most ``JOBS`` at a time, and prints {"id", "returncode"} as each ends.
Only imports happen before a fork, so no torch thread pool exists yet and the children may use torch freely.
Usage: python tests/cli_forkserver.py JOBS
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

PRELOAD = ("torch", "torchvision", "densenas.cli", "densenas.arch", "densenas.data", "densenas.lut",
           "densenas.official_lut", "densenas.search.job", "densenas.search.loop", "densenas.train.stage",
           "densenas.evaluate")


def run_child(request: dict[str, Any]) -> int:
    """The CLI on ``request["argv"]`` in this (forked) process; returns its exit status."""
    os.chdir(request["cwd"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    from densenas.cli import main

    sys.argv = ["densenas", *request["argv"]]
    try:
        code = main(request["argv"])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve(jobs: int) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    pending = [json.loads(line) for line in sys.stdin if line.strip()]
    running: dict[int, Any] = {}
    while pending or running:
        while pending and len(running) < jobs:
            request = pending.pop(0)
            sys.stdout.flush()  # nothing buffered may be written twice by the child
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = run_child(request)
                finally:
                    os._exit(code)
            running[pid] = request["id"]
        pid, status = os.wait()
        print(json.dumps({"id": running.pop(pid), "returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
