"""The TLS listener's connections: the same HTTP/1.1 connection over an SSL socket.

oio-rawx serves a second, TLS, address (``tls_rawx_url``) with the same handler. Here a
``TlsConnection`` is a ``Connection`` whose bytes go through Python's ssl module:

- the handshake runs non-blocking on the loop before the first request head, bounded by
  ``timeout_read_header``;
- the raw-fd fast paths are off: request bodies are received and fed to the upload on an
  I/O thread (``feed_pump``, ``chunked_pump``), file bodies are read with ``pread`` and encrypted instead of
  ``sendfile`` (the plain port keeps ``sendfile``);
- decrypted bytes can wait inside the SSL object while the socket itself has nothing to
  read, so whenever the connection wants to read again it first serves what is pending.
"""
import logging
import os
import ssl
import time

from storage.http.connection import S_HEAD, Connection
from storage.loop import READ, WRITE

log = logging.getLogger(__name__)

S_HANDSHAKE = -1
FILE_PIECE = 64 << 10  # bytes read from a chunk file per TLS send
PENDING_ROUNDS = 16  # reads of buffered plaintext per loop turn before yielding


class TlsSetupError(ValueError):
    """The certificate or the key cannot be used; str() says which and why."""


def server_context(cert_file, key_file):
    """A server-side SSLContext with the reference's files (PEM certificate chain and
    key). TLS 1.2 minimum, the library's default ciphers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION if hasattr(ssl, "OP_NO_RENEGOTIATION") else 0
    for directive, path in (("tls_cert_file", cert_file), ("tls_key_file", key_file)):
        if not os.access(path, os.R_OK):
            raise TlsSetupError(f"{directive}: cannot read {path}")
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"tls_cert_file/tls_key_file: cannot load {cert_file} and "
                            f"{key_file}: {exc}") from None
    return context


class TlsConnection(Connection):
    def __init__(self, sock, peer, loop, app, worker, context):
        tls_sock = context.wrap_socket(sock, server_side=True,
                                       do_handshake_on_connect=False)
        super().__init__(tls_sock, peer, loop, app, worker)
        self.direct_io = False
        self.fast_get = None  # the compiled GET path writes to the raw socket
        self._more = 0  # SSLSocket.send takes no flags
        self.state = S_HANDSHAKE
        self.deadline = time.monotonic() + self.config.timeout_read_header
        self._pending_scheduled = False

    def on_readable(self):
        if self.state == S_HANDSHAKE:
            self._handshake()
            return
        super().on_readable()
        self._serve_pending()

    def on_writable(self):
        if self.state == S_HANDSHAKE:
            self._handshake()
            return
        super().on_writable()

    def _handshake(self):
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", self.peer, exc)
            self.close()
            return
        self.state = S_HEAD
        self.deadline = time.monotonic() + self.config.timeout_read_header
        self._watch(READ)
        self._serve_pending()

    def _back_from_thread(self):
        # The socket is watched again without _watch: plaintext the thread left in the
        # SSL object (a pipelined request) must get its turn after the callback.
        if not super()._back_from_thread():
            return False
        self._schedule_pending()
        return True

    def _watch(self, events):
        super()._watch(events)
        if events == READ:
            self._schedule_pending()

    def _schedule_pending(self):
        """A loop turn for plaintext already decrypted: the socket itself may never
        become readable for it."""
        if not self._pending_scheduled and not self.closed and not self.busy \
                and self.sock.pending():
            self._pending_scheduled = True
            self.loop.call_later(0, self._pending_turn)

    def _pending_turn(self):
        self._pending_scheduled = False
        self._serve_pending()

    def _serve_pending(self):
        for _ in range(PENDING_ROUNDS):
            if self.closed or self.busy or self._events != READ or not self.sock.pending():
                return
            super().on_readable()
        self._schedule_pending()  # more left: yield to the other connections first

    def _send_file(self, item):
        # Retries after SSLWantWrite resend the same bytes: same offset, same length.
        data = os.pread(item.fd, min(item.remaining, FILE_PIECE), item.offset)
        if not data:
            return 0
        return self.sock.send(data)
