"""How the shipper reads the header of a file that declares its fields (W3C, Zeek)."""

from __future__ import annotations

from plugin.lines import DeclaredHeader


def read(*lines: bytes) -> tuple[list[bool], dict | None]:
    header = DeclaredHeader()
    return [header.consume(line) for line in lines], header.hint


def test_zeek_labeled_capture_with_columns_joined_by_spaces_needs_no_field_list():
    fields = (b"#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\t"
              b"duration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\t"
              b"history\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\t"
              b"tunnel_parents   label   detailed-label")
    skipped, hint = read(b"#separator \\x09", b"#set_separator\t,", b"#empty_field\t(empty)",
                         b"#unset_field\t-", b"#path\tconn", fields,
                         b"1545403816.962094\tCrDn63WjJEmrWGjqf\t192.168.1.195\t41040")
    assert skipped == [True] * 6 + [False]
    assert hint == {"format": "zeek"}


def test_zeek_columns_in_another_order_and_another_separator_are_carried():
    skipped, hint = read(b"#separator \\x7c", b"#unset_field|?", b"#path|dns",
                         b"#fields|uid|ts|id.orig_h", b"C1|1709633000.5|192.0.2.1")
    assert skipped == [True, True, True, True, False]
    assert hint == {"format": "zeek", "fields": ["uid", "ts", "id.orig_h"], "separator": "|",
                    "unset_field": "?", "path": "dns"}


def test_windows_firewall_header_with_pid_is_the_standard_layout():
    skipped, hint = read(
        b"#Version: 1.5", b"#Software: Microsoft Windows Firewall", b"#Time Format: Local",
        b"#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn "
        b"tcpack tcpwin icmptype icmpcode info path pid", b"",
        b"2021-06-22 12:19:41 DROP UDP 192.168.178.25 224.0.0.251 5353 5353 73 - - - - - - - RECEIVE")
    assert skipped == [True, True, True, True, True, False]
    assert hint == {"format": "w3c"}


def test_lines_of_an_ordinary_log_are_never_headers():
    skipped, hint = read(b"", b"# a comment", b"May 20 06:25:48 gw kernel: IN=eth0 OUT=")
    assert skipped == [False, False, False]
    assert hint is None
