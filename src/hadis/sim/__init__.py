"""Trace replay through the product's planner and routing code, with the paper's baselines."""
