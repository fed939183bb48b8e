"""A loopback TCP relay that a test can cut and restore: an outage of the service behind it.

``TcpRelay(port).start()`` listens on a free port and forwards every connection to
``127.0.0.1:port``. ``cut()`` drops every open connection and from then on accepts new ones but
never answers them (a host that swallows packets: the client's connect timeout is what ends the
wait); ``restore()`` forwards again. Plain threads and sockets: it runs beside the test, not in
the server under test.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpRelay:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._every: list[socket.socket] = []  # closed by stop(), whatever became of them
        self._cut = False
        self._stopped = False
        self.connections = 0  # forwarded connections so far

    def start(self) -> TcpRelay:
        self._listener.listen(128)
        self._acceptor = threading.Thread(target=self._accept, name="relay accept", daemon=True)
        self._acceptor.start()
        return self

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            doomed, self._open = self._open, set()
        for sock in doomed:
            self._close(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False
            held, self._open = self._open, set()
        for sock in held:  # connections accepted while cut: their clients gave up long ago
            self._close(sock)

    def stop(self) -> None:
        self._stopped = True
        self._close(self._listener)
        self._acceptor.join(5)
        with self._lock:
            every, self._every, self._open = self._every, [], set()
        for sock in every:
            self._close(sock)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cut
                self._open.add(client)
                self._every.append(client)
            if cut:
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._close(client)
                continue
            if self._stopped:
                self._close(client)
                self._close(upstream)
                return
            upstream.settimeout(None)
            with self._lock:
                self._open.add(upstream)
                self._every.append(upstream)
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source)
            self._close(sink)
