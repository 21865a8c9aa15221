"""Launch a stage under torchrun on one node or several: the one place that turns `workflow.nodes_per_job` and
`workflow.gpus_per_job` into torchrun's arguments, for the workflow's rules and for the tests alike.

One node: `torchrun --standalone`. Several: one torchrun per node (slurm starts them, `srun --ntasks-per-node=1`),
meeting at a c10d rendezvous on the job's first node, with the job id as the rendezvous id:

    python -m densenas.launch --nnodes 2 --nproc-per-node 8 -- --params params.yaml search --space mbv2 ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from densenas.errors import DensenasError

RDZV_PORT = 29400  # torchrun's own default for c10d


def torchrun_args(nnodes: int, nproc_per_node: int, *, endpoint: str | None = None,
                  run_id: str | None = None) -> list[str]:
    """torchrun's arguments (the launcher's own, before the module) for ``nnodes`` x ``nproc_per_node`` ranks."""
    if nnodes == 1:
        return ["--standalone", "--nproc-per-node", str(nproc_per_node)]
    if not endpoint or not run_id:
        raise DensenasError(f"{nnodes} nodes need a rendezvous endpoint and id: run inside a slurm job "
                            "(SLURM_JOB_NODELIST, SLURM_JOB_ID) or give --rdzv-endpoint and --rdzv-id")
    return ["--nnodes", str(nnodes), "--nproc-per-node", str(nproc_per_node), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", endpoint, "--rdzv-id", run_id]


def slurm_rendezvous(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The endpoint (first node of the job, port DENSENAS_RDZV_PORT or 29400) and id (the job id) of a slurm job."""
    nodelist, job = env.get("SLURM_JOB_NODELIST"), env.get("SLURM_JOB_ID")
    if not nodelist or not job:
        return None, None
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                           check=True).stdout.split()
    return f"{hosts[0]}:{env.get('DENSENAS_RDZV_PORT', RDZV_PORT)}", job


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--nproc-per-node", type=int, required=True)
    parser.add_argument("--rdzv-endpoint", default=None, help="host:port of the rendezvous (default: from slurm)")
    parser.add_argument("--rdzv-id", default=None, help="shared by the nodes of one run (default: the slurm job id)")
    parser.add_argument("cli", nargs=argparse.REMAINDER, help="-- then the densenas arguments")
    args = parser.parse_args(argv)
    endpoint, run_id = args.rdzv_endpoint, args.rdzv_id
    if args.nnodes > 1 and not (endpoint and run_id):
        from_slurm = slurm_rendezvous(os.environ)
        endpoint, run_id = endpoint or from_slurm[0], run_id or from_slurm[1]
    try:
        launcher = torchrun_args(args.nnodes, args.nproc_per_node, endpoint=endpoint, run_id=run_id)
    except DensenasError as exc:
        print(f"densenas.launch: error: {exc}", file=sys.stderr)
        return 2
    cli = args.cli[1:] if args.cli[:1] == ["--"] else args.cli
    # exec, not a child: slurm's SIGTERM/SIGUSR1 must reach torchrun, which passes them on to the ranks
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "densenas.cli", *cli])


if __name__ == "__main__":
    sys.exit(main())
