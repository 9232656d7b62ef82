"""paho-mqtt will: published when the connection drops [MQTT-3.1.2-8], not after a normal
DISCONNECT [MQTT-3.1.2-10] (3.1.1 or 5.0)."""

from common import Client, args, fail

port, version = args()
watch = Client(port, f"paho-watch-{version}", version).connect()
watch.subscribe("paho/will/#", 1)

dying = Client(port, f"paho-dying-{version}", version, will=("paho/will/dying", b"gone", 1, None)).connect()
dying.drop()
m = watch.next_message(0)
if m.topic != "paho/will/dying" or m.payload != b"gone":
    fail(f"will: {m.topic} {m.payload!r}")

polite = Client(port, f"paho-polite-{version}", version, will=("paho/will/polite", b"gone", 1, None)).connect()
polite.disconnect()
marker = Client(port, f"paho-marker-{version}", version).connect()
marker.publish("paho/will/marker", b"m", 1)
m = watch.next_message(1)
if m.topic != "paho/will/marker":
    fail(f"a will was sent after DISCONNECT: {m.topic}")
watch.disconnect()
marker.disconnect()
print("ok")
