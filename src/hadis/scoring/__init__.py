"""Prompt hardness scoring for the router: HADIS's rule score and our learned score.

Pure logic (no HTTP, Kubernetes or torch), shared by the router service, the simulator and
the CLI. ``features`` computes HADIS's 8 prompt features live, ``rule`` reproduces HADIS's
weighted z-score, ``learned`` trains and applies our classifier, ``evaluate`` measures both.
"""
