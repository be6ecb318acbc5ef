"""A Debian bookworm arm64 root under qemu-user emulation: the Raspberry Pi path checked on ARM (issue #28).

    python .ci/arm64.py check                    # one line: ready, or what is missing and what to do
    python .ci/arm64.py root [--rebuild]         # build (cold: seconds) or reuse the cached root; prints its path
    python .ci/arm64.py install                  # pip install '.[runtime-tflite,mqtt]' from this tree, in the root
    python .ci/arm64.py exec [--cpu C] [--bind SRC:DST[:rw]] -- edgefg validate /mnt/b --data /mnt/d

The root is built with ``mmdebstrap --variant=extract``: the arm64 .debs of Python 3.11 (and what they
depend on) are unpacked, no maintainer script runs emulated, so a cold build is a download plus an
unpack. Nothing is installed on the host but that root, under ``$EDGEFG_ARM64_CACHE``
(default /var/cache/edgefg/arm64), in a folder named by a hash of what it holds (suite, arch, packages,
mirror, this script's format). The one host-wide change is the kernel's binfmt_misc handler for aarch64
ELF files, registered (when absent, as root) from qemu-user-static's own
/usr/lib/binfmt.d/qemu-aarch64.conf, as its package does on a machine that runs systemd.

Every command in the root runs as ``unshare --mount`` + ``chroot``: /proc, /sys (XNNPACK's cpuinfo reads
/sys/devices/system/cpu), /dev and the ``--bind`` folders are mounted in a private mount namespace,
which the kernel drops when the command ends (a trap unmounts them first), so no mount is left behind.
``QEMU_CPU`` (default ``cortex-a76``, the Pi 5's core) sets the ISA features (HWCAPs) XNNPACK sees, and an
arm64 /proc/cpuinfo of that core is mounted over the host's x86 one (on which LiteRT's cpuinfo crashes).

Standard library only; imported by tests/test_arm64.py and benchmarks/arm64_parity.py. Errors are one
line (exit 2) saying what to do.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
FORMAT = 1  # bump when the way a root is laid out changes: a new key, a new root
SUITE, ARCH = "bookworm", "arm64"
DEBS = ("python3.11", "python3.11-venv", "libstdc++6", "dash")  # Python 3.11.2 as on Raspberry Pi OS bookworm; dash for /bin/sh
MIRROR = os.environ.get("EDGEFG_ARM64_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("EDGEFG_ARM64_CACHE", "/var/cache/edgefg/arm64"))
PI_CPU = "cortex-a76"  # Raspberry Pi 5: 4x Cortex-A76 (qemu's model: its HWCAPs, no SVE/i8mm)
# /proc/cpuinfo as an arm64 kernel prints it (qemu-user shows the host's x86 one, on which LiteRT's
# cpuinfo crashes in Interpreter()): the cores' MIDR fields, so XNNPACK picks the kernels it picks on that core
CPU_MIDR = {"cortex-a76": ("0x41", "0x4", "0xd0b", "1"), "neoverse-n1": ("0x41", "0x4", "0xd0c", "1"), "cortex-a72": ("0x41", "0x0", "0xd08", "3"),
            "cortex-a53": ("0x41", "0x0", "0xd03", "4"), "max": ("0x41", "0x4", "0xd0b", "1")}
PI_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"  # a Pi 5's Features line
CPUINFO = "etc/edgefg-cpuinfo"  # in the root, bind-mounted over /proc/cpuinfo for each command
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
MARKER = ".edgefg-root.json"
VENV = "/opt/edgefg-venv"  # in the root
VENV_MARKER = ".edgefg-venv.json"
SRC = "/opt/edgefg-src"  # the working tree's package, copied in for pip install .
EXTRAS = ("runtime-tflite", "mqtt")  # the Pi's device install + MQTT (paho: the part of a Jetson's runtime that is not TensorRT)
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NETWORK_HINTS = ("Could not resolve", "Failed to fetch", "Temporary failure", "Connection refused", "Network is unreachable",
                 "No route to host", "timed out", "Name or service not known", "Max retries exceeded", "NewConnectionError")
MOUNT_HINT = (f"as root: mount -t binfmt_misc binfmt_misc {BINFMT}; cat {BINFMT_CONF} > {BINFMT}/register "
              "(from apt-get install qemu-user-static)")


class Arm64Error(Exception):
    """A state the arm64 root cannot work in; the message is one line that says what to do."""


@dataclass(frozen=True)
class Bind:
    """A host folder mounted at ``guest`` in the root for one command (read-only unless ``rw``)."""

    host: Path
    guest: str
    rw: bool = False

    @classmethod
    def parse(cls, spec: str) -> Bind:
        """``SRC:DST`` or ``SRC:DST:rw`` (DST absolute, in the root)."""
        parts = spec.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")) or not parts[1].startswith("/"):
            raise Arm64Error(f"--bind '{spec}': expected SRC:DST or SRC:DST:rw with an absolute DST (e.g. runs/bundle:/mnt/bundle)")
        host = Path(parts[0]).resolve()
        if not host.exists():
            raise Arm64Error(f"--bind '{spec}': '{host}' does not exist")
        return cls(host, parts[1], len(parts) == 3 and parts[2] == "rw")


@dataclass
class Root:
    """A built root: its folder and what its marker says it holds."""

    path: Path
    info: dict = field(default_factory=dict)

    @property
    def venv_python(self) -> str:
        return f"{VENV}/bin/python"


# -- the host: tools, root, binfmt ------------------------------------------------------------------------


def root_key(mirror: str = MIRROR) -> str:
    """The cache key of a root: a hash of everything that decides its contents."""
    spec = {"format": FORMAT, "suite": SUITE, "arch": ARCH, "variant": "extract", "debs": sorted(DEBS), "mirror": mirror}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def binfmt_state(binfmt: Path = BINFMT) -> str | None:
    """None when an aarch64 handler that works in a chroot is registered, else why not (one line, with the fix)."""
    handler = binfmt / "qemu-aarch64"
    if not (binfmt / "register").exists():
        return f"binfmt_misc is not mounted at {binfmt}: {MOUNT_HINT}"
    if not handler.is_file():
        return f"no aarch64 binfmt_misc handler ({handler} missing): {MOUNT_HINT}"
    text = handler.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("enabled"):
        return f"the aarch64 binfmt_misc handler is disabled: as root: echo 1 > {handler}"
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:  # without F the interpreter path is looked up inside the chroot, which has no qemu
        return (f"the aarch64 binfmt_misc handler lacks the F (fix-binary) flag: as root: echo -1 > {handler}; "
                f"cat {BINFMT_CONF} > {binfmt}/register")
    return None


def register_binfmt(binfmt: Path = BINFMT, conf: Path = BINFMT_CONF) -> None:
    """Mount binfmt_misc and register qemu-user-static's aarch64 handler, where absent (root only)."""
    if not (binfmt / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=False, capture_output=True)
    if (binfmt / "register").exists() and not (binfmt / "qemu-aarch64").exists() and conf.is_file():
        with contextlib.suppress(OSError):
            (binfmt / "register").write_bytes(conf.read_bytes())


