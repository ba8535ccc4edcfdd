"""Minor planets crossing the demo field: main-belt orbits built to pass through it, their MPCORB file, their
positions per frame.

Each body is aimed at the field on one night after the template epochs: its heliocentric position is put on
the line of sight from the Earth at a main-belt distance (2.3-3.0 AU), given a near-circular prograde velocity
in a plane a few degrees from the ecliptic, and the state is turned into osculating elements at a whole-day
epoch (MPCORB's packed epochs are days). Frames then see it at the two-body position those *written* (rounded)
elements give, through the same propagation alerts vet with (``astro.orbits``), so the simulated sky and the
orbit file agree exactly; the two-body error against a real ephemeris is measured on Ceres, not here. Near
opposition that is about 0.25 deg/day (~35"/h): a body crosses a 2' frame in about three hours, so it is seen
in the frames of one night. Rendered as a point source at mid-exposure (trailing <= 3" in <= 300 s is ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from ..astro.match import angular_separation
from ..astro.mpcorb import MPCORB_COLUMNS, format_mpcorb_line, parse_mpcorb_line
from ..astro.orbits import (
    C_AU_PER_DAY,
    GAUSS_K,
    astrometric_radec,
    ecliptic_to_equatorial,
    heliocentric_position,
    hg_magnitude,
    observer_positions,
)
from . import sky

V_RANGE = (16.3, 17.3)  # bright enough for every camera at high S/N
GR_COLOUR = 0.55  # g - r of an S/C-type asteroid
R_MINUS_V = -0.2
MIN_SEP_TRANSIENT_ARCSEC = 30.0  # never near OA-X1 (beyond the vetting radius): its alerts must stay
MIN_SEP_TARGET_ARCSEC = 10.0  # nor blended with the other targets
OFFSET_ARCSEC = 30.0  # where on the field the body is at its pass time (box half-width)
HEADER = ("Des'n     H     G   Epoch     M        Peri.      Node       Incl.       e            n           a"
          "        (synthetic orbits of the openastro_parsl demo survey)")


@dataclass(frozen=True)
class Asteroid:
    designation: str  # readable: OA-A1, ...
    packed: str  # columns 1-7
    line: str  # its MPCORB line
    pass_mjd: float  # UTC time it was aimed at the field
    orbit: Table  # one row, the line parsed back (what the frames and vetting both use)

    def truth(self) -> dict:
        row = {c: (self.orbit[c][0].item() if hasattr(self.orbit[c][0], "item") else self.orbit[c][0])
               for c in MPCORB_COLUMNS}
        return {"designation": self.designation, "packed": self.packed, "pass_mjd": self.pass_mjd,
                "mpcorb_line": self.line, "elements": row}


def _state_to_elements(r: np.ndarray, v: np.ndarray) -> dict:
    """Osculating elements (deg, AU) of a heliocentric ecliptic state (AU, AU/day), elliptic orbits."""
    mu = GAUSS_K**2
    rn, vn = np.linalg.norm(r), np.linalg.norm(v)
    h = np.cross(r, v)
    node_vec = np.cross([0.0, 0.0, 1.0], h)
    e_vec = np.cross(v, h) / mu - r / rn
    e = float(np.linalg.norm(e_vec))
    a = 1.0 / (2.0 / rn - vn**2 / mu)
    inc = math.degrees(math.acos(h[2] / np.linalg.norm(h)))
    node = math.degrees(math.atan2(node_vec[1], node_vec[0])) % 360.0
    nn = node_vec / np.linalg.norm(node_vec)
    peri = math.degrees(math.acos(np.clip(nn @ e_vec / e, -1, 1)))
    if e_vec[2] < 0:
        peri = 360.0 - peri
    nu = math.acos(np.clip(e_vec @ r / (e * rn), -1, 1))
    if r @ v < 0:
        nu = 2 * math.pi - nu
    E = 2.0 * math.atan(math.sqrt((1 - e) / (1 + e)) * math.tan(nu / 2.0))
    M = math.degrees(E - e * math.sin(E)) % 360.0
    return {"a": a, "e": e, "incl": inc, "node": node, "peri": peri, "M": M}


def _ecl(vec: np.ndarray) -> np.ndarray:
    """ICRS -> J2000 ecliptic (the inverse rotation of astro.orbits.ecliptic_to_equatorial)."""
    m = ecliptic_to_equatorial(np.eye(3))  # row i: the ecliptic axis i in ICRS
    return m @ vec


def _aim(rng, k: int, pass_mjd: float, ra: float, dec: float) -> Asteroid:
    """A main-belt orbit seen at (ra, dec) from the geocentre at UTC MJD ``pass_mjd``."""
    jds, obs = observer_positions([pass_mjd])
    jd, earth = float(jds[0]), obs[0]
    u = np.array([math.cos(math.radians(dec)) * math.cos(math.radians(ra)),
                  math.cos(math.radians(dec)) * math.sin(math.radians(ra)), math.sin(math.radians(dec))])
    r_helio = rng.uniform(2.3, 3.0)
    b = earth @ u
    delta = -b + math.sqrt(b * b - earth @ earth + r_helio**2)
    t_state = jd - delta / C_AU_PER_DAY  # the light seen at pass_mjd left the body then
    p = _ecl(earth + delta * u)
    ph = p / np.linalg.norm(p)
    z = np.array([0.0, 0.0, 1.0])
    h0 = z - (z @ ph) * ph
    h0 /= np.linalg.norm(h0)
    tilt = math.radians(rng.uniform(-12.0, 12.0))
    h = h0 * math.cos(tilt) + np.cross(ph, h0) * math.sin(tilt)
    v = np.cross(h, ph) * GAUSS_K / math.sqrt(np.linalg.norm(p)) * rng.uniform(0.96, 1.04)
    el = _state_to_elements(p, v)
    epoch = float(round(t_state - 2400000.5))
    n_deg = math.degrees(GAUSS_K / el["a"] ** 1.5)
    M = el["M"] + n_deg * (epoch - (t_state - 2400000.5))
    designation, packed = f"OA-A{k + 1}", f"OAA{k + 1:04d}"
    # H for a V in V_RANGE at the pass: the distance and phase terms from H = 0
    v0 = float(hg_magnitude(0.0, 0.15, np.linalg.norm(p), delta,
                            math.acos(np.clip((p @ _ecl(delta * u)) / (np.linalg.norm(p) * delta), -1, 1))))
    H = round(float(rng.uniform(*V_RANGE)) - v0, 2)
    line = format_mpcorb_line(packed, H, 0.15, epoch, M, el["peri"], el["node"], el["incl"], el["e"], el["a"],
                              designation)
    row = parse_mpcorb_line(line, designation)
    orbit = Table(rows=[[row[c] for c in MPCORB_COLUMNS]], names=MPCORB_COLUMNS)
    return Asteroid(designation, packed, line, pass_mjd, orbit)


def track(body: Asteroid, mjd_utc, site_lon, site_lat, site_height) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ra, dec, V) of a body at UTC MJDs seen from the sites (arrays)."""
    jd, obs = observer_positions(mjd_utc, site_lon, site_lat, site_height)
    ra, dec, delta = astrometric_radec(body.orbit, jd, obs)
    helio = heliocentric_position(body.orbit, jd - delta / C_AU_PER_DAY)
    topo = helio - obs
    r = np.linalg.norm(helio, axis=-1)
    cosph = np.clip(np.sum(helio * topo, axis=-1) / (r * delta), -1, 1)
    return ra, dec, hg_magnitude(body.orbit["H"][0], body.orbit["G"][0], r, delta, np.arccos(cosph))


