"""The live status page in a real headless browser (Debian's chromium): what it shows, with nothing external."""

import base64

import numpy as np
from browser import chromium_dom
from live.liveserver import PageDom, Server, upload
from testdata import lco_header, write_frame

from openastro_parsl.butler import Butler
from openastro_parsl.live import page
from openastro_parsl.live.inbox import Inbox
from openastro_parsl.live.tokens import TokenStore


def test_status_page_of_the_running_service(tmp_path):
    repo = Butler.create(tmp_path / "repo").root
    token, _ = TokenStore(repo).add("ogg")
    server = Server(repo, "--batch-window", "0.1").start()
    try:
        ids = []
        for i in range(2):
            data = write_frame(tmp_path / f"f{i}.fits", lco_header(3000 + i), seed=i).read_bytes()
            ids.append(upload(server.url, data, "ogg", token).json()["id"])
        bad = upload(server.url, b"not a frame" * 400, "ogg", token)
        assert bad.status_code == 422
        for i in ids:
            server.wait_for(i)
        doc = PageDom()
        doc.feed(chromium_dom(server.url + "/?hours=2", tmp_path))
    finally:
        server.stop()
    assert not doc.external
    by_id = {int(row[0]): row for row in doc.frames}
    assert sorted(by_id) == sorted([*ids, bad.json()["id"]])
    for i, expid in zip(ids, (3000, 3001), strict=True):
        assert by_id[i][2] == "ogg" and by_id[i][3] == f"instrument=lco1m, exposure={expid}" and by_id[i][4] == "done"
    assert by_id[bad.json()["id"]][4] == "quarantined" and "not a readable FITS image" in by_id[bad.json()["id"]][6]
    assert doc.counts == {("frame-states", "done"): 2, ("frame-states", "quarantined"): 1}
    assert {"quanta-none", "no-alerts"} <= doc.ids  # ingest only: no quanta, no alerts


def test_alerts_with_their_cutouts_render_inline(tmp_path):
    from openastro_parsl.tasks.transient.alerts import alert_figure

    rng = np.random.default_rng(7)
    stamps = {k: rng.normal(0, 1, (2, 31, 31)) for k in ("science", "reference", "difference")}
    stamps["sigma"] = np.ones((2, 31, 31))
    stamps["science"][:, 14:17, 14:17] += 40  # the transient
    png = alert_figure(stamps, [0, 1], ["cand 1", "cand 2"])
    inbox = Inbox(tmp_path, "t")
    rec, _ = inbox.accept(b"frame bytes", "ogg", {})
    inbox.mark(rec.id, "processing", exposure={"instrument": "lco1m", "exposure": 9}, quanta=["a", "b", "c"])
    alerts = [({"data_id": {"instrument": "lco1m", "exposure": 9}, "candidate_id": 4, "ra": 150.123456,
                "dec": 2.2, "mag": 18.25, "rb_score": 0.97}, png),
              ({"instrument": "lco1m", "exposure": 10, "candidate_id": 2, "ra": 150.2, "dec": 2.1}, None)]
    html = page.render("night1", 3, inbox.since(0), {"succeeded": 2, "running": 1}, inbox.counts(), alerts,
                       "running")
    # test-side probe: the browser writes what it decoded of each image into the DOM
    probe = ("<script>window.onload=()=>{for(const i of document.images)"
             "i.setAttribute('data-decoded',i.naturalWidth+'x'+i.naturalHeight)}</script>")
    path = tmp_path / "page.html"
    path.write_text(html.replace("</body>", probe + "</body>"))
    doc = PageDom()
    doc.feed(chromium_dom(path.as_uri(), tmp_path))
    (img,) = doc.images
    assert base64.b64decode(img["src"].split(",", 1)[1]) == png
    assert img["data-decoded"] == "528x368"  # the figure's 6.6 x 4.6 in at 80 dpi, decoded by the browser
    assert doc.counts == {("frame-states", "processing"): 1, ("quanta", "running"): 1, ("quanta", "succeeded"): 2}
    assert doc.frames[0][3] == "instrument=lco1m, exposure=9" and doc.frames[0][5] == "3"
    assert not [src for src in doc.external if not src.startswith("data:")]
    assert "nocutout" in html and "ra: 150.12346" in html and "rb: 0.97000" in html
