"""The observing plan: when, where and in which filter each frame is taken.

Times are physically observable (Sun below the twilight limit, target above an
altitude limit at the chosen site), so airmass, night boundaries and gaps look like
real data.  lco1m and slt40 are small robotic networks (identical cameras at several
sites) because a single site cannot catch six full transits of a 2.8 d planet in a
60-night season.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .astro import altitude_deg, sun_altitude_deg
from .instruments import SITES, Instrument
from .planet import TransitSystem
from .sky import Field, tangent_to_radec

SEASON_START = 61100.0
MS_PER_DAY = 86_400_000
GRID_STEP = 2.0 / 1440.0  # 2-minute search grid
OVERHEAD_S = 25.0  # readout + filter change between frames of a visit
TRANSIT_HALF_SPAN_H = 2.6
TRANSIT_FRAMES = 16


@dataclass(frozen=True)
class SizeSpec:
    """How much data each survey size asks for."""

    season_nights: int
    lco1m_visits: dict[str, int]  # field -> visits (one g + one r frame each)
    ota80_visits: dict[str, int]
    slt40_transits: int
    slt40_min_frames: int  # partial transits accepted down to this many frames
    slt40_oot_visits: int


SIZES = {
    # small: enough single visits across the season (not only the transit nights) that the slow variable's
    # period is measurable to ~0.05 % -- with 12 visits its own error was 0.07 %, against a 0.1 % target
    "small": SizeSpec(60, {"demo1": 8}, {"demo1": 6}, 6, 14, 4),
    "medium": SizeSpec(60, {"demo1": 20, "demo2": 4}, {"demo1": 26, "demo2": 4}, 15, 11, 10),
}


@dataclass
class PlannedExposure:
    instrument: str
    field: str
    band: str
    site: str
    start_ms: int  # integer milliseconds since MJD 0 (exact DATE-OBS)
    exptime: float
    pointing_ra: float  # nominal (commanded) pointing = header hint
    pointing_dec: float
    purpose: str  # visit | transit | oot
    transit_epoch: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def mjd_start(self) -> float:
        return self.start_ms / MS_PER_DAY

    @property
    def mjd_mid(self) -> float:
        return (self.start_ms + self.exptime * 500.0) / MS_PER_DAY


class _Busy:
    """Per-telescope (instrument, site) occupied intervals, to avoid overlapping frames."""

    def __init__(self):
        self.iv: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def free(self, key, t0, t1):
        return all(t1 < a or t0 > b for a, b in self.iv.get(key, []))

    def add(self, key, t0, t1):
        self.iv.setdefault(key, []).append((t0, t1))


def _observable(site, ra, dec, t, sun_max, alt_min):
    return (sun_altitude_deg(t, site) < sun_max) & (altitude_deg(ra, dec, t, site) > alt_min)


def _to_ms(mjd: float, whole_seconds: bool) -> int:
    q = 1000 if whole_seconds else 1
    return int(round(mjd * MS_PER_DAY / q)) * q


def _plan_visit(rng, inst: Instrument, fld, night: int, busy: _Busy, whole_seconds: bool,
                bands=("g", "r"), purpose="visit", avoid=None):
    """One visit (a frame per band, back to back) on `night`, at a good altitude."""
    seq = [(b, inst.exptime[b]) for b in bands]
    total = sum(e + OVERHEAD_S for _, e in seq) / 86400.0
    for site_key in rng.permutation(list(inst.sites)):
        site = SITES[str(site_key)]
        noon = math.floor(SEASON_START + night) + 0.5 - site.lon / 360.0
        grid = noon + np.arange(0.0, 1.0, GRID_STEP)
        ok = _observable(site, fld.ra, fld.dec, grid, -12.0, 30.0)
        ok &= _observable(site, fld.ra, fld.dec, grid + total, -12.0, 30.0)
        ok &= np.array([busy.free((inst.name, site_key), t - 0.01, t + total + 0.01) for t in grid])
        if avoid is not None:
            ok &= np.array([avoid(t, t + total) for t in grid])
        if not ok.any():
            continue
        alt = altitude_deg(fld.ra, fld.dec, grid[ok], site)
        cand = grid[ok][alt >= alt.max() - 8.0]
        t = float(cand[rng.integers(len(cand))]) + float(rng.uniform(0.0, 90.0)) / 86400.0
        out = []
        for band, exptime in seq:
            ms = _to_ms(t, whole_seconds)
            out.append(PlannedExposure(inst.name, fld.name, band, str(site_key), ms, exptime,
                                       fld.ra, fld.dec, purpose))
            t = ms / MS_PER_DAY + (exptime + OVERHEAD_S + float(rng.uniform(0, 5))) / 86400.0
        busy.add((inst.name, str(site_key)), out[0].mjd_start, out[-1].mjd_start + total)
        return out
    return None


def _visits(rng, inst, fld, n_visits, nights_total, busy, whole_seconds, offset=0.0, **kw):
    """`n_visits` visits spread evenly over the season; slips a night if unobservable."""
    out = []
    fracs = np.linspace(0.06, 0.94, n_visits) if n_visits > 1 else np.array([0.5])
    for f in fracs:
        base = int(round(f * nights_total + offset + rng.integers(-1, 2)))
        for slip in (0, 1, -1, 2, -2, 3, -3, 4, -4):
            night = min(max(base + slip, 0), nights_total - 1)
            v = _plan_visit(rng, inst, fld, night, busy, whole_seconds, **kw)
            if v:
                out += v
                break
        else:
            raise RuntimeError(f"no observable night for {inst.name} near night {base}")
    return out


def _transit_sequences(rng, inst: Instrument, host, system: TransitSystem, spec: SizeSpec, busy):
    """slt40 r-band series: 16 frames at ~21 min cadence over +-2.6 h of the predicted mid-time."""
    season_end = SEASON_START + spec.season_nights
    cadence = 2 * TRANSIT_HALF_SPAN_H / 24.0 / (TRANSIT_FRAMES - 1)
    offsets = (np.arange(TRANSIT_FRAMES) - (TRANSIT_FRAMES - 1) / 2) * cadence
    centre = np.abs(offsets) < cadence  # the two frames bracketing mid-transit
    exptime = inst.exptime["r"]
    eligible = []
    for ep in system.epochs:
        tc = float(system.predicted(ep))
        if tc - 0.15 < SEASON_START or tc + 0.15 > season_end:
            continue
        best = None
        for site_key in inst.sites:
            site = SITES[site_key]
            ok = _observable(site, host.ra, host.dec, tc + offsets, -10.0, 20.0)
            if ok.sum() < spec.slt40_min_frames or not ok[centre].all():
                continue
            score = (int(ok.sum()), float(altitude_deg(host.ra, host.dec, tc, site)))
            if best is None or score > best[0]:
                best = (score, site_key, ok)
        if best:
            eligible.append((int(ep), tc, best[1], best[2]))
    if len(eligible) < spec.slt40_transits:
        raise RuntimeError(f"only {len(eligible)} observable transits, need {spec.slt40_transits}")
    pick = np.unique(np.round(np.linspace(0, len(eligible) - 1, spec.slt40_transits)).astype(int))
    out = []
    for i in pick:
        ep, tc, site_key, ok = eligible[i]
        for off in offsets[ok]:
            start = tc + off - exptime / 2 / 86400.0 + float(rng.normal(0.0, 4.0)) / 86400.0
            out.append(PlannedExposure(inst.name, host.field, "r", site_key, _to_ms(start, False), exptime,
                                       host.ra, host.dec, "transit", ep))
        busy.add((inst.name, site_key), tc + offsets[ok][0] - 0.01, tc + offsets[ok][-1] + 0.01)
    return out


def make_plan(rng, size: str, instruments: dict[str, Instrument], fields, targets,
              system: TransitSystem) -> list[PlannedExposure]:
    """Every frame of the survey, sorted by instrument then time."""
    spec = SIZES[size]
    busy = _Busy()
    fld = {f.name: f for f in fields}
    host = next(t for t in targets if t.kind == "transit_host")
    plan: list[PlannedExposure] = []

    plan += _transit_sequences(rng, instruments["slt40"], host, system, spec, busy)
    season_end = SEASON_START + spec.season_nights
    tcs = system.predicted(system.epochs)
    tcs = tcs[(tcs > SEASON_START - 1) & (tcs < season_end + 1)]

    def away_from_transits(t0, t1):
        return bool(np.all((tcs < t0 - 0.3) | (tcs > t1 + 0.3)))

    host_pointing = Field(host.field, host.ra, host.dec, 0.0)  # slt40 always points at the host
    plan += _visits(rng, instruments["slt40"], host_pointing, spec.slt40_oot_visits, spec.season_nights,
                    busy, False, offset=2.0, purpose="oot", avoid=away_from_transits)
    for name, n in spec.lco1m_visits.items():
        off = 0.0 if name == "demo1" else 3.0
        plan += _visits(rng, instruments["lco1m"], fld[name], n, spec.season_nights, busy, False, offset=off)
    for name, n in spec.ota80_visits.items():
        off = 0.0 if name == "demo1" else 2.0
        plan += _visits(rng, instruments["ota80"], fld[name], n, spec.season_nights, busy, True, offset=off)
    plan.sort(key=lambda p: (p.instrument, p.start_ms))
    return plan


# small cameras see five sets of stars
STANDARD_DITHERS_ARCSEC = ((0.0, 0.0), (75.0, 45.0), (-70.0, -55.0), (60.0, -85.0), (-65.0, 80.0))


def standard_night(rng, size: str, instruments: dict[str, Instrument], fld: Field) -> list[PlannedExposure]:
    """Each camera's standard-field frames: a g, r pair at each of five dithers, on the first night after the
    season on which the field is high (as an observer schedules a standards night), purpose ``standard``."""
    spec = SIZES[size]
    busy = _Busy()
    out: list[PlannedExposure] = []
    for name in sorted(instruments):
        inst = instruments[name]
        for dx, dy in STANDARD_DITHERS_ARCSEC:
            ra, dec = tangent_to_radec(fld.ra, fld.dec, dx, dy)
            pointing = Field(fld.name, float(ra), float(dec), fld.half_width_arcmin, fld.standard)
            for night in range(spec.season_nights, spec.season_nights + 10):
                visit = _plan_visit(rng, inst, pointing, night, busy, whole_seconds=(name == "ota80"),
                                    purpose="standard")
                if visit:
                    out += visit
                    break
            else:
                raise RuntimeError(f"no observable night for {name} on the standard field {fld.name}")
    return out
