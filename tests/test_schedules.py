import json

import pytest

from fixture_paths import FIXTURES
from var_core.schedules import (PRESETS, TEMPLATE_KEYS, nearest_template, pixel_size, rope_grid, scale_schedule,
                                scale_starts, template_key)

REFERENCE = json.loads((FIXTURES / "scale_schedules.json").read_text())


def test_every_template_and_preset_matches_the_reference_table():
    assert TEMPLATE_KEYS == list(REFERENCE["schedules"])
    assert list(PRESETS) == REFERENCE["pns"]
    for key, entry in REFERENCE["schedules"].items():
        for pn in REFERENCE["pns"]:
            schedule = scale_schedule(float(key), pn)
            assert [list(s) for s in schedule] == entry[pn]["scales_hw"], (key, pn)
            assert list(pixel_size(schedule)) == entry[pn]["pixel_hw"]
            assert sum(h * w for h, w in schedule) == entry[pn]["tokens"]
            assert list(rope_grid(schedule)) == entry["rope_reference_grid_hw"]


def test_nearest_template_and_aliases():
    assert nearest_template(1.0) == "1.0"
    assert nearest_template(1.3) == "1.333"
    assert nearest_template(0.1) == "0.333"
    assert nearest_template(10) == "3.0"
    assert template_key("3:4") == "0.75"  # h:w
    assert template_key("0.666") == "0.666"
    assert scale_schedule(1.0, "512") == scale_schedule(1.0, "0.25M")
    assert scale_starts(scale_schedule(1.0, "1M"))[-1] == 10521 - 64 * 64


@pytest.mark.parametrize("bad", ["2M", "huge", ""])
def test_unknown_preset_is_refused(bad):
    with pytest.raises(ValueError, match="Unknown resolution preset"):
        scale_schedule(1.0, bad)


@pytest.mark.parametrize("bad", ["wide", "-1", "0"])
def test_unknown_aspect_is_refused(bad):
    with pytest.raises(ValueError):
        scale_schedule(bad, "1M")


def test_the_toy_preset_is_the_first_five_scales():
    assert scale_schedule(1.0, "128") == scale_schedule(1.0, "0.015M") == [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8)]
    assert scale_schedule("3:4", "0.015M") == scale_schedule("3:4", "1M")[:5]

