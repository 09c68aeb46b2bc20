"""A real TCP relay on 127.0.0.1 for node-to-node tests: it forwards bytes both ways
between its clients and one upstream, optionally slowly, records what the clients
sent, and can cut every connection at once (a link or a target failing mid-way)."""
import socket
import threading
import time


class Relay:
    """``Relay(upstream_port, rate=None)``: listen on ``port``; ``rate`` bytes/s caps
    the client -> upstream direction (None: as fast as it goes). The upstream port may
    be set later (``upstream_port``), once the node behind it runs: the node may need
    the relay's address first (as its service_id, for its Host check)."""

    def __init__(self, upstream_port=None, rate=None):
        self.upstream_port = upstream_port
        self.rate = rate
        self.sent = bytearray()  # what clients sent (first 1 MiB)
        self.forwarded = 0  # client -> upstream bytes
        # when set: the last byte of the first piece of each connection that carries
        # bytes past the request head is flipped (a body damaged on the way)
        self.corrupt = False
        self.corrupted = 0  # bodies damaged so far
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._socks = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port),
                                                    timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False),
                             daemon=True).start()

    def _pipe(self, src, dst, upward):
        piece = 16 << 10 if upward and self.rate else 256 << 10
        seen = b""  # the request head so far, until its end is found
        try:
            while not self._stop.is_set():
                data = src.recv(piece)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if upward and self.corrupt and seen is not None:
                    end = (seen + data).find(b"\r\n\r\n")
                    if end < 0:
                        seen = (seen + data)[-3:]
                    elif end + 4 < len(seen) + len(data):  # body bytes in this piece
                        data = data[:-1] + bytes([data[-1] ^ 0xFF])
                        seen = None
                        with self._lock:
                            self.corrupted += 1
                    else:
                        seen = b"\r\n\r\n"  # the head ended exactly here
                if upward:
                    with self._lock:
                        if len(self.sent) < 1 << 20:
                            self.sent += data[:(1 << 20) - len(self.sent)]
                        self.forwarded += len(data)
                    if self.rate:
                        time.sleep(len(data) / self.rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if not upward:
                for sock in (src, dst):
                    try:
                        sock.close()
                    except OSError:
                        pass

    def cut(self):
        """Reset every relayed connection now (the link dies mid-transfer)."""
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                sock.close()
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self._listener.close()
        self.cut()
        self._thread.join(2)
