"""The ``jobshelf`` command against a hostile writer of the collection.

Whatever a document holds, the command imports nothing it names, runs none of its code, and
prints none of its control characters to the operator's terminal (checked under a real
pseudo-terminal). Every run here goes through an audit hook that reports imports of the probe
modules and any process the command would start.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import pickle
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from bson.binary import Binary

from jobshelf import MongoDBJobStore
from jobshelf.mongodb import FORMAT_FIELD, QUARANTINE_FIELD

from .helpers import UTC, make_job

pytestmark = pytest.mark.subprocess
T0 = dt.datetime(2031, 1, 1, tzinfo=UTC)
KEY = "a-signing-key-of-32-characters--"

#: What a hostile writer puts in ids, names, tags and messages, by what it would do on a terminal.
SEQUENCES = {
    "set-title": "\x1b]0;PWNED\x07",
    "clear-screen": "\x1b[2J",
    "conceal": "\x1b[8m",
    "cursor-up": "\x1b[3A",
    "C1 CSI": "\x9b5m",
    "C1 OSC": "\x9d0;T\x9c",
    "bidi override": "\u202e",
    "bidi isolate": "\u2066",
    "DEL": "\x7f",
    "line separator": "\u2028",
}
HOSTILE = "".join(SEQUENCES.values())
#: Control sequences Rich itself writes on a terminal (styles, the progress bar's cursor).
RICH_OWN = re.compile(r"\x1b\[[0-9;]*m|\x1b\[\?25[lh]|\x1b\[2K|\r")

# Runs the command as installed, with an audit hook: imports of the probe modules and processes
# started are reported on stderr's last line, with the number of documents the server returned.
PRELUDE = r"""
import atexit, json, sys
from pymongo import monitoring

seen, returned = [], [0]
PROBES = {"this", "antigravity", "jobshelf_tag_probe"}

def hook(event, args):
    if event == "import" and args[0].split(".")[0] in PROBES:
        seen.append("import " + args[0])
    elif event in ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn"):
        seen.append(event)

class Documents(monitoring.CommandListener):
    def started(self, event): pass
    def failed(self, event): pass
    def succeeded(self, event):
        if event.command_name in ("find", "getMore"):
            cursor = event.reply.get("cursor", {})
            returned[0] += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

sys.addaudithook(hook)
monitoring.register(Documents())
report = lambda: {"seen": seen, "documents": returned[0]}
atexit.register(lambda: sys.stderr.write("\nPROBE " + json.dumps(report()) + "\n"))
from jobshelf.cli import main
main()
"""


class Run:
    """One run of the command: its exit status, output, and what the audit hook saw (reported
    on the last line of ``stderr``, which is taken off)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        head, _, probe = stderr.rpartition("PROBE ")
        assert probe, f"the audit hook did not report: {stderr!r}"
        report = json.loads(probe)
        self.returncode, self.stdout, self.stderr = returncode, stdout, head.rstrip("\r\n")
        self.seen: list[str] = report["seen"]
        self.documents: int = report["documents"]
        assert self.seen == [], f"the data made the command import or start: {self.seen}"


def command(database: str, *args: str) -> list[str]:
    return [sys.executable, "-c", PRELUDE, *args, "--database", database]


def environment(uri: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "JOBSHELF_SIGNING_KEYS"}
    paths = [str(tmp_path), str(Path.cwd()), env.get("PYTHONPATH", "")]
    env.update(JOBSHELF_MONGODB_URI=uri, PYTHONPATH=os.pathsep.join(filter(None, paths)), **extra)
    return env


