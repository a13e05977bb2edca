"""``python -m benchmarks``: serializer, store and scaling benchmarks, printed as one table."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests import servers

from jobshelf import available_serializers

from . import history_bench, report, serializer_bench, shared_bench, store_bench


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run (about two minutes), every row")
    parser.add_argument(
        "--server",
        choices=["secantus", "nx"],
        default="secantus",
        help="embedded server to start (default: SecantusDB)",
    )
    parser.add_argument(
        "--mongodb-uri",
        default=os.environ.get(servers.URI_ENV),
        help=f"use this server instead (default: ${servers.URI_ENV})",
    )
    parser.add_argument("--scale-100k", action="store_true", help="add N=100k to the scaling run")
    parser.add_argument(
        "--only",
        choices=["serializers", "store", "scaling", "shared", "history"],
        action="append",
        help="run only these parts (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--rounds", type=int, help="rounds per measurement")
    return parser.parse_args(argv)


@contextlib.contextmanager
def server(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if args.mongodb_uri:
        yield args.mongodb_uri, f"MongoDB at {args.mongodb_uri}"
    elif args.server == "nx":
        with servers.nx_server() as uri:
            yield uri, f"NX-27017 {_version('nx-27017')} (subprocess, in-memory SQLite)"
    else:
        with servers.secantus_server() as uri:
            yield uri, f"SecantusDB {_version('SecantusDB')} (embedded, WiredTiger)"


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


class Progress:
    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, file=sys.stderr, ncols=80, leave=False)

    def __call__(self) -> None:
        self._bar.update()

    def close(self) -> None:
        self._bar.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    parts = set(args.only or ["serializers", "store", "scaling", "shared", "history"])
    rounds = args.rounds or (3 if args.quick else 9)
    calls = 50 if args.quick else 300
    store_jobs = 24 if args.quick else 60
    sizes = [1000, 10000] + ([100000] if args.scale_100k else [])
    serializers = [
        name for name in available_serializers() if name in ("pickle", "cloudpickle", "msgpack", "json")
    ]

    with server(args) as (uri, server_name):
        env = report.environment(server_name)
        jobs_per_serializer_round = 12 * 2 * len(serializer_bench.contenders(None))
        total = (
            ("serializers" in parts) * rounds * jobs_per_serializer_round
            + ("store" in parts) * rounds * (len(serializers) + 1)
            + ("scaling" in parts) * rounds * len(sizes) * 2
            + ("shared" in parts) * len(shared_bench.CONFIGS)
            + ("history" in parts) * 2 * min(rounds, 5)
        )
        progress = Progress(total)
        results: dict[str, Any] = {"environment": env, "rounds": rounds}
        summary = store = scaling = shared = None
        if "serializers" in parts:
            raw = serializer_bench.run(rounds, calls, progress)
            summary = serializer_bench.summarize(raw)
            results["serializers"] = {"summary": summary, "raw": serializer_bench.to_json(raw)}
        if "store" in parts:
            store = store_bench.run_store(
                uri,
                serializers=serializers,
                jobs_count=store_jobs,
                rounds=rounds,
                query_calls=5 if args.quick else 20,
                progress=progress,
            )
            results["store"] = store
        if "scaling" in parts:
            scaling = store_bench.run_scaling(uri, sizes, rounds, progress)
            results["scaling"] = {
                name: {str(size): v for size, v in per.items()} for name, per in scaling.items()
            }
        if "shared" in parts:
            # real processes: each configuration on a fresh server of its own (unless told a URI)
            fresh = None if args.mongodb_uri else (servers.nx_server if args.server == "nx" else
                                                   servers.secantus_process)  # fmt: skip
            shared = shared_bench.run(uri, quick=args.quick, progress=progress, fresh=fresh)
            results["shared"] = shared
        if "history" in parts:  # history on against off, per loop (at most 5 rounds: ~10 s each)
            results["history"] = history_bench.run(uri, quick=args.quick, rounds=min(rounds, 5),
                                                   progress=progress)  # fmt: skip
        progress.close()

    text, checks = report.render(env, summary or {}, store, scaling, rounds)
    if shared is not None:
        text += "\n\n" + shared_bench.render(shared)
        label = "shared mode per loop, one process"
        checks.append((label, shared["loop_cost_ratio"], report.TARGETS[label]))
    text += history_bench.section(results.get("history"), checks)
    text += "\n" + report.targets_table(checks, judge=not args.quick)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    where = "uri" if args.mongodb_uri else args.server
    suffix = f"quick-{where}" if args.quick else where
    if args.only:  # a partial run never overwrites a full run's files
        suffix += "-only-" + "-".join(sorted(parts))
    results["targets"] = [
        {"target": label, "measured": value, "limit": limit} for label, value, limit in checks
    ]
    report.write_json(args.out / f"results-{suffix}.json", results)
    (args.out / f"results-{suffix}.txt").write_text(text + "\n")
    if summary:
        report.plot(args.out / f"serializers-{suffix}.png", summary, env)
    print(f"\nwrote {args.out}/results-{suffix}.json, .txt and serializers-{suffix}.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
