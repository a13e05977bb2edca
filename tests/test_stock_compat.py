"""Drop-in compatibility with APScheduler's own MongoDBJobStore, in both directions."""

from __future__ import annotations

import datetime as dt
import pickle
from typing import Any

import pytest
from apscheduler.jobstores.mongodb import MongoDBJobStore as StockStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pymongo import MongoClient

from jobshelf import MongoDBJobStore
from jobshelf.mongodb import FORMAT_FIELD, REVISION_FIELD

from .helpers import UTC, assert_same_job, make_job

T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def pair(
    mongo_client: MongoClient[Any], database: str, scheduler: BackgroundScheduler
) -> tuple[StockStore, MongoDBJobStore]:
    stock = StockStore(database=database, client=mongo_client)
    ours = MongoDBJobStore(database=database, client=mongo_client)
    stock.start(scheduler, "stock")
    ours.start(scheduler, "ours")
    return stock, ours


def jobs(scheduler: BackgroundScheduler) -> list[Any]:
    return [
        make_job(scheduler, "date", next_run_time=T0, args=(1, "x")),
        make_job(
            scheduler,
            "cron",
            trigger=CronTrigger(hour="*/3", day_of_week="mon-fri", timezone="Europe/Berlin"),
            next_run_time=T0 + dt.timedelta(hours=1),
            kwargs={"k": [1, 2]},
        ),
        make_job(
            scheduler,
            "paused",
            trigger=IntervalTrigger(minutes=10, start_date=T0, timezone="UTC"),
            next_run_time=None,
        ),
    ]


@pytest.mark.parametrize("protocol", [pickle.HIGHEST_PROTOCOL, 4, 2])
def test_job_state_bytes_are_identical_to_the_stock_store(
    mongo_client: MongoClient[Any], database: str, scheduler: BackgroundScheduler, protocol: int
) -> None:
    stock = StockStore(database=database, collection="stock", client=mongo_client, pickle_protocol=protocol)
    ours = MongoDBJobStore(
        database=database, collection="ours", client=mongo_client, pickle_protocol=protocol
    )
    for job in jobs(scheduler):
        stock.add_job(job)
        ours.add_job(job)
        stock_doc = stock.collection.find_one({"_id": job.id})
        our_doc = ours.collection.find_one({"_id": job.id})
        assert our_doc["job_state"] == stock_doc["job_state"]
        assert our_doc["job_state"] == pickle.dumps(job.__getstate__(), protocol)
        assert our_doc["next_run_time"] == stock_doc["next_run_time"]
        ours_only = (FORMAT_FIELD, REVISION_FIELD)
        assert {key: value for key, value in our_doc.items() if key not in ours_only} == stock_doc


@pytest.mark.parametrize("writer", ["jobshelf", "stock"])
def test_each_store_reads_the_others_documents(
    pair: tuple[StockStore, MongoDBJobStore], scheduler: BackgroundScheduler, writer: str
) -> None:
    stock, ours = pair
    write, read = (ours, stock) if writer == "jobshelf" else (stock, ours)
    originals = jobs(scheduler)
    for job in originals:
        write.add_job(job)
    assert ours.format_counts() == {"pickle": 3}  # tagged or untagged, both count as pickle
    for job in originals:
        assert_same_job(job, read.lookup_job(job.id))
    assert [job.id for job in read.get_all_jobs()] == ["date", "cron", "paused"]
    assert [job.id for job in read.get_due_jobs(T0)] == ["date"]
    assert read.get_next_run_time() == T0


def test_updates_by_either_store_stay_readable(
    pair: tuple[StockStore, MongoDBJobStore], scheduler: BackgroundScheduler
) -> None:
    stock, ours = pair
    ours.add_job(make_job(scheduler, "j", next_run_time=T0))
    stock.update_job(make_job(scheduler, "j", next_run_time=T0, args=("by stock",)))
    assert ours.lookup_job("j").args == ("by stock",)  # type: ignore[union-attr]
    ours.update_job(make_job(scheduler, "j", next_run_time=T0, args=("by jobshelf",)))
    assert stock.lookup_job("j").args == ("by jobshelf",)
