"""FIFO mounts: `pipegate mount` of a read export and of a write export, against a local FIFO.

Oracle: a local program reads or writes a local FIFO while its partner (writer or reader) is a
local program too. pipegate: the same program uses the FIFO that `pipegate mount` made, and its
partner uses the gateway's exported FIFO.
"""

import os
import signal

from .harness import (PYTHON, ScenarioError, blocked_in_fifo_open, group, pattern, scenario, sha,
                      stays, try_open_nonblock_write, wait_until)
from .scenarios_fifo import concurrent_record_writers, count_torn

# A write export's remote reader must see each local writer's EOF: the mount waits 100 ms after
# a stream ends before it opens the next (docs/decisions.md, "Mounted FIFOs"). The scenarios
# whose remote reader ends after the local writer closes hold it to that.

group("mount_read", {"r": {"kind": "fifo", "access": "read"}})
group("mount_write", {"w": {"kind": "fifo", "access": "write"}})


def fifo_pair(ctx, export):
    """(path the program uses, path its partner uses): one local FIFO, or mount + export FIFO."""
    if ctx.local:
        fifo = ctx.mkfifo("p.fifo")
        return fifo, fifo
    local, _ = ctx.mount(export, "m.fifo")
    return local, ctx.export_path(export)


# ---- FIFO mount of a read export ----

@scenario("mount_read", "mread_bytes_then_eof", "cat MOUNT: 1 MiB from a writer (sha256), EOF",
          "cat gets every byte and exits 0 when dd closes; dd exits 0")
def mread_bytes_then_eof(ctx):
    data = ctx.write_file("data", pattern(1 << 20, seed=11))
    mine, theirs = fifo_pair(ctx, "r")
    reader = ctx.spawn(["cat", mine], "reader")
    writer = ctx.spawn(["dd", "if=" + data, "of=" + theirs, "bs=65536"], "dd")
    return "out=%s reader=%s writer=%s" % (sha(reader.out()) if reader.wait(30) == 0 else "?",
                                         reader.status(), writer.wait(30))


@scenario("mount_read", "mread_reader_waits_for_writer", "cat MOUNT with no remote writer",
          "cat waits (no output, no EOF); then gets the line and EOF, exits 0",
          choice="Locally cat waits in open(); on the mount open() returns and cat waits in "
                 "read(). A program sees the same: nothing, then the bytes, then EOF. Compared "
                 "over a 300 ms window.")
def mread_reader_waits_for_writer(ctx):
    mine, theirs = fifo_pair(ctx, "r")
    reader = ctx.spawn(["cat", mine], "reader")
    waited = stays(lambda: reader.running() and not reader.out())
    ctx.sh("printf 'hello\\n' > '%s'" % theirs, "printf").wait(10)
    return "waited=%s %s" % (waited, reader.finish(10))


@scenario("mount_read", "mread_head_c", "head -c 100 MOUNT while `yes > FIFO` writes",
          "head prints 100 bytes, exits 0; yes dies of SIGPIPE (141)")
def mread_head_c(ctx):
    mine, theirs = fifo_pair(ctx, "r")
    reader = ctx.spawn(["head", "-c", "100", mine], "head")
    writer = ctx.sh("exec yes conformance > '%s'" % theirs, "yes")
    head = reader.wait(10)
    return "head=%d bytes exit %s, writer=%s" % (len(reader.out()), head, writer.wait(10))


@scenario("mount_read", "mread_three_successive_readers", "three readers one after another, "
          "each with its own writer", "each reader gets its writer's line and EOF")
def mread_successive_readers(ctx):
    mine, theirs = fifo_pair(ctx, "r")
    seen = []
    for i in range(3):
        reader = ctx.spawn(["cat", mine], "reader%d" % i)
        ctx.sh("printf 'cycle %d\\n' > '%s'" % (i, theirs), "printf%d" % i).wait(10)
        seen.append("%r/%s" % (reader.out() if reader.wait(10) == 0 else "?", reader.status()))
    return " ".join(seen)


