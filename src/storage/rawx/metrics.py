"""``GET /stat?format=prometheus``: the node's counters in the Prometheus text format,
laid out as oio-rawx writes them (spec rawx.md section 6), then metrics of our own.

The reference block comes first, one sample a line, no comment lines, every sample
labelled ``service_id`` (the service id, else the listen address), ``volume`` (the
docroot) and ``namespace``:

- ``rawx_requests_hits_total`` then ``rawx_requests_duration_ms_total`` by ``method``
  (``all`` is the bare ``req.hits`` / ``req.time``; the durations are microseconds, as
  the reference's ``req.time`` counters are, despite the name);
- ``rawx_responses_hits_total`` by ``status_code``;
- ``rawx_responses_size_byte_total`` by ``direction``: ``out`` is ``rep.bread`` (bytes
  sent to clients), ``in`` is ``rep.bwritten`` (bytes received).

Our own metrics follow under ``storage_node_*`` names, each with ``# HELP`` and
``# TYPE`` lines, so dashboards written for oio-rawx read the same series after the
swap and nothing of ours can be mistaken for the reference's.
"""
from storage.stats import KINDS

METHODS = ("all",) + KINDS
STATUS_CODES = ("2xx", "4xx", "5xx", "other", "403", "404")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (name, type, help, how to read the value from the gauges dict)
OWN_METRICS = (
    ("storage_node_volume_free_bytes", "gauge",
     "Bytes of the volume's filesystem available to the node.", "volume.free_bytes"),
    ("storage_node_volume_used_bytes", "gauge",
     "Bytes of the volume's filesystem in use.", "volume.used_bytes"),
    ("storage_node_open_connections", "gauge",
     "Client connections open on the node, all workers.", "connections"),
)


def label_value(text):
    """A label value escaped as the text format wants it (backslash, quote, newline)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def identity_labels(config):
    """The labels every sample carries: 'service_id="...",volume="...",namespace="..."'."""
    return (f'service_id="{label_value(config.volume_id)}",'
            f'volume="{label_value(config.docroot)}",'
            f'namespace="{label_value(config.namespace)}"')


def reference_lines(totals, labels):
    """The oio-rawx block: one sample a line, in the reference's order."""
    out = []
    for name, prefix in (("rawx_requests_hits_total", "req.hits"),
                         ("rawx_requests_duration_ms_total", "req.time")):
        for method in METHODS:
            counter = prefix if method == "all" else f"{prefix}.{method}"
            out.append(f'{name}{{{labels},method="{method}"}} {totals[counter]}')
    for code in STATUS_CODES:
        out.append(f'rawx_responses_hits_total{{{labels},status_code="{code}"}} '
                   f'{totals["rep.hits." + code]}')
    out.append(f'rawx_responses_size_byte_total{{{labels},direction="out"}} '
               f'{totals["rep.bread"]}')
    out.append(f'rawx_responses_size_byte_total{{{labels},direction="in"}} '
               f'{totals["rep.bwritten"]}')
    return out


def own_lines(gauges, labels):
    """Our metrics after the reference block, each with its HELP and TYPE lines."""
    out = []
    for name, kind, text, key in OWN_METRICS:
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}",
                f"{name}{{{labels}}} {gauges[key]}"]
    return out


# feeds: (name, type, help, index in a (pending, done, errors, state) counts row)
FEED_METRICS = (
    ("storage_node_feed_pending", "gauge", "Chunks queued for the feed, not delivered yet.",
     0),
    ("storage_node_feed_done_total", "counter", "Deliveries the feed completed.", 1),
    ("storage_node_feed_errors_total", "counter", "Failed delivery attempts of the feed.",
     2),
)
FEED_STATES = ("ok", "retrying", "blocked")


def feed_lines(feeds, labels):
    """The feeds' metrics, labelled ``feed``: ``feeds`` is [(id, pending, done, errors,
    state)]; the state is one sample per state name, 1 for the current one."""
    if not feeds:
        return []
    out = []
    for name, kind, text, index in FEED_METRICS:
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        out += [f'{name}{{{labels},feed="{row[0]}"}} {row[1 + index]}' for row in feeds]
    name = "storage_node_feed_state"
    out += [f"# HELP {name} The feed's state (ok, retrying, blocked): 1 for the current "
            "one.", f"# TYPE {name} gauge"]
    for row in feeds:
        out += [f'{name}{{{labels},feed="{row[0]}",state="{state}"}} '
                f'{int(row[4] == state)}' for state in FEED_STATES]
    return out


def render(totals, gauges, config, feeds=()):
    """The whole exposition (str, newline-terminated). ``totals``: the node-wide
    counters by /stat name; ``gauges``: volume.free_bytes, volume.used_bytes (bytes)
    and connections; ``feeds``: [(id, pending, done, errors, state)]."""
    labels = identity_labels(config)
    return "\n".join(reference_lines(totals, labels) + own_lines(gauges, labels)
                     + feed_lines(feeds, labels)) + "\n"
