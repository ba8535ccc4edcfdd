"""Raw ingest: FITS files in, `raw` datasets out; bad files set aside with their reason, never fatal.

A night's upload always has a few broken files; one of them must not stop the other hundred, and the person
must learn which and why. Re-ingesting is safe: files are recognised by checksum and skipped.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from astropy.io import fits

from ..datastore.checksum import file_checksum
from ..errors import OpenAstroError
from ..registry.refs import DatasetRef, DatasetType
from .overrides import apply_header_fixes, image_hdu
from .translator import Translator, UnmatchedHeader, load_translators, translate_header

RAW = DatasetType("raw", ("instrument", "exposure"), "RawImage")
# Calibration frames (the translator's obs_type) are datasets of their own, never `raw`: science pipelines
# cannot mistake a flat for a science frame, and pipelines/calib.yaml reads them by name (docs/calibration.md).
CALIBRATION_FRAMES = {kind: DatasetType(kind, ("instrument", "exposure"), "RawImage")
                      for kind in ("bias", "dark", "flat")}
NO_BAND = "none"  # the band of every bias and dark, filter card or not: they have no passband


def _dataset_type_of(tr) -> DatasetType:
    """`raw`, or `bias` / `dark` / `flat` by the frame's obs_type; a bias or dark gets band NO_BAND."""
    kind = getattr(tr, "obs_type", "science")
    if kind in ("bias", "dark"):
        tr.data_id["band"] = NO_BAND
        tr.records["band"] = {"name": NO_BAND}
        tr.records["exposure"]["band"] = NO_BAND
    return CALIBRATION_FRAMES.get(kind, RAW)


QUARANTINE_DIR = "quarantine"
RAW_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz", ".fit.gz", ".fts.gz")


@dataclass
class IngestReport:
    ingested: list[DatasetRef] = field(default_factory=list)
    duplicates: list[tuple[Path, DatasetRef | Path]] = field(default_factory=list)
    quarantined: list[tuple[Path, str]] = field(default_factory=list)
    # frames no translator recognises: (quarantined path, header) for `ingest/suggest.py` to explain
    unmatched: list[tuple[Path, fits.Header]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"ingested {len(self.ingested)}, skipped {len(self.duplicates)} already ingested, "
                f"quarantined {len(self.quarantined)}")


