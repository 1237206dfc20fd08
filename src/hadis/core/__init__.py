"""Pure logic shared by the operator, the router, the simulator and the profiler.

Nothing in this package imports Kubernetes, HTTP or torch code.
"""
