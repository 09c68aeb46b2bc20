"""The request log's backups (spec rsmc.md: LOG, ``GET server.log.N``): at each start
of a node with RSMC on, the access log file becomes ``PATH.1``, ``PATH.1`` becomes
``PATH.2``, ... up to ``rsmc_log_keep``; the oldest goes. A SIGHUP reload is not a
start: the file goes on."""
import os


def rotate(path, keep):
    """Shift PATH -> PATH.1 -> ... -> PATH.<keep> (dropping the last). Missing files
    are skipped; OSError for anything else."""
    for number in range(keep - 1, 0, -1):
        _move(f"{path}.{number}", f"{path}.{number + 1}")
    _move(path, f"{path}.1")


def _move(src, dst):
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        pass


def rotate_access_log(config):
    """At a start with RSMC on and the access log in a file: rotate it. Called by the
    master once it holds the node's locks (a second node must not rotate the first's
    log) and before it forks the workers, which open the file themselves."""
    path = config.access_log
    if not config.rsmc_host or path in ("-", "off"):
        return
    try:
        if os.path.getsize(path) == 0:
            return  # nothing logged yet (the master may just have created it)
    except FileNotFoundError:
        return
    rotate(path, config.rsmc_log_keep)
