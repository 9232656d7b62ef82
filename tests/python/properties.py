"""paho-mqtt 5.0: user properties, content type, response topic and correlation data are
forwarded unchanged [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20] [MQTT-3.3.2-15]
[MQTT-3.3.2-16]."""

from common import Client, PacketTypes, Properties, args, fail

port, version = args()
if version != "5":
    fail("properties.py is a 5.0 test")
sub = Client(port, "paho-prop-sub", "5").connect()
sub.subscribe("paho/props", 1)
pub = Client(port, "paho-prop-pub", "5").connect()
props = Properties(PacketTypes.PUBLISH)
props.UserProperty = [("a", "1"), ("b", "2"), ("a", "3")]
props.ContentType = "text/plain"
props.ResponseTopic = "paho/reply"
props.CorrelationData = b"\x01\x02"
props.PayloadFormatIndicator = 1
pub.publish("paho/props", b"hello", 1, props=props)
m = sub.next_message(0)
got = m.properties
if getattr(got, "UserProperty", None) != [("a", "1"), ("b", "2"), ("a", "3")]:
    fail(f"user properties {getattr(got, 'UserProperty', None)}")
if getattr(got, "ContentType", None) != "text/plain":
    fail(f"content type {getattr(got, 'ContentType', None)}")
if getattr(got, "ResponseTopic", None) != "paho/reply":
    fail(f"response topic {getattr(got, 'ResponseTopic', None)}")
if getattr(got, "CorrelationData", None) != b"\x01\x02":
    fail(f"correlation data {getattr(got, 'CorrelationData', None)}")
if getattr(got, "PayloadFormatIndicator", None) != 1:
    fail(f"payload format {getattr(got, 'PayloadFormatIndicator', None)}")
sub.disconnect()
pub.disconnect()
print("ok")
