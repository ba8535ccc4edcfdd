"""The live service's HTTP contract, against a real `openastro-serve` process on 127.0.0.1 (ingest only)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy.io import fits
from live.liveserver import Server, upload
from testdata import lco_header, write_frame

from openastro_parsl.butler import Butler
from openastro_parsl.live.tokens import TokenStore

LIMIT_MB = 0.25
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    repo = Butler.create(root / "repo").root
    tokens = {site: TokenStore(repo).add(site)[0] for site in ("ogg", "coj", "lco-ogg")}
    server = Server(repo, "--max-body-mb", str(LIMIT_MB), "--batch-window", "0.1").start()
    yield server, tokens
    server.stop()


def _frame(tmp_path, expid, **header):
    hdr = {**lco_header(expid), **header}
    return write_frame(tmp_path / f"f{expid}.fits", {k: v for k, v in hdr.items() if v is not None},
                       seed=expid).read_bytes()


def _log(server):
    return (server.repo / "live" / "default" / "service.log").read_text()


def test_upload_is_ingested_once_and_a_repeat_answers_the_same_id(live, tmp_path):
    server, tokens = live
    data = _frame(tmp_path, 1001)
    first = upload(server.url, data, "ogg", tokens["ogg"])
    assert first.status_code == 202 and first.json()["state"] == "accepted" and not first.json()["duplicate"]
    again = upload(server.url, data, "coj", tokens["coj"])  # the same bytes from anyone: one frame
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"] and again.json()["duplicate"]
    rec = server.wait_for(first.json()["id"])
    assert rec["state"] == "done" and rec["exposure"] == {"instrument": "lco1m", "exposure": 1001}
    assert rec["site"] == "ogg" and rec["quanta"] == []
    raws = Butler(server.repo).query_datasets("raw", "raw/all", where="exposure = 1001")
    assert len(raws) == 1 and raws[0].checksum == first.json()["sha256"]


def test_multipart_with_metadata_fixes_the_header_in_the_repository_copy(live, tmp_path):
    server, tokens = live
    data = _frame(tmp_path, 1002, FILTER=None)  # the camera wrote no filter card
    meta = {"header": {"FILTER": "gp"}, "observer": "night assistant"}
    r = upload(server.url, data, "coj", tokens["coj"],
               files={"file": ("f1002.fits", data, "application/fits"), "metadata": (None, json.dumps(meta))})
    assert r.status_code == 202, r.text
    rec = server.wait_for(r.json()["id"])
    assert rec["state"] == "done" and rec["metadata"] == meta
    butler = Butler(server.repo)
    exp = butler.registry.dimension_records("exposure", "exposure = 1002")[0]
    assert exp["physical_filter"] == "gp" and exp["band"] == "g"
    assert fits.getheader(butler.path(butler.find("raw", rec["exposure"], "raw/all")))["FILTER"] == "gp"


@pytest.mark.parametrize("site,token,status,reason", [
    ("ogg", None, 401, "no token"),
    ("ogg", "not-a-token", 401, "wrong token for site 'ogg'"),
    ("ogg", "coj", 403, "token of site 'coj' sent for site 'ogg'"),
    (None, "ogg", 401, "no site"),
    ("lsc", "ogg", 403, "token of site 'ogg' sent for site 'lsc'"),
])
def test_refused_uploads_are_answered_and_logged_and_store_nothing(live, tmp_path, site, token, status, reason):
    server, tokens = live
    before = requests.get(server.url + "/health").json()["frames"]
    r = upload(server.url, _frame(tmp_path, 1100), site, tokens.get(token, token))
    assert r.status_code == status and reason in r.json()["error"]
    assert (r.headers.get("www-authenticate") is not None) == (status == 401)
    assert requests.get(server.url + "/health").json()["frames"] == before
    assert f"refused POST /frames from 127.0.0.1 (site {site!r}): {status} {reason}" in _log(server)


def test_body_over_the_limit_is_413_declared_or_streamed(live):
    server, tokens = live
    big = b"\0" * int(LIMIT_MB * 1024 * 1024 + 10)
    before = requests.get(server.url + "/health").json()["frames"]
    r = upload(server.url, big, "ogg", tokens["ogg"])
    assert r.status_code == 413 and "Content-Length" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds while reading
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = upload(server.url, chunks(), "ogg", tokens["ogg"])
    assert r.status_code == 413 and "body over the limit" in r.json()["error"]
    assert requests.get(server.url + "/health").json()["frames"] == before
    assert "413 body over the limit" in _log(server)


def test_non_fits_and_truncated_uploads_are_quarantined_with_their_reason(live, tmp_path):
    server, tokens = live
    garbage = np.random.default_rng(3).bytes(6000)
    r = upload(server.url, garbage, "ogg", tokens["ogg"])
    assert r.status_code == 422 and r.json()["state"] == "quarantined"
    assert "not a readable FITS image" in r.json()["error"]
    again = upload(server.url, garbage, "ogg", tokens["ogg"])  # recognised, still refused
    assert again.status_code == 422 and again.json()["id"] == r.json()["id"] and again.json()["duplicate"]
    whole = _frame(tmp_path, 1003)
    t = upload(server.url, whole[:-2880], "ogg", tokens["ogg"])
    assert t.status_code == 422 and "not a readable FITS image" in t.json()["error"]
    qdir = server.repo / "quarantine"
    for resp in (r, t):
        sha = resp.json()["sha256"]
        assert (qdir / f"{sha}.fits").exists()
        assert "upload from site ogg: not a readable FITS image" in (qdir / f"{sha}.fits.reason").read_text()
        assert not (server.repo / "live" / "default" / "frames" / f"{sha}.fits").exists()
    assert requests.get(f"{server.url}/frames/{t.json()['id']}").json()["state"] == "quarantined"


def test_a_readable_frame_ingest_refuses_is_accepted_then_quarantined(live, tmp_path):
    server, tokens = live
    data = write_frame(tmp_path / "nodate.fits", {"INSTRUME": "lco1m", "EXPID": 5}).read_bytes()
    r = upload(server.url, data, "ogg", tokens["ogg"])
    assert r.status_code == 202
    rec = server.wait_for(r.json()["id"])
    assert rec["state"] == "quarantined" and "no observation date" in rec["message"] and rec["exposure"] is None
    assert (server.repo / "quarantine" / f"{r.json()['sha256']}.fits.reason").exists()


@pytest.mark.parametrize("kwargs,status,message", [
    ({"headers": {"X-OpenAstro-Metadata": "{not json"}}, 400, "metadata is not valid JSON"),
    ({"headers": {"X-OpenAstro-Metadata": "[1, 2]"}}, 400, "metadata must be a JSON object"),
    ({"headers": {"X-OpenAstro-Metadata": '{"header": {"TOO-LONG-KEY": 1}}'}}, 400, "FITS keyword"),
    ({"files": {"metadata": (None, "{}")}}, 400, "no 'file' part"),
])
def test_bad_requests_are_400(live, tmp_path, kwargs, status, message):
    server, tokens = live
    r = upload(server.url, _frame(tmp_path, 1200), "ogg", tokens["ogg"], **kwargs)
    assert r.status_code == status and message in r.json()["error"]


def test_empty_body_and_read_routes(live):
    server, tokens = live
    assert upload(server.url, b"", "ogg", tokens["ogg"]).status_code == 400
    assert requests.get(server.url + "/frames/99999").status_code == 404
    assert requests.get(server.url + "/alerts", params={"since": "yesterday"}).status_code == 400
    alerts = requests.get(server.url + "/alerts", params={"since": "0"})
    assert alerts.status_code == 200 and alerts.json() == {"since": 0.0, "alerts": []}
    health = requests.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["engine"] == "none" and health["name"] == "default"


def test_the_readme_curl_example(live, tmp_path):
    """The README's upload commands, run as written (port and token aside) with curl."""
    server, tokens = live
    text = README.read_text().split("## Live mode", 1)[1]
    block = text.split("```bash\n")[2].split("```")[0]
    _frame(tmp_path, 1300, FILTER=None)
    (tmp_path / "f1300.fits").rename(tmp_path / "frame.fits")
    out = subprocess.run(["bash", "-euc", block.replace("8750", str(server.port))], cwd=tmp_path, check=True,
                         env={**os.environ, "TOKEN": tokens["lco-ogg"]}, capture_output=True, text=True).stdout
    docs = [json.loads(doc) for doc in out.replace("}{", "}\n{").splitlines() if doc.strip()]
    first, again = docs[0], docs[1]
    assert first["state"] == "accepted" and first["metadata"] == {"header": {"FILTER": "rp"}}
    assert again["id"] == first["id"] and again["duplicate"]
    assert docs[-1]["status"] == "ok"
    rec = server.wait_for(first["id"])
    assert rec["state"] == "done" and rec["site"] == "lco-ogg"
    exp = Butler(server.repo).registry.dimension_records("exposure", "exposure = 1300")[0]
    assert exp["band"] == "r"
