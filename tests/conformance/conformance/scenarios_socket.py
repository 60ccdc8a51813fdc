"""`pipegate connect` and socket mounts of a unix export, against the local Unix socket.

Oracle: the same client program (socat, python3) connects to the server's socket directly.
pipegate: `socat`/python3 is replaced by `pipegate connect ADDRESS` (group connect), or the
same client connects to `pipegate mount ADDRESS LOCAL.sock` (group mount_socket).
"""

import errno
import os
import socket
import stat
import subprocess
import threading

from .harness import (PYTHON, QUICK, ScenarioError, connect_unix, errno_name, group, pattern,
                      recv_all, scenario, seconds, sha, stays, wait_until)

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unix_server.py")

group("connect", {"u": {"kind": "unix"}})
group("mount_socket", {"u": {"kind": "unix"}, "one": {"kind": "unix", "max_clients": 1}})


def server_path(ctx, export="u"):
    return ctx.path("srv.sock") if ctx.local else ctx.export_path(export)


def start_server(ctx, mode, export="u"):
    """The scenario's server on this side's socket path; returns (Proc, result file)."""
    path = server_path(ctx, export)
    if os.path.lexists(path):
        os.unlink(path)
    result = ctx.path("server.result")
    open(result, "w").close()
    proc = ctx.spawn([PYTHON, SERVER, mode, path, result], "server-" + mode)

    def ready():
        if not proc.running():
            raise ScenarioError("server exited: %s" % proc.err())
        return os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode)
    wait_until(ready, 10, "the server socket")
    ctx.cleanups.append(lambda: os.path.lexists(path) and os.unlink(path))
    return proc, result


def results(path):
    with open(path) as f:
        return f.read().splitlines()


def connect_client(ctx, args, name="client", **kwargs):
    """socat ARGS - UNIX-CONNECT:PATH locally, pipegate connect ADDRESS through the gateway."""
    if ctx.local:
        return ctx.spawn(["socat"] + args + ["-", "UNIX-CONNECT:" + server_path(ctx)], name,
                         **kwargs)
    return ctx.pipegate(["connect", ctx.address("u")], name, **kwargs)


def client_path(ctx, export="u"):
    """Where this side's socket client connects: the server itself, or a mount of it."""
    if ctx.local:
        return server_path(ctx, export)
    local, _ = ctx.mount(export, "m-%s.sock" % export)
    return local


# ---- connect ----

@scenario("connect", "connect_request_response", "1 MiB request, half-close, reply (sha256)",
          "server reads to EOF (the client's SHUT_WR), replies; client prints it, exits 0",
          choice="Oracle `socat -t 30 - UNIX-CONNECT:` (-t 30 so socat waits for the reply).")
def connect_request_response(ctx):
    data = ctx.write_file("data", pattern(1 << 20, seed=4))
    _, result = start_server(ctx, "sha")
    client = connect_client(ctx, ["-t", "30"], stdin=open(data, "rb"))
    status = client.wait(30)
    return "reply=%r exit=%s" % (client.out().decode(), status)


@scenario("connect", "connect_server_closes_first", "server sends a line and closes; client's "
          "stdin stays open", "socat prints the line and exits 0 about 0.5 s after the EOF",
          choice="'Ends' means the client exited by itself within 5 s of the server's close.")
def connect_server_closes_first(ctx):
    start_server(ctx, "banner")
    client = connect_client(ctx, [], stdin=subprocess.PIPE)
    try:
        ended = wait_until(lambda: not client.running(), 5, "the client to end") and True
    except ScenarioError:
        ended = False
    out = client.out()
    client.popen.stdin.close()
    return "out=%r ended_by_itself=%s exit=%s" % (out, ended, client.status() if ended else "-")


@scenario("connect", "connect_server_half_closes_first", "server sends a banner and SHUT_WR, "
          "then reads the client's 256 KiB", "client prints the banner; server gets all bytes; "
          "client exits 0")
def connect_server_half_closes_first(ctx):
    data = ctx.write_file("data", pattern(256 << 10, seed=5))
    _, result = start_server(ctx, "halfclose")
    client = connect_client(ctx, ["-t", "30"], stdin=open(data, "rb"))
    status = client.wait(30)
    wait_until(lambda: results(result), 10, "the server's result")
    return "out=%r server=%s exit=%s" % (client.out(), results(result), status)


