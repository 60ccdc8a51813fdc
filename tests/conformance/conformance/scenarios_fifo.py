"""`pipegate cat` of a read export and `pipegate write` to a write export, against a local FIFO.

Oracle: a local program reads (`cat FIFO`) or writes (`cat > FIFO`) a FIFO made in the temp dir.
pipegate: `pipegate cat ADDRESS` reads the export while local programs write the gateway's FIFO;
`pipegate write ADDRESS` writes it while a local program reads the gateway's FIFO.
"""

import os
import re
import signal

from .harness import (PYTHON, QUICK, ScenarioError, blocked_in_fifo_open, group, hold_write_end,
                      pattern, scenario, sha, stays, try_open_nonblock_write, wait_until)

group("fifo_cat", {"r": {"kind": "fifo", "access": "read"}})
group("fifo_write", {"w": {"kind": "fifo", "access": "write"}})


def cat_side(ctx, name="reader", **kwargs):
    """Starts this side's reader; returns (FIFO local programs write into, reader Proc)."""
    if ctx.local:
        fifo = ctx.mkfifo("p.fifo")
        return fifo, ctx.spawn(["cat", fifo], name, **kwargs)
    export_free(ctx, "r")
    return ctx.export_path("r"), ctx.pipegate(["cat", ctx.address("r")], name, **kwargs)


def export_free(ctx, export):
    """Waits until no earlier stream holds the export's FIFO (a previous scenario's session)."""
    path = ctx.export_path(export)
    wait_until(lambda: not reader_attached(path), 10, "%s to be free" % path)


# A writer that holds several write ends: opens them all, reports, then writes records.
RECORD_WRITER = r"""
import os, sys, time
path, me, count, size, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
fd = os.open(path, os.O_WRONLY)
open(go + ".opened%d" % me, "w").close()
for _ in range(20000):
    if os.path.exists(go):
        break
    time.sleep(0.005)
for seq in range(count):
    head = b"w%d-%06d|" % (me, seq)
    record = head + bytes([65 + me]) * (size - len(head) - 1) + b"\n"
    assert os.write(fd, record) == size
os.close(fd)
"""


def count_torn(data, size, writers, count):
    """Records of `size` bytes: how many are not whole, and how many whole ones arrived."""
    torn = 0
    whole = 0
    if len(data) % size:
        torn += 1
    for i in range(0, len(data) - len(data) % size, size):
        record = data[i:i + size]
        try:
            head, body = record.split(b"|", 1)
            me = int(head[1:head.index(b"-")])
        except ValueError:
            torn += 1
            continue
        if body == bytes([65 + me]) * (size - len(head) - 2) + b"\n":
            whole += 1
        else:
            torn += 1
    return "records=%d/%d torn=%d" % (whole, writers * count, torn)


def concurrent_record_writers(ctx, fifo, writers, count, size):
    go = ctx.path("go")
    procs = [ctx.py(RECORD_WRITER, "writer%d" % k, fifo, k, count, size, go)
             for k in range(writers)]
    wait_until(lambda: all(os.path.exists(go + ".opened%d" % k) for k in range(writers)), 10,
               "every writer to open the FIFO")
    open(go, "w").close()
    return procs


@scenario("fifo_cat", "cat_bytes_then_eof", "bytes (sha256), reader and writer exit status",
          "reader gets all 1 MiB, exits 0 at the writer's close; dd exits 0")
def cat_bytes_then_eof(ctx):
    data = ctx.write_file("data", pattern(1 << 20))
    fifo, reader = cat_side(ctx)
    writer = ctx.spawn(["dd", "if=" + data, "of=" + fifo, "bs=65536"], "dd")
    return "out=%s reader=%s writer=%s" % (sha(reader.out()) if reader.wait(30) == 0 else "?",
                                         reader.status(), writer.wait(30))


