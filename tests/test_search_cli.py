"""`densenas search` refuses inconsistent requests with one line naming what to change, before touching data."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("args", "message"), [
    (["--variant", "lat_c"], "variant 'lat_c' optimises latency and needs a LUT"),
    (["--variant", "nope", "--lut", "x.json"], "no variant 'nope' (expected one of: lat_a, lat_b, lat_c)"),
    (["--space", "resnet", "--variant", "flops_r2", "--lut", "x.json"], "optimises FLOPs"),
    (["--warmup", "--lut", "x.json"], "takes neither --lut nor --warmup-from"),
])
def test_inconsistent_requests_fail_with_one_line(run_cli, tmp_path, args: list[str], message: str) -> None:
    result = run_cli("--set", "tracking.enabled=false", "search", *args, "--data", str(tmp_path / "none"),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
