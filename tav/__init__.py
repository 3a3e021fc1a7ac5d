"""Tune-A-Video (Wu et al., ICCV 2023) on stock diffusers models: inflation, one-shot tuning,
DDIM inversion and sampling. No ComfyUI imports here; the node pack in ``nodes/`` wraps this."""

__version__ = "0.1.0"
