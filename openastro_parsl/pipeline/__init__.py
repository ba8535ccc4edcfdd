"""The task API and pipeline files: what a science task imports, and how YAML becomes configured tasks."""

from typing import Any

from .._lazy import lazy_exports

__all__ = [
    "Connection", "Connections", "Input", "NoWorkFound", "Output", "Pipeline", "PipelineError", "PipelineTask",
    "PrerequisiteInput", "Resources", "TaskConfig", "TaskDef", "config_hash", "import_task", "load_pipeline",
    "parse_override",
]
_get = lazy_exports(__name__, {
    "connections": ("Connection", "Connections", "Input", "Output", "PipelineError", "PrerequisiteInput"),
    "task": ("NoWorkFound", "PipelineTask", "Resources", "TaskConfig", "config_hash", "import_task"),
    "pipeline": ("Pipeline", "TaskDef", "load_pipeline", "parse_override"),
})


def __getattr__(name: str) -> Any:
    return _get(name)
