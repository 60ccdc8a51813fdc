"""A small Unix stream socket server both sides of a socket scenario talk to.

Usage: python3 unix_server.py MODE PATH RESULT_FILE
The socket is bound under a temporary name and renamed to PATH once listening, so PATH appears
ready. Each connection appends one line to RESULT_FILE. Modes:
  sha         read until EOF, reply "LEN SHA\\n", close (one thread per connection)
  echo        echo everything; on EOF shut down the write side
  banner      send "hello\\n" and close at once (the server closes first)
  halfclose   send "banner\\n", shutdown(SHUT_WR), read until EOF, record "LEN SHA"
  serial      as sha, but one connection at a time (accept, serve fully, accept the next)
  hold        accept, record "accepted", read until EOF, record "eof"
"""

import hashlib
import os
import socket
import sys
import threading


def record(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


def read_all(conn):
    h = hashlib.sha256()
    n = 0
    while True:
        data = conn.recv(65536)
        if not data:
            return n, h.hexdigest()[:16]
        n += len(data)
        h.update(data)


def serve(mode, conn, result):
    try:
        if mode in ("sha", "serial"):
            n, digest = read_all(conn)
            conn.sendall(b"%d %s\n" % (n, digest.encode()))
            record(result, "%d %s" % (n, digest))
        elif mode == "echo":
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            record(result, "echo done")
        elif mode == "banner":
            conn.sendall(b"hello\n")
            record(result, "closed")
        elif mode == "halfclose":
            conn.sendall(b"banner\n")
            conn.shutdown(socket.SHUT_WR)
            n, digest = read_all(conn)
            record(result, "%d %s" % (n, digest))
        elif mode == "hold":
            record(result, "accepted")
            read_all(conn)
            record(result, "eof")
    except OSError as error:
        record(result, "error %s" % error)
    finally:
        conn.close()


def main():
    mode, path, result = sys.argv[1:4]
    tmp = "%s.tmp%d" % (path, os.getpid())
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(tmp)
    server.listen(64)
    os.rename(tmp, path)
    while True:
        conn, _ = server.accept()
        if mode == "serial":
            serve(mode, conn, result)
        else:
            threading.Thread(target=serve, args=(mode, conn, result), daemon=True).start()


if __name__ == "__main__":
    main()
