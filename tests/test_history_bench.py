"""The execution-history benchmark runs end to end on a tiny workload (nothing is judged here)."""

from __future__ import annotations

from benchmarks import history_bench


def test_history_benchmark_times_the_loop_and_every_fire_time_is_recorded(mongodb_uri: str) -> None:
    result = history_bench.run_once(mongodb_uri, True, jobs=3, interval=0.5, seconds=1.0)
    assert result["submitted"] == 6 and result["busy_passes"] >= 2
    assert result["recorded"] == 6 and result["dropped"] == 0
    assert result["busy_seconds"] > 0 and result["busy_cpu_seconds"] > 0
    assert result["loop_commands"] >= 6 and 1 <= result["history_commands"] <= 6
    off = history_bench.run_once(mongodb_uri, False, jobs=3, interval=0.5, seconds=1.0)
    assert off["submitted"] == 6 and off["recorded"] is None and off["history_commands"] == 0
    summary = {"workload": {"jobs": 3, "interval": 0.5, "seconds": 1.0, "rounds": 1},
               "runs": {"off": [off], "on": [result]}, "per_fire_time": {"off": 1e-3, "on": 1e-3},
               "per_fire_time_cpu": {"off": 1e-4, "on": 1e-4}, "per_pass": {"off": 1e-3, "on": 1e-3},
               "per_fire_time_best": {"off": 1e-3, "on": 1e-3}, "best_ratio": 1.0,
               "commands_per_fire_time": {"loop_commands": {"off": 1.1, "on": 1.1},
                                          "history_commands": {"off": 0.0, "on": 0.05}},
               "ratio": 1.0, "cpu_ratio": 1.0, "records_complete": True}  # fmt: skip
    checks: list[tuple[str, float, float]] = []
    text = history_bench.section(summary, checks)
    assert "| on | " in text and "every fire time recorded" in text
    assert checks == [("history on per loop", 1.0, 1.1)]
