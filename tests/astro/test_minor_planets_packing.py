"""MPC packed designations: numbers and provisional designations pack to what MPCORB writes and unpack back."""

import pytest

from openastro_parsl.astro.mpcorb import pack_designation, unpack_designation


@pytest.mark.parametrize(("number", "packed"), [(1, "00001"), (433, "00433"), (99999, "99999"), (100345, "A0345"),
                                                (523748, "q3748"), (620000, "~0000"), (620061, "~000z")])
def test_numbers(number, packed):
    assert pack_designation(number) == packed and unpack_designation(packed) == str(number)


@pytest.mark.parametrize(("designation", "packed"), [("2007 TA418", "K07Tf8A"), ("2019 RB21", "K19R21B"),
                                                     ("2024 AA", "K24A00A"), ("1998 SQ108", "J98SA8Q")])
def test_provisional_designations(designation, packed):
    assert pack_designation(None, designation) == packed and unpack_designation(packed) == designation


@pytest.mark.parametrize("bad", ["2040 P-L", "Ceres", "2019 rb21", "1650 AA"])
def test_what_mpcorb_cannot_hold_is_refused(bad):
    with pytest.raises(ValueError, match="cannot pack designation"):
        pack_designation(None, bad)