def read_header_checked(path: Path) -> fits.Header:
    """The primary (or first image) header, after proving the pixel data is complete and readable."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)  # astropy warns, not raises, on truncation
        warnings.filterwarnings("ignore", message=".*non-standard convention.*")
        warnings.filterwarnings("ignore", category=fits.verify.VerifyWarning)
        try:
            with fits.open(path, memmap=False, ignore_missing_simple=False) as hdul:
                image = image_hdu(hdul)
                if image is None:
                    raise OpenAstroError("no 2-D image in any HDU")
                data = image.data
                if data is None or data.ndim < 2 or 0 in data.shape:
                    raise OpenAstroError("image HDU holds no pixels")
                header = image.header.copy()
                if image is not hdul[0]:
                    for card in hdul[0].header.cards:
                        if card.keyword not in header and card.keyword not in ("SIMPLE", "EXTEND", "NAXIS"):
                            header.append(card)
                return header
        except OpenAstroError:
            raise
        except Exception as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise OpenAstroError(f"not a readable FITS image: {text}") from None


def _quarantine(root: Path, src: Path, reason: str, keep: bool = False) -> Path:
    """Set a refused file aside with its reason. ``keep`` copies instead of moving: unless the user asked for
    ``move``, the file stays theirs (with ``direct`` and ``symlink`` it may already back a registered dataset)."""
    qdir = root / QUARANTINE_DIR
    qdir.mkdir(parents=True, exist_ok=True)
    dest = qdir / src.name
    n = 1
    while dest.exists() or dest.with_name(dest.name + ".reason").exists():
        dest = qdir / f"{src.stem}.{n}{src.suffix}"
        n += 1
    try:
        if keep:
            shutil.copy2(src, dest)
        else:
            shutil.move(str(src), dest)
    except OSError:  # read-only source: keep a copy instead
        shutil.copy2(src, dest)
    dest.with_name(dest.name + ".reason").write_text(f"{src}: {reason}\n")
    return dest


def ingest_raws(butler, files: Iterable[str | Path], *, run: str = "raw/all", transfer: str = "copy",
                translators: list[Translator] | None = None, progress=None,
                header_fixes: Mapping[str, Any] | None = None) -> IngestReport:
    """Ingest raw FITS frames into ``run`` as ``raw`` datasets; see the module docstring for the contract.

    ``header_fixes`` (``--set``) are written into the repository's copy of every frame before it is read
    (``ingest/overrides.py``); they need a transfer that makes a copy.
    """
    registry = butler.registry
    if header_fixes and transfer not in ("copy", "move"):
        raise OpenAstroError(f"--set writes the cards into the repository's copy of each frame; with --transfer "
                             f"{transfer} there is no copy (use copy or move)")
    translators = translators if translators is not None else load_translators(butler.root)
    registry.register_dataset_type(RAW)
    registry.register_run(run)
    report = IngestReport()
    keep = transfer != "move"  # only `move` hands the file over; the other modes leave the user's file where it is
    paths = [Path(f) for f in files]
    expanded: list[Path] = []
    for p in paths:
        if p.is_dir():
            expanded.extend(sorted(x for x in p.rglob("*") if x.is_file() and x.name.lower().endswith(RAW_SUFFIXES)))
        elif not p.exists():
            report.quarantined.append((p, "file does not exist"))
        else:
            expanded.append(p)
    seen: dict[str, Path] = {}
    stats, sums = {}, {}
    fixed: dict[Path, Path] = {}  # the user's file -> its patched copy (header_fixes)
    for p in list(expanded):
        if header_fixes:
            try:
                fixed[p] = apply_header_fixes(p, header_fixes, butler.root / QUARANTINE_DIR / ".header-fixes")
            except OpenAstroError as exc:
                report.quarantined.append((_quarantine(butler.root, p, str(exc), keep), str(exc)))
                expanded.remove(p)
                continue
        src = fixed.get(p, p)  # stat first: a change made while hashing shows as a stat the datastore will not record
        stats[p] = src.stat()
        sums[p] = file_checksum(src)
    try:
        _ingest_each(butler, expanded, fixed, stats, sums, seen, report, run, transfer, keep, translators, progress)
    finally:
        for copy in fixed.values():
            copy.unlink(missing_ok=True)
    return report


def _canonical_field(tr, fields: Mapping[str, str]) -> None:
    """A header's object name is slugged (OBJECT 'M67' -> 'm67'); a defined field of that name in another
    case ('M67') is the one meant."""
    name = fields.get(str(tr.data_id.get("field", "")).lower())
    if name is not None and name != tr.data_id["field"]:
        tr.data_id["field"] = name
        tr.records["field"] = {**tr.records["field"], "name": name}
        tr.records["exposure"]["field"] = name


def _ingest_each(butler, expanded, fixed, stats, sums, seen, report, run, transfer, keep, translators, progress):
    registry, datastore = butler.registry, butler.datastore
    fields = {f["name"].lower(): f["name"] for f in registry.dimension_records("field")}
    known = registry.find_by_checksum(set(sums.values()))
    key_dims = registry.universe.required(RAW.dimensions)
    for p in expanded:
        if progress:
            progress(p)
        checksum = sums[p]
        if checksum in known:
            report.duplicates.append((p, known[checksum]))
            continue
        if checksum in seen:
            report.duplicates.append((p, seen[checksum]))
            continue
        src = fixed.get(p, p)
        try:
            header = read_header_checked(src)
            _, tr = translate_header(header, translators)
        except OpenAstroError as exc:
            report.quarantined.append((_quarantine(butler.root, p, str(exc), keep), str(exc)))
            if isinstance(exc, UnmatchedHeader):
                report.unmatched.append((report.quarantined[-1][0], exc.header))
            continue
        seen[checksum] = p
        _canonical_field(tr, fields)
        dtype = _dataset_type_of(tr)
        existing = registry.query_datasets(",".join(["raw", *CALIBRATION_FRAMES]), [run],
                                           data_id={k: tr.data_id[k] for k in key_dims})
        if existing:
            reason = (f"data ID {{{', '.join(f'{k}={tr.data_id[k]}' for k in key_dims)}}} was already ingested "
                      f"from a different file ({existing[0].path})")
            report.quarantined.append((_quarantine(butler.root, p, reason, keep), reason))
            continue
        loc = datastore.transfer_in(src, dataset_type=dtype.name, key_dims=key_dims, data_id=tr.data_id, run=run,
                                    transfer="move" if src is not p else transfer, checksum=checksum, hashed=stats[p])
        if dtype is not RAW:
            registry.register_dataset_type(dtype)  # on its own: a type registered in the open transaction
        try:                                       # is not yet visible to insert_datasets' lookup
            with registry.transaction() as conn:
                for dim in ("instrument", "band", "field", "exposure"):
                    registry.sync_dimension_records(dim, [tr.records[dim]], conn)
                report.ingested.extend(registry.insert_datasets(dtype, run, [(tr.data_id, loc)], conn))
        except OpenAstroError as exc:
            if transfer != "direct":
                if transfer == "move" and src is p:
                    shutil.move(str(datastore.abspath(loc["path"])), p)
                else:
                    datastore.remove(loc["path"])
            report.quarantined.append((_quarantine(butler.root, p, str(exc), keep) if p.exists() else p, str(exc)))
            continue
        if transfer == "move" and src is not p:
            p.unlink(missing_ok=True)  # its patched copy is in the repository now
