
import matplotlib
import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from openastro_parsl.datastore.formatters import FORMATTERS, formatter_for
from openastro_parsl.datastore.image import Image
from openastro_parsl.errors import FormatterError

matplotlib.use("Agg")


def _wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [16.5, 16.5]
    w.wcs.cd = [[-0.39 / 3600, 0], [0, 0.39 / 3600]]
    return w


def test_fits_image_round_trip_with_planes_and_wcs(tmp_path):
    rng = np.random.default_rng(1)
    img = Image(rng.normal(size=(32, 40)).astype(np.float32), mask=np.zeros((32, 40), np.int32),
                variance=np.full((32, 40), 2.5, np.float32))
    img.mask[3, 4] = 5
    img.header["ZP"] = (25.1, "zero point")
    img.set_wcs(_wcs())
    path = tmp_path / "x.fits"
    FORMATTERS["fits-image"].write(img, path)
    back = FORMATTERS["fits-image"].read(path)
    np.testing.assert_array_equal(back.data, img.data)
    np.testing.assert_array_equal(back.mask, img.mask)
    np.testing.assert_array_equal(back.variance, img.variance)
    assert back.header["ZP"] == 25.1
    sky = back.wcs.pixel_to_world(10, 12)
    ref = _wcs().pixel_to_world(10, 12)
    assert sky.separation(ref).arcsec < 1e-6
    part = FORMATTERS["fits-image"].read(path, {"bbox": (4, 10, 6, 20)})
    np.testing.assert_array_equal(part.data, img.data[4:10, 6:20])
    np.testing.assert_array_equal(part.variance, img.variance[4:10, 6:20])


def test_image_without_wcs_reports_none(tmp_path):
    assert Image(np.zeros((4, 4))).wcs is None


@pytest.mark.parametrize("name", ["parquet", "ecsv"])
def test_table_round_trip(tmp_path, name):
    t = Table({"id": np.arange(5), "ra": np.linspace(150, 151, 5), "band": list("ggrrg")})
    t.meta["field"] = "demo1"
    path = tmp_path / f"t{FORMATTERS[name].extension}"
    FORMATTERS[name].write(t, path)
    back = FORMATTERS[name].read(path)
    assert list(back["id"]) == list(range(5))
    np.testing.assert_allclose(back["ra"], t["ra"])
    assert list(back["band"]) == list("ggrrg")
    assert back.meta["field"] == "demo1"


def test_json_npz_png_round_trips(tmp_path):
    j = FORMATTERS["json"]
    j.write({"zp": np.float32(25.5), "n": np.int64(3), "xs": np.arange(3)}, tmp_path / "a.json")
    assert j.read(tmp_path / "a.json") == {"zp": 25.5, "n": 3, "xs": [0, 1, 2]}
    j.write({"undefined": float("nan"), "xs": [1.0, np.inf], "arr": np.array([np.nan, 2.0])}, tmp_path / "b.json")
    assert j.read(tmp_path / "b.json") == {"undefined": None, "xs": [1.0, None], "arr": [None, 2.0]}
    with pytest.raises(TypeError):
        j.write({"bad": object()}, tmp_path / "c.json")
    n = FORMATTERS["npz"]
    n.write({"a": np.eye(3), "b": np.arange(4)}, tmp_path / "c.npz")
    back = n.read(tmp_path / "c.npz")
    np.testing.assert_array_equal(back["a"], np.eye(3))
    p = FORMATTERS["png"]
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    p.write(fig, tmp_path / "d.png")
    plt.close(fig)
    assert p.read(tmp_path / "d.png")[:4] == b"\x89PNG"
    p.write(np.arange(16.0).reshape(4, 4), tmp_path / "e.png")
    assert p.read(tmp_path / "e.png")[:4] == b"\x89PNG"


def test_formatter_choice_and_errors(tmp_path):
    assert formatter_for("Table").name == "parquet"
    assert formatter_for("Table", {"Table": "ecsv"}).name == "ecsv"
    with pytest.raises(FormatterError, match="cannot use formatter 'json'"):
        formatter_for("Table", {"Table": "json"})
    with pytest.raises(FormatterError, match="unknown storage class 'Blob'"):
        formatter_for("Blob")
    (tmp_path / "bad.fits").write_bytes(b"SIMPLE  = garbage" * 10)
    with pytest.raises(FormatterError, match="bad.fits: unreadable FITS image"):
        FORMATTERS["fits-image"].read(tmp_path / "bad.fits")


def test_lazy_image_read_is_memory_mapped_and_equal(tmp_path):
    import numpy as np

    from openastro_parsl.datastore.formatters import formatter_named
    from openastro_parsl.datastore.image import Image

    rng = np.random.default_rng(3)
    img = Image(rng.normal(size=(64, 48)).astype(np.float32), mask=np.arange(64 * 48, dtype=np.int32).reshape(64, 48),
                variance=np.full((64, 48), 2.0, np.float32))
    img.header["PHOTZP"] = 25.0
    path = tmp_path / "a.fits"
    fmt = formatter_named("fits-image")
    fmt.write(img, path)
    lazy = fmt.read(path, {"lazy": True})
    assert isinstance(lazy.data.base, np.memmap) or isinstance(lazy.data, np.memmap) or lazy.data.base is not None
    assert not lazy.data.flags.owndata  # not a private copy
    np.testing.assert_array_equal(lazy.data[10:20], img.data[10:20])
    np.testing.assert_array_equal(lazy.mask, img.mask)
    np.testing.assert_array_equal(lazy.variance, img.variance)
    assert lazy.header["PHOTZP"] == 25.0