def run(uri: str, database: str, tmp_path: Path, *args: str, **extra: str) -> Run:
    """The command with its output piped (not a terminal)."""
    result = subprocess.run(
        command(database, *args), env=environment(uri, tmp_path, **extra), capture_output=True,
        text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    return Run(result.returncode, result.stdout, result.stderr)


def run_on_terminal(uri: str, database: str, tmp_path: Path, *args: str, **extra: str) -> Run:
    """The command with stdout and stderr on a pseudo-terminal 250 columns wide: what the
    operator's terminal would receive, byte for byte."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 250, 0, 0))
    env = environment(uri, tmp_path, TERM="xterm-256color", **extra)
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        command(database, *args), env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + 300
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{args}: no end of output within 300 s"
            ready, _, _ = select.select([master], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            received += chunk
        returncode = process.wait(60)
    finally:
        os.close(master)
    text = received.decode("utf-8")  # strict: what reaches the terminal is valid UTF-8
    return Run(returncode, text.rpartition("PROBE ")[0], text)  # stdout and stderr, as shown


def assert_nothing_reaches_the_terminal(done: Run) -> None:
    text = done.stdout
    for name, sequence in SEQUENCES.items():
        assert sequence not in text, f"{name} reached the terminal: {text!r}"
    assert [char for char in text if 0x80 <= ord(char) <= 0x9F] == [], "a C1 control reached the terminal"
    formats = [char for char in text if unicodedata.category(char) in ("Cf", "Zl", "Zp")]
    assert formats == [], f"format characters reached the terminal: {formats!r}"
    assert "\x1b" not in RICH_OWN.sub("", text), f"an escape sequence reached the terminal: {text!r}"
    assert "\x07" not in text and "\x7f" not in text


def outcomes(stdout: str) -> dict[str, int]:
    """The migration summary's table: jobs per outcome."""
    return {name: int(count) for name, count in re.findall(r"^│ ([a-z ]+?) +│ (\d+) +│$", stdout, re.M)}


def stock_state(job_id: str, **changes: Any) -> dict[str, Any]:
    state = make_job(BackgroundScheduler(timezone=UTC), "x", next_run_time=T0).__getstate__()
    state.update(id=job_id, **changes)
    return state


def insert(client: Any, database: str, job_id: Any, data: bytes, **fields: Any) -> None:
    document = {"_id": job_id, "next_run_time": T0.timestamp(), "job_state": Binary(data), **fields}
    client[database].jobs.insert_one(document)


class Placeholder:
    """Pickled by reference, then renamed in the bytes to a module name a hostile writer chose."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Placeholder, ())


def naming_a_hostile_module(state: dict[str, Any]) -> bytes:
    state["args"] = (Placeholder(),)
    data = pickle.dumps(state, protocol=2)
    reference = f"c{__name__}\nPlaceholder\n".encode()
    assert reference in data
    return data.replace(reference, f"cx{HOSTILE}\nPlaceholder\n".encode())


# ----------------------------------------------------------------------------- control characters


@pytest.fixture
def hostile_collection(mongo_client: Any, database: str) -> dict[str, str]:
    """Jobs whose stored text is hostile, in every place a command prints; their ids by role."""
    ids = {
        "pickle": f"p{HOSTILE}",
        "msgpack": f"m{HOSTILE}",
        "tag": f"t{HOSTILE}",
        "quarantined": f"q{HOSTILE}",
    }
    writer = MongoDBJobStore(database=database, client=mongo_client, serializer="msgpack")
    scheduler = BackgroundScheduler(timezone=UTC)
    writer.start(scheduler, "default")
    writer.add_job(make_job(scheduler, ids["msgpack"], name=f"n{HOSTILE}", args=(HOSTILE,)))
    evil = stock_state(ids["pickle"], name=f"n{HOSTILE}", kwargs={HOSTILE: HOSTILE},
                       func=f"tests.helpers:dummy_job{HOSTILE}")  # fmt: skip
    insert(mongo_client, database, ids["pickle"], naming_a_hostile_module(evil))
    insert(mongo_client, database, ids["tag"], pickle.dumps(stock_state(ids["tag"])),
           **{FORMAT_FIELD: f"x{HOSTILE}"})  # fmt: skip
    record = {"error_type": f"e{HOSTILE}", "message": f"m{HOSTILE}", "format": f"f{HOSTILE}",
              "at": dt.datetime(2030, 1, 1), "next_run_time": T0.timestamp(), "cause": None}  # fmt: skip
    insert(mongo_client, database, ids["quarantined"], pickle.dumps(stock_state(ids["quarantined"])),
           **{QUARANTINE_FIELD: record})  # fmt: skip
    return ids


def test_no_control_character_from_the_data_reaches_the_terminal(
    mongodb_uri: str, database: str, tmp_path: Path, hostile_collection: dict[str, str]
) -> None:
    ids = hostile_collection
    runs = {
        "status": ("status",),
        "list": ("list",),
        "inspect pickle": ("inspect", ids["pickle"], "--disassemble"),
        "inspect msgpack": ("inspect", ids["msgpack"]),
        "inspect tag": ("inspect", ids["tag"]),
        "inspect quarantined": ("inspect", ids["quarantined"]),
        "migrate": ("migrate", "--to", "msgpack", "--dry-run", "--allow", "tests.helpers"),
        "quarantine list": ("quarantine", "list"),
        "quarantine restore": ("quarantine", "restore", ids["quarantined"]),
        "quarantine remove": ("quarantine", "remove", ids["quarantined"], "--yes"),
    }
    shown = {}
    for name, args in runs.items():
        done = run_on_terminal(mongodb_uri, database, tmp_path, *args)
        assert_nothing_reaches_the_terminal(done)
        shown[name] = done
    assert "PWNED" in shown["status"].stdout and "\\x1b]0;PWNED\\x07" in shown["list"].stdout
    assert (
        "\\u202e" in shown["inspect pickle"].stdout
        and "<unresolved x\\x1b]0;PWNED" in shown["inspect pickle"].stdout
    )
    assert "\\x1b[2J" in shown["inspect quarantined"].stdout  # the quarantine message, escaped
    assert "xx1b]0;PWNED" not in shown["migrate"].stdout and "\\x1b]0;PWNED" in shown["migrate"].stdout
    assert "\\x9b5m" in shown["quarantine list"].stdout
    assert (
        shown["quarantine restore"].returncode == 1
        and "still quarantined" in shown["quarantine restore"].stdout
    )
    assert shown["quarantine remove"].returncode == 0 and "removed" in shown["quarantine remove"].stdout


def test_json_output_is_ascii(
    mongodb_uri: str, database: str, tmp_path: Path, hostile_collection: dict[str, str]
) -> None:
    for args in (("list", "--json"), ("quarantine", "list", "--json")):
        done = run_on_terminal(mongodb_uri, database, tmp_path, *args)
        assert [char for char in done.stdout if not (" " <= char <= "~" or char in "\r\n")] == []
        rows = json.loads(done.stdout)
        assert {row["id"] for row in rows} >= {hostile_collection["quarantined"]}  # exact, once parsed
    names = {
        row["id"]: row["name"]
        for row in json.loads(run(mongodb_uri, database, tmp_path, "list", "--json").stdout)
    }
    assert names[hostile_collection["msgpack"]] == f"n{HOSTILE}"


# ----------------------------------------------------------------------------- format tags


TAGS: list[Any] = [
    "signed+this:x", "this:x", "os:system", "signed+os:system", "signed+signed+pickle",
    "jobshelf_tag_probe:Serializer", "signed+jobshelf_tag_probe:Serializer", "signed+", "",
    5, 2.5, True, {"a": 1}, ["pickle"], b"pickle",
]  # fmt: skip


def test_stored_format_tags_name_only_registered_serializers(
    mongodb_uri: str, mongo_client: Any, database: str, tmp_path: Path
) -> None:
    """With keys set, no stored tag is resolved as a serializer spec: nothing it names is imported."""
    marker = tmp_path / "imported"
    (tmp_path / "jobshelf_tag_probe.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nimport pickle as Serializer\n"
    )
    insert(mongo_client, database, "good", pickle.dumps(stock_state("good")))
    for index, tag in enumerate(TAGS):
        job_id = f"tag-{index:02}"
        insert(mongo_client, database, job_id, pickle.dumps(stock_state(job_id)), **{FORMAT_FIELD: tag})
    keys = {"JOBSHELF_SIGNING_KEYS": KEY}
    runs = [
        run(mongodb_uri, database, tmp_path, "status", **keys),
        run(mongodb_uri, database, tmp_path, "list", **keys),
        run(mongodb_uri, database, tmp_path, "list", "--json", **keys),
        run(mongodb_uri, database, tmp_path, "quarantine", "list", **keys),
        run(
            mongodb_uri,
            database,
            tmp_path,
            "migrate",
            "--to",
            "msgpack",
            "--dry-run",
            "--allow",
            "tests.helpers",
            **keys,
        ),
        *(
            run(mongodb_uri, database, tmp_path, "inspect", f"tag-{index:02}", **keys)
            for index in range(len(TAGS))
        ),
    ]
    for done in runs:
        assert done.returncode == 0, (done.stdout, done.stderr)
        output = done.stdout + done.stderr
        assert "Beautiful is better than ugly" not in output  # `this` was not imported
        assert "dumps()" not in output  # no tag was looked up as a module:attr serializer
    assert not marker.exists()
    rows = {row["id"]: row for row in json.loads(runs[2].stdout)}
    assert rows["good"]["decoded"] is True
    for index, tag in enumerate(TAGS):
        row = rows[f"tag-{index:02}"]
        assert row["decoded"] is False, row
        if isinstance(tag, str):
            assert row["format"] == tag and "not readable here: no serializer is registered as" in row["note"]
        else:
            assert row["note"].startswith("a malformed format tag"), row
    status = runs[0].stdout
    assert "signed+this:x: no serializer is registered as 'signed+this:x'" in status
    migrate = runs[4].stdout
    assert outcomes(migrate) == {"would migrate": 1, "undecodable": len(TAGS)}
    assert "accept=" not in migrate


# ----------------------------------------------------------------------------- --allow and the gadget


def short_unicode(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def gadget(state: dict[str, Any], marker: Path) -> bytes:
    """A job state behind a prelude that reaches ``eval`` through an allowed module's
    ``__builtins__`` (protocol 4 ``STACK_GLOBAL`` of a dotted name) and calls it."""
    call = short_unicode(f"open({str(marker)!r}, 'w').close()")
    prelude = (
        b"\x80\x04" + short_unicode("gadget_app.jobs") + short_unicode("__builtins__.get") + b"\x93"
        + short_unicode("eval") + b"\x85R" + call + b"\x85R" + b"0"
    )  # fmt: skip
    return prelude + pickle.dumps(state, protocol=2)[2:]


def test_allow_reads_through_the_store_restricted_decoder(
    mongodb_uri: str, mongo_client: Any, database: str, tmp_path: Path
) -> None:
    """``--allow gadget_app.jobs`` admits that module's own classes, not what its globals reach."""
    (tmp_path / "gadget_app").mkdir()
    (tmp_path / "gadget_app" / "__init__.py").write_text("")
    (tmp_path / "gadget_app" / "jobs.py").write_text("import logging\n\n\ndef task():\n    pass\n")
    marker = tmp_path / "ran"
    data = gadget(stock_state("gadget", func="gadget_app.jobs:task"), marker)
    sys.path.insert(0, str(tmp_path))
    try:
        assert pickle.loads(data)["id"] == "gadget"  # the gadget is real: plain pickle runs it
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("gadget_app.jobs", "gadget_app"):
            sys.modules.pop(name, None)
    assert marker.exists()
    marker.unlink()
    insert(mongo_client, database, "gadget", data)
    allow = ("--allow", "gadget_app.jobs")
    dry = run(mongodb_uri, database, tmp_path, "migrate", "--to", "msgpack", "--dry-run", *allow)
    assert not marker.exists(), "migrate --dry-run --allow ran the gadget"
    assert dry.returncode == 0 and "undecodable" in dry.stdout
    real = run(mongodb_uri, database, tmp_path, "migrate", "--to", "msgpack", "--yes", *allow)
    assert not marker.exists() and real.returncode == 3
    for args in (("inspect", "gadget"), ("list",), ("status",)):
        shown = run(mongodb_uri, database, tmp_path, *args, *allow)
        assert shown.returncode == 0 and not marker.exists(), args
    mongo_client[database].jobs.update_one(
        {"_id": "gadget"},
        {"$set": {QUARANTINE_FIELD: {"error_type": "x", "message": "x", "format": "pickle", "at": None,
                                     "next_run_time": None, "cause": None}}},
    )  # fmt: skip
    restore = run(mongodb_uri, database, tmp_path, "quarantine", "restore", "gadget", *allow)
    assert restore.returncode == 1 and not marker.exists()
    assert mongo_client[database].jobs.find_one({"_id": "gadget"})["job_state"] == data  # untouched


def test_migrate_checks_callables_against_allow(
    mongodb_uri: str, mongo_client: Any, database: str, tmp_path: Path
) -> None:
    """A job is re-encoded (and so re-signed) only if --allow allows its callable."""
    insert(mongo_client, database, "mine", pickle.dumps(stock_state("mine")))
    insert(mongo_client, database, "theirs", pickle.dumps(stock_state("theirs", func="os:system")))
    bare = run(mongodb_uri, database, tmp_path, "migrate", "--to", "msgpack", "--dry-run")
    assert outcomes(bare.stdout) == {"undecodable": 2} and "pass --allow" in bare.stderr
    done = run(mongodb_uri, database, tmp_path, "migrate", "--to", "signed+msgpack", "--yes",
               "--allow", "tests.helpers", JOBSHELF_SIGNING_KEYS=KEY)  # fmt: skip
    assert done.returncode == 3
    formats = {doc["_id"]: doc.get(FORMAT_FIELD) for doc in mongo_client[database].jobs.find()}
    assert formats == {"mine": "signed+msgpack", "theirs": None}
    assert "'os:system'" in done.stdout


# ----------------------------------------------------------------------------- the store's public API


def fill(client: Any, database: str, count: int) -> None:
    for index in range(count):
        job_id = f"job-{index:03}"
        insert(client, database, job_id, pickle.dumps(stock_state(job_id)))


def test_inspect_and_remove_read_one_document(
    mongodb_uri: str, mongo_client: Any, database: str, tmp_path: Path
) -> None:
    fill(mongo_client, database, 40)
    shown = run(mongodb_uri, database, tmp_path, "inspect", "job-017")
    assert shown.returncode == 0 and "job 'job-017': scheduled" in shown.stdout
    assert shown.documents == 1
    missing = run(mongodb_uri, database, tmp_path, "quarantine", "remove", "job-003", "--yes")
    assert missing.returncode == 1 and missing.documents == 1
    assert mongo_client[database].jobs.count_documents({}) == 40


def test_migrate_works_in_batches(mongodb_uri: str, mongo_client: Any, database: str, tmp_path: Path) -> None:
    fill(mongo_client, database, 20)
    allow = ("--allow", "tests.helpers")
    dry = run(
        mongodb_uri,
        database,
        tmp_path,
        "migrate",
        "--to",
        "msgpack",
        "--dry-run",
        "--batch-size",
        "7",
        *allow,
    )
    assert dry.stderr.splitlines() == [
        "checking to msgpack: 7/20 (batch 1 of 3)",
        "checking to msgpack: 14/20 (batch 2 of 3)",
        "checking to msgpack: 20/20 (batch 3 of 3)",
    ]
    assert outcomes(dry.stdout) == {"would migrate": 20}
    real = run(
        mongodb_uri, database, tmp_path, "migrate", "--to", "msgpack", "--yes", "--batch-size", "20", *allow
    )
    assert real.stderr.splitlines() == ["migrating to msgpack: 20/20 (batch 1 of 1)"]
    assert mongo_client[database].jobs.count_documents({FORMAT_FIELD: "msgpack"}) == 20


# ----------------------------------------------------------------------------- signing keys


@pytest.mark.parametrize(
    "case",
    [
        (None, "needs the signing keys: set JOBSHELF_SIGNING_KEYS="),
        ("too-short", "cannot use JOBSHELF_SIGNING_KEYS: a key in it is too short"),
    ],
    ids=["missing", "too short"],
)
def test_a_signed_collection_without_usable_keys_names_the_cause(
    mongodb_uri: str, mongo_client: Any, database: str, tmp_path: Path, case: tuple[str | None, str]
) -> None:
    keys, cause = case
    fill(mongo_client, database, 3)
    signed = run(mongodb_uri, database, tmp_path, "migrate", "--to", "signed+msgpack", "--yes",
                 "--allow", "tests.helpers", JOBSHELF_SIGNING_KEYS=KEY)  # fmt: skip
    assert signed.returncode == 0, signed.stdout
    env = {} if keys is None else {"JOBSHELF_SIGNING_KEYS": keys}
    status = run(mongodb_uri, database, tmp_path, "status", **env)
    assert cause in status.stdout
    rows = json.loads(run(mongodb_uri, database, tmp_path, "list", "--json", **env).stdout)
    assert [cause in row["note"] for row in rows] == [True, True, True]
    inspect = run(mongodb_uri, database, tmp_path, "inspect", "job-001", **env)
    assert inspect.returncode == 0 and cause in inspect.stdout
    dry = run(mongodb_uri, database, tmp_path, "migrate", "--to", "msgpack", "--dry-run",
              "--allow", "tests.helpers", **env)  # fmt: skip
    assert dry.returncode == 0 and dry.stdout.count(cause) == 3
    assert "accept=" not in dry.stdout + dry.stderr
    record = {
        "error_type": "x",
        "message": "x",
        "format": "signed+msgpack",
        "at": None,
        "next_run_time": None,
    }
    mongo_client[database].jobs.update_one({"_id": "job-002"}, {"$set": {QUARANTINE_FIELD: record}})
    restore = run(mongodb_uri, database, tmp_path, "quarantine", "restore", "job-002", **env)
    assert restore.returncode == 1 and cause in restore.stderr
    to_signed = run(mongodb_uri, database, tmp_path, "migrate", "--to", "signed+pickle", "--yes", **env)
    assert to_signed.returncode == 2 and "JOBSHELF_SIGNING_KEYS" in to_signed.stderr
    assert len(to_signed.stderr.splitlines()) == 1