@scenario("fifo_cat", "cat_waits_for_a_writer", "reader still waiting with no writer; then bytes",
          "cat blocks (in open) while no writer exists; then reads the line and EOF, exits 0",
          choice="'Waits' means the reader neither ended nor printed anything in a 300 ms "
                 "window; locally it blocks in open(), pipegate cat waits on the network.")
def cat_waits_for_a_writer(ctx):
    fifo, reader = cat_side(ctx)
    waited = stays(lambda: reader.running() and not reader.out())
    ctx.sh("printf 'hello\\n' > '%s'" % fifo, "printf").wait(10)
    return "waited=%s %s" % (waited, reader.finish(10))


@scenario("fifo_cat", "cat_eof_only_after_last_writer", "EOF timing with two writers",
          "no EOF while the second writer holds the FIFO; EOF when it closes")
def cat_eof_only_after_last_writer(ctx):
    fifo, reader = cat_side(ctx)
    first = os.open(fifo, os.O_WRONLY)  # Blocks until the reader (local or the gateway) opens.
    second = os.open(fifo, os.O_WRONLY)
    os.write(first, b"a\n")
    os.close(first)
    wait_until(lambda: reader.out() == b"a\n", 10, "the first line")
    no_eof = stays(reader.running)
    os.write(second, b"b\n")
    os.close(second)
    return "no_eof_while_one_writer=%s %s" % (no_eof, reader.finish(10))


@scenario("fifo_cat", "cat_pipe_head_c", "`READER | head -c 100`: bytes, statuses of head, writer",
          "head prints 100 bytes and exits 0; the writer `yes > FIFO` dies of SIGPIPE (141)",
          choice="The reader's own status is not compared: cat dies of SIGPIPE (141), "
                 "pipegate cat exits 6 'the local reader went away' (SPEC section 7: broken "
                 "pipe). The pipegate run also requires that the gateway log shows no reset "
                 "connection, in each of three rounds.")
def cat_pipe_head_c(ctx):
    fifo = ctx.mkfifo("p.fifo") if ctx.local else ctx.export_path("r")
    reader = "cat '%s'" % fifo if ctx.local else "'%s' cat '%s'" % (ctx.group.pipegate_bin,
                                                                     ctx.address("r"))
    seen = set()
    # Three rounds: how the bridge's connection ends is a race, one round may not show it.
    for round_ in range(3):
        if not ctx.local:
            export_free(ctx, "r")
        gw = ctx.group.gateway
        log_before = gw.read_log()
        pipeline = ctx.sh("%s | head -c 100" % reader, "pipeline%d" % round_)
        writer = ctx.sh("exec yes conformance > '%s'" % fifo, "yes%d" % round_)
        head_status = pipeline.wait(10)
        observation = "head=%d bytes exit %s, writer=%s" % (len(pipeline.out()), head_status,
                                                            writer.wait(10))
        if not ctx.local:
            # How the bridge's connection ended, from the gateway's log line for it.
            wait_until(lambda: re.search(r"from \S+ closed: ", gw.read_log()[len(log_before):]),
                       10, "the gateway to log the connection's end")
            new = gw.read_log()[len(log_before):].lower()
            if "reset" in new or "connection lost" in new:
                observation += ", gateway saw a connection reset"
        seen.add(observation)
    return " / ".join(sorted(seen))


@scenario("fifo_cat", "cat_big_transfer", "32 MiB (8 with QUICK) through, sha256",
          "every byte, in order; reader exits 0")
def cat_big_transfer(ctx):
    data = ctx.write_file("data", pattern((8 if QUICK else 32) << 20, seed=2))
    fifo, reader = cat_side(ctx, stdout=None)
    writer = ctx.spawn(["dd", "if=" + data, "of=" + fifo, "bs=1M"], "dd")
    return "out=%s reader=%s writer=%s" % (sha(reader.out()) if reader.wait(60) == 0 else "?",
                                         reader.status(), writer.wait(60))


