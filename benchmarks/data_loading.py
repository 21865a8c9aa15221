"""Images/s of the packed-split loader against torchvision ImageFolder + PIL, same JPEGs, 224 training transforms.

Generates ImageNet-like JPEGs (~500x375, quality 90), prepares them (shorter side 256, and original bytes for
comparison), and times full passes of both loaders in this process. Run: python benchmarks/data_loading.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.io import encode_jpeg

from densenas.config import load_params
from densenas.data import build_loader, prepare, set_loader_epoch
from densenas.data.loaders import IMAGENET_MEAN, IMAGENET_STD
from densenas.lut.profile import device_info

REPO = Path(__file__).resolve().parents[1]
SIZES = ((375, 500), (500, 375), (333, 500), (375, 500), (400, 500))  # (height, width), ImageNet-like


def photo_like(seed: int, height: int, width: int) -> bytes:
    """Colour fields, mid-scale texture and pixel noise: ~110 KB per 500x375 JPEG, ImageNet's average file size."""
    rng = np.random.default_rng(seed)

    def layer(scale: int, spread: float, mode: str) -> torch.Tensor:
        grid = rng.normal(0, spread, (1, 3, max(1, height // scale), max(1, width // scale))).astype(np.float32)
        return torch.nn.functional.interpolate(torch.from_numpy(grid), size=(height, width), mode=mode)[0]

    pixels = 128 + layer(60, 60, "bicubic") + layer(4, 60, "bilinear") + layer(1, 15, "nearest")
    return encode_jpeg(pixels.clamp(0, 255).to(torch.uint8), quality=90).numpy().tobytes()


def write_fixture(root: Path, images: int, classes: int) -> None:
    for i in range(images):
        for split, count in (("train", images), ("val", max(1, images // 10))):
            if i >= count:
                continue
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            height, width = SIZES[i % len(SIZES)]
            (folder / f"img_{i:05d}.JPEG").write_bytes(photo_like(i if split == "train" else 10**6 + i, height, width))


def images_per_second(loader: DataLoader, passes: int, set_epoch: bool, device: str | None = None) -> float:
    """Best full pass of ``passes`` (best, not mean: the machine is shared with other jobs). With ``device``, every
    batch is also copied there as the search and training loops do (non-blocking: from pinned memory, if pinned)."""
    best = 0.0
    for epoch in range(passes):
        if set_epoch:
            set_loader_epoch(loader, epoch)
        start = time.perf_counter()
        count = 0
        for images, labels in loader:
            if device is not None:
                images.to(device, non_blocking=True)
            count += len(labels)
        if device is not None and device.startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per loader process on both sides; PIL is single-threaded too

    base = load_params(REPO / "params.yaml", preset="paper").data
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        write_fixture(raw, args.images, classes=10)
        prepared = {}
        for label, short_side in (("packed, shorter side 256", 256), ("packed, original bytes", None)):
            data = replace(base, num_search_classes=10, max_images_per_class=None, pack_short_side=short_side,
                           workers=0)
            start = time.perf_counter()
            prepare([str(raw)], Path(tmp) / f"prepared_{short_side}", data)
            prepared[label] = (data, Path(tmp) / f"prepared_{short_side}", time.perf_counter() - start)

        cpu = device_info("cpu")["name"]
        print(f"device: {cpu} ({os.cpu_count()} cores), {torch.get_num_threads()} torch thread per process, "
              f"torch {torch.__version__}, torchvision {torchvision.__version__}")
        mean_kb = np.mean([f.stat().st_size for f in (raw / "train").rglob("*.JPEG")]) / 1e3
        print(f"{args.images} JPEGs ~500x375 q90, mean {mean_kb:.0f} KB; RandomResizedCrop(224) + flip + normalise; "
              f"batch {args.batch}")
        for label, (_, _, seconds) in prepared.items():
            print(f"prepare ({label}): {seconds:.1f} s for {args.images * 11 // 10} images (+ search splits)")
        pil = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        for workers in args.workers:
            folder = torchvision.datasets.ImageFolder(str(raw / "train"), transform=pil)
            baseline = images_per_second(DataLoader(folder, batch_size=args.batch, shuffle=True, num_workers=workers,
                                                    drop_last=True, persistent_workers=workers > 0),
                                         args.passes, set_epoch=False)
            print(f"workers {workers}: ImageFolder + PIL {baseline:7.1f} img/s")
            for label, (data, path, _) in prepared.items():
                loader = build_loader(path, "train", replace(data, workers=workers), train=True,
                                      batch_size=args.batch, seed=0)
                ours = images_per_second(loader, args.passes, set_epoch=True)
                print(f"workers {workers}: {label:<26} {ours:7.1f} img/s  ratio {ours / baseline:.2f}x")


if __name__ == "__main__":
    main()
