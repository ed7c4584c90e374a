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
    assert bounds[-1] == "2018-12-20"  # no class past the last alert


def test_date_ramp_ends_on_the_last_alert_date() -> None:
    labels = re.findall(r'label="([^"]+)"', date_ramp_qml(20160111, 20170320))
    assert labels == [
        "2016-01-11 .. 2016-06-30",
        "2016-07-01 .. 2016-12-31",
        "2017-01-01 .. 2017-03-20",
    ]
