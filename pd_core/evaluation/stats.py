"""Statistics of the protocol: Wilson intervals, name-derived seeds, accuracy per table cell."""
from __future__ import annotations

import math

__all__ = ["wilson_interval", "summarize", "counted_rows"]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927), as fractions in [0, 1].

    ``centre = (p + z²/2n) / (1 + z²/n)``, ``half = z·sqrt(p(1−p)/n + z²/4n²) / (1 + z²/n)`` with
    ``p = successes / n`` and z the two-sided normal quantile (1.95996 for 95%). Unlike the normal
    approximation it stays inside [0, 1] and is sensible at p = 0 or 1 and small n.
    ``n = 0`` gives ``(nan, nan)``.
    """
    successes, n = int(successes), int(n)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 ≤ successes ≤ n, got successes={successes}, n={n}.")
    if n == 0:
        return (math.nan, math.nan)
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no 1e-17 from rounding
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def counted_rows(rows):
    """Rows of images whose clean, undefended prediction is right (the protocol's images)."""
    clean = rows[(rows["attack"] == "clean") & (rows["defence"] == "none")]
    ok = set(clean.loc[clean["correct"].astype(int) == 1, "image"])
    return rows[rows["image"].isin(ok)]


def summarize(rows, confidence: float = 0.95):
    """Accuracy per (attack, preset, defence) over the counted images, with n, Wilson interval and
    the mean norms of the adversarial images. Accuracy and interval are fractions in [0, 1]."""
    import pandas as pd

    counted = counted_rows(rows)
    out = []
    for (attack, preset, defence), g in counted.groupby(["attack", "preset", "defence"], sort=False):
        n, k = len(g), int(g["correct"].astype(int).sum())
        lo, hi = wilson_interval(k, n, confidence)
        out.append({"attack": attack, "preset": preset, "defence": defence, "n": n, "correct": k,
                    "accuracy": k / n if n else math.nan, "ci_low": lo, "ci_high": hi,
                    "mean_norm_l2": pd.to_numeric(g["norm_l2"], errors="coerce").mean(),
                    "mean_linf_255": pd.to_numeric(g["linf_255"], errors="coerce").mean(),
                    "mean_psnr": pd.to_numeric(g["psnr"], errors="coerce").replace(math.inf, math.nan).mean()})
    return pd.DataFrame(out, columns=["attack", "preset", "defence", "n", "correct", "accuracy", "ci_low",
                                      "ci_high", "mean_norm_l2", "mean_linf_255", "mean_psnr"])


# --------------------------------------------------------------------------------------------