def preflight(binfmt: Path = BINFMT, register: bool = True) -> None:
    """Raise :class:`Arm64Error` (one line: what to do) unless this machine can run the arm64 root."""
    if sys.platform != "linux":
        raise Arm64Error(f"the arm64 root needs Linux (binfmt_misc, chroot), not {sys.platform}")
    if os.geteuid() != 0:
        raise Arm64Error("the arm64 root needs root (chroot, mounts): run it as root, e.g. sudo make test-arm64")
    missing = [t for t in ("mmdebstrap", "unshare", "chroot", "mount") if shutil.which(t) is None]
    if missing or not (Path("/usr/bin/qemu-aarch64-static").exists() or BINFMT_CONF.exists()):
        raise Arm64Error(f"missing {', '.join(missing) or 'qemu-aarch64-static'}: apt-get install qemu-user-static mmdebstrap (bash .ci/test-deps.sh does, as root)")
    if register and binfmt_state(binfmt) is not None:
        register_binfmt(binfmt)
    problem = binfmt_state(binfmt)
    if problem:
        raise Arm64Error(problem)


@contextlib.contextmanager
def locked(cache: Path = CACHE) -> Iterator[None]:
    """Hold the cache's lock: one build, install or test session at a time per machine."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        handle = open(cache / "lock", "w")  # closed by the with below
    except OSError as exc:
        raise Arm64Error(f"cannot use the cache folder {cache}: {exc.strerror} (set EDGEFG_ARM64_CACHE to a writable folder)") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _one_line_failure(what: str, output: str, log: Path, network_hint: str) -> Arm64Error:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    last = next((ln for ln in reversed(lines) if "rror" in ln or ln.startswith("E:")), lines[-1] if lines else "no output")
    network = [ln for ln in lines if any(h in ln for h in NETWORK_HINTS)]
    if network:
        return Arm64Error(f"{what}: {network_hint} (error: {network[0][:160]}); log: {log}")
    return Arm64Error(f"{what} (last error: {last[:200]}); log: {log}")


def existing_root(cache: Path = CACHE, mirror: str = MIRROR) -> Root | None:
    """The cached root of this key when it is complete, None when there is none; a folder of this key
    without its marker (an interrupted build, a copy) raises: one line saying to remove it."""
    final = cache / f"root-{root_key(mirror)}"
    if not final.exists():
        return None
    marker = final / MARKER
    try:
        return Root(final, json.loads(marker.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        raise Arm64Error(f"the arm64 root {final} is half-built (no valid {MARKER}): remove it (rm -rf {final}) "
                         "or run: python .ci/arm64.py root --rebuild") from None


def build_root(cache: Path = CACHE, mirror: str = MIRROR, rebuild: bool = False, log=print) -> Root:
    """The cached root, built first when absent (call with the lock held: :func:`locked`)."""
    final = cache / f"root-{root_key(mirror)}"
    if rebuild and final.exists():
        shutil.rmtree(final)
    root = existing_root(cache, mirror)
    if root is not None:
        return root
    partial = cache / f".{final.name}.partial"
    if partial.exists():  # an interrupted build of ours (we hold the lock): start again
        shutil.rmtree(partial)
    build_log = cache / f"{final.name}.build.log"
    t0 = time.perf_counter()
    log(f"arm64: building the Debian {SUITE} {ARCH} root ({', '.join(DEBS)}) from {mirror} into {final}")
    # in a private mount namespace: whatever mmdebstrap mounts goes when it ends
    cmd = ["unshare", "--mount", "--propagation", "private", "mmdebstrap", "--mode=root", "--variant=extract", f"--architectures={ARCH}",
           f"--include={','.join(DEBS)}", SUITE, str(partial), mirror]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    build_log.write_text(f"$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}", encoding="utf-8")
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise _one_line_failure(f"could not build the arm64 root (mmdebstrap exit {proc.returncode})", proc.stdout + proc.stderr, build_log,
                                f"the first build downloads Debian's arm64 packages from {mirror}: it needs the network "
                                "(or EDGEFG_ARM64_MIRROR set to a reachable mirror); later runs reuse the cached root")
    for d in ("proc", "sys", "dev", "tmp", "root", "mnt", "opt", "etc/ssl/certs"):
        (partial / d).mkdir(parents=True, exist_ok=True)
    (partial / "tmp").chmod(0o1777)
    probe = run_in_root(Root(partial), ["/usr/bin/python3.11", "-c", "import platform, sys; print(platform.machine(), platform.python_version())"],
                        capture=True, network=False)
    if probe.returncode != 0 or not probe.stdout.startswith("aarch64"):
        shutil.rmtree(partial, ignore_errors=True)
        raise Arm64Error(f"the arm64 root's python3.11 did not run under emulation (exit {probe.returncode}: {(probe.stderr or probe.stdout).strip()[-200:]}); "
                         f"check the aarch64 binfmt_misc handler ({BINFMT}/qemu-aarch64)")
    machine, python = probe.stdout.split()
    info = {"key": root_key(mirror), "suite": SUITE, "arch": ARCH, "debs": list(DEBS), "mirror": mirror, "machine": machine, "python": python,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "build_s": round(time.perf_counter() - t0, 1)}
    (partial / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    partial.rename(final)
    log(f"arm64: root built in {info['build_s']} s (Python {python} {machine})")
    return Root(final, info)


# -- commands in the root -----------------------------------------------------------------------------


def root_env(cpu: str = PI_CPU, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a command in the root (nothing of the host's but what is named here)."""
    env = {"PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root", "LANG": "C.UTF-8", "TMPDIR": "/tmp", "QEMU_CPU": cpu,
           "PIP_CERT": str(CA_BUNDLE), "SSL_CERT_FILE": str(CA_BUNDLE), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_DEFAULT_TIMEOUT": "60",
           "PIP_NO_INPUT": "1", "PYTHONDONTWRITEBYTECODE": "1", "EDGEFG_QUIET": "1"}
    return {**env, **(extra or {})}


