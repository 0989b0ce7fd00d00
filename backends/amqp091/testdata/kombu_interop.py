"""Kombu's side of carrot's interop tests (backends/amqp091/interop_test.go).

Usage: python3 kombu_interop.py MODE QUEUE, with the broker in the environment:
KOMBU_HOST, KOMBU_PORT, KOMBU_VHOST, KOMBU_USER, KOMBU_PASSWORD.

  get      gets one message from QUEUE (waiting up to 10 s), acks it, and prints it
           as JSON: its body in base64, its properties and headers, each value as
           [type, value] (see typed).
  publish  publishes to QUEUE (through the default exchange) the message of the
           publish table below, with every property Kombu sets and a header of every
           type py-amqp writes that amqp091-go can read.
  publish-bigint
           publishes a message with an integer header beyond 32 bits, which py-amqp
           writes as field type 'L'.

Kombu and py-amqp are Debian's (python3-kombu): Kombu 5.2, py-amqp 5.1.
"""

import base64
import datetime
import decimal
import json
import os
import sys
import time

import kombu


def typed(v):
    """Returns v as [type, value] for JSON: ints as text, so that no precision is lost."""
    if v is None:
        return ["none"]
    if isinstance(v, bool):
        return ["bool", v]
    if isinstance(v, int):
        return ["int", str(v)]
    if isinstance(v, float):
        return ["float", v]
    if isinstance(v, decimal.Decimal):
        return ["decimal", str(v)]
    if isinstance(v, str):
        return ["str", v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ["bytes", base64.b64encode(bytes(v)).decode()]
    if isinstance(v, datetime.datetime):
        return ["time", v.strftime("%Y-%m-%dT%H:%M:%S")]
    if isinstance(v, dict):
        return ["table", {k: typed(x) for k, x in v.items()}]
    if isinstance(v, (list, tuple)):
        return ["list", [typed(x) for x in v]]
    return ["unknown " + type(v).__name__, repr(v)]


def connection():
    return kombu.Connection(
        hostname=os.environ["KOMBU_HOST"],
        port=int(os.environ["KOMBU_PORT"]),
        virtual_host=os.environ["KOMBU_VHOST"],
        userid=os.environ["KOMBU_USER"],
        password=os.environ["KOMBU_PASSWORD"],
        transport="pyamqp",
        connect_timeout=10,
    )


def get(queue):
    with connection() as conn:
        q = kombu.Queue(queue, channel=conn.default_channel, no_declare=True)
        deadline = time.monotonic() + 10
        while True:
            m = q.get(no_ack=False, accept=None)
            if m is not None:
                break
            if time.monotonic() > deadline:
                sys.exit("no message in queue %s within 10 s" % queue)
            time.sleep(0.02)
        props = {k: typed(v) for k, v in m.properties.items() if k != "application_headers"}
        out = {
            "body": base64.b64encode(m.body).decode(),
            "properties": props,
            "headers": {k: typed(v) for k, v in (m.headers or {}).items()},
            "routing_key": m.delivery_info.get("routing_key"),
        }
        m.ack()
        json.dump(out, sys.stdout, sort_keys=True)


def publish(queue, headers):
    with connection() as conn:
        producer = conn.Producer()
        producer.publish(
            b"\x00kombu body \xff",
            routing_key=queue,
            exchange="",
            content_type="application/x-kombu",
            content_encoding="binary",
            delivery_mode=2,
            priority=7,
            correlation_id="kombu-correlation",
            reply_to="kombu-replies",
            expiration=60,  # seconds: Kombu sends "60000"
            message_id="kombu-message",
            timestamp=1709209845,  # 2024-02-29T12:30:45Z: py-amqp takes seconds
            type="kombu.type",
            app_id="kombu-app",
            user_id=os.environ["KOMBU_USER"],
            headers=headers,
            mandatory=True,
        )


# A header of every type py-amqp writes, with the values at the edges of each: what
# carrot receives of each is checked in interop_test.go.
HEADERS = {
    "str": "välue 🥕",
    "empty": "",
    "int": 42,
    "negative": -7,
    "int32-max": 2147483647,
    "int32-min+1": -2147483647,  # py-amqp writes -2147483648 as 'L'
    "true": True,
    "false": False,
    "float": 2.5,
    "bytes": b"\x00\x01\xff",  # py-amqp writes bytes as a long string, 'S'
    "time": datetime.datetime(2025, 1, 2, 3, 4, 5),
    "none": None,
    "decimal": decimal.Decimal("12.34"),
    "dict": {"n": 1, "s": "x", "nested": {"l": [1, "two"]}},
    "list": [1, "two", None, True, {"k": "v"}, []],
}


def main():
    mode, queue = sys.argv[1], sys.argv[2]
    if mode == "get":
        get(queue)
    elif mode == "publish":
        publish(queue, HEADERS)
    elif mode == "publish-bigint":
        publish(queue, {"big": 1 << 40})
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
