"""Benchmark: `fwsiem listen`, rsyslog and syslog-ng shipping the same lines into the pipelines.

Usage: python scripts/bench_shippers.py --url http://127.0.0.1:9215 [--lines 300000] [--write]

Each shipper runs as its users run it: `fwsiem listen`, and the daemons with the tested
configurations in docs/shipping/ (rsyslog with omelasticsearch; syslog-ng with its
elasticsearch-http() destination, as scripts/bootstrap.sh unpacks it). The same simulated NSX
DFW lines are sent to each over one TCP connection on 127.0.0.1 (LF framing), into a data stream
of its own through the fwsiem-logs pipelines. The rate is the lines indexed divided by the time
from the first byte sent until the last line is searchable.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from bench_ingest import simulated  # noqa: E402
from doc_sections import replace_section  # noqa: E402

from plugin.config import load_config
from plugin.engine import find_free_port
from plugin.setup import run_setup
from plugin.store import Store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration import test_shippers as ts  # noqa: E402  the daemons as the tests run them

SHIPPERS = ("fwsiem listen", "rsyslog", "syslog-ng")


def daemon_command(name: str, conf: Path, tmp: Path, url: str, stream: str, port: int):
    """The command and environment that run ``name`` in the foreground, listening on ``port``."""
    try:
        cmd, env = ts._daemon(name)
    except BaseException as exc:  # pytest's skip/fail outcomes when the daemon is missing
        raise SystemExit(f"{name}: {exc}") from None
    engine = urlparse(url)
    values = {
        "LISTEN_ADDRESS": "127.0.0.1", "UDP_PORT": str(find_free_port()), "TCP_PORT": str(port),
        "ENGINE_HOST": engine.hostname, "ENGINE_PORT": str(engine.port), "ENGINE_URL": url,
        "USE_HTTPS": "off", "EVENTS_INDEX": stream, "PIPELINE": "fwsiem-logs",
        "ERROR_FILE": str(tmp / "errors.json"), "BUFFER_DIR": str(tmp),
    }
    if name == "rsyslog":
        conf.write_text(f'global(workDirectory="{tmp}")\n'
                        + ts._render("rsyslog-fwsiem.conf", values))
        return cmd + ["-n", "-f", str(conf), "-i", str(tmp / "pid")], env
    conf.write_text(ts._render("syslog-ng-fwsiem.conf", values))
    return cmd + ["-F", "--no-caps", "-f", str(conf), "-R", str(tmp / "persist"),
                  "-p", str(tmp / "pid"), "-c", str(tmp / "ctl")], env


def listen_command(tmp: Path, url: str, stream: str, port: int):
    toml = tmp / "fwsiem.toml"
    toml.write_text(f'[engine]\nurl = "{url}"\nspool_dir = "{tmp / "spool"}"\n'
                    f'[indices]\nevents = "{stream}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FWSIEM_")}
    env["FWSIEM_CONFIG"] = str(toml)
    return [sys.executable, "-m", "plugin", "listen", "--host", "127.0.0.1", "--tcp-port",
            str(port), "--udp-port", "-1", "--status-every", "0"], env


def send(port: int, data: bytes, proc: subprocess.Popen) -> float:
    """Send ``data`` over one TCP connection once the shipper listens; returns the start time."""
    deadline = time.monotonic() + 60
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.settimeout(None)  # a shipper may hold the sender back while it catches up
            break
        except ConnectionRefusedError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the shipper never listened on {port}") from None
            time.sleep(0.2)
    with sock:
        t0 = time.perf_counter()
        sock.sendall(data)
    return t0


def wait_indexed(store: Store, stream: str, n: int, stall_s: float) -> tuple[int, float]:
    """Poll until ``n`` documents are searchable or nothing new arrives for ``stall_s``."""
    got, last_change, t_last = 0, time.monotonic(), time.perf_counter()
    while got < n and time.monotonic() - last_change < stall_s:
        time.sleep(0.5)
        try:
            store.refresh(stream)
            now = store.count(stream)
        except Exception:  # noqa: BLE001 - the stream exists once the first batch lands
            continue
        if now != got:
            got, last_change, t_last = now, time.monotonic(), time.perf_counter()
    return got, t_last


def bench(name: str, store: Store, url: str, data: bytes, n: int, stall_s: float) -> dict:
    stream = f"logs-fwsiem.benchship{name.replace(' ', '').replace('-', '')}-default"
    store.request("DELETE", f"/_data_stream/{stream}", ignore=(404,))
    port = find_free_port()
    with tempfile.TemporaryDirectory(prefix="fwsiem-bench-ship-") as tmpdir:
        tmp = Path(tmpdir)
        if name == "fwsiem listen":
            cmd, env = listen_command(tmp, url, stream, port)
        else:
            cmd, env = daemon_command(name, tmp / "daemon.conf", tmp, url, stream, port)
        log = open(tmp / "shipper.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env,
                                start_new_session=True)
        try:
            t0 = send(port, data, proc)
            got, t_last = wait_indexed(store, stream, n, stall_s)
        finally:
            ts._stop(proc)
            log.close()
        said = (tmp / "shipper.log").read_text(errors="replace")[-1500:]
    store.request("DELETE", f"/_data_stream/{stream}", ignore=(404,))
    res = {"shipper": name, "indexed": got, "seconds": t_last - t0,
           "lines_per_s": got / (t_last - t0)}
    print(res, flush=True)
    if got != n:
        print(f"{name}: {got} of {n} lines indexed; it said:\n{said}", file=sys.stderr)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("FWSIEM_URL", "http://127.0.0.1:9201"))
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--shippers", default=",".join(SHIPPERS))
    ap.add_argument("--stall", type=float, default=60.0,
                    help="Give up on a shipper after this many seconds without progress.")
    ap.add_argument("--write", action="store_true", help="Update BENCHMARKS.md")
    args = ap.parse_args()
    config = load_config(env={}).with_overrides("engine", url=args.url)
    store = Store.connect(config.engine)
    run_setup(store, config)
    # syslog messages, as hosts send them over TCP (the simulator's file-only lines left out)
    lines = [x for x in simulated(args.lines * 3 // 2, seed=11)[0] if x.startswith("<")]
    lines = lines[:args.lines]
    data = ("\n".join(lines) + "\n").encode()
    load = os.getloadavg()[0]
    t_all = time.perf_counter()
    results = [bench(name, store, args.url, data, len(lines), args.stall)
               for name in args.shippers.split(",")]
    cmd = f"python scripts/bench_shippers.py --url {args.url}" + \
        (f" --lines {args.lines}" if args.lines != 300_000 else "") + " --write"
    text = "\n".join([
        f"Command: `{cmd}` ({store.flavor} {store.version}, one node, on the same host; machine: "
        f"2 cores, 24 GiB; load average {load:.1f} at the start"
        f"{', shared with other work' if load > 3 else ''}; date: {time.strftime('%Y-%m-%d')}; "
        f"whole benchmark {time.perf_counter() - t_all:.0f} s).",
        "",
        f"The same {len(lines):,} simulated NSX DFW syslog messages ({len(data) / 2**20:.0f} MiB) sent "
        "over one TCP connection on 127.0.0.1 to each shipper, configured as docs/shipping.md "
        "says, into the fwsiem-logs pipelines; rate = lines indexed / time from the first byte "
        "sent until the last line is searchable.",
        "",
        "| shipper | lines indexed | seconds | lines/s |",
        "|---|---|---|---|",
        *(f"| {r['shipper']} | {r['indexed']:,} | {r['seconds']:.0f} | {r['lines_per_s']:,.0f} |"
          for r in results),
    ])
    print(text)
    if args.write:
        replace_section(ROOT / "BENCHMARKS.md", "shippers",
                        "## Shippers: `fwsiem listen`, rsyslog, syslog-ng\n\n" + text,
                        "# Benchmarks")


if __name__ == "__main__":
    main()
