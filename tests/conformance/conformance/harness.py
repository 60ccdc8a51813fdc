"""Processes, waits, the gateway and the scenario registry of the conformance suite.

Every wait here is a polled condition with a deadline scaled by PIPEGATE_TEST_TIMEOUT_MULTIPLIER.
The only timed windows are `stays()`, which asserts that something has NOT happened yet (a
blocked open(), a reader still waiting), and those scale too.
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

# PIPEGATE_TEST_TIMEOUT_MULTIPLIER if set, else the build's factor that CTest passes
# (PIPEGATE_TEST_TIME_SCALE in tests/CMakeLists.txt), else 1.
MULTIPLIER = float(os.environ.get("PIPEGATE_TEST_TIMEOUT_MULTIPLIER")
                   or os.environ.get("PIPEGATE_TEST_BUILD_TIME_SCALE") or "1")
QUICK = os.environ.get("PIPEGATE_TEST_QUICK", "") == "1"
KEEP_TMP = os.environ.get("PIPEGATE_TEST_KEEP_TMP", "") == "1"
PYTHON = sys.executable


class ScenarioError(Exception):
    """A scenario could not make its observation (a deadline passed, a setup step failed)."""


def seconds(nominal):
    """A nominal duration in seconds, scaled for slow (sanitizer) builds."""
    return nominal * MULTIPLIER


def wait_until(predicate, timeout, what):
    """Polls `predicate` every 10 ms until it is true; raises ScenarioError after `timeout` s."""
    deadline = time.monotonic() + seconds(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScenarioError("timed out after %.1f s waiting for %s" % (seconds(timeout), what))
        time.sleep(0.01)


def stays(predicate, window=0.3):
    """True if `predicate` stays true for the whole (scaled) window: "it still blocks"."""
    deadline = time.monotonic() + seconds(window)
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.01)
    return predicate()


def shell_status(returncode):
    """A Popen return code as a shell reports it: 128+N for a process that signal N ended."""
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode


def sha(data):
    return hashlib.sha256(data).hexdigest()[:16]


def pattern(size, seed=1):
    """`size` deterministic pseudo-random bytes (a SHA-256 chain, fast enough for tens of MiB)."""
    out = bytearray()
    block = hashlib.sha256(b"pipegate-conformance-%d" % seed).digest()
    chunk = hashlib.sha512(block).digest() * 512  # 32 KiB
    counter = 0
    while len(out) < size:
        counter += 1
        out += hashlib.sha256(block + counter.to_bytes(8, "little")).digest() + chunk[: 32768 - 32]
    return bytes(out[:size])


class Proc:
    """A child process in its own process group, stdout/stderr in files (or pipes)."""

    def __init__(self, ctx, argv, name, stdin=None, stdout=None, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.out_path = ctx.path(name + ".out") if stdout is None else None
        self.err_path = ctx.path(name + ".err")
        out = open(self.out_path, "wb") if stdout is None else stdout
        err = open(self.err_path, "wb")
        full_env = dict(ctx.env)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                      stdout=out, stderr=err, env=full_env, cwd=cwd or ctx.dir,
                                      start_new_session=True)
        if stdout is None:
            out.close()
        err.close()
        ctx.procs.append(self)

    @property
    def pid(self):
        return self.popen.pid

    def running(self):
        return self.popen.poll() is None

    def wait(self, timeout=10):
        """The shell-convention status; raises ScenarioError if it has not ended in time."""
        wait_until(lambda: not self.running(), timeout, "%s to end" % self.name)
        return shell_status(self.popen.returncode)

    def status(self):
        return shell_status(self.popen.poll())

    def signal(self, sig):
        if self.running():
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def ended(self, timeout=10):
        """The shell-convention status, or "still running after N s" (an observation, no error)."""
        try:
            return self.wait(timeout)
        except ScenarioError:
            return "still running after %g s" % seconds(timeout)

    def finish(self, timeout=10):
        """Waits for the end; "out=OUTPUT exit=STATUS" (output read only after the end)."""
        status = self.wait(timeout)
        return "out=%r exit=%s" % (self.out(), status)

    def out(self):
        with open(self.out_path, "rb") as f:
            return f.read()

    def err(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, grace=2.0):
        """SIGTERM the group (so a bridge ends its session cleanly), then SIGKILL what is left."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + seconds(grace)
            while self.popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=seconds(5))
        except subprocess.TimeoutExpired:
            pass


