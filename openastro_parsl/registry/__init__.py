"""The registry: dimensions, dataset types, collections and datasets in SQLite, and the ``where`` language."""

from typing import Any

from .._lazy import lazy_exports

__all__ = [
    "CollectionInfo", "CollectionType", "DatasetRef", "DatasetType", "Dimension", "DimensionUniverse",
    "Registry", "parse_where", "validate_collection_name",
]
_get = lazy_exports(__name__, {
    "refs": ("CollectionInfo", "CollectionType", "DatasetRef", "DatasetType"),
    "registry": ("Registry",),
    "universe": ("Dimension", "DimensionUniverse"),
    "where": ("parse_where",),
    "names": ("validate_collection_name",),
})


def __getattr__(name: str) -> Any:
    return _get(name)
