"""HADIS: hybrid adaptive diffusion serving on Kubernetes."""

__version__ = "0.1.0"