class Context:
    """One side (local or pipegate) of one scenario: a fresh directory and its processes."""

    def __init__(self, group, scenario_name, side):
        self.group = group
        self.side = side
        self.dir = os.path.join(group.dir, "%s.%s" % (scenario_name, side))
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.procs = []
        self.env = dict(group.env)
        self.cleanups = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def spawn(self, argv, name, **kwargs):
        return Proc(self, argv, name, **kwargs)

    def py(self, code, name, *args, **kwargs):
        """python3 -c CODE ARGS... (exact errno checks)."""
        return self.spawn([PYTHON, "-c", code] + [str(a) for a in args], name, **kwargs)

    def sh(self, script, name, **kwargs):
        return self.spawn(["bash", "-c", script], name, **kwargs)

    def pipegate(self, args, name, **kwargs):
        return self.spawn([self.group.pipegate_bin] + args, name, **kwargs)

    def address(self, export):
        return self.group.gateway.address(export)

    def export_path(self, export):
        return self.group.gateway.export_path(export)

    def mkfifo(self, name):
        path = self.path(name)
        os.mkfifo(path, 0o600)
        return path

    def write_file(self, name, data):
        path = self.path(name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def read_file(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    @property
    def local(self):
        return self.side == "local"

    def mount(self, export, local_name, extra=()):
        """`pipegate mount` of `export` at a path in this directory; waits for the path."""
        local = self.path(local_name)
        proc = self.pipegate(["mount", self.address(export), local] + list(extra),
                             "mount-" + local_name.replace("/", "_"))
        want = stat.S_ISSOCK if export in self.group.unix_exports or "--as" in extra else stat.S_ISFIFO

        def up():
            if not proc.running():
                raise ScenarioError("mount exited %s: %s" % (proc.status(), proc.err()))
            try:
                return want(os.lstat(local).st_mode)
            except FileNotFoundError:
                return False
        wait_until(up, 10, "mount of %s at %s" % (export, local))
        return local, proc

    def close(self):
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - cleanup must go on.
                pass
        for proc in reversed(self.procs):
            proc.stop()


class Gateway:
    """pipegated on 127.0.0.1:0 with the test PKI and the group's exports."""

    def __init__(self, group, exports, extra_toml=""):
        self.group = group
        self.exports = exports
        pki = group.pki
        lines = ["[gateway]", 'listen = ["127.0.0.1:0"]',
                 'cert = "%s/gateway.crt"' % pki, 'key = "%s/gateway.key"' % pki,
                 'client_ca = "%s/ca.crt"' % pki, "workers = 1",
                 # A scenario that ends a bridge abruptly must not leave its stream held for
                 # the next one (the default keeps a lost session 300 s for a resume).
                 "resume_ttl = 1", extra_toml]
        for name, spec in exports.items():
            lines.append("\n[[export]]")
            lines.append('name = "%s"' % name)
            lines.append('kind = "%s"' % spec["kind"])
            if spec["kind"] == "fifo":
                lines.append('access = "%s"' % spec["access"])
                lines.append("create = true")
                lines.append('mode = "0600"')
            lines.append('path = "%s"' % self.export_path(name))
            lines.append('allow = ["alice"]')
            if "max_clients" in spec:
                lines.append("max_clients = %d" % spec["max_clients"])
        self.config = os.path.join(group.dir, "pipegated.toml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = os.path.join(group.dir, "pipegated.log")
        with open(self.log, "wb") as log:
            self.popen = subprocess.Popen([group.pipegated_bin, "--config", self.config],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          cwd=group.dir, start_new_session=True)
        try:
            match = wait_until(lambda: self.popen.poll() is not None and "exited" or
                               re.search(r"listening on 127\.0\.0\.1:([0-9]+)",
                                         self.read_log()), 15, "pipegated to listen")
        except ScenarioError:
            self.popen.kill()
            self.popen.wait()
            raise
        if match == "exited":
            raise ScenarioError("pipegated exited %s:\n%s" % (self.popen.returncode,
                                                               self.read_log()[-3000:]))
        self.port = int(match.group(1))
        for name, spec in exports.items():
            if spec["kind"] == "fifo":
                path = self.export_path(name)
                wait_until(lambda: os.path.exists(path) and stat.S_ISFIFO(os.lstat(path).st_mode),
                           5, "export FIFO %s" % path)

    def export_path(self, name):
        spec = self.exports[name]
        if "path" in spec:
            return spec["path"](self.group.dir)
        return os.path.join(self.group.dir, name + (".sock" if spec["kind"] == "unix" else ".fifo"))

    def address(self, name):
        return "pipe://127.0.0.1:%d/%s" % (self.port, name)

    def read_log(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=seconds(15))
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Group:
    """The scenarios of one group share a gateway and a temp dir."""

    def __init__(self, name, exports, extra_toml="", setup=None):
        self.name = name
        self.pipegate_bin = os.environ["PIPEGATE_TEST_PIPEGATE"]
        self.pipegated_bin = os.environ["PIPEGATE_TEST_PIPEGATED"]
        self.pki = os.environ["PIPEGATE_TEST_PKI"]
        self.dir = tempfile.mkdtemp(prefix="pgconf-%s-" % name, dir="/tmp")
        os.chmod(self.dir, 0o755)  # PostgreSQL runs as another user under it.
        self.unix_exports = {n for n, s in exports.items() if s["kind"] == "unix"}
        self.env = dict(os.environ)
        self.env.update({"PIPEGATE_CERT": self.pki + "/alice.crt",
                         "PIPEGATE_KEY": self.pki + "/alice.key",
                         "PIPEGATE_CA": self.pki + "/ca.crt",
                         "HOME": self.dir, "XDG_CONFIG_HOME": self.dir + "/.config",
                         "LC_ALL": "C"})
        self.gateway = None
        self.skip_reason = None
        self.teardown = None
        self.procs = []
        try:
            if setup:
                # The group's servers (redis, PostgreSQL); None or a reason to skip the group.
                self.skip_reason = setup(self)
            if exports and not self.skip_reason:
                self.gateway = Gateway(self, exports, extra_toml)
        except BaseException:
            self.close(failed=True)  # Stop the servers setup started before re-raising.
            raise

    def close(self, failed):
        if self.teardown:
            try:
                self.teardown()
            except Exception as error:  # noqa: BLE001 - report and go on.
                print("  teardown of %s: %s" % (self.name, error))
        for proc in reversed(self.procs):
            proc.stop()
        if self.gateway:
            self.gateway.stop()
        if failed or KEEP_TMP:
            print("  (temp dir kept: %s)" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---- The scenario registry. ----

SCENARIOS = []
GROUPS = {}


def group(name, exports, extra_toml="", setup=None):
    """Declares a group: its exports (name -> {"kind", "access", "max_clients", "path"}).

    `setup(group)` may start servers both sides use; it returns None, or why the group is
    skipped.
    """
    GROUPS[name] = {"exports": exports, "extra_toml": extra_toml, "setup": setup}


def scenario(group_name, name, compares, oracle, known_issue=None, choice=None):
    """Registers `run(ctx)` as a scenario; it runs once with ctx.side "local", once "pipegate".

    Each run returns the observation, a short string; the two must be equal. `oracle` is what
    the local FIFO or socket shows (for the README table), `choice` the equivalence this
    scenario holds pipegate to where the two cannot be identical by nature. `known_issue` says
    which known difference makes a DIFF an expected failure (XFAIL).
    """
    def register(run):
        SCENARIOS.append({"group": group_name, "name": name, "compares": compares,
                          "oracle": oracle, "known_issue": known_issue, "choice": choice,
                          "run": run})
        return run
    return register


def have(program):
    return shutil.which(program) is not None


# ---- Small helpers scenarios share. ----

def connect_unix(path, timeout=10):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(seconds(timeout))
    sock.connect(path)
    return sock


def recv_all(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def blocked_in_fifo_open(proc):
    """True while `proc` sleeps in open() of a FIFO waiting for the other end (Linux wchan)."""
    try:
        with open("/proc/%d/wchan" % proc.pid) as f:
            return f.read().strip() == "wait_for_partner"
    except OSError:
        return False


def errno_name(code):
    import errno as errno_module
    return errno_module.errorcode.get(code, str(code))


def try_open_nonblock_write(path):
    """Opens `path` O_WRONLY|O_NONBLOCK and closes it: "ok" or the errno name (ENXIO: no reader)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        return errno_name(error.errno)
    os.close(fd)
    return "ok"


def hold_write_end(path, timeout=10):
    """Opens a FIFO for writing once a reader has it (polling O_NONBLOCK); returns the fd."""
    def attempt():
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK) + 1
        except OSError as error:
            if error.errno == 6:  # ENXIO: no reader yet.
                return False
            raise
    fd = wait_until(attempt, timeout, "a reader of %s" % path) - 1
    os.set_blocking(fd, True)
    return fd
