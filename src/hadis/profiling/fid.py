"""Fréchet distance between image-feature Gaussians, from cached statistics (pure numpy).

FID(x, ref) = |mu_x - mu_ref|^2 + Tr(S_x) + Tr(S_ref) - 2 Tr sqrt(S_x S_ref), the formula of
clean-fid, torchmetrics and torch-fidelity (which takes the eigenvalues of ``S_x @ S_ref``).
Here the last term is computed as ``sum(sqrt(eig(A S_x A)))`` with ``A = S_ref^(1/2)``: the same
eigenvalues (``S_x S_ref`` is similar to ``A S_x A``), from a symmetric matrix, so one
``eigvalsh`` per configuration. Features are projected once onto ``U_k diag(s_k)^(1/2)`` (the
reference covariance's eigenvectors with non-zero eigenvalues): ``A S_x A`` then has the same
non-zero eigenvalues as the covariance of the projected features, a k x k matrix, and k is
smaller than the feature width when the reference set has fewer images than that.

A selection of images is summed as ``Moments``: count, sum of features, sum of squared norms,
and the outer-product sum of the projected features. Moments add, so any union of cached cells
of images is a sum, and no feature is read twice (``hadis.profiling.grid``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reference:
    """The reference set's Gaussian and the projection that whitens the FID's cross term."""

    mean: np.ndarray  # [D]
    trace: float  # Tr(S_ref)
    project: np.ndarray  # [D, k]: U_k diag(s_k)^(1/2)
    count: int

    @classmethod
    def of(cls, features: np.ndarray, rank_tol: float = 1e-10) -> Reference:
        """From reference features [N, D] (N >= 2); covariance with N - 1, as the field does."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need at least 2 reference feature vectors, got shape {x.shape}")
        mean = x.mean(axis=0)
        cov = np.cov(x, rowvar=False)
        vals, vecs = np.linalg.eigh(cov)
        keep = vals > rank_tol * max(float(vals.max()), 1e-300)
        project = vecs[:, keep] * np.sqrt(vals[keep])
        return cls(mean=mean, trace=float(np.trace(cov)), project=project, count=len(x))

    @property
    def rank(self) -> int:
        return self.project.shape[1]


@dataclass
class Moments:
    """Sufficient statistics of a set of images for its FID against one ``Reference``."""

    count: int
    total: np.ndarray  # sum of features [D]
    sq_norms: float  # sum of |x - mean_ref|^2
    outer: np.ndarray  # sum of y y^T over projected, centred features y [k, k]

    @classmethod
    def zero(cls, ref: Reference) -> Moments:
        d, k = ref.project.shape
        return cls(0, np.zeros(d), 0.0, np.zeros((k, k)))

    @classmethod
    def of(cls, features: np.ndarray, ref: Reference) -> Moments:
        """Moments of feature rows [N, D]; centred on the reference mean (keeps the sums small)."""
        return Projected.of(features, ref).moments()

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.count + other.count, self.total + other.total, self.sq_norms + other.sq_norms, self.outer + other.outer
        )

    def __sub__(self, other: Moments) -> Moments:
        return Moments(
            self.count - other.count, self.total - other.total, self.sq_norms - other.sq_norms, self.outer - other.outer
        )


@dataclass(frozen=True)
class Projected:
    """Feature rows centred on the reference mean and projected, once: any subset's moments are
    then a sum and one small product (``moments``)."""

    centred: np.ndarray  # [N, D]: x - mean_ref
    projected: np.ndarray  # [N, k]
    sq_norms: np.ndarray  # [N]
    mean: np.ndarray  # the reference mean (to give sums of x back)

    @classmethod
    def of(cls, features: np.ndarray, ref: Reference) -> Projected:
        x = np.asarray(features, dtype=np.float64) - ref.mean
        return cls(x, x @ ref.project, np.einsum("ij,ij->i", x, x), ref.mean)

    def moments(self, select: np.ndarray | None = None) -> Moments:
        x, y, sq = (self.centred, self.projected, self.sq_norms) if select is None else (
            self.centred[select], self.projected[select], self.sq_norms[select])  # fmt: skip
        return Moments(len(x), x.sum(axis=0) + len(x) * self.mean, float(sq.sum()), y.T @ y)


def frechet_distance(m: Moments, ref: Reference) -> float:
    """FID of the images summed in ``m`` against ``ref`` (covariance with n - 1, as the field)."""
    n = m.count
    if n < 2:
        raise ValueError(f"FID needs at least 2 images, got {n}")
    mean_c = m.total / n - ref.mean  # the set's mean, centred on the reference's
    ybar = mean_c @ ref.project
    # Covariances with n - 1: sum(x x^T) - n xbar xbar^T, all in the centred frame.
    cross = (m.outer - n * np.outer(ybar, ybar)) / (n - 1)
    trace = (m.sq_norms - n * float(mean_c @ mean_c)) / (n - 1)
    eig = np.linalg.eigvalsh((cross + cross.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    return float(mean_c @ mean_c) + trace + ref.trace - 2.0 * tr_sqrt


def fid_of_features(features: np.ndarray, ref: Reference) -> float:
    return frechet_distance(Moments.of(features, ref), ref)
