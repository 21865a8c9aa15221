"""Run under torchrun by tests/test_search_ddp.py: a few weight and architecture steps of a DDP search on 2 CPU
processes, checking after every step that weights, α and β are bit-identical on every rank."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from densenas.config import load_params
from densenas.distributed import init_distributed, shutdown
from densenas.search.job import make_job
from densenas.search.loop import SearchRun

REPO = Path(__file__).resolve().parents[1]


def digest(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_identical(run: SearchRun, when: str) -> None:
    mine = {"weights": digest(run.model.weight_parameters()), "arch": digest(run.model.arch_parameters())}
    everyone: list[dict[str, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    assert all(d == everyone[0] for d in everyone), f"ranks differ after {when}: {everyone}"


def main(prepared: str, lut: str, steps: int) -> None:
    overrides = {"data": {"max_images_per_class": 8, "max_search_images_per_class": 8}, "tracking": {"enabled": False},
                 "search": {"spaces": {"mbv2": {"batch_size": 16, "warmup_epochs": 0}}}}
    params = load_params(REPO / "params.yaml", overrides=overrides)
    ctx = init_distributed("cpu")
    job = make_job(params, ctx, space_name="mbv2", variant="lat_c", lut=Path(lut), prepared_dir=Path(prepared),
                   out_dir=Path(prepared) / "unused", warmup_from=None)
    run = SearchRun(job, ctx)
    check_identical(run, "set-up")
    before = digest(run.model.arch_parameters())
    train, val = run.batches(run.train_loader, 0, 0), run.batches(run.val_loader, 0, 0)
    for step, ((images, labels), (val_images, val_labels)) in enumerate(zip(train, val, strict=False)):
        assert images.shape[0] == 8, f"per-rank batch {images.shape[0]}, expected 16 / 2 = 8"
        run.run_arch_step(val_images, val_labels)
        check_identical(run, f"architecture step {step}")
        run.run_weight_step(images, labels)
        check_identical(run, f"weight step {step}")
        if step + 1 == steps:
            break
    assert digest(run.model.arch_parameters()) != before, "the architecture steps did not move α/β"
    if ctx.is_main:
        print(f"identical on {ctx.world_size} ranks after {2 * steps} steps")
    shutdown(ctx)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
