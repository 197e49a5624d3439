"""Which server holds a listener, its version and the settings that decide its herd
(Apache's MPM, gunicorn's worker class, a Node.js cluster's scheduling policy), read
from /proc while it runs: the executable, its command line, its environment, the
modules it mapped; a binary's version from its own `-v`."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from herdtrace import procfs

# Executable name -> (server name, version flag, pattern of the version in its output).
BINARIES: dict[str, tuple[str, str, str]] = {
    "nginx": ("nginx", "-v", r"nginx/(\S+)"),
    "apache2": ("apache", "-v", r"Apache/(\S+)"),
    "httpd": ("apache", "-v", r"Apache/(\S+)"),
    "haproxy": ("haproxy", "-v", r"HA-?Proxy version (\S+)"),
    "node": ("node", "--version", r"v(\S+)"),
    "nodejs": ("node", "--version", r"v(\S+)"),
    "lighttpd": ("lighttpd", "-v", r"lighttpd/(\S+)"),
}
# Python servers by the script or module they run as (`gunicorn ...`, `python -m uvicorn`),
# and the distribution that carries their version.
PYTHON_SERVERS = ("gunicorn", "uvicorn", "hypercorn", "daphne", "waitress", "granian")
VERSION_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Server:
    name: str
    version: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _exe(pid: int) -> Path | None:
    with contextlib.suppress(OSError):
        return Path(os.readlink(f"/proc/{pid}/exe"))
    return None


def binary_version(exe: Path, flag: str, pattern: str) -> str | None:
    """The version a binary prints of itself (nginx and Apache to stderr)."""
    try:
        out = subprocess.run([str(exe), flag], capture_output=True, text=True,
                             timeout=VERSION_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else None


def python_server(argv: list[str]) -> str | None:
    """The Python server a command line runs: `python .../gunicorn`, `python -m uvicorn`."""
    for i, arg in enumerate(argv[1:4], start=1):
        if arg == "-m" and i + 1 < len(argv):
            name = argv[i + 1].split(".")[0]
            return name if name in PYTHON_SERVERS else None
        base = Path(arg).name.removesuffix("-serve")
        if base in PYTHON_SERVERS:
            return base
    return None


def dist_version(argv: list[str], exe: Path | None, name: str) -> str | None:
    """The version of distribution `name` where the interpreter finds it: beside the
    script's own environment (a venv's bin/ next to its lib/), or the interpreter's."""
    roots = {Path(a).parent.parent for a in argv[:2] if "/" in a}
    if exe is not None:
        roots.add(exe.parent.parent)
    for root in roots:
        for site in [*root.glob("lib/python3*/site-packages"), root / "lib/python3/dist-packages"]:
            for info in site.glob(f"{name}-*.dist-info"):
                return info.name[len(name) + 1 : -len(".dist-info")]
    return None


def option(argv: list[str], *names: str) -> str | None:
    """The value of a command-line option (`-k X`, `--worker-class X`, `--worker-class=X`)."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "=") and name.startswith("--"):
                return arg.split("=", 1)[1]
    return None


def _environ(pid: int) -> dict[str, str]:
    raw = b""
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _mapped_mpm(pid: int) -> str | None:
    text = procfs.read_text(Path(f"/proc/{pid}/maps")) or ""
    m = re.search(r"mod_mpm_(\w+)\.so", text)
    return m.group(1) if m else None


def _details(name: str, pids: list[int], argv: list[str]) -> dict[str, str]:
    """The settings of `name` that decide how its workers wait."""
    details: dict[str, str] = {"processes": str(len(pids))}
    main = min(pids)
    if name == "apache":
        mpm = next((m for m in map(_mapped_mpm, pids) if m), None)
        if mpm:
            details["mpm"] = mpm
    elif name == "gunicorn":
        details["worker_class"] = option(argv, "-k", "--worker-class") or (
            "from its config file" if option(argv, "-c", "--config") else "sync")
    elif name == "node":
        details["cluster"] = "yes" if len(pids) > 1 else "no"
        # What the environment asks for; the code may set cluster.schedulingPolicy itself.
        details["sched_policy_env"] = _environ(main).get("NODE_CLUSTER_SCHED_POLICY") or ""
    elif name == "haproxy":
        with contextlib.suppress(OSError):
            details["threads"] = str(len(list(Path(f"/proc/{main}/task").iterdir())))
    elif name in ("uvicorn", "hypercorn", "granian"):
        details["workers"] = option(argv, "--workers", "-w") or "1"
    return details


def identify(pids: list[int] | tuple[int, ...]) -> Server | None:
    """The server the processes holding a listener run, None where none is known."""
    alive = [p for p in pids if procfs.is_alive(p)]
    if not alive:
        return None
    main = min(alive)
    exe = _exe(main)
    argv = procfs.cmdline(main)
    base = exe.name if exe is not None else (Path(argv[0]).name if argv else "")
    if base in BINARIES and exe is not None:
        name, flag, pattern = BINARIES[base]
        version = binary_version(Path(f"/proc/{main}/exe"), flag, pattern)
        return Server(name, version, _details(name, alive, argv))
    if base.startswith("python"):
        found = [python_server(procfs.cmdline(p)) for p in alive]
        script = python_server(argv) or next((n for n in found if n), None)
        if script:
            return Server(script, dist_version(argv, exe, script), _details(script, alive, argv))
    return None
