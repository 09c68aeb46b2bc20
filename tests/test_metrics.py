"""storage.rawx.metrics: the Prometheus text of /stat, laid out as oio-rawx writes it
(spec rawx.md section 6), then our own metrics."""
from storage import config as configmod
from storage.rawx import metrics
from storage.stats import COUNTERS

KINDS = ("put", "post", "copy", "get", "head", "del", "stat", "info", "raw", "other")


def make_config(service_id="rawx-1", docroot="/srv/rawx-1"):
    text = f"listen 127.0.0.1:6201\nnamespace OPENIO\ndocroot {docroot}\n"
    if service_id:
        text += f"service_id {service_id}\n"
    return configmod.parse_text(text)


def numbered_totals():
    """Every counter a distinct value, so a sample reading the wrong one shows."""
    totals = {name: 1000 + i for i, name in enumerate(COUNTERS)}
    totals["connections"] = 7
    return totals


GAUGES = {"volume.free_bytes": 5000, "volume.used_bytes": 6000, "connections": 7}


def test_reference_block_is_the_pinned_layout():
    totals = numbered_totals()
    lines = metrics.render(totals, GAUGES, make_config()).splitlines()
    ident = 'service_id="rawx-1",volume="/srv/rawx-1",namespace="OPENIO"'
    want = [f'rawx_requests_hits_total{{{ident},method="all"}} {totals["req.hits"]}']
    want += [f'rawx_requests_hits_total{{{ident},method="{k}"}} {totals["req.hits." + k]}'
             for k in KINDS]
    want.append(f'rawx_requests_duration_ms_total{{{ident},method="all"}} '
                f'{totals["req.time"]}')
    want += [f'rawx_requests_duration_ms_total{{{ident},method="{k}"}} '
             f'{totals["req.time." + k]}' for k in KINDS]
    want += [f'rawx_responses_hits_total{{{ident},status_code="{c}"}} '
             f'{totals["rep.hits." + c]}'
             for c in ("2xx", "4xx", "5xx", "other", "403", "404")]
    want += [f'rawx_responses_size_byte_total{{{ident},direction="out"}} '
             f'{totals["rep.bread"]}',
             f'rawx_responses_size_byte_total{{{ident},direction="in"}} '
             f'{totals["rep.bwritten"]}']
    assert lines[:len(want)] == want


def test_own_metrics_come_after_under_own_names_with_help_and_type():
    text = metrics.render(numbered_totals(), GAUGES, make_config())
    lines = text.splitlines()
    first_comment = next(i for i, line in enumerate(lines) if line.startswith("#"))
    assert first_comment == 2 * 11 + 6 + 2  # the reference block has no comment line
    own = lines[first_comment:]
    ident = 'service_id="rawx-1",volume="/srv/rawx-1",namespace="OPENIO"'
    assert own == [
        "# HELP storage_node_volume_free_bytes Bytes of the volume's filesystem "
        "available to the node.",
        "# TYPE storage_node_volume_free_bytes gauge",
        f"storage_node_volume_free_bytes{{{ident}}} 5000",
        "# HELP storage_node_volume_used_bytes Bytes of the volume's filesystem in use.",
        "# TYPE storage_node_volume_used_bytes gauge",
        f"storage_node_volume_used_bytes{{{ident}}} 6000",
        "# HELP storage_node_open_connections Client connections open on the node, "
        "all workers.",
        "# TYPE storage_node_open_connections gauge",
        f"storage_node_open_connections{{{ident}}} 7",
    ]
    assert not any(line.startswith("rawx_") for line in own if not line.startswith("#"))
    assert text.endswith("\n")


def test_service_id_falls_back_to_the_listen_address():
    text = metrics.render(numbered_totals(), GAUGES, make_config(service_id=""))
    assert text.startswith('rawx_requests_hits_total{service_id="127.0.0.1:6201",')


def test_label_values_are_escaped():
    text = metrics.render(numbered_totals(), GAUGES,
                          make_config(docroot='/srv/a"b\\c'))
    assert 'volume="/srv/a\\"b\\\\c"' in text.splitlines()[0]