@scenario("connect", "connect_duplex_echo", "8 MiB (2 with QUICK) through an echo server, both "
          "directions at once", "the echo is byte-identical (sha256); exit 0")
def connect_duplex_echo(ctx):
    data = ctx.write_file("data", pattern((2 if QUICK else 8) << 20, seed=6))
    start_server(ctx, "echo")
    client = connect_client(ctx, ["-t", "30"], stdin=open(data, "rb"))
    status = client.wait(60)
    return "echo=%s in=%s exit=%s" % (sha(client.out()), sha(open(data, "rb").read()), status)


def refusal(ctx, prepare):
    """Local: python's connect() errno; pipegate: connect's exit status folded into one."""
    path = server_path(ctx)
    if os.path.lexists(path):
        os.unlink(path)
    prepare(path)
    if ctx.local:
        try:
            connect_unix(path).close()
            return "connected"
        except OSError as error:
            return errno_name(error.errno)
    client = ctx.pipegate(["connect", ctx.address("u")], "client")
    status = client.wait(10)
    if status == 5 and "no reader" in client.err():
        return "ENOENT" if "does not exist" in client.err() else "ECONNREFUSED"
    return "exit %s: %s" % (status, client.err().strip())


def bound_not_listening(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()


@scenario("connect", "connect_no_listener", "socket file with nothing listening",
          "connect() fails ECONNREFUSED",
          choice="ECONNREFUSED locally equals pipegate connect's exit 5 'no reader' "
                 "(docs/decisions.md: a socket that refuses connections is NO_READER).")
def connect_no_listener(ctx):
    return "connect=%s" % refusal(ctx, bound_not_listening)


@scenario("connect", "connect_no_socket_file", "no socket file at all",
          "connect() fails ENOENT",
          choice="ENOENT locally equals exit 5 'no reader: ... does not exist (yet)' "
                 "(SPEC section 7).")
def connect_no_socket_file(ctx):
    return "connect=%s" % refusal(ctx, lambda path: None)


@scenario("connect", "connect_sigterm", "client stopped by SIGTERM while connected: status; the "
          "server sees EOF", "socat exits 143; the server reads EOF")
def connect_sigterm(ctx):
    _, result = start_server(ctx, "hold")
    client = connect_client(ctx, [], stdin=subprocess.PIPE)
    wait_until(lambda: "accepted" in results(result), 10, "the server to accept")
    client.signal(15)
    status = client.wait(10)
    client.popen.stdin.close()
    wait_until(lambda: "eof" in results(result), 10, "the server to read EOF")
    return "status=%s server=%s" % (status, results(result))


# ---- socket mount ----

@scenario("mount_socket", "msock_request_response", "socat: 1 MiB request, half-close, reply",
          "reply '1048576 SHA'; socat exits 0")
def msock_request_response(ctx):
    data = ctx.write_file("data", pattern(1 << 20, seed=7))
    start_server(ctx, "sha")
    path = client_path(ctx)
    client = ctx.spawn(["socat", "-t", "30", "-", "UNIX-CONNECT:" + path], "socat",
                       stdin=open(data, "rb"))
    return "reply=%r exit=%s" % (client.out().decode() if client.wait(30) == 0 else "?",
                                 client.status())


@scenario("mount_socket", "msock_client_half_close", "python: send, shutdown(SHUT_WR), read "
          "the reply to EOF", "the reply, then EOF (recv returns b'')")
def msock_client_half_close(ctx):
    start_server(ctx, "sha")
    sock = connect_unix(client_path(ctx))
    sock.sendall(b"question\n")
    sock.shutdown(socket.SHUT_WR)
    reply = recv_all(sock)
    sock.close()
    return "reply=%r" % reply


@scenario("mount_socket", "msock_server_half_close", "python: server sends banner + SHUT_WR, "
          "client reads EOF, then sends 64 KiB", "banner then EOF; the server gets every byte")
def msock_server_half_close(ctx):
    _, result = start_server(ctx, "halfclose")
    sock = connect_unix(client_path(ctx))
    banner = recv_all(sock)
    data = pattern(64 << 10, seed=8)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    wait_until(lambda: results(result), 10, "the server's result")
    sock.close()
    return "banner=%r server=%s" % (banner, results(result))


@scenario("mount_socket", "msock_server_closes_first", "python: server sends a line and "
          "closes; client reads, then writes", "line then EOF; a later write fails (EPIPE)",
          choice="A write after the peer closed fails locally at once; through pipegate the "
                 "close has to cross the network, so any of the first writes within 5 s may "
                 "fail, with EPIPE or ECONNRESET (both mean 'peer gone', as over TCP).")
def msock_server_closes_first(ctx):
    start_server(ctx, "banner")
    sock = connect_unix(client_path(ctx))
    line = recv_all(sock)
    failure = "no failure"
    for attempt in range(500):
        try:
            sock.send(b"x" * 1024, socket.MSG_NOSIGNAL)
        except OSError as error:
            failure = "write fails" if error.errno in (errno.EPIPE, errno.ECONNRESET) else \
                errno_name(error.errno)
            break
        if not stays(lambda: True, 0.01):
            break
    sock.close()
    return "line=%r then=%s" % (line, failure)


@scenario("mount_socket", "msock_50_concurrent_clients", "50 clients at once, each its own "
          "request and reply", "50 correct replies")
def msock_many_clients(ctx):
    start_server(ctx, "sha")
    path = client_path(ctx)
    replies = {}

    def client(k):
        try:
            sock = connect_unix(path, 30)
            data = pattern(8192 + k, seed=100 + k)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            replies[k] = recv_all(sock) == b"%d %s\n" % (len(data), sha(data).encode())
            sock.close()
        except OSError as error:
            replies[k] = errno_name(error.errno)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds(60))
    return "ok=%d/50 others=%s" % (sum(v is True for v in replies.values()),
                                   sorted(set(str(v) for v in replies.values() if v is not True)))


