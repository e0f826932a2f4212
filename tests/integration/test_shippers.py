"""The syslog daemons SOCs already run, configured as docs/shipping/ says, feeding a real engine.

Each test renders the configuration file a user copies (docs/shipping/*.conf), starts the real
daemon (Debian's rsyslog with omelasticsearch; Debian's syslog-ng with its http module), sends
firewall lines to it over TCP on 127.0.0.1, and finds every line parsed by the fwsiem pipelines,
in the same document shape `fwsiem listen` sends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from plugin.engine import find_free_port
from plugin.setup import run_setup

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "docs" / "shipping"
LINES = 300


def _daemon(name: str, unavailable) -> tuple[list[str], dict]:
    """The command (and environment) that runs ``name`` in the foreground, or fail (CI) / skip."""
    if name == "rsyslog":
        path = shutil.which("rsyslogd")
        module = Path("/usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so")
        if path and module.exists():
            return [path], dict(os.environ)
        reason = "rsyslogd with omelasticsearch is not installed (apt-get install rsyslog " \
                 "rsyslog-elasticsearch, as scripts/bootstrap.sh does)"
    else:
        unpacked = REPO / ".fwsiem" / "tools" / "syslog-ng"
        if shutil.which("syslog-ng"):
            return [shutil.which("syslog-ng")], dict(os.environ)
        binary = unpacked / "usr" / "sbin" / "syslog-ng"
        if binary.exists():
            libs = unpacked / "usr" / "lib" / "syslog-ng"
            modules = sorted(p for p in libs.iterdir() if p.is_dir())[-1]
            return [str(binary), f"--module-path={modules}"], dict(
                os.environ, LD_LIBRARY_PATH=str(libs))
        reason = "syslog-ng with its http module is not installed (scripts/bootstrap.sh unpacks it)"
    unavailable(reason)


def _render(template: str, values: dict[str, str]) -> str:
    text = (CONFIGS / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    assert "@" not in "".join(line for line in text.splitlines() if not line.startswith("#")
                              and "@version" not in line), "a placeholder was left unfilled"
    return text


def _lines(tag: str) -> list[bytes]:
    """UFW lines with distinct source ports, the last ones at the top of the port range."""
    out = []
    for n in range(LINES):
        port = 65535 - n if n < 5 else 1024 + n
        out.append(
            f"<4>Nov 30 10:{n // 60 % 60:02d}:{n % 60:02d} gw{tag} kernel: [UFW BLOCK] IN=eth0 "
            f"OUT= MAC= SRC=198.51.100.{n % 250 + 1} DST=192.0.2.10 LEN=60 TOS=0x00 PREC=0x00 "
            f"TTL=52 ID={n} DF PROTO=TCP SPT={port} DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0"
            .encode())
    return out


def _send_tcp(port: int, lines: list[bytes], proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"".join(line + b"\n" for line in lines))
            return
        except ConnectionRefusedError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _wait_for(store, index: str, expected: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        store.refresh(index)
        n = store.count(index)
        if n >= expected:
            return n
        time.sleep(1)
    return n


@pytest.fixture
def opensearch_with_fwsiem(os_engine, unique_prefix):
    config = os_engine.config()
    run_setup(os_engine.store, config)
    stream = f"logs-fwsiem.{unique_prefix}"
    yield os_engine, stream
    os_engine.store.request("DELETE", f"/_data_stream/{stream}", ignore=(404,))


def _run_daemon(cmd: list[str], env: dict, tmp_path: Path):
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
                            start_new_session=True)
    return proc, log


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _check_documents(store, stream: str, lines: list[bytes]) -> None:
    sent = {line.decode() for line in lines}
    seen = set()
    for hit in store.scan(stream):
        doc = hit["_source"]
        seen.add(doc["event"]["original"])
        assert doc["event"]["dataset"] == "fwsiem.iptables"
        assert doc["log"]["source"]["address"] == "127.0.0.1", "the sender, as fwsiem listen has it"
        assert doc["source"]["ip"].startswith("198.51.100.")
        assert doc["destination"]["port"] == 22
    assert seen == sent, f"{len(sent - seen)} lines missing, {len(seen - sent)} unexpected"


@pytest.mark.parametrize("daemon", ["rsyslog", "syslog-ng"])
def test_syslog_daemon_ships_lines_that_the_pipelines_parse(daemon, opensearch_with_fwsiem,
                                                            tmp_path, unavailable):
    engine, stream = opensearch_with_fwsiem
    cmd, env = _daemon(daemon, unavailable)
    url = urlparse(engine.url)
    tcp_port, udp_port = find_free_port(), find_free_port()
    values = {
        "LISTEN_ADDRESS": "127.0.0.1", "UDP_PORT": str(udp_port), "TCP_PORT": str(tcp_port),
        "ENGINE_HOST": url.hostname, "ENGINE_PORT": str(url.port), "ENGINE_URL": engine.url,
        "USE_HTTPS": "off", "EVENTS_INDEX": stream, "PIPELINE": "fwsiem-logs",
        "ERROR_FILE": str(tmp_path / "errors.json"), "BUFFER_DIR": str(tmp_path),
    }
    conf = tmp_path / "daemon.conf"
    if daemon == "rsyslog":
        conf.write_text(f'global(workDirectory="{tmp_path}")\n'
                        + _render("rsyslog-fwsiem.conf", values))
        cmd += ["-n", "-f", str(conf), "-i", str(tmp_path / "pid")]
    else:
        conf.write_text(_render("syslog-ng-fwsiem.conf", values))
        cmd += ["-F", "--no-caps", "-f", str(conf), "-R", str(tmp_path / "persist"),
                "-p", str(tmp_path / "pid"), "-c", str(tmp_path / "ctl")]
    proc, log = _run_daemon(cmd, env, tmp_path)
    got = 0
    try:
        lines = _lines(daemon.replace("-", ""))
        _send_tcp(tcp_port, lines, proc)
        got = _wait_for(engine.store, stream, len(lines))
    finally:
        _stop(proc)
        log.close()
    output = (tmp_path / "daemon.log").read_text(errors="replace")[-2000:]
    assert got == len(lines), f"{got} of {len(lines)} lines indexed; {daemon} said:\n{output}"
    _check_documents(engine.store, stream, lines)
