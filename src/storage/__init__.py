"""storage-node: an OpenIO RAWX-compatible chunk service and friends."""
