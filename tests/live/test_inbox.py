"""The live inbox: durable, deduplicated by content, and readable again after the process is gone."""

import sqlite3
import threading

import pytest

from openastro_parsl.errors import OpenAstroError
from openastro_parsl.live.inbox import Inbox


def test_accept_is_on_disk_and_committed_before_it_returns(tmp_path):
    inbox = Inbox(tmp_path, "t")
    rec, new = inbox.accept(b"SIMPLE  = T" + b"x" * 100, "siteA", {"note": "first"})
    assert new and rec.state == "accepted" and rec.site == "siteA" and rec.metadata == {"note": "first"}
    assert (tmp_path / "live" / "t" / "frames" / f"{rec.sha256}.fits").read_bytes().startswith(b"SIMPLE")
    assert not list((tmp_path / "live" / "t" / "frames").glob(".*.part"))
    # another connection (another process after a kill) sees the committed row without any close()
    row = sqlite3.connect(tmp_path / "live" / "t" / "inbox.sqlite3").execute(
        "SELECT id, sha256, state FROM frames").fetchall()
    assert row == [(rec.id, rec.sha256, "accepted")]


def test_same_bytes_twice_are_one_frame(tmp_path):
    inbox = Inbox(tmp_path, "t")
    a, new_a = inbox.accept(b"abc" * 50, "siteA", {})
    b, new_b = inbox.accept(b"abc" * 50, "siteB", {"other": 1})
    c, new_c = inbox.accept(b"abd" * 50, "siteA", {})
    assert (new_a, new_b, new_c) == (True, False, True)
    assert b.id == a.id and b.site == "siteA" and c.id != a.id


def test_concurrent_uploads_of_one_file_make_one_row(tmp_path):
    inbox = Inbox(tmp_path, "t")
    out = []
    threads = [threading.Thread(target=lambda: out.append(inbox.accept(b"same" * 1000, "s", {}))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({rec.id for rec, _ in out}) == 1 and sum(new for _, new in out) == 1
    assert inbox.counts() == {"accepted": 1}


def test_states_fields_and_reopen(tmp_path):
    inbox = Inbox(tmp_path, "t")
    ids = [inbox.accept(bytes([i]) * 10, "s", {})[0].id for i in range(4)]
    inbox.mark(ids[0], "ingested", exposure={"instrument": "lco1m", "exposure": 7})
    inbox.mark(ids[1], "processing", quanta=["q1", "q2"], exposure={"instrument": "lco1m", "exposure": 8})
    inbox.mark(ids[2], "quarantined", message="not a readable FITS image")
    with pytest.raises(OpenAstroError, match="unknown state 'eaten'"):
        inbox.mark(ids[3], "eaten")
    with pytest.raises(OpenAstroError, match="unknown field"):
        inbox.mark(ids[3], "done", colour="red")
    with pytest.raises(OpenAstroError, match="no frame 99"):
        inbox.mark(99, "done")
    inbox.close()
    again = Inbox(tmp_path, "t")
    assert [f.id for f in again.pending()] == [ids[0], ids[3]]  # accepted + ingested, oldest first
    assert [f.id for f in again.pending(("processing",))] == [ids[1]]
    assert again.get(ids[1]).quanta == ["q1", "q2"] and again.get(ids[0]).exposure["exposure"] == 7
    assert again.get(ids[2]).message == "not a readable FITS image"
    assert again.counts() == {"ingested": 1, "processing": 1, "quarantined": 1, "accepted": 1}
    assert [f.id for f in again.pending(limit=1)] == [ids[0]]


def test_a_failed_check_makes_the_row_quarantined_from_the_start(tmp_path):
    inbox = Inbox(tmp_path, "t")
    seen = []

    def check(path):
        seen.append(path.read_bytes())
        return None if path.read_bytes().startswith(b"SIMPLE") else "not a readable FITS image: no SIMPLE card"

    bad, new = inbox.accept(b"junk" * 10, "s", {}, check)
    good, _ = inbox.accept(b"SIMPLE" * 10, "s", {}, check)
    again, new_again = inbox.accept(b"junk" * 10, "s", {}, check)
    assert new and bad.state == "quarantined" and bad.message.startswith("not a readable FITS image")
    assert good.state == "accepted" and [f.id for f in inbox.pending()] == [good.id]  # the loop never sees bad
    assert not new_again and again.id == bad.id and seen == [b"junk" * 10, b"SIMPLE" * 10]  # checked once
