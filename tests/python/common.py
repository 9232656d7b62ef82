"""Shared helpers for the paho-mqtt interop scripts (paho-mqtt 2.x).

Every wait is bounded; a failure raises SystemExit with a message, so the Rust test that runs
the script shows why it failed.
"""

import sys
import threading
import time

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:  # pragma: no cover - reported to the Rust test
    sys.exit(f"paho-mqtt 2.x is not installed ({e}); run: pip install 'paho-mqtt>=2,<3'")

WAIT = 10.0


def fail(msg):
    sys.exit(f"FAIL: {msg}")


class Client:
    """A paho client with its network loop in a thread and events collected in lists."""

    def __init__(self, port, client_id, version, will=None, clean=True):
        proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
        kwargs = {}
        if version != "5":
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kwargs)
        self.version = version
        self.port = port
        self.cond = threading.Condition()
        self.connack = None
        self.subacks = []
        self.messages = []
        self.published = set()
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        if will is not None:
            topic, payload, qos, props = will
            self.c.will_set(topic, payload, qos=qos, retain=False, properties=props)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.connack = reason_code
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self.subacks.append((mid, reason_codes))
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.published.add(mid)
            self.cond.notify_all()

    def wait(self, pred, what):
        deadline = time.monotonic() + WAIT
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    fail(f"timed out waiting for {what}")
                self.cond.wait(left)

    def connect(self, clean_start=True, props=None):
        if self.version == "5":
            self.c.connect("127.0.0.1", self.port, keepalive=30, clean_start=clean_start, properties=props)
        else:
            self.c.connect("127.0.0.1", self.port, keepalive=30)
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")
        if self.connack.is_failure:
            fail(f"CONNACK refused: {self.connack}")
        return self

    def subscribe(self, topic, qos):
        _, mid = self.c.subscribe(topic, qos)
        self.wait(lambda: any(m == mid for m, _ in self.subacks), f"SUBACK for {topic}")
        return [rc for m, rcs in self.subacks if m == mid for rc in rcs]

    def publish(self, topic, payload, qos, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        self.wait(lambda: info.mid in self.published, f"publish ack of mid {info.mid}")

    def next_message(self, index):
        self.wait(lambda: len(self.messages) > index, f"message #{index + 1}")
        return self.messages[index]

    def disconnect(self):
        self.c.disconnect()
        self.c.loop_stop()

    def drop(self):
        """Closes the TCP connection without DISCONNECT (abnormal close for the broker)."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.close()


def args():
    if len(sys.argv) != 3 or sys.argv[2] not in ("311", "5"):
        sys.exit(f"usage: {sys.argv[0]} PORT 311|5")
    return int(sys.argv[1]), sys.argv[2]


__all__ = ["Client", "PacketTypes", "Properties", "args", "fail", "mqtt"]
