"""Sequential alert decision with confirmation (GLAD/RADD-style low -> high confidence).

Scanning the monitoring dates of a pixel in order, skipping invalid observations:

* an observation whose score exceeds the threshold opens a **low-confidence** alert dated by
  that observation;
* the alert becomes **high confidence** (confirmed) when at least ``need`` of the next
  ``window`` valid observations also exceed the threshold; the loss date stays the first
  anomalous observation, the confirmation date is that of the confirming observation;
* an alert that is not confirmed within ``window`` valid observations is dropped and the scan
  goes on (a new anomaly opens a new alert); an alert still pending at the end of the series
  stays low confidence.

Only the first confirmed alert of a pixel is kept (one loss per pixel, as the loss-date
products). Everything is vectorised over pixels; the loop runs over dates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Alerts", "sequential_alerts"]

NONE, LOW, HIGH = 0, 1, 2


@dataclass
class Alerts:
    """Per-pixel outcome of the decision.

    Attributes:
        loss: (h, w) int, index (into the scored dates) of the first anomalous observation, -1 none.
        confirmed: (h, w) int, index of the confirming observation, -1 when not confirmed.
        confidence: (h, w) uint8, 0 none, 1 low (pending), 2 high (confirmed).
        magnitude: (h, w) float32, mean score of the anomalous observations of the alert (NaN none).
    """

    loss: np.ndarray
    confirmed: np.ndarray
    confidence: np.ndarray
    magnitude: np.ndarray


def sequential_alerts(
    scores: np.ndarray, threshold: float, *, window: int = 2, need: int = 1
) -> Alerts:
    """Run the confirmation rule over a stack of scores.

    Args:
        scores: (T, ...) scores of the monitoring dates in time order (NaN = no observation).
        threshold: anomaly threshold on the score.
        window: valid observations after an anomaly within which it must be confirmed.
        need: anomalous observations among those ``window`` needed to confirm (``need=0``: every
            anomaly is high confidence at once).

    Returns:
        The alerts (arrays shaped like one score map).
    """
    shape = scores.shape[1:]
    start = np.full(shape, -1, np.int32)  # pending alert's first anomaly
    seen = np.zeros(shape, np.int32)  # valid observations since it
    hits = np.zeros(shape, np.int32)
    total = np.zeros(shape, np.float32)  # sum of the alert's anomalous scores
    loss = np.full(shape, -1, np.int32)
    confirmed = np.full(shape, -1, np.int32)
    mag = np.full(shape, np.nan, np.float32)
    done = np.zeros(shape, bool)
    for t in range(scores.shape[0]):
        s = scores[t]
        valid = np.isfinite(s) & ~done
        anom = valid & (s > threshold)
        pending = start >= 0
        # observations that follow an open alert
        follow = valid & pending
        seen[follow] += 1
        hit = follow & anom
        hits[hit] += 1
        total[hit] += s[hit]
        ok = follow & (hits >= max(need, 1))
        loss[ok], confirmed[ok] = start[ok], t
        mag[ok] = total[ok] / (hits[ok] + 1)
        done |= ok
        expired = follow & ~ok & (seen >= window)
        start[expired | ok] = -1
        # a new anomaly (no open alert) opens one
        new = anom & ~done & (start < 0) & ~(hit & ~expired)
        start[new], seen[new], hits[new], total[new] = t, 0, 0, s[new]
        if need == 0:
            loss[new], confirmed[new], mag[new] = t, t, s[new]
            done |= new
            start[new] = -1
    confidence = np.zeros(shape, np.uint8)
    confidence[done] = HIGH
    low = (~done) & (start >= 0)
    confidence[low] = LOW
    loss[low] = start[low]
    mag[low] = total[low] / (hits[low] + 1)
    return Alerts(loss, confirmed, confidence, mag)