@scenario("fifo_cat", "cat_reader_killed_writer_gets_sigpipe", "writer status after the reader "
          "is stopped by SIGTERM", "reader 143 (SIGTERM); `yes > FIFO` dies of SIGPIPE (141)",
          choice="Statuses in shell convention: a process killed by signal N counts as 128+N, "
                 "which is what pipegate exits with after handling SIGINT/SIGTERM.")
def cat_reader_killed_writer_gets_sigpipe(ctx):
    fifo, reader = cat_side(ctx, stdout=open(os.devnull, "wb"))
    writer = ctx.sh("exec yes conformance > '%s'" % fifo, "yes")
    wait_until(lambda: not blocked_in_fifo_open(writer) and os.path.exists(
        "/proc/%d/fd/1" % writer.pid) and os.readlink("/proc/%d/fd/1" % writer.pid) == fifo, 10,
        "the writer to open the FIFO")
    reader.signal(signal.SIGTERM)
    return "reader=%s writer=%s" % (reader.wait(10), writer.wait(10))


@scenario("fifo_cat", "cat_sigint_while_waiting", "status after SIGINT while waiting; then ENXIO",
          "cat killed by SIGINT (130); afterwards an O_NONBLOCK writer gets ENXIO (no reader)")
def cat_sigint_while_waiting(ctx):
    fifo, reader = cat_side(ctx)
    if not ctx.local:
        # The bridge waits for its stream to be open (the gateway holds the FIFO's read end).
        wait_until(lambda: reader_attached(fifo), 10, "the gateway to open the FIFO")
    else:
        wait_until(lambda: blocked_in_fifo_open(reader), 10, "cat to wait in open()")
    reader.signal(signal.SIGINT)
    status = reader.wait(10)
    return "status=%s then=%s" % (status, wait_until(
        lambda: try_open_nonblock_write(fifo) != "ok" and try_open_nonblock_write(fifo), 10,
        "the FIFO to have no reader"))


def reader_attached(fifo):
    """True once some process holds `fifo` open for reading (found through /proc)."""
    target = os.stat(fifo)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fd_dir = "/proc/%s/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
                if (st.st_ino, st.st_dev) != (target.st_ino, target.st_dev):
                    continue
                with open("/proc/%s/fdinfo/%s" % (pid, fd)) as info:
                    flags = next(int(line.split()[1], 8) for line in info
                                 if line.startswith("flags:"))
            except (OSError, StopIteration):
                continue
            if flags & 3 in (os.O_RDONLY, os.O_RDWR):
                return True
    return False


@scenario("fifo_cat", "cat_nonblocking_writer_enxio", "O_NONBLOCK open for write: before a "
          "reader, with a reader; reader's result", "ENXIO with no reader; ok with one; the "
          "reader then sees EOF (empty output, exit 0)")
def cat_nonblocking_writer_enxio(ctx):
    fifo = ctx.mkfifo("p.fifo") if ctx.local else ctx.export_path("r")
    before = try_open_nonblock_write(fifo)
    if ctx.local:
        reader = ctx.spawn(["cat", fifo], "reader")
    else:
        _, reader = cat_side(ctx)
    fd = hold_write_end(fifo)
    os.close(fd)
    return "before=%s with_reader=ok reader_out=%r exit=%s" % (before, reader.out()
                                                                if reader.wait(10) == 0 else "?",
                                                                reader.status())


@scenario("fifo_cat", "cat_atomic_records_from_4_writers", "4 writers x 500 records of 4096 "
          "bytes (PIPE_BUF), one write() each", "every record arrives whole")
def cat_atomic_records(ctx):
    fifo, reader = cat_side(ctx)
    writers = concurrent_record_writers(ctx, fifo, 4, 500, 4096)
    for w in writers:
        if w.wait(30) != 0:
            raise ScenarioError("writer failed: %s" % w.err())
    reader.wait(30)
    return count_torn(reader.out(), 4096, 4, 500) + " exit=%s" % reader.status()


