"""A stated monotone map from raw trace confidence C to [0, 1], fitted on a held-out split.

``platt`` (default): p = sigmoid(a * C + b), fitted by logistic regression (scikit-learn), with a
forced >= 0 so the map never reverses the order of C. ``isotonic``: scikit-learn's isotonic
regression (non-decreasing, clipped outside the fitted range). Both serialise to JSON so a probe's
map can be reused on other runs. A map that came out flat (``degenerate``) says so, so reports can
leave it out instead of printing a constant column.
"""

from __future__ import annotations

import numpy as np


class ConfidenceMap:
    def __init__(self, method: str = "platt"):
        if method not in ("platt", "isotonic"):
            raise ValueError(f"method must be platt or isotonic, not {method!r}")
        self.method = method
        self.params: dict = {}

    def fit(self, confidence, correct) -> "ConfidenceMap":
        c = np.asarray(confidence, dtype=float)
        z = np.asarray(correct, dtype=float)
        keep = np.isfinite(c)
        c, z = c[keep], z[keep]
        if len(c) < 2:
            raise ValueError("need at least 2 finite confidences to fit a map")
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(c, z)
            self.params = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
        elif len(np.unique(z)) < 2 or np.ptp(c) == 0:
            self.params = {"a": 0.0, "b": float(np.log((z.mean() + 1e-6) / (1 - z.mean() + 1e-6)))}
        else:
            from sklearn.linear_model import LogisticRegression

            scale = float(np.std(c)) or 1.0
            lr = LogisticRegression(C=1.0).fit(((c - c.mean()) / scale)[:, None], z)
            a = max(0.0, float(lr.coef_[0, 0]) / scale)
            b = float(lr.intercept_[0]) - a * c.mean() if a > 0 else float(np.log(z.mean() / (1 - z.mean())))
            self.params = {"a": a, "b": b}
        return self

    def __call__(self, confidence) -> np.ndarray:
        c = np.asarray(confidence, dtype=float)
        if not self.params:
            raise RuntimeError("fit the map first")
        if self.method == "isotonic":
            return np.interp(c, self.params["x"], self.params["y"])
        return 1.0 / (1.0 + np.exp(-(self.params["a"] * c + self.params["b"])))

    @property
    def degenerate(self) -> bool:
        """A flat map: every C maps to one value (e.g. the clean answers it was fitted on were all right)."""
        if self.method == "isotonic":
            return float(np.ptp(self.params["y"])) < 1e-6 if self.params.get("y") else True
        return self.params.get("a", 0.0) <= 0.0

    def to_dict(self) -> dict:
        return {"method": self.method, **self.params}

    @classmethod
    def from_dict(cls, d: dict) -> "ConfidenceMap":
        m = cls(d["method"])
        m.params = {k: v for k, v in d.items() if k != "method"}
        return m
