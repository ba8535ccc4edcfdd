"""Master calibrations and ISR on synthetic frames with known maps (seeded), and the pieces they rest on."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from astropy.io import fits

from openastro_parsl.astro.observation import observation_info
from openastro_parsl.datastore.image import MASK_BITS, Image
from openastro_parsl.pipeline.connections import PipelineError
from openastro_parsl.pipeline.task import TaskConfig
from openastro_parsl.tasks.calibration import (
    CorrectedFrame,
    IsrTask,
    MasterBiasTask,
    MasterDarkTask,
    MasterFlatTask,
    combine,
    detector_info,
    isr_image,
    robust_sigma,
)
from openastro_parsl.tasks.calibration.masters import pair_read_noise_adu
from openastro_parsl.testing import run_task

SHAPE = (48, 64)
GAIN, RN_E = 1.6, 8.0


def _header(kind: str, exptime: float, expid: int, maxim: bool = False, **extra) -> fits.Header:
    h = fits.Header()
    if maxim:
        cards = {"INSTRUME": "ota80", "TELESCOP": "Amateur 80mm OTA", "EGAIN": GAIN, "EXPOSURE": exptime,
                 "EXPTIME": exptime, "DATE-OBS": f"2026-03-05T01:{expid // 60:02d}:{expid % 60:02d}",
                 "IMAGETYP": {"bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field",
                              "science": "Light Frame"}[kind]}
    else:
        cards = {"INSTRUME": "lco1m", "TELESCOP": "LCO-1m", "EXPID": expid, "EXPTIME": exptime, "GAIN": GAIN,
                 "RDNOISE": RN_E, "SATURATE": 60000.0, "DATE-OBS": "2026-03-05T01:00:00.000",
                 "OBSTYPE": {"bias": "BIAS", "dark": "DARK", "flat": "SKYFLAT", "science": "EXPOSE"}[kind]}
    if kind in ("flat", "science"):
        cards["FILTER"] = "R" if maxim else "rp"
    for k, v in {**cards, **extra}.items():
        h[k] = v
    return h


@pytest.fixture(scope="module")
def truth():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    bias = 500.0 + 2.0 * np.sin(yy / 3.0) + rng.normal(0, 1.0, (1, SHAPE[1]))
    dark = np.full(SHAPE, 0.05)             # e-/s
    hot = np.zeros(SHAPE, bool)
    hot[[5, 20, 33], [7, 40, 50]] = True
    dark[hot] = 40.0
    r2 = ((yy - 23.5) ** 2 + (xx - 31.5) ** 2) / (23.5 ** 2 + 31.5 ** 2)
    flat = (1.0 - 0.25 * r2) * (1.0 + rng.normal(0, 0.01, SHAPE))
    dead = np.zeros(SHAPE, bool)
    dead[[10, 30], [12, 44]] = True
    flat[dead] = 0.05
    flat /= np.median(flat)
    return {"bias": bias, "dark": dark, "flat": flat, "hot": hot, "dead": dead}


def _expose(rng, truth, electrons, exptime):
    e = rng.poisson(np.clip(electrons + truth["dark"] * exptime, 0, None)).astype(float)
    e += rng.normal(0, RN_E, SHAPE)
    return (e / GAIN + truth["bias"]).astype(np.float32)


@pytest.fixture(scope="module")
def masters(truth):
    rng = np.random.default_rng(11)
    biases = [Image(_expose(rng, truth, np.zeros(SHAPE), 0.0), _header("bias", 0.0, 100 + i)) for i in range(7)]
    biases[2].data[15, 15] += 3000.0  # a cosmic ray in one bias: clipped, not averaged in
    darks = [Image(_expose(rng, truth, np.zeros(SHAPE), t), _header("dark", t, 200 + i))
             for i, t in enumerate([60.0, 120.0] * 3)]
    flats = [Image(_expose(rng, truth, 30000.0 * truth["flat"] * s, 3.0), _header("flat", 3.0, 300 + i))
             for i, s in enumerate([0.8, 1.0, 1.2, 0.9, 1.1])]
    bias = run_task(MasterBiasTask, frames=biases)["masterBias"]
    dark = run_task(MasterDarkTask, frames=darks, masterBias=bias)["masterDark"]
    flat = run_task(MasterFlatTask, frames=flats, masterBias=bias, masterDark=dark)["masterFlat"]
    return bias, dark, flat


def test_master_bias_recovers_the_pattern_and_clips_the_cosmic_ray(truth, masters):
    bias, _, _ = masters
    resid = bias.data - truth["bias"]
    noise = RN_E / GAIN / np.sqrt(7)
    assert abs(float(resid.mean())) < 0.3 and robust_sigma(resid) < 1.3 * noise
    assert abs(resid[15, 15]) < 5 * noise  # the 3000 ADU hit is gone
    assert bias.header["NCLIPPED"] >= 1
    assert bias.header["RNMEAS"] == pytest.approx(RN_E, rel=0.1)


def test_master_dark_is_a_rate_with_the_hot_pixels_masked(truth, masters):
    _, dark, _ = masters
    rate_e = dark.data * GAIN
    assert np.median(rate_e) == pytest.approx(0.05, abs=0.02)
    assert np.allclose(rate_e[truth["hot"]], 40.0, rtol=0.03)  # one rate from darks of 60 s and 120 s
    assert np.array_equal((dark.mask & MASK_BITS["BAD"]) != 0, truth["hot"])


def test_master_flat_is_normalised_and_marks_dead_pixels(truth, masters):
    _, _, flat = masters
    good = ~truth["dead"]
    assert np.median(flat.data) == pytest.approx(1.0, abs=1e-6)
    ratio = flat.data[good] / truth["flat"][good]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.002) and ratio.std() < 0.004
    assert np.array_equal((flat.mask & MASK_BITS["BAD"]) != 0, truth["dead"])


def test_isr_gives_flat_fielded_electrons_and_a_header_calibration_reads_once(truth, masters):
    bias, dark, flat = masters
    rng = np.random.default_rng(3)
    sky = np.full(SHAPE, 2000.0)
    sky[24, 32] += 50000.0  # a bright pixel, through the flat
    raw = _expose(rng, truth, sky * truth["flat"], 30.0)
    raw[40, 10] = 60000.0    # saturated
    out = run_task(IsrTask, config={"instruments": ["lco1m"]}, raw=Image(raw, _header("science", 30.0, 1)),
                   masterBias=bias, masterDark=dark, masterFlat=flat)["postIsrImage"]
    ok = (out.mask == 0)
    pull = (out.data - sky)[ok] / np.sqrt(out.variance[ok])
    assert abs(float(np.median(out.data[ok & (sky < 3000)])) - 2000.0) < 5.0
    assert 0.8 < robust_sigma(pull) < 1.2  # the VARIANCE plane is the noise
    assert out.data[24, 32] == pytest.approx(52000.0, rel=0.01)
    assert (out.mask[truth["hot"] | truth["dead"]] & MASK_BITS["BAD"]).all()
    assert abs(out.data[truth["dead"]] - 2000.0).max() < 200.0  # interpolated, no hole
    assert out.mask[40, 10] & MASK_BITS["SAT"] and out.data[40, 10] >= out.header["SATURATE"]
    assert out.header["GAIN"] == 1.0 and out.header["ISRGAIN"] == GAIN and out.header["BUNIT"] == "electron"
    info = observation_info(out.header, data=out.data)
    assert info.gain == 1.0 and info.saturation_adu == out.header["SATURATE"]
    assert out.data[ok].max() < info.saturation_adu  # no unsaturated pixel reaches the new level


def test_isr_sets_the_gain_card_the_camera_uses(truth, masters):
    bias, dark, flat = masters
    h = _header("science", 30.0, 5, maxim=True, BITPIX=16, BZERO=32768)
    det = detector_info(h)
    assert det.gain == GAIN and det.read_noise is None and det.saturation_adu == 65535.0
    out = isr_image(Image(_expose(np.random.default_rng(1), truth, np.full(SHAPE, 500.0), 30.0), h), bias, dark,
                    flat, det)
    assert out.header["EGAIN"] == 1.0 and "GAIN" not in out.header and "BZERO" not in out.header
    assert out.header["SATURATE"] > 65535.0 * GAIN * 0.9
    assert out.header["RDNOISE"] == pytest.approx(bias.header["RNMEAS"])  # measured, in electrons


def test_isr_refuses_frames_reduced_by_their_observatory_or_already_isrd(masters):
    bias, dark, flat = masters
    banzai = fits.Header({"ORIGIN": "LCOGT", "SITEID": "lsc", "INSTRUME": "fa03", "TELESCOP": "1m0-05",
                          "FRAMENUM": 12, "DAY-OBS": "20260305", "DATE-OBS": "2026-03-05T01:00:00.000",
                          "OBSTYPE": "EXPOSE", "FILTER": "rp", "EXPTIME": 30.0, "GAIN": 1.0, "RDNOISE": 7.0,
                          "SATURATE": 120000.0, "RLEVEL": 91, "OBJECT": "demo1"})
    assert detector_info(banzai).reduced
    data = np.zeros(SHAPE, np.float32)
    with pytest.raises(ValueError, match="already reduced by its observatory"):
        run_task(IsrTask, raw=Image(data, banzai), masterBias=bias, masterDark=dark, masterFlat=flat)
    banzai["RLEVEL"] = 0
    assert not detector_info(banzai).reduced
    with pytest.raises(ValueError, match="through ISR already"):
        run_task(IsrTask, raw=Image(data, _header("science", 30.0, 1, ISR=True)), masterBias=bias,
                 masterDark=dark, masterFlat=flat)


def test_isr_selects_its_instruments_for_the_planner():
    assert IsrTask.quantum_where(IsrTask.Config(instruments=["ota80", "slt40"])) == "instrument IN ('ota80', 'slt40')"
    assert IsrTask.quantum_where(IsrTask.Config()) is None
    assert IsrTask.quantum_where(TaskConfig()) is None
    with pytest.raises(ValueError, match="not instrument names"):
        IsrTask.Config(instruments=["ota80' OR '1"])


def test_a_list_of_dataset_types_only_for_regular_inputs():
    conns = IsrTask.Connections.all()
    assert conns["raw"].renamed(["postIsrImage", "raw"]).dataset_types == ("postIsrImage", "raw")
    with pytest.raises(PipelineError, match="only a regular input"):
        conns["masterBias"].renamed(["masterBias", "otherBias"])
    with pytest.raises(PipelineError, match="distinct types"):
        conns["raw"].renamed([])
    with pytest.raises(PipelineError, match="distinct types"):
        IsrTask.connections(IsrTask.Config(connections={"raw": ["raw", "raw"]}))


def test_combination_is_bounded_in_memory_and_independent_of_the_tiling(tmp_path):
    rng = np.random.default_rng(5)
    n, shape = 40, (200, 160)
    frames = []
    for i in range(n):
        mm = np.lib.format.open_memmap(tmp_path / f"f{i}.npy", mode="w+", dtype=np.float32, shape=shape)
        mm[:] = rng.normal(100.0, 5.0, shape)
        mm.flush()
        frames.append(np.load(tmp_path / f"f{i}.npy", mmap_mode="r"))
    bias = np.full(shape, 90.0)

    def corrected():
        return [CorrectedFrame(f, ((bias, 1.0),), 2.0, 5.0, 1.5) for f in frames]

    big = combine(corrected(), memory_cap_mb=512)
    tracemalloc.start()
    small = combine(corrected(), memory_cap_mb=4)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert small.n_tiles > 1 and big.n_tiles == 1
    np.testing.assert_array_equal(small.image, big.image)
    assert np.median(small.image) == pytest.approx(5.0, abs=0.05)  # (100 - 90) / 2
    assert peak < 8.0, peak  # 40 frames x 200 x 160 would be 10 MB as float64 planes, the cap is 4 MB
    assert pair_read_noise_adu(frames[0], frames[1]) == pytest.approx(5.0, rel=0.1)
