"""MQTT commands (docs/commands.md, "MQTT command convention") driven by paho-mqtt 2.x.

Usage: paho_command.py HOST PORT VERSION TOPIC BODY COUNT [CORRELATION]

  VERSION      5: request/response with a Response Topic and the Correlation Data CORRELATION;
               3.1.1: no properties, the answer is read on the reply topic (TOPIC with
               "/_cmd/" replaced by "/_cmd_reply/").
  TOPIC        the command topic, <uns_prefix>/_cmd/<tag path>
  BODY         the JSON request body
  COUNT        how many responses to wait for (an accepted write gets two)

Prints one JSON object per response ({"response": <body>, "topic": ..., "correlation": ...})
and a last line {"ok": true}. Every wait is on an event with a timeout, never a sleep.
"""

import json
import queue
import sys
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 15.0


def emit(**fields):
    print(json.dumps(fields, sort_keys=True), flush=True)


def main():
    host, port, version, topic, body, count = sys.argv[1:7]
    correlation = sys.argv[7] if len(sys.argv) > 7 else None
    v5 = version == "5"
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cmd-{uuid.uuid4().hex[:8]}", protocol=proto)
    got = queue.Queue()
    connected = queue.Queue()
    subscribed = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, _p: connected.put(str(rc))
    c.on_subscribe = lambda _c, _u, _m, rcs, _p: subscribed.put([str(r) for r in rcs])
    c.on_message = lambda _c, _u, m: got.put(m)
    c.connect(host, int(port), keepalive=30)
    c.loop_start()
    emit(step="connack", rc=connected.get(timeout=TIMEOUT))
    if v5:
        reply = f"clients/{uuid.uuid4().hex}/replies"
    else:
        reply = topic.replace("/_cmd/", "/_cmd_reply/", 1)
    c.subscribe(reply, qos=1)
    emit(step="suback", rc=subscribed.get(timeout=TIMEOUT))
    props = None
    if v5:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply
        if correlation is not None:
            props.CorrelationData = correlation.encode()
    c.publish(topic, body.encode(), qos=1, properties=props).wait_for_publish(TIMEOUT)
    for _ in range(int(count)):
        m = got.get(timeout=TIMEOUT)
        corr = None
        if v5 and hasattr(m.properties, "CorrelationData"):
            corr = m.properties.CorrelationData.decode()
        emit(response=json.loads(m.payload), topic=m.topic, correlation=corr)
    c.loop_stop()
    c.disconnect()
    emit(ok=True)


if __name__ == "__main__":
    main()
