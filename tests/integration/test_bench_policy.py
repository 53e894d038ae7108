"""`w2a bench policy` end to end at toy scale: real servers, every figure present and sane."""

from __future__ import annotations

import math

from services.bench import bench_policy


def test_bench_policy_reports_every_figure_from_real_runs():
    result = bench_policy(robots=2, seconds=0.5, slices=2, progress=lambda _: None)
    for key in ("robots", "p50_ms", "p99_ms", "bare_forward_p50_ms", "overhead_p50_ms", "batched_rps",
                "unbatched_rps", "batching_gain", "logging_overhead_pct", "unary_overhead_p50_ms",
                "server_cpu_us_per_step_logged", "redis_cpu_us_per_step_logged",
                "logging_overhead_jpeg_pct", "jpeg_rps", "stream_entry_bytes_raw", "stream_entry_bytes_jpeg"):
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key]), key
    assert result["errors"] == 0
    assert 0 < result["bare_forward_p50_ms"] < result["single_robot_p50_ms"]
    assert result["p50_ms"] <= result["p99_ms"]
    assert result["batched_rps"] > 0 and result["unbatched_rps"] > 0 and result["unlogged_rps"] > 0
    # JPEG robots' frames are logged as sent: a record far smaller than one with a raw 64-px frame
    assert result["stream_entry_bytes_jpeg"] < result["stream_entry_bytes_raw"] - 6000
