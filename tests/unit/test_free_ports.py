"""orchestration/local_head.py's ports for `ray start`: distinct within one request, since a
Ray node refuses two of its components on one port."""

from __future__ import annotations

import socket

from orchestration.local_head import free_ports


def test_ports_are_distinct_and_bindable():
    ports = free_ports(12)
    assert len(set(ports)) == 12
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