def host_cpus(sysfs: Path = Path("/sys/devices/system/cpu/possible")) -> int:
    """The CPUs the kernel lists as possible (what cpuinfo counts in /sys): the processors of the fake /proc/cpuinfo."""
    try:
        return sum(int(b) - int(a) + 1 for a, _, b in (r.partition("-") if "-" in r else (r, "", r) for r in sysfs.read_text().strip().split(",")))
    except (OSError, ValueError):
        return os.cpu_count() or 1


def fake_cpuinfo(cpu: str, count: int) -> str:
    """An arm64 /proc/cpuinfo for ``count`` cores of ``cpu`` (one of :data:`CPU_MIDR`)."""
    if cpu not in CPU_MIDR:
        raise Arm64Error(f"--cpu '{cpu}': choose one of {', '.join(CPU_MIDR)}")
    impl, variant, part, rev = CPU_MIDR[cpu]
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: " + PI_FEATURES + f"\nCPU implementer\t: {impl}\nCPU architecture: 8\n"
             f"CPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {rev}\n")
    return "\n".join(block.format(i=i) for i in range(count)) + "\n"


def _script(root: Path, binds: Sequence[Bind], cwd: str) -> str:
    """The host-side shell that mounts, chroots, and unmounts on exit (in a private mount namespace)."""
    r = shlex.quote(str(root))
    mounts = [f"mount -t proc proc {r}/proc || mount --rbind /proc {r}/proc", f"mount --bind {r}/{CPUINFO} {r}/proc/cpuinfo",
              f"mount --rbind /sys {r}/sys", f"mount --bind /dev {r}/dev"]
    targets = [f"{r}/proc/cpuinfo", f"{r}/proc", f"{r}/sys", f"{r}/dev"]
    for b in binds:
        dst = shlex.quote(str(root) + b.guest)
        mounts.append(f"mkdir -p {dst} && mount --bind {'' if b.rw else '-o ro '}{shlex.quote(str(b.host))} {dst}")
        targets.append(dst)
    umount = "; ".join(f"umount -R -l {t} 2>/dev/null" for t in reversed(targets))
    return "\n".join([f"cleanup() {{ {umount}; }}", "trap cleanup EXIT", "set -e", *mounts, "set +e",
                      f'chroot {r} /bin/sh -c \'cd "$0" && exec "$@"\' {shlex.quote(cwd)} "$@"', "exit $?"])


