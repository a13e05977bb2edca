"""Serializer level, no database: encode and decode (rebuilding the Job) per job, and bytes."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from apscheduler.job import Job

from jobshelf import available_serializers, job_to_state, resolve_serializer, state_to_job
from jobshelf.serializers.pickle import PickleSerializer

from .jobs import make_jobs
from .timing import Sample, interleaved, time_per_call

STOCK = "stock"
Codec = tuple[Callable[[Job], bytes], Callable[[bytes], Job]]


def _stock_codec(scheduler: Any) -> Codec:
    def encode(job: Job) -> bytes:
        return pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL)

    def decode(data: bytes) -> Job:  # exactly what apscheduler.jobstores.mongodb does
        job = Job.__new__(Job)
        job.__setstate__(pickle.loads(data))
        job._scheduler = scheduler
        job._jobstore_alias = "default"
        return job

    return encode, decode


def _jobshelf_codec(serializer: Any, scheduler: Any) -> Codec:
    by_value = bool(getattr(serializer, "stores_callables_by_value", False))

    def encode(job: Job) -> bytes:
        return bytes(serializer.dumps(job_to_state(job, by_value=by_value)))

    def decode(data: bytes) -> Job:
        return state_to_job(serializer.loads(data), scheduler, "default")

    return encode, decode


def contenders(scheduler: Any) -> dict[str, Codec]:
    """The stock pickle path (the 1.00 baseline) and every jobshelf serializer installed."""
    codecs = {
        STOCK: _stock_codec(scheduler),
        "pickle-p5": _jobshelf_codec(PickleSerializer(5), scheduler),
        "pickle-p4": _jobshelf_codec(PickleSerializer(4), scheduler),
    }
    for name in available_serializers():
        if name != "pickle":
            codecs[name] = _jobshelf_codec(resolve_serializer(name), scheduler)
    return codecs


def run(rounds: int, calls: int, progress: Callable[[], None]) -> dict[str, Any]:
    """Per contender and job: encode/decode seconds (Sample) and bytes."""
    jobs = make_jobs()
    scheduler = next(iter(jobs.values()))._scheduler
    codecs = contenders(scheduler)
    encoded = {
        name: {job_id: encode(job) for job_id, job in jobs.items()} for name, (encode, _) in codecs.items()
    }
    results: dict[str, Any] = {name: {"encode": {}, "decode": {}, "bytes": {}} for name in codecs}
    for job_id, job in jobs.items():

        def measure_encode(name: str, job: Job = job) -> float:
            encode = codecs[name][0]
            return time_per_call(lambda: encode(job), calls)

        def measure_decode(name: str, job_id: str = job_id) -> float:
            decode, data = codecs[name][1], encoded[name][job_id]
            return time_per_call(lambda: decode(data), calls)

        encode_samples = interleaved(codecs, rounds, measure_encode, progress=progress)
        decode_samples = interleaved(codecs, rounds, measure_decode, progress=progress)
        for name in codecs:
            results[name]["encode"][job_id] = encode_samples[name]
            results[name]["decode"][job_id] = decode_samples[name]
            results[name]["bytes"][job_id] = len(encoded[name][job_id])
    return results


def summarize(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Ratios to stock per trigger kind and for the whole mix (sums over the jobs of a group)."""
    job_ids = list(results[STOCK]["bytes"])
    groups: dict[str, list[str]] = {
        "mix": job_ids,
        "mix-small": [j for j in job_ids if j.endswith("/small")],
        "mix-large": [j for j in job_ids if j.endswith("/large")],
    }
    for job_id in job_ids:
        groups.setdefault(job_id.split("/")[0], []).append(job_id)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, data in results.items():
        summary[name] = {}
        for group, members in groups.items():
            row = {}
            for metric in ("encode", "decode"):
                ours = sum(data[metric][j].median for j in members)
                stock = sum(results[STOCK][metric][j].median for j in members)
                row[metric] = ours / stock
                row[f"{metric}_us"] = ours / len(members) * 1e6
                row[f"{metric}_spread"] = (
                    sum(data[metric][j].low for j in members) / stock,
                    sum(data[metric][j].high for j in members) / stock,
                )
            row["bytes"] = sum(data["bytes"][j] for j in members) / sum(
                results[STOCK]["bytes"][j] for j in members
            )
            row["bytes_avg"] = sum(data["bytes"][j] for j in members) / len(members)
            summary[name][group] = row
    return summary


def to_json(results: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            metric: {
                job: (value.as_dict() if isinstance(value, Sample) else value)
                for job, value in per_job.items()
            }
            for metric, per_job in data.items()
        }
        for name, data in results.items()
    }