@scenario("mount_read", "mread_reader_killed_writer_sigpipe", "cat MOUNT stopped by SIGTERM "
          "while `yes` writes", "cat 143; the writer dies of SIGPIPE (141)")
def mread_reader_killed(ctx):
    mine, theirs = fifo_pair(ctx, "r")
    reader = ctx.spawn(["cat", mine], "reader", stdout=open(os.devnull, "wb"))
    writer = ctx.sh("exec yes conformance > '%s'" % theirs, "yes")
    wait_until(lambda: not blocked_in_fifo_open(writer) and
               os.readlink("/proc/%d/fd/1" % writer.pid) == theirs, 10, "the writer to open")
    reader.signal(signal.SIGTERM)
    return "reader=%s writer=%s" % (reader.wait(10), writer.wait(10))


@scenario("mount_read", "mread_waits_while_busy", "cat MOUNT while another client holds the "
          "export (max_clients 1)", "the reader waits (as for a writer), then gets the line",
          choice="A busy remote pipe has no local counterpart; the mount must make it look like "
                 "a FIFO with no writer yet: the reader waits, then gets bytes and EOF.")
def mread_waits_while_busy(ctx):
    holder = None
    if not ctx.local:
        holder = ctx.pipegate(["cat", ctx.address("r")], "holder")
        from .scenarios_fifo import reader_attached
        wait_until(lambda: reader_attached(ctx.export_path("r")), 10, "the holder's stream")
    mine, theirs = fifo_pair(ctx, "r")
    reader = ctx.spawn(["cat", mine], "reader")
    waited = stays(lambda: reader.running() and not reader.out())
    if holder:
        holder.signal(signal.SIGTERM)
        holder.wait(10)
    ctx.sh("printf 'at last\\n' > '%s'" % theirs, "printf").wait(20)
    return "waited=%s %s" % (waited, reader.finish(20))


# ---- FIFO mount of a write export ----

@scenario("mount_write", "mwrite_bytes_then_eof", "dd 1 MiB into MOUNT; `cat FIFO` reads",
          "reader gets every byte (sha256) and EOF; dd exits 0")
def mwrite_bytes_then_eof(ctx):
    data = ctx.write_file("data", pattern(1 << 20, seed=12))
    mine, theirs = fifo_pair(ctx, "w")
    reader = ctx.spawn(["cat", theirs], "reader")
    writer = ctx.spawn(["dd", "if=" + data, "of=" + mine, "bs=65536"], "dd")
    writer_status = writer.wait(30)
    # Once the writer closed, the reader's EOF is due at once (locally it is immediate).
    reader_status = reader.ended(5)
    return "out=%s reader=%s writer=%s" % (sha(reader.out()), reader_status, writer_status)


@scenario("mount_write", "mwrite_tee", "tee MOUNT < 256 KiB; `cat FIFO` reads",
          "reader gets every byte; tee exits 0")
def mwrite_tee(ctx):
    data = ctx.write_file("data", pattern(256 << 10, seed=13))
    mine, theirs = fifo_pair(ctx, "w")
    reader = ctx.spawn(["cat", theirs], "reader")
    writer = ctx.spawn(["tee", mine], "tee", stdin=open(data, "rb"),
                       stdout=open(os.devnull, "wb"))
    writer_status = writer.wait(30)
    reader_status = reader.ended(5)
    return "out=%s reader=%s writer=%s" % (sha(reader.out()), reader_status, writer_status)


