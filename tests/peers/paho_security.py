"""Security scenarios against Ironplant's MQTT over TLS listener, driven by paho-mqtt 2.x.

Usage: paho_security.py SCENARIO HOST PORT CAFILE [CERTFILE KEYFILE NAME] [USER PASSWORD]

  connect HOST PORT CAFILE [CERT KEY]     one CONNECT (MQTT 5); prints what happened
  login HOST PORT CAFILE USER PASSWORD    one CONNECT with user name and password
  device HOST PORT CAFILE CERT KEY NAME   as device NAME: publish and receive on its own
                                          topic, then publish as another Sparkplug node
  as HOST PORT CAFILE CLIENTID WILL AUTH...
                                          one CONNECT with that client id ("" for none), a
                                          will on WILL ("-" for none), AUTH = CERT KEY or
                                          USER PASSWORD; prints the CONNACK
  hold HOST PORT CAFILE CLIENTID SECONDS AUTH...
                                          connect, print {"step":"connected"}, then wait up to
                                          SECONDS for the server to close the connection and
                                          print its reason (or "still connected")
  subscribe HOST PORT CAFILE USER PASSWORD FILTER...
                                          one SUBACK per filter, in order

Prints one JSON object per line; the last one has "ok". Every wait is on an event with a
timeout, never a sleep.
"""

import json
import queue
import ssl
import sys

import paho.mqtt.client as mqtt

TIMEOUT = 5.0


def emit(**fields):
    print(json.dumps(fields, sort_keys=True, default=str), flush=True)


def client(cafile, cert=None, key=None, user=None, password=None, client_id=""):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=cafile, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)
    if user is not None:
        c.username_pw_set(user, password)
    return c


def connect(c, host, port):
    """Connects; returns ("connack", reason name) or ("error", text) for a refused handshake."""
    events = queue.Queue()
    c.on_connect = lambda _c, _u, _f, rc, _p: events.put(("connack", str(rc)))
    c.on_disconnect = lambda _c, _u, _f, rc, _p: events.put(("disconnect", str(rc)))
    try:
        c.connect(host, port, keepalive=30)
    except (ssl.SSLError, OSError) as e:
        return ("error", f"{type(e).__name__}: {e}"), events
    c.loop_start()
    try:
        return events.get(timeout=TIMEOUT), events
    except queue.Empty:
        return ("timeout", "no CONNACK"), events


def scenario_connect(host, port, cafile, cert=None, key=None, user=None, password=None):
    c = client(cafile, cert, key, user, password)
    (kind, what), _ = connect(c, host, port)
    emit(kind=kind, what=what)
    c.loop_stop()
    emit(ok=True)


def scenario_device(host, port, cafile, cert, key, name):
    c = client(cafile, cert, key)
    messages = queue.Queue()
    acks = queue.Queue()
    c.on_message = lambda _c, _u, m: messages.put((m.topic, m.payload.decode()))
    c.on_publish = lambda _c, _u, mid, rc, _p: acks.put((mid, str(rc)))
    subs = queue.Queue()
    c.on_subscribe = lambda _c, _u, mid, rcs, _p: subs.put([str(r) for r in rcs])
    (kind, what), _ = connect(c, host, port)
    emit(step="connect", kind=kind, what=what)
    if kind != "connack" or what != "Success":
        emit(ok=False, why="not connected")
        sys.exit(1)
    own = f"devices/{name}/hello"
    c.subscribe(f"devices/{name}/#", qos=1)
    emit(step="subscribe own", granted=subs.get(timeout=TIMEOUT))
    c.subscribe("#", qos=1)
    emit(step="subscribe #", granted=subs.get(timeout=TIMEOUT))
    c.subscribe("$share/g/devices/#", qos=1)
    emit(step="subscribe $share/g/devices/#", granted=subs.get(timeout=TIMEOUT))
    info = c.publish(own, "hi", qos=1)
    emit(step="publish own", mid=info.mid, ack=acks.get(timeout=TIMEOUT)[1])
    emit(step="received own", message=messages.get(timeout=TIMEOUT))
    foreign = "spBv1.0/bottling/NDATA/other-node"
    info = c.publish(foreign, b"\x00", qos=1)
    emit(step="publish foreign", topic=foreign, ack=acks.get(timeout=TIMEOUT)[1])
    c.disconnect()
    c.loop_stop()
    emit(ok=True)


def auth_args(rest):
    """CERT KEY (paths ending in .crt/.key) or USER PASSWORD."""
    if rest and rest[0].endswith(".crt"):
        return {"cert": rest[0], "key": rest[1]}
    return {"user": rest[0], "password": rest[1]}


def scenario_as(host, port, cafile, client_id, will, *auth):
    c = client(cafile, client_id=client_id, **auth_args(auth))
    if will != "-":
        c.will_set(will, "offline", qos=1, retain=True)
    (kind, what), _ = connect(c, host, port)
    emit(step="connect", kind=kind, what=what)
    c.loop_stop()
    emit(ok=True)


def scenario_hold(host, port, cafile, client_id, seconds, *auth):
    c = client(cafile, client_id=client_id, **auth_args(auth))
    (kind, what), events = connect(c, host, port)
    emit(step="connected", kind=kind, what=what)
    if kind != "connack" or what != "Success":
        emit(ok=False, why="not connected")
        sys.exit(1)
    try:
        ev = events.get(timeout=float(seconds))
        emit(step="closed", kind=ev[0], what=ev[1])
    except queue.Empty:
        emit(step="closed", kind="none", what="still connected")
    c.loop_stop()
    emit(ok=True)


def scenario_subscribe(host, port, cafile, user, password, *filters):
    c = client(cafile, user=user, password=password)
    subs = queue.Queue()
    c.on_subscribe = lambda _c, _u, mid, rcs, _p: subs.put([str(r) for r in rcs])
    (kind, what), _ = connect(c, host, port)
    emit(step="connect", kind=kind, what=what)
    for f in filters:
        c.subscribe(f, qos=1)
        emit(step="subscribe", filter=f, granted=subs.get(timeout=TIMEOUT)[0])
    c.disconnect()
    c.loop_stop()
    emit(ok=True)


def main():
    scenario, host, port, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rest = sys.argv[5:]
    if scenario == "connect":
        scenario_connect(host, port, cafile, *rest)
    elif scenario == "login":
        scenario_connect(host, port, cafile, None, None, rest[0], rest[1])
    elif scenario == "device":
        scenario_device(host, port, cafile, *rest)
    elif scenario == "as":
        scenario_as(host, port, cafile, *rest)
    elif scenario == "hold":
        scenario_hold(host, port, cafile, *rest)
    elif scenario == "subscribe":
        scenario_subscribe(host, port, cafile, *rest)
    else:
        emit(ok=False, why=f"unknown scenario {scenario!r}")
        sys.exit(2)


if __name__ == "__main__":
    main()
