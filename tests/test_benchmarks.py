"""The benchmark harness runs end to end on tiny input, so it cannot rot (nothing is timed here)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import __main__ as cli
from benchmarks import report, serializer_bench, store_bench


def test_serializer_level_produces_every_row() -> None:
    raw = serializer_bench.run(rounds=1, calls=1, progress=lambda: None)
    summary = serializer_bench.summarize(raw)
    assert {"stock", "pickle-p4", "pickle-p5", "cloudpickle", "msgpack"} <= set(summary)
    assert summary["stock"]["mix"]["encode"] == 1.0
    assert summary["stock"]["mix"]["bytes"] == 1.0
    assert summary["msgpack"]["mix-small"]["bytes"] < 1.0  # msgpack-state is smaller than pickle
    kinds = {"date", "interval", "cron-zoneinfo", "cron-pytz", "calendarinterval", "combined"}
    assert kinds <= set(summary["msgpack"])


def test_store_and_scaling_levels_run_on_the_server(mongodb_uri: str) -> None:
    store = store_bench.run_store(
        mongodb_uri,
        serializers=["pickle", "msgpack"],
        jobs_count=12,
        rounds=1,
        query_calls=1,
        progress=lambda: None,
    )
    assert set(store) == {"stock", "jobshelf-pickle", "jobshelf-msgpack"}
    assert set(store["stock"]) == set(store_bench.OPERATIONS)
    scaling = store_bench.run_scaling(mongodb_uri, sizes=[12, 24], rounds=1, progress=lambda: None)
    assert set(scaling["stock"]) == {12, 24}
    text, checks = report.render(report.environment("test"), {}, store, scaling, rounds=1)
    assert "get_next_run_time" in text
    assert any(label.startswith("growth 12 -> 24") for label, _, _ in checks)


def test_cli_writes_table_json_and_plot(mongodb_uri: str, tmp_path: Path, capsys: object) -> None:
    assert cli.main(["--quick", "--rounds", "1", "--only", "serializers", "--out", str(tmp_path),
                     "--mongodb-uri", mongodb_uri]) == 0  # fmt: skip
    payload = json.loads((tmp_path / "results-quick-uri-only-serializers.json").read_text())
    assert payload["targets"][0]["target"] == "msgpack encode (mix)"
    assert (tmp_path / "serializers-quick-uri-only-serializers.png").stat().st_size > 1000
    text = (tmp_path / "results-quick-uri-only-serializers.txt").read_text()
    assert "Targets (quick run: indicative only, not judged)" in text and "NOT MET" not in text


def test_shared_level_runs_real_processes(mongodb_uri: str) -> None:
    from benchmarks import shared_bench

    run = shared_bench.run_cluster(mongodb_uri, 2, "shared", jobs=3, interval=0.5, seconds=2)
    assert run["fire_times"] == 12
    assert run["exit_codes"] == [0, 0]
    assert run["executed"] + run["misses"] == 12 and run["loops"] > 0
    text = shared_bench.render({"workload": {"jobs": 3, "interval": 0.5, "seconds": 2},
                                "runs": {"shared x2": run}, "loop_cost_ratio": 1.0})  # fmt: skip
    assert "| shared x2 | 2 | 12 |" in text
