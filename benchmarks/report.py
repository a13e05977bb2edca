"""The printed table, the JSON file and the PNG plot."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .timing import Sample

TARGETS = {
    "msgpack encode (mix)": 0.5,
    "msgpack decode (mix)": 0.5,
    "msgpack bytes (mix)": 0.35,
    "cloudpickle encode (mix)": 1.1,
    "cloudpickle decode (mix)": 1.1,
    "store pickle, every operation": 1.05,
    "growth 1k -> 10k": 1.5,
    "shared mode per loop, one process": 1.3,
}


def environment(server: str) -> dict[str, str]:
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}",
        "python": sys.version.split()[0],
        "libraries": ", ".join(
            f"{name} {installed(name)}"
            for name in ("jobshelf", "apscheduler", "pymongo", "msgpack", "cloudpickle", "pytz")
        ),
        "server": server,
    }


def render(
    env: dict[str, str],
    summary: dict[str, Any],
    store: dict[str, dict[str, Sample]] | None,
    scaling: dict[str, Any] | None,
    rounds: int,
) -> tuple[str, list[tuple[str, float, float]]]:
    """The report as text, and the (target, measured, limit) rows."""
    lines = [
        "jobshelf benchmarks",
        *(f"  {key}: {value}" for key, value in env.items()),
        f"  medians over {rounds} interleaved rounds after a warm-up; [min-max] spread; ratios to stock",
    ]
    checks: list[tuple[str, float, float]] = []
    if summary:
        lines += _serializer_lines(summary)
        for serializer, metrics in (
            ("msgpack", ("encode", "decode", "bytes")),
            ("cloudpickle", ("encode", "decode")),
        ):
            if serializer not in summary:
                continue
            for group in ("mix", "mix-small"):
                for metric in metrics:
                    limit = TARGETS[f"{serializer} {metric} (mix)"]
                    checks.append(
                        (f"{serializer} {metric} ({group})", summary[serializer][group][metric], limit)
                    )

    if store:
        names = list(store)
        operations = list(next(iter(store.values())))
        lines += [
            "",
            "Store level: median ms per operation (ratio to the stock store), same server, interleaved",
            f"  {'operation':<18}" + "".join(f" {name:>22}" for name in names),
        ]
        for op in operations:
            base = store["stock"][op].median
            cells = "".join(
                f" {store[name][op].median * 1e3:8.3f} ({store[name][op].median / base:4.2f}x)".rjust(23)
                for name in names
            )
            lines.append(f"  {op:<18}{cells}")
        if "jobshelf-pickle" in store:
            worst = max(store["jobshelf-pickle"][op].median / store["stock"][op].median for op in operations)
            checks.append(("store pickle, every operation", worst, TARGETS["store pickle, every operation"]))

    if scaling:
        sizes = sorted(next(iter(scaling.values())))
        lines += [
            "",
            f"Scaling on {env['server']}: median ms per call at N jobs;"
            f" growth = N={sizes[-1]} / N={sizes[0]}",
        ]
        for name, per_size in scaling.items():
            for op in ("get_next_run_time", "get_due_jobs"):
                cells = "  ".join(f"N={size}: {per_size[size][op].median * 1e3:8.3f}" for size in sizes)
                growth = per_size[sizes[-1]][op].median / per_size[sizes[0]][op].median
                lines.append(f"  {name:<16} {op:<18} {cells}  growth {growth:5.2f}x")
                checks.append(
                    (f"growth {sizes[0]} -> {sizes[-1]}: {name} {op}", growth, TARGETS["growth 1k -> 10k"])
                )

    return "\n".join(lines), checks


def targets_table(checks: list[tuple[str, float, float]], *, judge: bool) -> str:
    """Every target with its measured ratio; judged only on a full run (a quick run's few rounds are
    indicative: machine noise alone moves them past a limit)."""
    heading = "Targets" if judge else "Targets (quick run: indicative only, not judged)"
    lines = ["", heading, f"  {'target':<56} {'measured':>9} {'limit':>7}  verdict"]
    for label, measured, limit in checks:
        verdict = ("met" if measured <= limit else "NOT MET") if judge else "-"
        lines.append(f"  {label:<56} {measured:8.3f}x {limit:6.2f}x  {verdict}")
    return "\n".join(lines)


def _serializer_lines(summary: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Serializer level: per job, mix of 12 jobs (6 trigger kinds x small/large arguments;",
        "mix-small / mix-large: the 6 jobs with small / large arguments),",
        "encode = Job -> bytes, decode = bytes -> Job (rebuilt), stock = pickle.dumps(job.__getstate__())",
        f"  {'serializer':<14} {'encode us':>9} {'ratio':>7} {'spread':>13} {'decode us':>9} {'ratio':>7} "
        f"{'spread':>13} {'bytes':>7} {'ratio':>7}",
    ]
    for name, groups in summary.items():
        row = groups["mix"]
        lines.append(
            f"  {name:<14} {row['encode_us']:9.2f} {row['encode']:6.2f}x "
            f"[{row['encode_spread'][0]:.2f}-{row['encode_spread'][1]:.2f}]".ljust(57)
            + f" {row['decode_us']:9.2f} {row['decode']:6.2f}x "
            f"[{row['decode_spread'][0]:.2f}-{row['decode_spread'][1]:.2f}]".ljust(31)
            + f" {row['bytes_avg']:7.0f} {row['bytes']:6.2f}x"
        )
    kinds = [group for group in next(iter(summary.values())) if group != "mix"]
    lines += [
        "",
        "Per trigger kind: encode / decode / bytes ratio to stock",
        f"  {'serializer':<14}" + "".join(f" {kind:>22}" for kind in kinds),
    ]
    for name, groups in summary.items():
        cells = "".join(
            f" {groups[k]['encode']:5.2f}/{groups[k]['decode']:5.2f}/{groups[k]['bytes']:5.2f}".rjust(23)
            for k in kinds
        )
        lines.append(f"  {name:<14}{cells}")
    return lines


def write_json(path: Path, payload: dict[str, Any]) -> None:
    def default(value: Any) -> Any:
        if isinstance(value, Sample):
            return value.as_dict()
        raise TypeError(type(value).__name__)

    path.write_text(json.dumps(payload, indent=1, default=default))


def plot(path: Path, summary: dict[str, Any], env: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    width = 0.4
    for axis, metric, target in zip(axes, ("encode", "decode", "bytes"), (0.5, 0.5, 0.35)):
        for offset, group, color in ((-width / 2, "mix", "#3b7dd8"), (width / 2, "mix-small", "#8fb8ef")):
            values = [summary[name][group][metric] for name in names]
            positions = [index + offset for index in range(len(names))]
            axis.bar(positions, values, width=width, color=color, label=group)
            for position, value in zip(positions, values):
                axis.text(position, value, f"{value:.2f}", ha="center", va="bottom", fontsize=6)
        axis.set_xticks(range(len(names)), names, rotation=40)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.axhline(target, color="#d83b3b", linestyle="--", linewidth=1, label=f"msgpack target {target}x")
        axis.set_title(f"{metric} (ratio to stock pickle)")
        axis.legend(fontsize=7)
    figure.suptitle(f"jobshelf serializers - {env['machine']}, Python {env['python']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
