"""getdiff: peaks + motif scans -> region x motif tensors -> GETRegionDiffusion (DiT) with LoRA."""

__version__ = "0.1.0"
