"""The end-of-run summary of `fwsiem ingest` names the messages indexed without a mapping."""

from __future__ import annotations

from plugin.shipping import IngestStats, summary_lines


def test_summary_counts_unmapped_messages_by_format_and_code_most_first():
    stats = IngestStats(read=10, indexed=10, by_format={"fwsiem.cisco_asa": 10},
                        unmapped={"fwsiem.cisco_asa 999999": 2, "fwsiem.cisco_asa 733100": 5})
    (line,) = [s for s in summary_lines(stats) if "not mapped" in s]
    assert "fwsiem_body_unmapped" in line
    assert line.index("fwsiem.cisco_asa 733100 5") < line.index("fwsiem.cisco_asa 999999 2")
    assert stats.as_dict()["unmapped"] == stats.unmapped


def test_summary_says_nothing_of_unmapped_messages_when_there_are_none():
    lines = summary_lines(IngestStats(read=3, indexed=3, by_format={"fwsiem.nsx_dfw": 3}))
    assert not [s for s in lines if "not mapped" in s]
