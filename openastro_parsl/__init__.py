"""openastro-parsl: YAML pipelines expanded into quantum graphs and run on Parsl, locally or on SLURM."""

__version__ = "0.1.0"
