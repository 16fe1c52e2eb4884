"""PCA whitening of global descriptors, learned or read from a released file (the baselines' trained whitening layer
is ``networks.whitening_layer``).

A whitening is a mean m (D,), principal directions P (k, D) and their variances s (k,). Applied with power p,
v directions and multiplier c (deep-image-retrieval's ``--whitenp``, ``--whitenv``, ``--whitenm``):

    y = (x - m) P[:v]^T / (c s[:v]^p)   (the division only when ``whiten`` is set), then y / ||y||.

p = 0.5 is full whitening, p = 0 a plain PCA projection. ``fit`` learns one from descriptors (rows of x),
as scikit-learn's ``PCA(whiten=True)`` does: variances are those of the centred data with n - 1 degrees of freedom;
``from_moments`` from the sums of many rows (HOW's initialisation of its reduction layer).
"""

from dataclasses import dataclass

import numpy as np
import torch

EPS = 1e-12


@dataclass(frozen=True)
class PCAWhitening:
    mean: np.ndarray
    components: np.ndarray
    variance: np.ndarray
    whiten: bool = True

    def __post_init__(self):
        k, dim = self.components.shape
        if self.mean.shape != (dim,) or self.variance.shape != (k,) or k == 0:
            raise ValueError(f"whitening shapes do not agree or hold no direction: mean {self.mean.shape}, "
                             f"components {self.components.shape}, variance {self.variance.shape}")
        # one rule for every whitening read or learnt: a NaN, an infinity, or a variance of 0 or below (divided by,
        # raised to a power) makes every whitened descriptor NaN, and a search with them finds nothing
        if not (np.isfinite(self.mean).all() and np.isfinite(self.components).all()):
            raise ValueError("the whitening's mean and directions must be finite numbers (a NaN or inf is there)")
        if not (np.isfinite(self.variance).all() and (self.variance > 0).all()):
            raise ValueError("the whitening's variances must be finite numbers greater than 0, got "
                             f"{self.variance[~(np.isfinite(self.variance) & (self.variance > 0))][0]}")

    @property
    def dim(self):
        """Input dimension D."""
        return self.components.shape[1]

    def __call__(self, x, power=0.25, dims=None, multiplier=1.0):
        """Whitened, L2-normalised rows of ``x`` (N, D), in ``x``'s float dtype; a torch tensor gives a tensor (on
        its device), anything else a numpy array."""
        if torch.is_tensor(x):
            return torch.from_numpy(self(x.detach().cpu().numpy(), power, dims, multiplier)).to(x.device)
        x = np.asarray(x)
        dims = self.components.shape[0] if dims is None else dims
        y = (x.astype(np.float64) - self.mean) @ self.components[:dims].T
        if self.whiten:
            y = y / (multiplier * self.variance[:dims] ** power)
        y /= np.linalg.norm(y, axis=1, keepdims=True) + EPS
        return y.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)

    @staticmethod
    def max_directions(count, dim):
        """The most directions a PCA of ``count`` rows of dimension ``dim`` has: the centred rows span at most
        ``count - 1`` of them; the others have zero variance."""
        return min(count - 1, dim)

    @classmethod
    def fit(cls, x, dims=None):
        """The PCA of rows ``x`` (N, D): directions by decreasing variance, at most min(N - 1, D) of them."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"fitting a whitening needs at least 2 descriptors as rows, got shape {x.shape}")
        most = cls.max_directions(*x.shape)
        if dims is not None and not 1 <= dims <= most:
            raise ValueError(f"{dims} directions asked, {x.shape[0]} descriptors of dimension {x.shape[1]} have "
                             f"from 1 to {most}")
        mean = x.mean(axis=0)
        _, sing, vt = np.linalg.svd(x - mean, full_matrices=False)
        keep = most if dims is None else dims
        variance = sing[:keep] ** 2 / (len(x) - 1)
        return cls(mean, vt[:keep], np.maximum(variance, EPS))

    @classmethod
    def from_moments(cls, count, total, outer, floor=EPS):
        """The PCA of ``count`` rows known only by their sum ``total`` (D,) and the sum of their outer products
        ``outer`` (D, D), for rows too many to hold at once: mean, covariance divided by ``count`` (HOW's), its
        eigenvectors by decreasing eigenvalue, the eigenvalues clipped below at ``floor``; all D directions."""
        mean = np.asarray(total, dtype=np.float64) / count
        covariance = np.asarray(outer, dtype=np.float64) / count - np.outer(mean, mean)
        variance, vectors = np.linalg.eigh((covariance + covariance.T) / 2)
        order = np.argsort(variance)[::-1]
        return cls(mean, vectors[:, order].T, np.maximum(variance[order], floor))

    def to_arrays(self):
        """The plain arrays an ``.npz`` holds (``np.savez(path, **w.to_arrays())``)."""
        return {"mean": self.mean, "components": self.components, "variance": self.variance,
                "whiten": np.array(self.whiten)}

    @classmethod
    def from_arrays(cls, arrays):
        return cls(np.asarray(arrays["mean"], dtype=np.float64), np.asarray(arrays["components"], dtype=np.float64),
                   np.asarray(arrays["variance"], dtype=np.float64), bool(arrays["whiten"]))
