"""MQTT over WebSocket interop for Ironplant's broker, driven by the third-party client paho-mqtt 2.x:
paho clients over WebSocket (transport="websockets", path /mqtt) and over plain TCP, on one broker.

Usage: paho_ws_scenarios.py HOST TCP_PORT WS_PORT SCENARIO VERSION   (VERSION: 3.1.1 or 5)

Output as in paho_scenarios.py (whose check/emit helpers this reuses): one JSON object per line,
the last {"ok": true, ...}; on a failed check {"ok": false, ...}, the reason on stderr, status 1.
Every wait is on an event with a timeout, never a sleep.
"""

import os
import queue
import sys
import threading
import uuid

import paho.mqtt.client as mqtt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paho_scenarios import TIMEOUT, Failed, check, describe, emit  # noqa: E402

WS_PATH = "/mqtt"


class Client:
    """A paho client over "tcp" or "websockets"; callbacks feed a queue and a condition."""

    def __init__(self, host, port, transport, version, name):
        self.name = f"{name}-{transport}"
        self.v5 = version == "5"
        self.client = c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"paho-{self.name}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            transport=transport,
        )
        if transport == "websockets":
            c.ws_set_options(path=WS_PATH)
        self.messages = queue.Queue()
        self.cond = threading.Condition()
        self.connected = None
        self.published = set()
        self.subacks = {}
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.connect(host, port, keepalive=30)
        c.loop_start()
        self._wait(lambda: self.connected is not None, "CONNACK")
        if self.connected.is_failure:
            raise Failed(f"{self.name}: CONNACK refused: {self.connected}")

    def _on_connect(self, _c, _u, _flags, reason_code, _props):
        with self.cond:
            self.connected = reason_code
            self.cond.notify_all()

    def _on_publish(self, _c, _u, mid, _rc, _props):
        with self.cond:
            self.published.add(mid)
            self.cond.notify_all()

    def _on_subscribe(self, _c, _u, mid, reason_codes, _props):
        with self.cond:
            self.subacks[mid] = reason_codes
            self.cond.notify_all()

    def _wait(self, pred, what):
        with self.cond:
            if not self.cond.wait_for(pred, timeout=TIMEOUT):
                raise Failed(f"{self.name}: timed out waiting for {what}")

    def subscribe(self, topic, qos):
        rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise Failed(f"{self.name}: subscribe {topic} failed to send: {rc}")
        self._wait(lambda: mid in self.subacks, f"SUBACK for {topic}")
        codes = [c.value for c in self.subacks[mid]]
        check(codes == [qos], "suback", client=self.name, filter=topic, codes=codes)

    def publish(self, topic, payload, qos=0, retain=False):
        """Publishes and waits for on_publish (after PUBACK at QoS 1)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise Failed(f"{self.name}: publish to {topic} failed to send: {info.rc}")
        self._wait(lambda: info.mid in self.published, f"on_publish for {topic} (QoS {qos})")

    def messages_until(self, marker_topic, what):
        got = []
        while True:
            try:
                msg = self.messages.get(timeout=TIMEOUT)
            except queue.Empty:
                raise Failed(f"{self.name}: timed out waiting for {what}; got {len(got)}") from None
            got.append(msg)
            if msg.topic == marker_topic:
                return got

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def one_way(src, dst, qos, payloads):
    """src publishes payloads then a marker; dst must receive each exactly once, in order."""
    topic = f"ws/{src.name}/{uuid.uuid4().hex[:6]}"
    dst.subscribe(topic + "/#", qos)
    for p in payloads:
        src.publish(topic + "/data", p, qos=qos)
    src.publish(topic + "/end", "end", qos=qos)
    got = dst.messages_until(topic + "/end", f"messages from {src.name}")
    data = [(m.topic, m.payload, m.qos, m.retain) for m in got[:-1]]
    want = [(topic + "/data", p, qos, False) for p in payloads]
    check(
        data == want,
        "delivered exactly once, in order",
        src=src.name,
        dst=dst.name,
        qos=qos,
        sizes=[len(p) for p in payloads],
        received=[(t, len(p), q, r) for (t, p, q, r) in data],
    )


def scenario_both_ways(host, tcp_port, ws_port, v, qos):
    ws = Client(host, ws_port, "websockets", v, f"q{qos}")
    tcp = Client(host, tcp_port, "tcp", v, f"q{qos}")
    # A large payload spans many TCP segments and is one WebSocket message for paho; the broker
    # answers in its own messages, so packets and messages do not line up on the way back.
    payloads = [b"hello", bytes(range(256)) * 1200, b"", "°C".encode()]
    one_way(tcp, ws, qos, payloads)
    one_way(ws, tcp, qos, payloads)
    ws.close()
    tcp.close()


def scenario_retained(host, tcp_port, ws_port, v):
    base = f"wsret/{uuid.uuid4().hex[:6]}"
    for src_t, dst_t in (("tcp", "websockets"), ("websockets", "tcp")):
        topic = f"{base}/{src_t}"
        src = Client(host, tcp_port if src_t == "tcp" else ws_port, src_t, v, "ret-pub")
        src.publish(topic, "kept", qos=1, retain=True)
        late = Client(host, tcp_port if dst_t == "tcp" else ws_port, dst_t, v, "ret-late")
        late.subscribe(topic, 1)
        late.subscribe(topic + "/end", 0)
        # The marker comes after SUBACK, so the retained message (queued with SUBACK) is first.
        late.publish(topic + "/end", "end", qos=0)
        got = [describe(m) for m in late.messages_until(topic + "/end", "the retained message")]
        check(
            got[:-1] == [{"topic": topic, "payload": "kept", "qos": 1, "retain": True}],
            "retained message reaches a later subscriber",
            src=src.name,
            dst=late.name,
            received=got,
        )
        src.publish(topic, b"", qos=1, retain=True)
        src.close()
        late.close()


SCENARIOS = {
    "both_ways_qos0": lambda h, t, w, v: scenario_both_ways(h, t, w, v, 0),
    "both_ways_qos1": lambda h, t, w, v: scenario_both_ways(h, t, w, v, 1),
    "retained": scenario_retained,
}


def main():
    if len(sys.argv) != 6:
        sys.exit(f"usage: {sys.argv[0]} HOST TCP_PORT WS_PORT SCENARIO VERSION(3.1.1|5)")
    host, tcp_port, ws_port, name, version = sys.argv[1:]
    if name not in SCENARIOS:
        sys.exit(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    if version not in ("3.1.1", "5"):
        sys.exit(f"unknown MQTT version {version!r}; use 3.1.1 or 5")
    try:
        SCENARIOS[name](host, int(tcp_port), int(ws_port), version)
    except Failed as e:
        emit(ok=False, scenario=name, version=version, error=str(e))
        sys.exit(f"FAILED {name} (MQTT {version}): {e}")
    emit(ok=True, scenario=name, version=version)


if __name__ == "__main__":
    main()