@scenario("mount_socket", "msock_no_listener", "connect to a mounted socket whose server has no "
          "listener", "connect() fails ECONNREFUSED",
          choice="The mount always accepts a connect, so 'refused' is: connect() fails "
                 "ECONNREFUSED, or the connection ends (EOF or ECONNRESET) with no byte "
                 "within 5 s.")
def msock_no_listener(ctx):
    path = server_path(ctx)
    if os.path.lexists(path):
        os.unlink(path)
    bound_not_listening(path)
    ctx.cleanups.append(lambda: os.unlink(path))
    target = client_path(ctx)
    try:
        sock = connect_unix(target, 5)
    except OSError as error:
        return "client sees %s" % ("refused" if error.errno == errno.ECONNREFUSED
                                   else errno_name(error.errno))
    try:
        data = sock.recv(1)
        return "client sees %s" % ("refused" if data == b"" else "data %r" % data)
    except socket.timeout:
        return "client sees no answer in 5 s"
    except OSError as error:
        return "client sees %s" % ("refused" if error.errno == errno.ECONNRESET
                                   else errno_name(error.errno))
    finally:
        sock.close()


@scenario("mount_socket", "msock_busy_server_queues", "second client while the first holds the "
          "only instance", "the second waits (queued in the backlog), then gets its reply",
          choice="Oracle: a server that serves one connection at a time; pipegate: the same "
                 "server behind an export with max_clients = 1. 'Waits' means no reply and no "
                 "EOF in 300 ms.")
def msock_busy_server_queues(ctx):
    start_server(ctx, "serial", "one" if not ctx.local else "u")
    path = client_path(ctx, "one" if not ctx.local else "u")
    gw = ctx.group.gateway
    granted = gw.read_log().count("decision=granted")
    first = connect_unix(path, 10)
    if not ctx.local:
        # The first connection holds the export's one instance once the gateway granted it.
        wait_until(lambda: gw.read_log().count("decision=granted") > granted, 10,
                   "the first stream to be granted")
    second = connect_unix(path, 10)
    second.sendall(b"second")
    second.shutdown(socket.SHUT_WR)
    second.settimeout(seconds(0.3))
    try:
        early = second.recv(100)
        waited = "no, got %r" % early
    except socket.timeout:
        waited = "yes"
    except OSError as error:
        waited = "no, %s" % errno_name(error.errno)
    first.sendall(b"first")
    first.shutdown(socket.SHUT_WR)
    reply_first = recv_all(first)
    second.settimeout(seconds(10))
    try:
        reply_second = recv_all(second) if waited == "yes" else b"-"
    except OSError as error:
        reply_second = errno_name(error.errno).encode()
    first.close()
    second.close()
    return "second waited=%s first=%r second=%r" % (waited, reply_first, reply_second)
