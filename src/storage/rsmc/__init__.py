"""RSMC (spec rsmc.md): remote management commands on a port of their own.

``parser`` turns bytes into requests (sans-I/O); ``commands`` carries them out on the
node's chunks (blocking: on a transfer thread); ``connection`` is the loop's side;
``client`` is the manager's side (``storage-node rsmc``).
"""
