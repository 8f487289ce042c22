"""A pysparkplug edge node for Ironplant's Sparkplug host interop test.

Usage: sparkplug_edge.py HOST PORT GROUP NODE [CAFILE CERTFILE KEYFILE]

With CAFILE, CERTFILE and KEYFILE it connects over TLS with that client certificate (an
Ironplant device bundle from `ironplant device enroll`).

Connects a pysparkplug EdgeNode (node metric Uptime, device Pump1 with Speed/Running/Mode/Count
and the arrays Spectrum (FloatArray), Flags (BooleanArray), Names (StringArray), Temps (Int16Array))
and then follows commands read from stdin, one a line, answering on stdout with JSON lines:
  ddata VALUE   DDATA with Speed = VALUE (float)
  gap VALUE     skips one seq number, then DDATA with Speed = VALUE
  ndeath        publishes an NDEATH carrying the bdSeq of the birth
Every NCMD the node receives is printed as {"event": "ncmd", "metrics": [...]}.
"""

import json
import sys
import threading

import pysparkplug as psp

out_lock = threading.Lock()


def say(obj):
    with out_lock:
        print(json.dumps(obj), flush=True)


def main():
    host, port, group, node_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ts = psp.get_current_timestamp

    def on_cmd(_node, message):
        metrics = [
            {"name": m.name, "value": m.value} for m in message.payload.metrics
        ]
        say({"event": "ncmd", "topic": str(message.topic), "metrics": metrics})

    client = None
    if len(sys.argv) == 8:
        tls = psp.TLSConfig(ca_certs=sys.argv[5], certfile=sys.argv[6], keyfile=sys.argv[7])
        client = psp.Client(transport_config=tls)
    node = psp.EdgeNode(
        client=client,
        group_id=group,
        edge_node_id=node_id,
        metrics=[psp.Metric(timestamp=ts(), name="Uptime", datatype=psp.DataType.INT64, value=42)],
        cmd_callback=on_cmd,
    )
    node.register(
        psp.Device(
            device_id="Pump1",
            metrics=[
                psp.Metric(timestamp=ts(), name="Speed", datatype=psp.DataType.DOUBLE, value=1450.5),
                psp.Metric(timestamp=ts(), name="Running", datatype=psp.DataType.BOOLEAN, value=True),
                psp.Metric(timestamp=ts(), name="Mode", datatype=psp.DataType.STRING, value="auto"),
                psp.Metric(timestamp=ts(), name="Count", datatype=psp.DataType.UINT32, value=7),
                psp.Metric(
                    timestamp=ts(), name="Spectrum", datatype=psp.DataType.FLOAT_ARRAY, value=(1.5, -0.25, 3.0)
                ),
                psp.Metric(
                    timestamp=ts(),
                    name="Flags",
                    datatype=psp.DataType.BOOLEAN_ARRAY,
                    value=(True, False, True, True, False, False, False, False, True),
                ),
                psp.Metric(timestamp=ts(), name="Names", datatype=psp.DataType.STRING_ARRAY, value=("a", "héllo", "")),
                psp.Metric(timestamp=ts(), name="Temps", datatype=psp.DataType.INT16_ARRAY, value=(-300, 7)),
            ],
        )
    )
    # pysparkplug makes a new bdSeq metric for the next connection right after the birth;
    # remember the one of this connection's will and birth.
    wills = []
    setup_will = node._setup_will

    def remember_will():
        setup_will()
        wills.append(node._bd_seq_metric)

    node._setup_will = remember_will
    node.connect(host, port=port, blocking=False)
    say({"event": "connecting", "group": group, "node": node_id})

    def speed(value):
        return psp.Metric(timestamp=ts(), name="Speed", datatype=psp.DataType.DOUBLE, value=value)

    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd = words[0]
        if cmd == "ddata":
            node.update_device("Pump1", [speed(float(words[1]))])
        elif cmd == "gap":
            node._seq  # consumes one seq number: the next message skips it
            node.update_device("Pump1", [speed(float(words[1]))])
        elif cmd == "ndeath":
            topic = psp.Topic(message_type=psp.MessageType.NDEATH, group_id=group, edge_node_id=node_id)
            payload = psp.NDeath(timestamp=ts(), bd_seq_metric=wills[0])
            node._client.publish(psp.Message(topic=topic, payload=payload, qos=psp.QoS.AT_MOST_ONCE, retain=False))
        else:
            say({"event": "error", "why": f"unknown command {cmd!r}"})
            continue
        say({"event": "done", "command": cmd})


if __name__ == "__main__":
    main()
