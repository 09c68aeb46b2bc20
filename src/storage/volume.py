"""The volume: docroot preparation, the lock xattrs, and the liveness probe."""
import logging
import os
import time

from storage.config import Config

log = logging.getLogger(__name__)

LOCK_ATTRS = ("user.server.id", "user.server.ns", "user.server.type")


class VolumeError(RuntimeError):
    """The volume cannot be served (locked by another service, not writable...)."""


def lock_values(config: Config):
    return {
        "user.server.id": config.volume_id.encode(),
        "user.server.ns": config.namespace.encode(),
        "user.server.type": b"rawx",
    }


def check_lock(config: Config):
    """Raise VolumeError if the docroot is locked to another service (read-only check:
    a reload validates its new configuration with it before taking over)."""
    for name, value in lock_values(config).items():
        try:
            current = os.getxattr(config.docroot, name)
        except OSError:
            continue
        if current != value:
            raise VolumeError(
                f"volume {config.docroot} is locked to {name}={current.decode(errors='replace')}"
                f", not {value.decode()}")


def prepare(config: Config):
    """Create the docroot and its service dirs, then lock the volume to this service.
    Refuses (VolumeError) a volume locked to another service or namespace."""
    try:
        os.makedirs(config.docroot, mode=0o755, exist_ok=True)
        for sub in ("non_optimal_placement", "orphans"):
            os.makedirs(os.path.join(config.docroot, sub), mode=0o755, exist_ok=True)
    except OSError as exc:
        raise VolumeError(f"docroot {config.docroot}: {exc.strerror}") from None
    check_lock(config)
    for name, value in lock_values(config).items():
        try:
            os.getxattr(config.docroot, name)
        except OSError:
            try:
                os.setxattr(config.docroot, name, value)
            except OSError as exc:
                raise VolumeError(f"cannot lock volume {config.docroot} ({name}): "
                                  f"{exc.strerror}") from None


class LivenessProbe:
    """Every ``interval`` seconds, create and remove a probe file and dir in the docroot.
    ``ok`` is false while the last probe failed or the last success is too old."""

    MAX_AGE = 60.0

    def __init__(self, docroot, interval):
        self.docroot = docroot
        self.interval = interval
        self.last_success = time.monotonic()
        self.error = ""
        self.tag = f".probe-{os.getpid()}"

    @property
    def ok(self):
        return not self.error and time.monotonic() - self.last_success < self.MAX_AGE

    @property
    def reason(self):
        return f"volume unavailable: {self.error or 'probe too old'}"

    def run_once(self):
        path = os.path.join(self.docroot, self.tag)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.close(fd)
            os.unlink(path)
            os.mkdir(path + ".d")
            os.rmdir(path + ".d")
        except OSError as exc:
            if not self.error:
                log.error("liveness probe failed on %s: %s", self.docroot, exc)
            self.error = exc.strerror or str(exc)
            return False
        if self.error:
            log.warning("liveness probe on %s recovered", self.docroot)
        self.error = ""
        self.last_success = time.monotonic()
        return True
