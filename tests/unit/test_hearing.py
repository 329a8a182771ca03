"""Hearing: when a coordinator may take a worker's silence for its death. Pure: times are
given, not measured."""

from __future__ import annotations

from coordinator_svc.recovery import Hearing

LOST_AFTER = 3.0
MAX_GAP = 1.25


def contacts(hearing: Hearing, *times: float) -> list[bool]:
    return [hearing.contact(t) for t in times]


def test_silence_is_judged_only_after_lost_after_of_unbroken_contact_since_startup():
    hearing = Hearing(LOST_AFTER, MAX_GAP)
    assert contacts(hearing, 100.0, 101.0, 102.0, 102.9) == [False] * 4
    assert contacts(hearing, 103.0, 104.0) == [True, True]


def test_a_gap_longer_than_max_gap_starts_the_wait_again():
    hearing = Hearing(LOST_AFTER, MAX_GAP)
    assert contacts(hearing, 0.0, 1.0, 2.0, 3.0) == [False, False, False, True]
    # The database was out (or this process frozen) for 4 s.
    assert contacts(hearing, 7.0, 8.0, 9.0, 9.9) == [False] * 4
    assert contacts(hearing, 10.0) == [True]


def test_a_gap_of_exactly_max_gap_is_no_break():
    hearing = Hearing(LOST_AFTER, MAX_GAP)
    times = [i * MAX_GAP for i in range(4)]  # 0, 1.25, 2.5, 3.75
    assert contacts(hearing, *times) == [False, False, False, True]