def run_in_root(root: Root, argv: Sequence[str], binds: Sequence[Bind] = (), cpu: str = PI_CPU, cwd: str = "/", capture: bool = False,
                network: bool = True, env: dict[str, str] | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` (paths as the root sees them) in the root, emulated as ``cpu``; mounts live only as long as it."""
    if network:  # the host's resolver for pip; the CA bundle this machine trusts (a proxy's, here)
        shutil.copy2("/etc/resolv.conf", root.path / "etc" / "resolv.conf")
        if CA_BUNDLE.is_file():
            shutil.copy2(CA_BUNDLE, root.path / "etc" / "ssl" / "certs" / CA_BUNDLE.name)
    (root.path / CPUINFO).write_text(fake_cpuinfo(cpu, host_cpus()), encoding="utf-8")
    unshare = shutil.which("unshare") or "unshare"
    cmd = [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", _script(root.path, binds, cwd), "arm64", *argv]
    return subprocess.run(cmd, env=root_env(cpu, env), capture_output=capture, text=True, timeout=timeout)


def _pyproject_requirements(repo: Path = REPO) -> dict:
    project = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    return {"dependencies": project.get("dependencies", []), **{e: optional.get(e, []) for e in EXTRAS}}


def venv_key(root: Root, repo: Path = REPO) -> str:
    """The venv's key: the root and the requirements of the extras installed (not edgefg's own code)."""
    spec = {"root": root.info.get("key"), "requirements": _pyproject_requirements(repo)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def copy_source(root: Root, repo: Path = REPO) -> None:
    """The files ``pip install .`` reads (pyproject, README, the package), fresh in the root: pip builds in the source folder, so never in the tree."""
    dst = root.path / SRC.lstrip("/")
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo / name, dst / name)
    shutil.copytree(repo / "edgefg", dst / "edgefg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def install(root: Root, repo: Path = REPO, log=print) -> dict:
    """``pip install '.[runtime-tflite,mqtt]'`` from ``repo`` into the root's venv, as on a device
    (a venv kept between runs while the requirements are the same: then only edgefg itself is rebuilt).
    Returns {seconds, venv_created, output}; call with the lock held."""
    t0 = time.perf_counter()
    venv = root.path / VENV.lstrip("/")
    key = venv_key(root, repo)
    try:
        fresh = json.loads((venv / VENV_MARKER).read_text(encoding="utf-8")).get("key") != key
    except (OSError, ValueError):
        fresh = True
    if fresh:
        if venv.exists():
            shutil.rmtree(venv)
        log(f"arm64: creating the venv {VENV} in the root (python3.11 -m venv, emulated)")
        made = run_in_root(root, ["/usr/bin/python3.11", "-m", "venv", VENV], capture=True, network=False)
        if made.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise Arm64Error(f"python3.11 -m venv failed in the arm64 root (exit {made.returncode}): {(made.stderr or made.stdout).strip()[-200:]}")
    copy_source(root, repo)
    spec = f".[{','.join(EXTRAS)}]"
    log(f"arm64: pip install '{spec}' in the root")
    proc = run_in_root(root, ["pip", "install", spec], cwd=SRC, capture=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pip_log = root.path.parent / f"{root.path.name}.pip.log"
        pip_log.write_text(output, encoding="utf-8")
        raise _one_line_failure(f"pip install '{spec}' failed in the arm64 root (exit {proc.returncode})", output, pip_log,
                                "pip could not reach the package index from the root: the first install needs PyPI (then the venv is kept in the cache)")
    if fresh:
        (venv / VENV_MARKER).write_text(json.dumps({"key": key, "extras": list(EXTRAS)}) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - t0
    log(f"arm64: installed in {seconds:.0f} s")
    return {"seconds": round(seconds, 1), "venv_created": fresh, "output": output}


def prepare(cache: Path = CACHE, repo: Path = REPO, mirror: str = MIRROR, log=print, hold: contextlib.ExitStack | None = None) -> tuple[Root, dict]:
    """Preflight, the root (built or reused) and edgefg installed from ``repo``: ready to run. Times each step.
    ``hold``: the cache's lock stays held until that stack closes, so no other session reinstalls edgefg
    in the root while this one runs commands there (without it, the lock is released on return)."""
    preflight()
    stack = hold if hold is not None else contextlib.ExitStack()
    try:
        stack.enter_context(locked(cache))
        t0 = time.perf_counter()
        built_now = existing_root(cache, mirror) is None
        root = build_root(cache, mirror, log=log)
        root_s = time.perf_counter() - t0
        inst = install(root, repo, log=log)
    finally:
        if hold is None:
            stack.close()
    return root, {"root_s": round(root_s, 1), "root_built_now": built_now, "install_s": inst["seconds"], "venv_created": inst["venv_created"]}


# -- command line -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python .ci/arm64.py", description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=CACHE, help="cache folder (default: $EDGEFG_ARM64_CACHE or /var/cache/edgefg/arm64)")
    ap.add_argument("--mirror", default=MIRROR, help="Debian mirror (default: $EDGEFG_ARM64_MIRROR or deb.debian.org)")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="say whether this machine can run the arm64 root, and the cached root's state")
    p_root = sub.add_parser("root", help="build or reuse the cached root; print its path")
    p_root.add_argument("--rebuild", action="store_true", help="remove the cached root of this key first")
    sub.add_parser("install", help="install edgefg from this working tree into the root, as a device user would")
    p_exec = sub.add_parser("exec", help="run a command in the root (after install)")
    p_exec.add_argument("--cpu", default=PI_CPU, choices=sorted(CPU_MIDR), help=f"QEMU_CPU and /proc/cpuinfo's core (default {PI_CPU}; 'max' = every ISA feature qemu has)")
    p_exec.add_argument("--bind", action="append", default=[], help="SRC:DST[:rw]: mount a host folder in the root for this command (read-only unless :rw)")
    p_exec.add_argument("--cwd", default="/", help="working directory in the root")
    p_exec.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = ap.parse_args(argv)
    try:
        if args.command == "check":
            preflight(register=False)
            root = existing_root(args.cache, args.mirror)
            print(f"arm64: ready (binfmt aarch64 registered); root {'cached at ' + str(root.path) if root else 'not built yet (cold build on first use)'}")
            return 0
        binds = [Bind.parse(s) for s in getattr(args, "bind", [])]  # a bad spec fails before any work
        cmd = args.cmd[1:] if getattr(args, "cmd", [])[:1] == ["--"] else getattr(args, "cmd", [])
        if args.command == "exec" and not cmd:
            raise Arm64Error("exec needs a command: python .ci/arm64.py exec -- edgefg --version")
        preflight()
        with locked(args.cache):
            root = build_root(args.cache, args.mirror, rebuild=getattr(args, "rebuild", False), log=lambda m: print(m, file=sys.stderr))
            if args.command == "root":
                print(root.path)
                return 0
            if args.command == "install":
                install(root, log=lambda m: print(m, file=sys.stderr))
                return 0
            if not (root.path / VENV.lstrip("/") / VENV_MARKER).is_file():
                raise Arm64Error("edgefg is not installed in the arm64 root yet: run python .ci/arm64.py install first")
            return run_in_root(root, cmd, binds, cpu=args.cpu, cwd=args.cwd).returncode
    except Arm64Error as exc:
        print(f"arm64: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
