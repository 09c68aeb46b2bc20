"""SWAP's file groups on a storage node (spec swap.md, "Configuration and file groups
(pinned)"): one partition and two groups whose UUIDs are stable across restarts
(uuid5 of the volume's id), so peers may cache them.

- ``chunks`` (``<namespace>/chunks``): the volume's chunk tree, read-only except
  DELETE_PATH; a bare ``<CHUNKID>`` resolves to its hashed path; names starting with
  ``.`` (the node's own files) are not part of it.
- ``files`` (``<namespace>/files``): the plain file area at ``swap_files_dir``.

``resolve`` confines every path to its group: a leading ``/`` is accepted, ``""`` is
the root, ``..`` and absolute paths cannot leave it, and a symlink that leads out of
the group's root is refused.
"""
import os
import uuid

from storage.rawx.meta import valid_chunk_id

_ROOT_NS = uuid.UUID("6c0d7f44-5d0b-4b9e-9b53-8e4f1f3e2a11")  # ours, fixed forever


class OutsideGroup(Exception):
    """A path that resolves outside its group's root."""


class FileGroup:
    """``name``, ``uuid``, ``slice`` (its one slice's UUID), ``namespace``, ``root``
    (absolute, real), ``writable``, and ``repo`` for the chunks group."""

    def __init__(self, name, volume_id, namespace, root, writable, repo=None):
        self.name = name
        self.uuid = uuid.uuid5(_ROOT_NS, f"{volume_id}/group/{name}")
        self.slice = uuid.uuid5(_ROOT_NS, f"{volume_id}/slice/{name}")
        self.namespace = f"{namespace}/{name}"
        self.root = os.path.realpath(root)
        self.writable = writable
        self.repo = repo

    def resolve(self, path):
        """The absolute path ``path`` names in the group; OutsideGroup if it leaves."""
        rel = path.lstrip("/")
        if self.repo is not None and valid_chunk_id(rel):
            return self.repo.chunk_path(rel.upper())
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise OutsideGroup(path)
        if self.repo is not None and any(p.startswith(".") for p in parts):
            raise OutsideGroup(path)  # the node's own files are not chunks
        full = os.path.join(self.root, *parts)
        if not self.inside(full):
            raise OutsideGroup(path)
        return full

    def inside(self, full):
        """Whether ``full`` (which may not exist yet) stays in the root once its
        existing part's symlinks are resolved."""
        real = os.path.realpath(full)
        return real == self.root or real.startswith(self.root + os.sep)

    def visible(self, name):
        """Whether a directory entry is listed (the chunks group hides dot-names)."""
        return self.repo is None or not name.startswith(".")


def make_groups(config, repo):
    """[FileGroup]: chunks, and files when swap_files_dir is set."""
    groups = [FileGroup("chunks", config.volume_id, config.namespace, config.docroot,
                        False, repo)]
    if config.swap_files_dir:
        groups.append(FileGroup("files", config.volume_id, config.namespace,
                                config.swap_files_dir, True))
    return groups


def partition_uuid(config):
    return uuid.uuid5(_ROOT_NS, f"{config.volume_id}/partition")


def java_order(value):
    """Sort key of a UUID as Java compares them: signed high 64 bits, then signed low."""
    high, low = value.int >> 64, value.int & ((1 << 64) - 1)
    return (high - (1 << 64) if high >> 63 else high, low - (1 << 64) if low >> 63 else low)