# ---- write ----

def write_side(ctx, args, name="writer", **kwargs):
    """This side's writer of stdin into the FIFO: `cat > FIFO` or `pipegate write ADDRESS`."""
    if ctx.local:
        fifo = ctx.path("p.fifo")
        return ctx.sh("exec cat > '%s'" % fifo, name, **kwargs)
    return ctx.pipegate(["write"] + args + [ctx.address("w")], name, **kwargs)


def write_fifo(ctx):
    return ctx.mkfifo("p.fifo") if ctx.local else ctx.export_path("w")


def broken_pipe(proc):
    """A writer's status, with the two ways of saying "broken pipe" folded into one."""
    status = proc.status()
    if status == 141 or (status == 6 and "broken pipe" in proc.err()):
        return "broken pipe"
    return str(status)


@scenario("fifo_write", "write_bytes_then_eof", "bytes (sha256), writer and reader status",
          "reader gets 1 MiB and EOF; writer exits 0",
          choice="`pipegate write` is compared with `cat > FIFO` fed the same stdin.")
def write_bytes_then_eof(ctx):
    data = ctx.write_file("data", pattern(1 << 20, seed=3))
    fifo = write_fifo(ctx)
    reader = ctx.spawn(["cat", fifo], "reader")
    wait_until(lambda: blocked_in_fifo_open(reader), 10, "the reader to wait in open()")
    writer = write_side(ctx, [], stdin=open(data, "rb"))
    return "out=%s writer=%s reader=%s" % (sha(reader.out()) if reader.wait(30) == 0 else "?",
                                         writer.wait(30), reader.status())


@scenario("fifo_write", "write_no_reader", "a writer with no reader",
          "O_NONBLOCK open gives ENXIO ('no reader')",
          choice="pipegate write without --wait is held to the O_NONBLOCK oracle: ENXIO "
                 "locally equals exit 5 with 'no reader' (SPEC section 3, 'Open follows FIFO "
                 "rules'); the blocking open is the --wait scenario.")
def write_no_reader(ctx):
    fifo = write_fifo(ctx)
    if ctx.local:
        result = try_open_nonblock_write(fifo)
    else:
        writer = write_side(ctx, [], stdin=open(ctx.write_file("data", b"x\n"), "rb"))
        status = writer.wait(10)
        result = "ENXIO" if status == 5 and "no reader" in writer.err() else "exit %s" % status
    return "open=%s" % result


@scenario("fifo_write", "write_wait_blocks_until_reader", "writer blocks with no reader, then "
          "delivers", "`cat > FIFO` blocks in open(); when a reader comes it gets the bytes",
          choice="pipegate write --wait 30 is the blocking writer.")
def write_wait_blocks_until_reader(ctx):
    fifo = write_fifo(ctx)
    writer = write_side(ctx, ["--wait", "30"], stdin=open(ctx.write_file("d", b"late\n"), "rb"))
    waited = stays(writer.running)
    reader = ctx.spawn(["cat", fifo], "reader")
    return "waited=%s writer=%s out=%r reader=%s" % (waited, writer.wait(20), reader.out()
                                                      if reader.wait(10) == 0 else "?",
                                                      reader.status())


@scenario("fifo_write", "write_reader_leaves_broken_pipe", "`head -c 1000 FIFO` reads, writer "
          "streams /dev/zero", "head gets 1000 bytes, exit 0; writer dies of SIGPIPE",
          choice="SIGPIPE (141) locally equals pipegate write's exit 6 'broken pipe' "
                 "(SPEC section 7).")
def write_reader_leaves_broken_pipe(ctx):
    fifo = write_fifo(ctx)
    reader = ctx.spawn(["head", "-c", "1000", fifo], "head")
    wait_until(lambda: blocked_in_fifo_open(reader), 10, "head to wait in open()")
    writer = write_side(ctx, [], stdin=open("/dev/zero", "rb"))
    head = reader.wait(10)
    writer.wait(20)
    return "head=%d exit %s, writer=%s" % (len(reader.out()), head, broken_pipe(writer))


