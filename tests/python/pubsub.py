"""paho-mqtt pub/sub at QoS 0/1/2 (3.1.1 or 5.0) and a retained message."""

from common import Client, args, fail

port, version = args()
sub = Client(port, f"paho-sub-{version}", version).connect()
granted = sub.subscribe("paho/t", 2)
if [int(getattr(g, "value", g)) for g in granted] != [2]:
    fail(f"granted QoS {granted}")
pub = Client(port, f"paho-pub-{version}", version).connect()
for q in (0, 1, 2):
    pub.publish("paho/t", f"m{q}".encode(), q)
for q in (0, 1, 2):
    m = sub.next_message(q)
    if m.payload != f"m{q}".encode() or m.qos != q or m.retain:
        fail(f"message {q}: payload {m.payload!r} qos {m.qos} retain {m.retain}")

pub.publish("paho/retained", b"kept", 1, retain=True)
late = Client(port, f"paho-late-{version}", version).connect()
late.subscribe("paho/retained", 1)
m = late.next_message(0)
if m.payload != b"kept" or not m.retain:
    fail(f"retained: payload {m.payload!r} retain {m.retain}")
pub.publish("paho/retained", b"", 1, retain=True)
for c in (sub, pub, late):
    c.disconnect()
print("ok")
