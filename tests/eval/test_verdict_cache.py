"""The verdict cache: shared by processes, rebuilt when damaged, never a crash."""

import json

import pytest
from pathlib import Path

from eval.judge import Judge
from eval.rubric import Rubric
from eval.verdict_cache import VerdictCache
from teacher.client import make_client
from tests.eval.conftest import FakeChat


def test_eight_processes_share_one_cache_without_losing_a_verdict(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from eval.verdict_cache import VerdictCache; c = VerdictCache(sys.argv[1]); "
            "[(c.put(f'{sys.argv[2]}-{k}', {'verdict': None, 'reason': 'x' * 2000}), c.get(f'0-{k}'), len(c)) "
            "for k in range(100)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cache.sqlite"), str(i)],
                              stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]) for i in range(8)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8 and not any(errors), errors
    assert len(VerdictCache(tmp_path / "cache.sqlite")) == 8 * 100


def test_a_damaged_cache_is_set_aside_and_refilled_from_the_verdicts_file(chat_server, tmp_path, capsys):
    cache_file, verdicts = tmp_path / "cache.sqlite", tmp_path / "verdicts.jsonl"
    judge = Judge(make_client(chat_server), "m", Rubric.load(), cache=VerdictCache(cache_file))
    items = [{"prompt": "p", "fable": f"fable {i}"} for i in range(3)]
    verdicts.write_text("".join(json.dumps({**it, **judge.judge(it["prompt"], it["fable"])}) + "\n" for it in items)
                        + '{"torn line\n')
    assert len(FakeChat.requests) == 3
    judge.cache._db.close()
    cache_file.write_bytes(b"this is not a database" * 100)

    rebuilt = VerdictCache(cache_file, recover_from=verdicts)
    err = capsys.readouterr().err
    assert "verdict cache" in err and "was damaged" in err and "3 verdicts restored" in err
    assert len(list(tmp_path.glob("cache.sqlite.damaged-*"))) == 1 and len(rebuilt) == 3
    again = Judge(make_client(chat_server), "m", Rubric.load(), cache=rebuilt)
    assert all(again.judge(it["prompt"], it["fable"])["cached"] for it in items) and len(FakeChat.requests) == 3


def test_a_damaged_record_is_a_miss_not_a_crash(tmp_path):
    cache = VerdictCache(tmp_path / "c.sqlite")
    with cache._db:
        cache._db.execute("INSERT INTO verdicts VALUES (?, ?)", ("k", "{not json"))
    assert cache.get("k") is None


def test_a_cache_locked_past_the_timeout_is_not_damage_and_stays_where_it_is(tmp_path, monkeypatch):
    import sqlite3

    path = tmp_path / "cache.sqlite"
    cache = VerdictCache(path)
    cache.put("k", {"verdict": None, "reason": "ok", "raw": "x", "judge": {}})
    cache.close()
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")  # a rollback journal: an exclusive lock keeps readers out
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(VerdictCache, "BUSY_TIMEOUT_S", 0.2)
    with pytest.raises(RuntimeError, match=r"cache.sqlite stayed locked by another process .*database is locked"):
        VerdictCache(path)
    holder.execute("COMMIT")
    holder.close()
    assert not list(tmp_path.glob("*.damaged-*")) and VerdictCache(path).get("k")["raw"] == "x"