def make_asteroids(rng, n: int, field: sky.Field, targets, frames: list[dict]) -> list[Asteroid]:
    """``n`` bodies, each aimed at ``field`` at the mid-time of one of ``frames`` (dicts: mjd, lon, lat, height,
    half_width_arcsec, ra, dec: the frame's centre), seen in at least three frames of that night and kept clear
    of the targets (OA-X1 by MIN_SEP_TRANSIENT_ARCSEC) in every frame that shows it."""
    out: list[Asteroid] = []
    mjd = np.array([f["mjd"] for f in frames])
    for k in range(n):
        for _attempt in range(200):
            f = frames[int(rng.integers(len(frames)))]
            ra, dec = sky.tangent_to_radec(field.ra, field.dec, *rng.uniform(-OFFSET_ARCSEC, OFFSET_ARCSEC, 2))
            body = _aim(rng, k, f["mjd"], float(ra), float(dec))
            night = np.flatnonzero(np.abs(mjd - f["mjd"]) < 0.5)
            sub = [frames[i] for i in night]
            bra, bdec, _ = track(body, mjd[night], [s["lon"] for s in sub], [s["lat"] for s in sub],
                                 [s["height"] for s in sub])
            xi, eta = sky.radec_to_tangent(np.array([s["ra"] for s in sub]), np.array([s["dec"] for s in sub]),
                                           bra, bdec)
            hw = np.array([s["half_width_arcsec"] for s in sub])
            seen = (np.abs(xi) < hw) & (np.abs(eta) < hw)
            if seen.sum() < 3:
                continue
            clear = True
            for t in targets:
                if t.field != field.name:
                    continue
                sep = angular_separation(t.ra, t.dec, bra[seen], bdec[seen]) * 3600.0
                limit = MIN_SEP_TRANSIENT_ARCSEC if t.kind == "transient" else MIN_SEP_TARGET_ARCSEC
                clear &= bool(np.all(sep > limit))
            if clear:
                out.append(body)
                break
        else:
            raise RuntimeError(f"could not place asteroid {k + 1} clear of the targets in 200 tries")
    return out


def write_mpcorb(bodies: list[Asteroid], path) -> None:
    """The survey's orbit file: a header, the dashes line MPCORB.DAT has, one line per body."""
    lines = [HEADER, "-" * 160] + [b.line for b in bodies]
    path.write_text("\n".join(lines) + "\n")
