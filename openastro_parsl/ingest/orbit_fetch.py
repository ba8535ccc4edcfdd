"""``fetch-orbits``: the orbits of the minor planets that cross a campaign's fields, from the archives, on a
machine with a network — written as an MPCORB file and registered as ``ingest-orbits`` registers one.

Which bodies: IMCCE's SkyBoT cone search (``astroquery.imcce.Skybot``) around each field's centre at the middle
of each night the field was observed (or at ``--epoch``), or the designations given. Their osculating elements:
the MPC orbit web service (``astroquery.mpc.MPC.query_objects``, JSON). Every answer goes through the archive
cache (``ingest/archive_cache.py``): offline, or with the archives unreachable, the same command answers from
it and says so; what the cache lacks is one line naming it, and the registry is left unchanged.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ..astro.mpcorb import format_mpcorb_line, pack_designation
from ..astro.refcat import Region
from ..butler import Butler
from ..errors import OpenAstroError
from .archive_cache import ArchiveCache, cached_answer
from .refcats import field_record

__all__ = ["FetchedOrbits", "fetch_orbits", "mpc_record_line", "night_epochs", "parse_epoch"]

SKYBOT_SERVER_ENV = "OPENASTRO_SKYBOT_SERVER"  # SkyBoT's conesearch.php URL (a closed port in tests)
MPC_SERVER_ENV = "OPENASTRO_MPC_SERVER"        # the MPC web service's host URL, e.g. https://minorplanetcenter.net
NOT_MINOR_PLANETS = ("comet", "planet", "satellite")  # SkyBoT classes the MPCORB format does not hold
MAX_RATE_DEG_PER_DAY = 1.0  # widens each night's cone by what a fast main-belt body moves in half the night


@dataclass
class FetchedOrbits:
    """MPCORB lines of the bodies found, and what was done (printed by the CLI)."""

    lines: list[str]
    designations: list[str]
    notes: list[str] = field(default_factory=list)


def parse_epoch(text: str) -> float:
    """An epoch given on the command line (ISO date/time UTC, or an MJD number) as a UTC MJD."""
    from astropy.time import Time

    t = text.strip()
    try:
        return float(t) if t.replace(".", "", 1).isdigit() else float(Time(t, scale="utc").mjd)
    except ValueError:
        raise OpenAstroError(f"--epoch {text!r}: give an ISO date/time (2025-01-02T03:00) or an MJD") from None


def night_epochs(butler: Butler, field_name: str) -> list[tuple[float, float]]:
    """(mid-night MJD, half-span in days) of each night the field was observed (its exposures' records)."""
    nights: dict[int, list[float]] = {}
    for r in butler.registry.dimension_records("exposure"):
        if r.get("field") == field_name and r.get("mjd") is not None:
            nights.setdefault(int(r.get("day_obs") or math.floor(r["mjd"] - 0.5)), []).append(float(r["mjd"]))
    return [((min(m) + max(m)) / 2, (max(m) - min(m)) / 2) for _, m in sorted(nights.items())]


def _skybot(ra: float, dec: float, radius_deg: float, mjd: float, location: str) -> list[dict]:
    """SkyBoT's bodies in a cone at a UTC MJD (network)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.time import Time
    from astroquery import cache_conf
    from astroquery.exceptions import NoResultsWarning
    from astroquery.imcce import SkybotClass, conf

    # astroquery builds the query and parses the VOTable; the URL is ours to choose (its config item is fixed)
    sky = SkybotClass()
    payload = sky.cone_search(SkyCoord(ra * u.deg, dec * u.deg), radius_deg * u.deg,
                              Time(mjd, format="mjd", scale="utc"), location=location, get_query_payload=True)
    url = os.environ.get(SKYBOT_SERVER_ENV) or str(conf.skybot_server)
    with cache_conf.set_temp("cache_active", False), warnings.catch_warnings():
        warnings.simplefilter("ignore", NoResultsWarning)
        response = sky._request("GET", url, params=payload, timeout=conf.timeout, cache=False)
        response.raise_for_status()
        sky._get_raw_response = False
        t = sky._parse_result(response)
    out = []
    for row in t:
        num = row["Number"]
        out.append({"number": None if np.ma.is_masked(num) or int(num) == 0 else int(num), "name": str(row["Name"]),
                    "class": str(row["Type"]), "ra": float(np.asarray(row["RA"])), "dec": float(np.asarray(row["DEC"])),
                    "V": float(np.asarray(row["V"]))})
    return out


def _mpc(query: dict) -> list[dict]:
    """The MPC orbit web service's answer for one body (network)."""
    from astroquery import cache_conf
    from astroquery.mpc import MPCClass

    mpc = MPCClass()
    server = os.environ.get(MPC_SERVER_ENV)
    if server:
        mpc.MPC_URL = server.rstrip("/") + "/web_service"
    with cache_conf.set_temp("cache_active", False):
        return list(mpc.query_objects("asteroid", **query))


def mpc_record_line(rec: dict, where: str) -> str:
    """One MPC web-service orbit record (JSON) as an MPCORB line; OpenAstroError naming ``where`` if it lacks one."""
    keys = {"H": "absolute_magnitude", "G": "phase_slope", "epoch_jd": "epoch_jd", "M": "mean_anomaly",
            "peri": "argument_of_perihelion", "node": "ascending_node", "incl": "inclination", "e": "eccentricity",
            "a": "semimajor_axis"}
    vals: dict[str, float] = {}
    for k, name in keys.items():
        v = rec.get(name)
        if v in (None, "") and k == "G":
            v = 0.15  # MPC's default slope, as in MPCORB
        try:
            vals[k] = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise OpenAstroError(f"{where}: the MPC record has no usable {name} ({v!r})") from None
    if not (0 <= vals["e"] < 1 and vals["a"] > 0):
        raise OpenAstroError(f"{where}: e={vals['e']}, a={vals['a']} is not an elliptic orbit")
    number = rec.get("number")
    prov = rec.get("designation")
    label = rec.get("name") or prov or ""
    packed = pack_designation(int(number)) if number not in (None, "") else pack_designation(None, str(prov))
    readable = f"({int(number)}) {label}".strip() if number not in (None, "") else str(prov)
    mjd = vals["epoch_jd"] - 2400000.5
    return format_mpcorb_line(packed, vals["H"], vals["G"], mjd, vals["M"], vals["peri"], vals["node"],
                              vals["incl"], vals["e"], vals["a"], readable)


def _query_of(body: str) -> dict:
    """The MPC query for a body: a number, a provisional designation (starts with a year) or a name."""
    b = body.strip().strip("()")
    if b.isdigit():
        return {"number": int(b)}
    return {"designation": b} if b[:4].isdigit() else {"name": b}


def fetch_orbits(butler: Butler, *, fields: tuple[str, ...] = (), designations: tuple[str, ...] = (),
                 epochs: tuple[float, ...] = (), radius_deg: float = 0.5, location: str = "500",
                 cache: str | Path | None = None, offline: bool = False, refresh: bool = False) -> FetchedOrbits:
    """The orbits of the bodies SkyBoT finds in ``fields`` (at ``epochs``, else their nights) plus
    ``designations``, through the cache; every failure is one line, before anything is written."""
    if not fields and not designations:
        raise OpenAstroError("fetch-orbits: give --field (bodies crossing it) or --designations")
    if not 0 < radius_deg <= 10:
        raise OpenAstroError(f"--radius {radius_deg} deg: give a radius between 0 and 10 degrees")
    store = ArchiveCache(cache)
    notes: list[str] = []
    sources: set[str] = set()
    wanted: dict[str, None] = {d.strip(): None for d in designations if d.strip()}
    for name in fields:
        rec = field_record(butler, name)
        if rec.get("ra") is None or rec.get("dec") is None:
            raise OpenAstroError(f"field {name!r} has no centre to search around; give it one with "
                                 f"`openastro-butler define-fields {butler.root} fields.csv`")
        when = [(e, 0.0) for e in epochs] or night_epochs(butler, name)
        if not when:
            raise OpenAstroError(f"field {name!r} has no exposures in {butler.root} to take dates from; give --epoch")
        found = 0
        for mjd, half in when:
            r = min(radius_deg + half * MAX_RATE_DEG_PER_DAY, 10.0)
            region = Region(float(rec["ra"]) % 360.0, float(rec["dec"]), r)
            what = f"SkyBoT cone ra={region.ra:.5f} dec={region.dec:.5f} r={r:.4f} deg at MJD {mjd:.5f} ({location})"
            ans = cached_answer(store, f"skybot:{location}", f"{region.ra:.6f},{region.dec:.6f},{r:.6f},{mjd:.6f}",
                                partial(_skybot, region.ra, region.dec, r, mjd, location), what=what,
                                offline=offline, refresh=refresh, region=region, epoch_jd=mjd + 2400000.5)
            sources.add(ans.source + (f" ({ans.reason})" if ans.reason and ans.reason != "--offline" else ""))
            for b in ans.body:
                if any(k in b["class"].lower() for k in NOT_MINOR_PLANETS):
                    continue
                wanted.setdefault(str(b["number"]) if b["number"] else b["name"], None)
                found += 1
        notes.append(f"field {name}: {found} minor-planet sighting(s) on {len(when)} date(s) from SkyBoT")
    lines: dict[str, str] = {}
    names = []
    for body in wanted:
        q = _query_of(body)
        ans = cached_answer(store, "mpc:orbit", body, partial(_mpc, q), what=f"MPC orbit of {body!r}",
                            offline=offline, refresh=refresh)
        sources.add(ans.source + (f" ({ans.reason})" if ans.reason and ans.reason != "--offline" else ""))
        if not ans.body:
            notes.append(f"the MPC has no orbit for {body!r}: left out")
            continue
        try:
            line = mpc_record_line(ans.body[0], f"MPC orbit of {body!r}")
        except ValueError as exc:  # a designation MPCORB cannot hold (e.g. 2040 P-L)
            notes.append(f"{body!r}: {exc}: left out")
            continue
        if line[:7] not in lines:  # one body asked twice (by number and by name)
            lines[line[:7]] = line
            names.append(body)
    if not lines:
        raise OpenAstroError("fetch-orbits: no orbits found (" + ("; ".join(notes) or "nothing asked") + ")")
    how = {"archive": "fetched from the archives", "cache": "from the cache (--refresh to fetch again)",
           "offline-cache": "offline: from the cache"}
    said = sorted({how.get(s.split(" ", 1)[0], s) + ("" if " " not in s else " " + s.split(" ", 1)[1])
                   for s in sources})
    notes.append(f"{'; '.join(said)} {store.path}")
    return FetchedOrbits(list(lines.values()), names, notes)
