"""Seed 003's autoencoder on per-port vectors: reconstruction error is the anomaly score."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

log = logging.getLogger(__name__)


class PortVectorAutoencoder(OutlierMixin, BaseEstimator):
    """An autoencoder over ``log1p`` per-port vectors (pps and distinct peers per top port).

    As in seed 003 the input is ``log(x + 1)``, the encoder and decoder are two sigmoid
    layers of ``hidden`` units, and the anomaly score is the mean squared reconstruction
    error. Following scikit-learn's outlier detectors, :meth:`predict` returns ``-1`` for
    an anomaly and ``1`` otherwise, and :meth:`score_samples` is higher for normal
    vectors (it is the negated error); :meth:`reconstruction_error` gives the error itself.

    Parameters
    ----------
    hidden
        Units of each hidden layer (seed 003: 20).
    q
        Quantile of the training errors used as the threshold ``threshold_``.
    margin
        Factor applied to that quantile (errors must exceed ``margin * quantile``).
    alpha, max_iter, random_state
        Passed to :class:`~sklearn.neural_network.MLPRegressor`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.poisson(20, size=(200, 6)).astype(float)
    >>> ae = PortVectorAutoencoder(max_iter=300, random_state=0).fit(X)
    >>> ae.predict(np.vstack([X[:1], [[2000, 0, 0, 900, 0, 0]]])).tolist()
    [1, -1]
    """

    def __init__(self, hidden: int = 20, q: float = 0.995, margin: float = 1.5,
                 alpha: float = 1e-4, max_iter: int = 500, random_state=None):
        self.hidden = hidden
        self.q = q
        self.margin = margin
        self.alpha = alpha
        self.max_iter = max_iter
        self.random_state = random_state

    def _inputs(self, X) -> np.ndarray:
        return self.scaler_.transform(np.log1p(np.maximum(np.asarray(X, dtype=float), 0.0)))

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        self.scaler_ = StandardScaler().fit(np.log1p(np.maximum(X, 0.0)))
        Z = self._inputs(X)
        self.mlp_ = MLPRegressor(hidden_layer_sizes=(self.hidden, self.hidden),
                                 activation="logistic", alpha=self.alpha,
                                 max_iter=self.max_iter, random_state=self.random_state)
        with warnings.catch_warnings():
            # retrained every few hours on a sliding history: a fit that stops at max_iter is
            # still a usable model, so say so once in the log instead of warning each time
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.mlp_.fit(Z, Z)
        self.converged_ = self.mlp_.n_iter_ < self.max_iter
        if not self.converged_:
            log.info("port-vector autoencoder stopped at max_iter=%d before converging "
                     "(loss %.4g)", self.max_iter, self.mlp_.loss_)
        errors = self.reconstruction_error(X)
        self.threshold_ = float(np.quantile(errors, self.q) * self.margin)
        self.n_features_in_ = X.shape[1]
        return self

    def feature_errors(self, X) -> np.ndarray:
        """Squared reconstruction error of every dimension (rows x features)."""
        check_is_fitted(self, "mlp_")
        Z = self._inputs(X)
        return (self.mlp_.predict(Z) - Z) ** 2

    def reconstruction_error(self, X) -> np.ndarray:
        """Mean squared reconstruction error per row: the anomaly score."""
        return self.feature_errors(X).mean(axis=1)

    def score_samples(self, X) -> np.ndarray:
        return -self.reconstruction_error(X)

    def decision_function(self, X) -> np.ndarray:
        """Negative for anomalies: ``threshold_ - error``."""
        return self.threshold_ - self.reconstruction_error(X)

    def predict(self, X) -> np.ndarray:
        return np.where(self.decision_function(X) < 0, -1, 1)
