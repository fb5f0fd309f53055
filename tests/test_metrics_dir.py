"""The multiprocess directory belongs to one deployment: processes that come and go add up, the
files of dead ones are compacted, and another database counts apart. Real processes, each
killed with SIGKILL after counting, as a crashed worker would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from llmqueue import metrics_archive
from tests.fixtures import ROOT

#: counts N submissions and dies by SIGKILL, or prints a scrape of the host's events
SCRIPT = """
import os, signal, sys
import django
django.setup()
from llmqueue import metrics
if sys.argv[1] == "count":
    metrics.JOBS_SUBMITTED.labels("chat").inc(int(sys.argv[2]))
    print(os.environ["PROMETHEUS_MULTIPROC_DIR"], os.getpid(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdout.write(metrics.exposition(state=False).decode())
"""


def run(root: Path, database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        PROMETHEUS_MULTIPROC_DIR=str(root),
        DATABASE_URL=f"sqlite:///{database}",
        SECRET_KEY="test-only",
    )
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def submitted(root: Path, database: Path) -> float:
    scrape = run(root, database, "scrape")
    assert scrape.returncode == 0, scrape.stderr
    return sum(
        s.value
        for f in text_string_to_metric_families(scrape.stdout)
        for s in f.samples
        if s.name == "llmqueue_jobs_submitted_total" and s.labels == {"kind": "chat"}
    )


def test_killed_processes_add_up_their_files_are_compacted_and_databases_count_apart(tmp_path):
    root = tmp_path / "prometheus"
    a, b = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    dirs, pids, expected = set(), [], 0
    for n in range(1, 7):
        counted = run(root, a, "count", str(n))
        assert counted.returncode == -9, counted.stderr  # killed, as a crash would be
        directory, pid = counted.stdout.split()
        dirs.add(directory)
        pids.append(pid)
        expected += n
        if n == 3:  # a scrape in between compacts the first three: nothing is lost
            assert submitted(root, a) == expected == 6
    assert submitted(root, a) == expected == 21  # counters never go back
    (directory,) = dirs  # every process of the deployment counted in one directory
    assert Path(directory).parent == root
    files = sorted(p.name for p in Path(directory).glob("*.db"))
    # the archives, and the last scrape's own files (its process has just ended): a bound
    # that does not grow with the number of processes that ever ran
    assert len(files) <= 8, files
    assert not [f for f in files if any(f.endswith(f"_{pid}.db") for pid in pids)], files
    assert "counter_archive.db" in files
    # another deployment (another database) on the same root sees none of it
    assert submitted(root, b) == 0
    assert submitted(root, a) == 21
    assert len(list(root.iterdir())) == 2


def _write(path: Path, key: str, value: float) -> None:
    d = MmapedDict(str(path))
    d.write_value(key, value, 0.0)
    d.close()


def _values(path: Path) -> dict[str, float]:
    return {k: v for k, v, _, _ in MmapedDict.read_all_values_from_file(str(path))}


KEY = json.dumps(["llmqueue_x", "llmqueue_x_total", {}, "x"])
DEAD = 999_999_999  # above any pid_max: never alive


def test_a_compaction_cut_short_is_finished_by_the_next_one_without_counting_twice(tmp_path):
    _write(tmp_path / f"counter_{DEAD}.db", KEY, 5)
    _write(tmp_path / "counter_archive.db", KEY, 10)
    _write(tmp_path / f"gauge_livesum_{DEAD}.db", KEY, 3)
    # a crash after the new archive and the journal were written, before they took effect
    _write(tmp_path / "counter_archive.db.new", KEY, 15)
    journal = {"types": ["counter"], "dead": [f"counter_{DEAD}.db", f"gauge_livesum_{DEAD}.db"]}
    (tmp_path / "compaction.json").write_text(json.dumps(journal))
    assert (
        metrics_archive.multiprocess_compact(str(tmp_path)) == 0
    )  # finished, nothing left to fold
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_archive.db"]
    assert _values(tmp_path / "counter_archive.db") == {KEY: 15}
    assert not (tmp_path / "compaction.json").exists()
    # and a plain compaction adds a dead file's counts to the archive
    _write(tmp_path / f"counter_{DEAD}.db", KEY, 2)
    assert metrics_archive.multiprocess_compact(str(tmp_path)) == 1
    assert _values(tmp_path / "counter_archive.db") == {KEY: 17}
