"""Formatters: how each storage class becomes a file and back.

A dataset type names a storage class; the storage class picks a default formatter (overridable per
repository), and the formatter name is stored with each file so it is always read back the way it was
written, whatever the default later becomes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import FormatterError

if TYPE_CHECKING:  # the image module loads astropy, which JSON and table datasets do not need
    from .image import Image


class Formatter:
    """Writes and reads the objects of a storage class as files of one format (``name``, ``extension``)."""

    name: str = ""
    extension: str = ""

    def write(self, obj: Any, path: Path) -> None:
        raise NotImplementedError

    def read(self, path: Path, parameters: Mapping[str, Any] | None = None) -> Any:
        raise NotImplementedError


class FitsImageFormatter(Formatter):
    """Image as multi-extension FITS: pixels + header (WCS) in the primary HDU, then MASK and VARIANCE."""

    name, extension = "fits-image", ".fits"

    def write(self, obj: Any, path: Path) -> None:
        from astropy.io import fits

        from .image import Image

        if isinstance(obj, np.ndarray):
            obj = Image(obj)
        if not isinstance(obj, Image):
            raise FormatterError(f"fits-image formatter writes Image objects, got {type(obj).__name__}")
        hdus = [fits.PrimaryHDU(np.asarray(obj.data), header=obj.header)]
        if obj.mask is not None:
            hdus.append(fits.ImageHDU(np.asarray(obj.mask, dtype=np.int32), name="MASK"))
        if obj.variance is not None:
            hdus.append(fits.ImageHDU(np.asarray(obj.variance, dtype=np.float32), name="VARIANCE"))
        fits.HDUList(hdus).writeto(path, output_verify="silentfix")

    def read(self, path: Path, parameters: Mapping[str, Any] | None = None) -> Image:
        """Read an Image, a section of it, or its planes memory-mapped.

        ``parameters={'bbox': (y0, y1, x0, x1)}`` reads only that section (memory-mapped); ``{'lazy': True}`` returns
        memory-mapped planes in their stored dtype, read only where touched.
        """
        from astropy.io import fits

        from .image import Image

        bbox = (parameters or {}).get("bbox")
        if (parameters or {}).get("lazy") and not bbox:
            return self._read_lazy(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path, memmap=False) as hdul:
                    sci = next((h for h in hdul if h.is_image and h.data is not None and h.name not in ("MASK", "VARIANCE")), None)
                    if sci is None:
                        raise FormatterError(f"{path}: no image data in any HDU")
                    header = sci.header.copy()
                    if hdul[0] is not sci:  # compressed or extension-only images: keep primary cards too
                        for card in hdul[0].header.cards:
                            if card.keyword not in header and card.keyword not in ("SIMPLE", "EXTEND", "NAXIS"):
                                header.append(card)

                    def plane(h, dtype):
                        arr = h.section[bbox[0]:bbox[1], bbox[2]:bbox[3]] if bbox else h.data
                        return np.array(arr, dtype=dtype)

                    data = plane(sci, np.float32)
                    mask = plane(hdul["MASK"], np.int32) if "MASK" in hdul else None
                    variance = plane(hdul["VARIANCE"], np.float32) if "VARIANCE" in hdul else None
        except FormatterError:
            raise
        except Exception as exc:  # astropy raises many types for damaged files
            raise FormatterError(f"{path}: unreadable FITS image: {exc}") from None
        return Image(data, header, mask, variance)

    def _read_lazy(self, path: Path) -> Image:
        from astropy.io import fits

        from .image import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path, memmap=True, lazy_load_hdus=False, do_not_scale_image_data=True) as hdul:
                    planes = {h.name: h.data for h in hdul if h.is_image and h.data is not None}
                    primary = hdul[0]
                    if primary.data is None or any(k in primary.header for k in ("BSCALE", "BZERO")):
                        return self.read(path)  # compressed or scaled: no memory map to hand out
                    return Image(primary.data, primary.header.copy(), planes.get("MASK"), planes.get("VARIANCE"))
        except Exception as exc:
            raise FormatterError(f"{path}: unreadable FITS image: {exc}") from None


class ParquetTableFormatter(Formatter):
    """Tables as Parquet, the default for ``Table``: typed columns, compact and quick to read."""

    name, extension = "parquet", ".parq"

    def write(self, obj: Any, path: Path) -> None:
        from astropy.table import Table

        Table(obj).write(path, format="parquet", overwrite=True)

    def read(self, path: Path, parameters: Mapping[str, Any] | None = None):
        from astropy.table import Table

        try:
            return Table.read(path, format="parquet")
        except Exception as exc:
            raise FormatterError(f"{path}: unreadable Parquet table: {exc}") from None


class EcsvTableFormatter(Formatter):
    """Tables as ECSV: plain text a person can read and diff, for small tables."""

    name, extension = "ecsv", ".ecsv"

    def write(self, obj: Any, path: Path) -> None:
        from astropy.table import Table

        Table(obj).write(path, format="ascii.ecsv", overwrite=True)

    def read(self, path: Path, parameters: Mapping[str, Any] | None = None):
        from astropy.table import Table

        try:
            return Table.read(path, format="ascii.ecsv")
        except Exception as exc:
            raise FormatterError(f"{path}: unreadable ECSV table: {exc}") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _finite_or_null(obj: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them.

    Science results carry them (an undefined error bar) often enough that refusing them would fail good quanta.
    """
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite_or_null(obj.tolist())
    return obj