def held_reader(ctx, fifo):
    """A reader `cat FIFO`, and a write end we hold so it sees EOF only when we let go."""
    reader = ctx.spawn(["cat", fifo], "reader")
    return reader, hold_write_end(fifo)


@scenario("fifo_write", "write_lines_atomic_4_writers", "4 writers x 2000 lines of 1..3000 "
          "bytes at once: lines torn", "one write() per line: no line is torn",
          choice="The oracle writes each line with one write(); pipegate write --lines.")
def write_lines_atomic(ctx):
    fifo = write_fifo(ctx)
    reader, hold = held_reader(ctx, fifo)
    writers = []
    for k in range(4):
        lines = b"".join(b"L%d-%d:" % (k, i) + b"x" * ((i * 37 + k * 101) % 3000) + b"\n"
                         for i in range(2000))
        data = ctx.write_file("lines%d" % k, lines)
        if ctx.local:
            code = ("import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY)\n"
                    "for line in open(sys.argv[2],'rb'):\n    assert os.write(fd,line)==len(line)\n")
            writers.append(ctx.py(code, "writer%d" % k, fifo, data))
        else:
            writers.append(write_side(ctx, ["--lines"], "writer%d" % k, stdin=open(data, "rb")))
    statuses = [w.wait(60) for w in writers]
    os.close(hold)
    reader.wait(30)
    torn = 0
    count = 0
    for line in reader.out().split(b"\n")[:-1]:
        count += 1
        try:
            head, body = line.split(b":", 1)
            k, i = (int(v) for v in head[1:].split(b"-"))
            if body != b"x" * ((i * 37 + k * 101) % 3000):
                torn += 1
        except ValueError:
            torn += 1
    return "lines=%d torn=%d writers=%s" % (count, torn, statuses)


@scenario("fifo_write", "write_4096_blocks_4_writers", "4 writers x 300 records of 4096 bytes "
          "(dd bs=4096 / pipegate write)", "every record whole")
def write_4096_blocks(ctx):
    fifo = write_fifo(ctx)
    reader, hold = held_reader(ctx, fifo)
    writers = []
    for k in range(4):
        records = b""
        for seq in range(300):
            head = b"w%d-%06d|" % (k, seq)
            records += head + bytes([65 + k]) * (4096 - len(head) - 1) + b"\n"
        data = ctx.write_file("recs%d" % k, records)
        if ctx.local:
            writers.append(ctx.spawn(["dd", "if=" + data, "of=" + fifo, "bs=4096"], "dd%d" % k))
        else:
            writers.append(write_side(ctx, [], "writer%d" % k, stdin=open(data, "rb")))
    statuses = [w.wait(60) for w in writers]
    os.close(hold)
    reader.wait(30)
    return count_torn(reader.out(), 4096, 4, 300) + " writers=%s" % statuses


@scenario("fifo_write", "write_sigterm", "writer stopped by SIGTERM mid-stream: status; reader",
          "writer 143; the reader keeps the bytes written and sees EOF (exit 0)")
def write_sigterm(ctx):
    fifo = write_fifo(ctx)
    reader = ctx.spawn(["cat", fifo], "reader")
    wait_until(lambda: blocked_in_fifo_open(reader), 10, "the reader to wait in open()")
    import subprocess
    writer = write_side(ctx, [], stdin=subprocess.PIPE)
    writer.popen.stdin.write(b"partial\n")
    writer.popen.stdin.flush()
    wait_until(lambda: reader.out() == b"partial\n", 10, "the first line at the reader")
    writer.signal(signal.SIGTERM)
    status = writer.wait(10)
    writer.popen.stdin.close()
    return "writer=%s %s" % (status, reader.finish(10))