OPEN_WRITE = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
open(sys.argv[2], "w").close()
os.write(fd, b"x\n")
os.close(fd)
"""


@scenario("mount_write", "mwrite_open_blocks_without_reader", "python open(MOUNT, O_WRONLY) "
          "with no remote reader", "open() blocks; returns when a reader comes; bytes arrive")
def mwrite_open_blocks(ctx):
    mine, theirs = fifo_pair(ctx, "w")
    opened = ctx.path("opened")
    writer = ctx.py(OPEN_WRITE, "writer", mine, opened)
    blocked = stays(lambda: writer.running() and not os.path.exists(opened))
    reader = ctx.spawn(["cat", theirs], "reader")
    writer_status = writer.wait(20)
    reader_status = reader.ended(5)
    return "blocked=%s writer=%s out=%r reader=%s" % (blocked, writer_status, reader.out(),
                                                      reader_status)


@scenario("mount_write", "mwrite_nonblocking_open_enxio", "O_NONBLOCK open for write with no "
          "reader", "ENXIO")
def mwrite_nonblock_enxio(ctx):
    mine, _ = fifo_pair(ctx, "w")
    return "open=%s" % try_open_nonblock_write(mine)


EPIPE_WRITER = r"""
import errno, os, signal, sys
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
fd = os.open(sys.argv[1], os.O_WRONLY)
result = "no error after 100000 writes"
for _ in range(100000):
    try:
        os.write(fd, b"z" * 4096)
    except OSError as error:
        result = errno.errorcode[error.errno]
        break
print(result)
"""


@scenario("mount_write", "mwrite_reader_leaves_epipe", "python writes MOUNT (SIGPIPE ignored) "
          "while `head -c 1000 FIFO` reads", "head gets 1000 bytes, exits 0; write() fails EPIPE")
def mwrite_epipe(ctx):
    mine, theirs = fifo_pair(ctx, "w")
    reader = ctx.spawn(["head", "-c", "1000", theirs], "head")
    writer = ctx.py(EPIPE_WRITER, "writer", mine)
    head = reader.wait(10)
    writer.wait(20)
    return "head=%d exit %s, writer=%s" % (len(reader.out()), head, writer.out().decode().strip())


@scenario("mount_write", "mwrite_reader_leaves_sigpipe", "`yes > MOUNT` while `head -c 1000 "
          "FIFO` reads", "yes dies of SIGPIPE (141)")
def mwrite_sigpipe(ctx):
    mine, theirs = fifo_pair(ctx, "w")
    reader = ctx.spawn(["head", "-c", "1000", theirs], "head")
    writer = ctx.sh("exec yes conformance > '%s'" % mine, "yes")
    head = reader.wait(10)
    return "head=%d exit %s, writer=%s" % (len(reader.out()), head, writer.wait(20))


@scenario("mount_write", "mwrite_two_successive_writers", "`echo a > M; echo b > M` with one "
          "reader `cat FIFO`, then a second reader",
          "reader 1 gets 'a' and EOF; the second echo blocks until reader 2, which gets 'b'")
def mwrite_two_successive_writers(ctx):
    mine, theirs = fifo_pair(ctx, "w")
    first_reader = ctx.spawn(["cat", theirs], "reader1")
    first = ctx.sh("echo a > '%s'" % mine, "echo-a").wait(20)
    try:
        wait_until(lambda: not first_reader.running(), 5, "reader 1 to see EOF")
        r1 = "%r/%s" % (first_reader.out(), first_reader.status())
    except ScenarioError:
        r1 = "%r/no EOF" % first_reader.out()
    second = ctx.sh("echo b > '%s'" % mine, "echo-b")
    blocked = stays(second.running)
    if first_reader.running():
        first_reader.signal(signal.SIGTERM)
    second_reader = ctx.spawn(["cat", theirs], "reader2")
    status = second.wait(20)
    r2_status = second_reader.ended(5)
    r2 = "%r/%s" % (second_reader.out(), r2_status)
    return "echo a=%s reader1=%s echo b blocked=%s exit %s reader2=%s" % (first, r1, blocked,
                                                                          status, r2)


@scenario("mount_write", "mwrite_atomic_records_4_writers", "4 writers x 300 records of 4096 "
          "bytes into MOUNT at once", "every record whole")
def mwrite_atomic_records(ctx):
    mine, theirs = fifo_pair(ctx, "w")
    reader = ctx.spawn(["cat", theirs], "reader")
    writers = concurrent_record_writers(ctx, mine, 4, 300, 4096)
    for w in writers:
        if w.wait(30) != 0:
            raise ScenarioError("writer failed: %s" % w.err())
    reader_status = reader.ended(5)
    return count_torn(reader.out(), 4096, 4, 300) + " reader=%s" % reader_status
