"""SEND (spec send.md): an admin pushes a chunk to a node of another cluster.

``route`` answers ``SEND /<ID>?admin`` on the RAWX port (admin check, request
headers, the TaskReply); ``legacy`` is the transfer itself, run on a worker's
transfer thread with the node's one outbound client (``storage.rawxclient``).
"""
