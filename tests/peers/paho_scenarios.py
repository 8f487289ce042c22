"""Interop scenarios for Ironplant's MQTT broker, driven by the third-party client paho-mqtt 2.x.

Usage: paho_scenarios.py HOST PORT SCENARIO VERSION   (VERSION: 3.1.1 or 5)

Prints one JSON object per line: what each check observed, and last {"ok": true, ...}. On a
failed check it prints {"ok": false, ...} with the reason, the same reason on stderr, and exits
with status 1. Every wait is on an event with a timeout, never a sleep. "Nothing else arrived"
is checked with a marker message sent afterwards on a path the broker keeps in order (the
same publishing connection, to the same subscriber), so a stray message would come first.
"""

import json
import queue
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

TIMEOUT = 5.0


class Failed(Exception):
    pass


def check(cond, what, **observed):
    if not cond:
        raise Failed(f"{what}: {observed}")
    emit(check=what, **observed)


def emit(**fields):
    print(json.dumps(fields, sort_keys=True, default=str), flush=True)


class Peer:
    """One paho client whose callbacks feed queues and conditions the scenario waits on."""

    def __init__(
        self, host, port, version, name, will=None, loop=True, client_id=None, persistent=False,
        will_delay=None,
    ):
        """persistent: 3.1.1 clean session 0, or 5.0 clean start 0 with a 300 s session expiry."""
        self.v5 = version == "5"
        self.name = name
        self.session_present = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"paho-{name}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else not persistent,
        )
        self.messages = queue.Queue()
        self.cond = threading.Condition()
        self.published = set()
        self.subacks = {}
        self.connected = None
        self.disconnected = threading.Event()
        c = self.client
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = lambda *_a: self.disconnected.set()
        if will is not None:
            props = None
            if self.v5:
                props = Properties(PacketTypes.WILLMESSAGE)
                props.UserProperty = [("reason", "lost")]
                props.ContentType = "text/plain"
                if will_delay is not None:
                    props.WillDelayInterval = will_delay
            c.will_set(will[0], will[1], qos=1, retain=False, properties=props)
        if self.v5:
            props = None
            if persistent:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 300
            c.connect(host, port, keepalive=30, clean_start=not persistent, properties=props)
        else:
            c.connect(host, port, keepalive=30)
        if loop:
            c.loop_start()
            self._wait(lambda: self.connected is not None, "CONNACK")
        else:
            # No network thread: drive the loop by hand so the socket can be closed without a race.
            while self.connected is None:
                if c.loop(timeout=TIMEOUT) != mqtt.MQTT_ERR_SUCCESS:
                    raise Failed(f"{name}: connection failed before CONNACK")
        if self.connected.is_failure:
            raise Failed(f"{name}: CONNACK refused: {self.connected}")

    def _on_connect(self, _c, _u, flags, reason_code, _props):
        with self.cond:
            self.session_present = flags.session_present
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

    def subscribe(self, topic, qos=0, no_local=False, sub_id=None):
        if self.v5:
            props = None
            if sub_id is not None:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
            rc, mid = self.client.subscribe(
                topic, options=SubscribeOptions(qos=qos, noLocal=no_local), properties=props
            )
        else:
            rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise Failed(f"{self.name}: subscribe {topic} failed to send: {rc}")
        self._wait(lambda: mid in self.subacks, f"SUBACK for {topic}")
        codes = self.subacks[mid]
        check(
            len(codes) == 1 and not codes[0].is_failure and codes[0].value == qos,
            "suback",
            client=self.name,
            filter=topic,
            codes=[c.value for c in codes],
        )

    def publish(self, topic, payload, qos=0, retain=False, props=None):
        """Publishes and waits for paho's on_publish (after PUBACK at QoS 1, PUBCOMP at QoS 2)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise Failed(f"{self.name}: publish to {topic} failed to send: {info.rc}")
        self._wait(lambda: info.mid in self.published, f"on_publish for {topic} (QoS {qos})")
        return info.mid

    def next_message(self, what):
        try:
            return self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise Failed(f"{self.name}: timed out waiting for {what}") from None

    def messages_until(self, marker_topic, what):
        """Every message received up to and including the first one on marker_topic."""
        got = []
        while True:
            msg = self.next_message(what)
            got.append(msg)
            if msg.topic == marker_topic:
                return got

    def close(self):
        self.client.disconnect()
        self.disconnected.wait(TIMEOUT)
        self.client.loop_stop()


def describe(msg):
    return {"topic": msg.topic, "payload": msg.payload.decode(), "qos": msg.qos, "retain": msg.retain}


def scenario_pubsub(host, port, v, qos):
    sub = Peer(host, port, v, f"sub-q{qos}")
    pub = Peer(host, port, v, f"pub-q{qos}")
    topic = f"interop/q{qos}/{uuid.uuid4().hex[:6]}"
    sub.subscribe(topic, qos)
    sub.subscribe(topic + "/end", qos)
    payload = f"hello at QoS {qos}"
    mid = pub.publish(topic, payload, qos=qos)
    emit(check="on_publish", client="publisher", qos=qos, mid=mid)
    # The marker comes from the same publisher after the message: a duplicate would come first.
    # Same QoS as the message: paho hands a QoS 2 message over only at PUBREL, so a QoS 0
    # marker could overtake it.
    pub.publish(topic + "/end", "end", qos=qos)
    got = sub.messages_until(topic + "/end", "the message and the end marker")
    data = [describe(m) for m in got[:-1]]
    check(
        data == [{"topic": topic, "payload": payload, "qos": qos, "retain": False}],
        "delivered exactly once",
        qos=qos,
        received=data,
    )
    sub.close()
    pub.close()


def scenario_retained(host, port, v):
    topic = f"interop/retained/{uuid.uuid4().hex[:6]}"
    pub = Peer(host, port, v, "ret-pub")
    pub.publish(topic, "kept", qos=1, retain=True)

    late = Peer(host, port, v, "ret-late")
    late.subscribe(topic, 1)
    msg = late.next_message("the retained message")
    check(
        describe(msg) == {"topic": topic, "payload": "kept", "qos": 1, "retain": True},
        "retained delivered to a later subscriber",
        received=describe(msg),
    )

    # An empty retained publish clears it; current subscribers still get it (as a live message).
    pub.publish(topic, b"", qos=1, retain=True)
    msg = late.next_message("the empty retained publish")
    check(
        msg.topic == topic and msg.payload == b"" and not msg.retain,
        "empty retained publish reaches current subscribers",
        received=describe(msg),
    )

    later = Peer(host, port, v, "ret-later")
    later.subscribe(topic, 1)
    marker = topic + "-marker"
    later.subscribe(marker, 0)
    # Retained messages are queued right after SUBACK, before this client's own next publish.
    later.publish(marker, "end", qos=0)
    got = [describe(m) for m in later.messages_until(marker, "the marker")]
    check(
        got == [{"topic": marker, "payload": "end", "qos": 0, "retain": False}],
        "retained message cleared",
        received=got,
    )
    for p in (pub, late, later):
        p.close()


def scenario_will(host, port, v):
    base = f"interop/will/{uuid.uuid4().hex[:6]}"
    watcher = Peer(host, port, v, "will-watcher")
    watcher.subscribe(base + "/#", 1)

    # A clean DISCONNECT: the will must not go out.
    clean = Peer(host, port, v, "will-clean", will=(base + "/clean", "clean-will"))
    clean.close()
    check(clean.disconnected.is_set(), "clean disconnect completed")

    # The socket closed without DISCONNECT: the will goes out. This connection and its close
    # come after the clean one, so a wrongly sent clean will would be routed (and arrive) first.
    lost = Peer(host, port, v, "will-lost", will=(base + "/lost", "lost-will"), loop=False)
    lost.client.socket().close()
    msg = watcher.next_message("the will of the dropped client")
    check(
        describe(msg) == {"topic": base + "/lost", "payload": "lost-will", "qos": 1, "retain": False},
        "will delivered after the socket closed, none after a clean disconnect",
        received=describe(msg),
    )
    if v == "5":
        p = msg.properties
        got = {
            "user": [list(kv) for kv in getattr(p, "UserProperty", [])],
            "content_type": getattr(p, "ContentType", None),
        }
        check(
            got == {"user": [["reason", "lost"]], "content_type": "text/plain"},
            "will properties delivered with the will",
            received=got,
        )
    watcher.close()


def scenario_wildcards(host, port, v):
    base = f"wc{uuid.uuid4().hex[:6]}"
    plus = Peer(host, port, v, "wc-plus")
    hash_ = Peer(host, port, v, "wc-hash")
    pub = Peer(host, port, v, "wc-pub")
    plus.subscribe(f"{base}/+/temp", 1)
    hash_.subscribe(f"{base}/#", 1)
    topics = [
        f"{base}/a/temp",
        f"{base}/b/temp",
        f"{base}/a/pressure",
        f"{base}/a/temp/raw",
        f"{base}",
        f"other/{base}/a/temp",
        f"{base}//temp",
    ]
    marker = f"{base}/end/temp"
    for t in topics + [marker]:
        pub.publish(t, t, qos=1)
    got_plus = [m.topic for m in plus.messages_until(marker, "the + marker")]
    got_hash = [m.topic for m in hash_.messages_until(marker, "the # marker")]
    check(
        got_plus == [f"{base}/a/temp", f"{base}/b/temp", f"{base}//temp", marker],
        "single-level wildcard +",
        received=got_plus,
    )
    check(
        got_hash == [t for t in topics if not t.startswith("other/")] + [marker],
        "multi-level wildcard # (including its parent level)",
        received=got_hash,
    )
    for p in (plus, hash_, pub):
        p.close()


def scenario_sub_id(host, port, v):
    base = f"sid{uuid.uuid4().hex[:6]}"
    sub = Peer(host, port, v, "sid-sub")
    pub = Peer(host, port, v, "sid-pub")
    sub.subscribe(f"{base}/a/#", 1, sub_id=7)
    sub.subscribe(f"{base}/+/x", 1, sub_id=9)
    sub.subscribe(f"{base}/end", 0)
    for t in ("a/x", "a/y", "b/x", "end"):
        pub.publish(f"{base}/{t}", t, qos=1)
    got = {}
    for m in sub.messages_until(f"{base}/end", "the marker"):
        ids = getattr(m.properties, "SubscriptionIdentifier", None) if m.properties else None
        got[m.topic[len(base) + 1 :]] = sorted(ids) if ids else []
    check(
        got == {"a/x": [7, 9], "a/y": [7], "b/x": [9], "end": []},
        "subscription identifiers on delivered messages",
        received=got,
    )
    sub.close()
    pub.close()


def scenario_properties(host, port, v):
    topic = f"props/{uuid.uuid4().hex[:6]}"
    sub = Peer(host, port, v, "props-sub")
    pub = Peer(host, port, v, "props-pub")
    sub.subscribe(topic, 1)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "lab"), ("unit", "°C"), ("site", "again")]
    props.ContentType = "text/plain"
    props.ResponseTopic = topic + "/reply"
    props.CorrelationData = b"\x00\x01corr"
    props.PayloadFormatIndicator = 1
    pub.publish(topic, "21.5", qos=1, props=props)
    m = sub.next_message("the message with properties")
    p = m.properties
    got = {
        "user": [list(kv) for kv in getattr(p, "UserProperty", [])],
        "content_type": getattr(p, "ContentType", None),
        "response_topic": getattr(p, "ResponseTopic", None),
        "correlation": getattr(p, "CorrelationData", b"").hex(),
        "format": getattr(p, "PayloadFormatIndicator", None),
    }
    check(
        got
        == {
            "user": [["site", "lab"], ["unit", "°C"], ["site", "again"]],
            "content_type": "text/plain",
            "response_topic": topic + "/reply",
            "correlation": b"\x00\x01corr".hex(),
            "format": 1,
        },
        "user properties (in order, repeated keys) and other publish properties pass through",
        received=got,
    )
    sub.close()
    pub.close()


def scenario_no_local(host, port, v):
    topic = f"nolocal/{uuid.uuid4().hex[:6]}"
    me = Peer(host, port, v, "nl-self")
    other = Peer(host, port, v, "nl-other")
    me.subscribe(topic, 1, no_local=True)
    me.subscribe(topic + "/end", 0)
    other.subscribe(topic, 1)
    me.publish(topic, "from-self", qos=1)
    m = other.next_message("own message at another subscriber")
    check(m.payload == b"from-self", "other subscribers still get it", received=describe(m))
    other.publish(topic, "from-other", qos=1)
    m = me.next_message("a message from another client")
    check(m.payload == b"from-other", "no_local subscriber gets others' messages", received=describe(m))
    # Own marker on a normal subscription, after our own publish: a wrong echo would come first.
    me.publish(topic + "/end", "end", qos=0)
    got = [describe(m) for m in me.messages_until(topic + "/end", "the marker")]
    check(len(got) == 1, "own message not echoed back", received=got)
    me.close()
    other.close()


def scenario_shared(host, port, v):
    topic = f"shared/{uuid.uuid4().hex[:6]}"
    a = Peer(host, port, v, "share-a")
    b = Peer(host, port, v, "share-b")
    pub = Peer(host, port, v, "share-pub")
    # Both members feed one queue, tagged with who got the message.
    both = queue.Queue()
    a.client.on_message = lambda _c, _u, m: both.put(("a", m))
    b.client.on_message = lambda _c, _u, m: both.put(("b", m))
    a.subscribe(f"$share/g/{topic}", 1)
    b.subscribe(f"$share/g/{topic}", 1)
    n = 10
    for i in range(n):
        pub.publish(topic, str(i), qos=1)
    got = {"a": [], "b": []}
    total = []
    for _ in range(n):
        try:
            key, m = both.get(timeout=TIMEOUT)
        except queue.Empty:
            raise Failed(f"shared: timed out after {len(total)} of {n} messages: {got}") from None
        got[key].append(int(m.payload))
        total.append(int(m.payload))
    check(
        sorted(total) == list(range(n)) and got["a"] and got["b"],
        "shared subscription splits messages, each delivered once",
        received=got,
    )
    for p in (a, b, pub):
        p.close()


def scenario_persistent(host, port, v):
    """A subscriber with a persistent session goes away; QoS 1 and 2 messages published meanwhile
    arrive, in order and once each, when it comes back; QoS 0 ones are not kept."""
    cid = f"paho-persist-{uuid.uuid4().hex[:8]}"
    topic = f"interop/persist/{uuid.uuid4().hex[:6]}"
    sub = Peer(host, port, v, "persist-sub", client_id=cid, persistent=True)
    check(sub.session_present is False, "first connection has no session", present=sub.session_present)
    sub.subscribe(topic + "/#", 2)
    sub.close()
    pub = Peer(host, port, v, "persist-pub")
    sent = []
    for i, qos in enumerate([1, 2, 0, 1, 2]):
        body = f"m{i}-q{qos}"
        pub.publish(f"{topic}/{i}", body, qos=qos)
        if qos > 0:
            sent.append(body)
    pub.close()
    sub = Peer(host, port, v, "persist-sub-back", client_id=cid, persistent=True)
    check(sub.session_present is True, "session resumed", present=sub.session_present)
    got = [sub.next_message(f"queued message {i}").payload.decode() for i in range(len(sent))]
    # paho hands a QoS 2 message to the application only at PUBREL, so QoS 1 ones may overtake
    # it; the order within each QoS is the broker's.
    per_qos = lambda xs, q: [x for x in xs if x.endswith(f"-q{q}")]
    check(
        sorted(got) == sorted(sent) and all(per_qos(got, q) == per_qos(sent, q) for q in (1, 2)),
        "queued QoS 1/2 messages delivered once each, in order",
        received=got,
        sent=sent,
    )
    marker = topic + "/end"
    sub.publish(marker, "end", qos=1)
    rest = [m.payload.decode() for m in sub.messages_until(marker, "the end marker")][:-1]
    check(rest == [], "nothing else (no QoS 0, no duplicates)", received=rest)
    sub.close()
    # A clean start throws the session away.
    clean = Peer(host, port, v, "persist-clean", client_id=cid, persistent=False)
    check(clean.session_present is False, "clean start has no session", present=clean.session_present)
    clean.close()


def scenario_will_delay(host, port, v):
    """MQTT 5: a will with a delay goes out after it, not at once."""
    base = f"interop/willdelay/{uuid.uuid4().hex[:6]}"
    watcher = Peer(host, port, v, "wd-watcher")
    watcher.subscribe(base + "/#", 1)
    lost = Peer(
        host, port, v, "wd-lost", will=(base + "/lost", "late-will"), loop=False,
        persistent=True, will_delay=1,
    )
    t0 = time.monotonic()
    lost.client.socket().close()
    msg = watcher.next_message("the delayed will")
    waited = time.monotonic() - t0
    check(
        msg.payload == b"late-will" and waited >= 0.9,
        "will published after its delay",
        waited=round(waited, 3),
        received=describe(msg),
    )
    watcher.close()


SCENARIOS = {
    "persistent": scenario_persistent,
    "will_delay": scenario_will_delay,
    "qos0": lambda h, p, v: scenario_pubsub(h, p, v, 0),
    "qos1": lambda h, p, v: scenario_pubsub(h, p, v, 1),
    "qos2": lambda h, p, v: scenario_pubsub(h, p, v, 2),
    "retained": scenario_retained,
    "will": scenario_will,
    "wildcards": scenario_wildcards,
    "shared": scenario_shared,
    "subscription_identifier": scenario_sub_id,
    "user_properties": scenario_properties,
    "no_local": scenario_no_local,
}
V5_ONLY = {"subscription_identifier", "user_properties", "no_local"}


def main():
    if len(sys.argv) != 5:
        sys.exit(f"usage: {sys.argv[0]} HOST PORT SCENARIO VERSION(3.1.1|5)")
    host, port, name, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if name not in SCENARIOS:
        sys.exit(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    if version not in ("3.1.1", "5"):
        sys.exit(f"unknown MQTT version {version!r}; use 3.1.1 or 5")
    if name in V5_ONLY and version != "5":
        sys.exit(f"scenario {name!r} needs MQTT 5")
    try:
        SCENARIOS[name](host, port, version)
    except Failed as e:
        emit(ok=False, scenario=name, version=version, error=str(e))
        sys.exit(f"FAILED {name} (MQTT {version}): {e}")
    emit(ok=True, scenario=name, version=version)


if __name__ == "__main__":
    main()
