"""A TCP proxy in front of a test's redis-server that can lose the replies to scripts.

What a client sees when the network drops a reply, or Redis answers after the client's
timeout: the command ran, the client does not know. While :attr:`RedisProxy.drop_script_replies`
is set, a connection that sends a script call (EVALSHA/EVAL) is cut off from its
replies from then on (the bytes are read and thrown away; the connection stays open),
so its client times out. Only loopback; one thread per direction of each connection.
"""

from __future__ import annotations

import socket
import threading

from worker.redis_server import free_port

_SCRIPT_CALLS = (b"EVALSHA", b"evalsha", b"EVAL\r\n", b"eval\r\n")


class RedisProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.drop_script_replies = False
        self.dropped = 0  # connections cut off from their replies
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, server]
            cut = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, cut), daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client, cut), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        while data := _recv(client):
            if (
                self.drop_script_replies
                and not cut.is_set()
                and any(call in data for call in _SCRIPT_CALLS)
            ):
                cut.set()
                self.dropped += 1
            try:
                server.sendall(data)
            except OSError:
                return
        _close(server)

    def _replies(self, server: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        while data := _recv(server):
            if cut.is_set():
                continue
            try:
                client.sendall(data)
            except OSError:
                return
        _close(client)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
