"""Live mode: frames processed as telescopes upload them (docs/live.md).

``tokens`` (per-site upload tokens, hashed in the repository), ``inbox`` (durable uploads: fsynced file and
committed row before the 2xx), ``loop`` (the background thread: ingest, the engine's submit, follow),
``service`` (the Starlette app), ``page`` (the status page), ``engine`` (incremental planning and Parsl).
"""
