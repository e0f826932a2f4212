"""The engine's CPU time for the benchmarks: one figure per engine process, however many nodes."""

from __future__ import annotations

import ipaddress
import os
import time

from plugin.store import Store

TICKS = os.sysconf("SC_CLK_TCK")


def _local_ip(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class EngineCpu:
    """CPU seconds the engine's processes have used so far.

    Several nodes can run in one process (`fwsiem engine start --nodes 3` runs them in one JVM),
    and each such node reports the whole process's CPU in `_nodes/stats/process`: summing the
    nodes would count it once per node. So the nodes are grouped by (address, process id) and
    each process is counted once: from /proc/<pid>/stat when it runs on this host (exact, no
    caching), else from one of its nodes' `_nodes/stats/process` (which the nodes cache for 1 s,
    so that read waits the cache out).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        info = store.request("GET", "/_nodes/process",
                             params={"filter_path": "nodes.*.process.id,nodes.*.ip"})
        processes: dict[tuple[str, int], str] = {}
        for node_id, node in sorted(info["nodes"].items()):
            processes.setdefault((node.get("ip", ""), int(node["process"]["id"])), node_id)
        self.nodes, self.processes = len(info["nodes"]), len(processes)
        self.local: list[int] = []
        self.remote: list[str] = []
        for (ip, pid), node_id in processes.items():
            if _local_ip(ip) and os.path.exists(f"/proc/{pid}/stat"):
                self.local.append(pid)
            else:
                self.remote.append(node_id)

    def seconds(self) -> float:
        """User + system CPU seconds of every engine process so far."""
        total = 0.0
        for pid in self.local:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
        if self.remote:
            time.sleep(1.1)
            stats = self.store.request("GET", f"/_nodes/{','.join(self.remote)}/stats/process",
                                       params={"filter_path": "nodes.*.process.cpu"})
            total += sum(int(n["process"]["cpu"]["total_in_millis"])
                         for n in stats["nodes"].values()) / 1000
        return total
