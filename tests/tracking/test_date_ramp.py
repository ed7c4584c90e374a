"""The loss-date style's legend names real calendar dates."""

from __future__ import annotations

import datetime
import re

from dinogeo.tracking.outputs import date_ramp_qml


def test_date_ramp_labels_are_calendar_dates() -> None:
    labels = re.findall(r'label="([^"]+)"', date_ramp_qml(20160111, 20181220))
    assert labels[0].startswith("2016-01-11")
    bounds = [part for label in labels for part in label.split(" .. ")]
    days = [datetime.date.fromisoformat(b) for b in bounds]  # raises on 2016-06-31
    # classes tile the period: each starts the day after the previous one ends
    for end, start in zip(days[1::2], days[2::2], strict=False):
        assert start - end == datetime.timedelta(days=1)
