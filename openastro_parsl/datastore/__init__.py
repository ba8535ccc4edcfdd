"""The datastore: files under the repository root, one formatter per storage class, atomic writes, checksums."""

from typing import Any

from .._lazy import lazy_exports

__all__ = [
    "Datastore", "Formatter", "Image", "InputChecksumError", "MASK_BITS", "STORAGE_CLASSES", "TRANSFER_MODES",
    "file_checksum", "formatter_for", "formatter_named",
]
_get = lazy_exports(__name__, {
    "datastore": ("Datastore", "TRANSFER_MODES"),
    "formatters": ("Formatter", "STORAGE_CLASSES", "formatter_for", "formatter_named"),
    "image": ("Image", "MASK_BITS"),
    "checksum": ("InputChecksumError", "file_checksum"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