class JsonFormatter(Formatter):
    """JSON-able structures; non-finite floats are written as null."""

    name, extension = "json", ".json"

    def write(self, obj: Any, path: Path) -> None:
        if hasattr(obj, "model_dump"):  # pydantic models
            obj = obj.model_dump(mode="json")
        with open(path, "w") as f:
            json.dump(_finite_or_null(obj), f, indent=1, sort_keys=True, default=_json_default, allow_nan=False)

    def read(self, path: Path, parameters: Mapping[str, Any] | None = None):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as exc:
            raise FormatterError(f"{path}: unreadable JSON: {exc}") from None


class NpzFormatter(Formatter):
    """Named numpy arrays (or one array, stored as ``array``) as one compressed ``.npz``."""

    name, extension = "npz", ".npz"

    def write(self, obj: Any, path: Path) -> None:
        if isinstance(obj, np.ndarray):
            obj = {"array": obj}
        if not isinstance(obj, Mapping):
            raise FormatterError(f"npz formatter writes a mapping of arrays, got {type(obj).__name__}")
        with open(path, "wb") as f:
            # allow_pickle=False as ``read`` has it: an object array that could not be read back fails here, and
            # an array named "allow_pickle" cannot pass for numpy's keyword.
            np.savez_compressed(f, allow_pickle=False, **{str(k): np.asarray(v) for k, v in obj.items()})

    def read(self, path: Path, parameters: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise FormatterError(f"{path}: unreadable NPZ: {exc}") from None


class PngFormatter(Formatter):
    """PNG from a matplotlib Figure, an image array, or ready PNG bytes; read back as PNG bytes."""

    name, extension = "png", ".png"
    _MAGIC = b"\x89PNG\r\n\x1a\n"

    def write(self, obj: Any, path: Path) -> None:
        if isinstance(obj, (bytes, bytearray)):
            if not bytes(obj[:8]) == self._MAGIC:
                raise FormatterError("png formatter got bytes that are not a PNG")
            path.write_bytes(bytes(obj))
        elif hasattr(obj, "savefig"):
            obj.savefig(path, format="png")
        elif isinstance(obj, np.ndarray):
            import matplotlib.image

            matplotlib.image.imsave(path, obj, format="png", origin="lower", cmap="gray")
        else:
            raise FormatterError(f"png formatter cannot write {type(obj).__name__}")

    def read(self, path: Path, parameters: Mapping[str, Any] | None = None) -> bytes:
        data = Path(path).read_bytes()
        if data[:8] != self._MAGIC:
            raise FormatterError(f"{path}: not a PNG file")
        return data


FORMATTERS: dict[str, Formatter] = {f.name: f for f in (
    FitsImageFormatter(), ParquetTableFormatter(), EcsvTableFormatter(), JsonFormatter(), NpzFormatter(),
    PngFormatter())}

# Storage class -> (default formatter, formatters it may also use).
STORAGE_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Image": ("fits-image", ()),
    "RawImage": ("fits-image", ()),
    "Table": ("parquet", ("ecsv",)),
    "StructuredData": ("json", ()),
    "NumpyArrays": ("npz", ()),
    "Plot": ("png", ()),
}


def formatter_for(storage_class: str, overrides: Mapping[str, str] | None = None) -> Formatter:
    """The formatter of a storage class: its default, or an allowed alternative chosen in ``overrides``."""
    try:
        default, alternatives = STORAGE_CLASSES[storage_class]
    except KeyError:
        raise FormatterError(f"unknown storage class {storage_class!r}; known: {', '.join(STORAGE_CLASSES)}") from None
    name = (overrides or {}).get(storage_class, default)
    if name != default and name not in alternatives:
        raise FormatterError(f"storage class {storage_class} cannot use formatter {name!r}; "
                             f"choose from {', '.join((default,) + alternatives)}")
    return FORMATTERS[name]


def formatter_named(name: str) -> Formatter:
    """The formatter registered under ``name``, as recorded with each dataset's location."""
    try:
        return FORMATTERS[name]
    except KeyError:
        raise FormatterError(f"unknown formatter {name!r}; known: {', '.join(FORMATTERS)}") from None
