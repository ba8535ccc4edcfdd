"""The science tasks, one package per branch of the pipeline (``pipelines/openastro.yaml``):

::

    raw ─ astrometry ─ photometry ─┬─ image ──────── makeRefGrid → warp → normalize → coadd
          (plateSolve)  (calibrate, │                                              └ templateCoadd ┐
                        zeropoint-  ├─ lightcurve ── makeLightcurve → periodSearch                 │
                        History)    │                             └→ transitSearch → transitTiming → ttvFit
                                    └─ transient ─── diffim ← ─────────────────────────────────────┘
                                                       → rbClassify → alerts

``qa`` holds the quick-look tasks of ``pipelines/qa.yaml``. Shared science helpers that are not tasks (WCS,
PSF profiles, sky matching, ephemerides, reference catalogues, header metadata) live in ``openastro_parsl.astro``.
Each package's ``__init__`` lists its modules and re-exports its tasks and public helpers; pipeline YAML names
a task by its branch, e.g. ``openastro_parsl.tasks.image.WarpTask``. Task classes recorded under the paths of the
old flat layout (``openastro_parsl.tasks.reproject.WarpTask``) still load: see ``openastro_parsl.pipeline.moved``.
"""
