import importlib
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest


def twin_params(name):
    """pytest params running a test against the compiled module and its twin."""
    return [
        pytest.param(f"_fastpath.{name}", id="fast"),
        pytest.param(f"storage.pure.{name}", id="pure"),
    ]


def import_twin(modname):
    return importlib.import_module(modname)


@pytest.fixture
def node_factory(tmp_path):
    """Start real nodes: ``node_factory(**config)``; all are killed at teardown."""
    from nodeutil import Node

    nodes = []

    def make(sub="n", **kwargs):
        path = tmp_path / f"{sub}{len(nodes)}"
        path.mkdir()
        node = Node(path, **kwargs).start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.kill()


@pytest.fixture
def node(node_factory):
    return node_factory()


@pytest.fixture
def beanstalkd_factory():
    """Real beanstalkd processes on free 127.0.0.1 ports: ``beanstalkd_factory(start=True,
    binlog=None, max_job_size=None)``; all are killed at teardown."""
    from beanstalkutil import beanstalkd_servers

    yield from beanstalkd_servers()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost, made by the openssl
    command once per test run: (cert path, key path) as str."""
    where = tmp_path_factory.mktemp("tls")
    cert_path, key_path = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key_path), "-out", str(cert_path), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True)
    return str(cert_path), str(key_path)
