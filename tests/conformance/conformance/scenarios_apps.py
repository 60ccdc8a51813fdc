"""Real clients of real servers: redis-cli/redis-benchmark and psql/pgbench.

Oracle: the client talks to the server's own Unix socket. pipegate: the same client talks to a
socket mount of the unix export of that socket. The servers are started once per group, in the
group's temp dir; PostgreSQL runs as an unprivileged user when the suite runs as root.
"""

import glob
import os
import pwd
import re
import shutil
import subprocess

from .harness import Proc, group, scenario, seconds, wait_until


def redis_socket(root):
    return os.path.join(root, "redis.sock")


def pg_dir(root):
    return os.path.join(root, "pg")


def pg_socket(root):
    return os.path.join(pg_dir(root), ".s.PGSQL.5432")


class _GroupCtx:
    """Just enough of a Context for Proc: the group's dir and environment."""

    def __init__(self, g):
        self.dir = g.dir
        self.env = g.env
        self.procs = g.procs

    def path(self, name):
        return os.path.join(self.dir, name)


def start_redis(g):
    if not shutil.which("redis-server"):
        return "redis-server not installed (scripts/deps.sh installs it)"
    ctx = _GroupCtx(g)
    proc = Proc(ctx, ["redis-server", "--port", "0", "--unixsocket", redis_socket(g.dir),
                      "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                      "--dir", g.dir], "redis-server")
    wait_until(lambda: os.path.exists(redis_socket(g.dir)) or not proc.running(), 15,
               "redis-server's socket")
    return None if proc.running() else "redis-server exited: %s" % proc.out()[-500:]


def postgres_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def start_postgres(g):
    bindir = postgres_bin()
    if not bindir:
        return "PostgreSQL server not installed (scripts/deps.sh installs postgresql)"
    data = os.path.join(pg_dir(g.dir), "data")
    os.makedirs(pg_dir(g.dir))
    as_user = []
    if os.geteuid() == 0:
        # postgres refuses to run as root; nobody owns the cluster and its socket directory.
        user = pwd.getpwnam("nobody")
        os.chown(pg_dir(g.dir), user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    env = dict(g.env, HOME=pg_dir(g.dir))
    init = subprocess.run(as_user + [bindir + "/initdb", "-D", data, "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--no-sync"],
                          env=env, cwd=pg_dir(g.dir), capture_output=True,
                          timeout=seconds(120))
    if init.returncode != 0:
        return "initdb failed: %s" % (init.stdout + init.stderr).decode()[-500:]
    log = os.path.join(pg_dir(g.dir), "log")
    start = subprocess.run(as_user + [bindir + "/pg_ctl", "-D", data, "-l", log, "-w",
                                      "-t", str(int(seconds(60))), "-o",
                                      "-k %s -c listen_addresses='' -c fsync=off "
                                      "-c max_connections=40" % pg_dir(g.dir), "start"],
                           env=env, cwd=pg_dir(g.dir), capture_output=True,
                           timeout=seconds(90))
    if start.returncode != 0:
        return "pg_ctl start failed: %s" % (start.stdout + start.stderr).decode()[-500:]

    def stop():
        subprocess.run(as_user + [bindir + "/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       env=env, cwd=pg_dir(g.dir), capture_output=True, timeout=seconds(30))
    g.teardown = stop
    return None


group("redis", {"redis": {"kind": "unix", "path": redis_socket}}, setup=start_redis)
group("postgres", {"pg": {"kind": "unix", "path": pg_socket}}, setup=start_postgres)


def redis_path(ctx):
    if ctx.local:
        return redis_socket(ctx.group.dir)
    return ctx.mount("redis", "redis.sock")[0]


def run(ctx, argv, name, timeout=60, **kwargs):
    proc = ctx.spawn(argv, name, **kwargs)
    status = proc.wait(timeout)
    return status, proc.out().decode("utf-8", "replace"), proc.err()


@scenario("redis", "redis_cli_ping_set_get", "redis-cli PING, SET, GET, DEL: replies and status",
          "PONG, OK, the value, 1; each exit 0")
def redis_cli_ping_set_get(ctx):
    path = redis_path(ctx)
    replies = []
    for i, command in enumerate((["PING"], ["SET", "conf:key", "value 1"], ["GET", "conf:key"],
                                 ["DEL", "conf:key"])):
        status, out, _ = run(ctx, ["redis-cli", "-s", path] + command, "cli%d" % i)
        replies.append("%s/%s" % (out.strip(), status))
    return " ".join(replies)


@scenario("redis", "redis_cli_pipe_mode", "redis-cli --pipe with 2000 SETs: its summary",
          "'errors: 0, replies: 2000', exit 0")
def redis_cli_pipe(ctx):
    path = redis_path(ctx)
    commands = ctx.write_file("commands", b"".join(b"SET conf:%d %d\r\n" % (i, i * i)
                                                   for i in range(2000)))
    status, out, _ = run(ctx, ["redis-cli", "-s", path, "--pipe"], "pipe",
                         stdin=open(commands, "rb"))
    summary = [line for line in out.splitlines() if line.startswith("errors:")]
    return "%s exit=%s" % (summary, status)


@scenario("redis", "redis_benchmark_small", "redis-benchmark -q -n 300 -c 4, 5 tests: which "
          "tests completed, status", "every test reports requests per second; exit 0",
          choice="Rates differ by nature; the comparison is which tests completed and the "
                 "exit status.")
def redis_benchmark(ctx):
    path = redis_path(ctx)
    status, out, _ = run(ctx, ["redis-benchmark", "-s", path, "-q", "-n", "300", "-c", "4",
                               "-t", "ping,set,get,lpush,lpop"], "benchmark", timeout=120)
    done = sorted(set(re.findall(r"([A-Z_]+): [0-9.]+ requests per second", out)))
    return "%s exit=%s" % (done, status)


def pg_host(ctx):
    """The directory psql and pgbench get as -h (they add .s.PGSQL.5432)."""
    if ctx.local:
        return pg_dir(ctx.group.dir)
    os.mkdir(ctx.path("pgm"))
    ctx.mount("pg", "pgm/.s.PGSQL.5432")
    return ctx.path("pgm")


def psql(ctx, host, sql, name, **kwargs):
    return run(ctx, ["psql", "-X", "-h", host, "-U", "postgres", "-d", "postgres",
                     "-v", "ON_ERROR_STOP=1", "-At", "-c", sql], name, **kwargs)


@scenario("postgres", "psql_select", "psql -c 'SELECT ...': output, status",
          "'42|hello|f', exit 0")
def psql_select(ctx):
    status, out, err = psql(ctx, pg_host(ctx), "select 6*7, 'hello', pg_is_in_recovery()", "q")
    return "out=%r exit=%s" % (out.strip() or err.strip()[-200:], status)


@scenario("postgres", "psql_copy_roundtrip", "\\copy 20000 rows in, then count and md5 of all "
          "rows", "20000 rows, the same md5; exit 0")
def psql_copy_roundtrip(ctx):
    host = pg_host(ctx)
    rows = ctx.write_file("rows", b"".join(b"%d\trow %d %s\n" % (i, i, b"x" * (i % 50))
                                           for i in range(20000)))
    results = [psql(ctx, host, "drop table if exists conf_t; create table conf_t(i int, s text)",
                    "create")[0]]
    results.append(psql(ctx, host, "\\copy conf_t from stdin", "copy",
                        stdin=open(rows, "rb"))[0])
    status, out, err = psql(ctx, host, "select count(*), md5(string_agg(i || s, ',' order by i))"
                            " from conf_t", "check")
    return "statuses=%s out=%r" % (results + [status], out.strip() or err.strip()[-200:])


@scenario("postgres", "pgbench_init_and_run", "pgbench -i -s 1, then -c 4 -j 2 -t 25: "
          "transactions processed, statuses", "100/100 transactions; both exit 0",
          choice="Rates and latencies differ by nature; compared: transactions processed and "
                 "exit statuses.")
def pgbench_init_and_run(ctx):
    host = pg_host(ctx)
    common = ["-h", host, "-U", "postgres"]
    init, _, err = run(ctx, ["pgbench", "-i", "-s", "1", "-q"] + common + ["postgres"], "init",
                       timeout=120)
    status, out, err2 = run(ctx, ["pgbench", "-c", "4", "-j", "2", "-t", "25", "-n"] + common +
                            ["postgres"], "bench", timeout=120)
    processed = re.findall(r"number of transactions actually processed: (\S+)", out)
    return "init=%s bench=%s processed=%s" % (init, status, processed or err2.strip()[-200:])
