"""``python -m tests.bench.http_parsers``: what h11 and h2 alone cost per request.

The ceiling of ``POST /v1/messages`` on one core before any work of ours:
the libraries the server uses (issue #4: HTTP/1.1 via h11, HTTP/2 via h2),
configured as the server configures them, parse the request h2load sends
and produce the response the API answers, in memory (no sockets, no API,
no engine).  Prints microseconds per request and the requests per second
that would leave; never asserts on timing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import h2.config
import h2.connection
import h2.events
import h11

BODY = b'{"from": "u00000", "to": "u00001", "text": "' + b"x" * 100 + b'"}'
SECRET = "tdgs_" + "x" * 43
RESPONSE = b'{"id": 1733212312312312312, "status": "SENT", "timestamp_ms": 1733212312312}'


def h11_cost(n: int) -> tuple[float, float]:
    """(parse, respond) microseconds per request, keep-alive."""
    request = (b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:4000\r\n"
               b"user-agent: h2load nghttp2/1.52.0\r\naccept: */*\r\n"
               b"authorization: Bearer " + SECRET.encode() + b"\r\n"
               b"content-type: application/json\r\n"
               b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
    conn = h11.Connection(h11.SERVER)
    parse = respond = 0.0
    for _ in range(n):
        t0 = time.perf_counter()
        conn.receive_data(request)
        while conn.next_event() is not h11.NEED_DATA:
            if conn.their_state is h11.DONE:
                break
        t1 = time.perf_counter()
        # As the server sends it: its own headers are not validated again.
        out = conn.send(h11.Response(status_code=201, headers=[
            (b"content-type", b"application/json"),
            (b"content-length", str(len(RESPONSE)).encode()), (b"server", b"tidings")],
            reason=b"Created", _parsed=True))
        out = (out or b"") + (conn.send(h11.Data(data=RESPONSE)) or b"")
        out += conn.send(h11.EndOfMessage()) or b""
        conn.start_next_cycle()
        t2 = time.perf_counter()
        parse += t1 - t0
        respond += t2 - t1
    return parse / n * 1e6, respond / n * 1e6


def h2_cost(n: int) -> tuple[float, float]:
    """(parse, respond) microseconds per request, one stream each."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.outbound_flow_control_window = 1 << 40  # the server acknowledges below
    requests = []
    for _ in range(n):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, [
            (":method", "POST"), (":path", "/v1/messages"), (":scheme", "http"),
            (":authority", "127.0.0.1:4000"), ("user-agent", "h2load nghttp2/1.52.0"),
            ("authorization", f"Bearer {SECRET}"), ("content-type", "application/json"),
            ("content-length", str(len(BODY)))])
        client.send_data(sid, BODY, end_stream=True)
        requests.append((sid, client.data_to_send()))
    # As the server configures it (appliance.transport.http2).
    server = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False))
    server.initiate_connection()
    server.outbound_flow_control_window = 1 << 40
    server.data_to_send()
    parse = respond = 0.0
    for sid, data in requests:
        t0 = time.perf_counter()
        for event in server.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        t1 = time.perf_counter()
        server.send_headers(sid, [(b":status", b"201"), (b"server", b"tidings"),
                                  (b"content-type", b"application/json"),
                                  (b"content-length", str(len(RESPONSE)).encode())])
        server.send_data(sid, RESPONSE, end_stream=True)
        server.data_to_send()
        t2 = time.perf_counter()
        parse += t1 - t0
        respond += t2 - t1
    return parse / n * 1e6, respond / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.http_parsers",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for name, cost in (("HTTP/1.1 (h11)", h11_cost), ("HTTP/2 (h2)", h2_cost)):
        runs = [cost(args.requests) for _ in range(args.runs)]
        parse = statistics.median(r[0] for r in runs)
        respond = statistics.median(r[1] for r in runs)
        total = parse + respond
        print(f"{name:15} parse {parse:6.1f} us + respond {respond:5.1f} us = {total:6.1f} us"
              f" per request: at most {1e6 / total:,.0f} requests/s on one core, before any"
              " API or engine work")


if __name__ == "__main__":
    main()
