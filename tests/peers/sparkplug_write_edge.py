"""A pysparkplug edge node that obeys commands, for Ironplant's write-path interop test.

Usage: sparkplug_write_edge.py HOST PORT GROUP NODE

Births node NODE (metric Uptime) and device Pump1 with metrics of several datatypes:
Setpoint (Int32), Speed (Float), Running (Boolean), Small (Int16) and Stuck (Int32).
Every DCMD is printed as a JSON line
  {"event": "dcmd", "topic": ..., "metrics": [{"name", "alias", "datatype", "value"}]}
with what pysparkplug decoded. The node then applies each commanded metric and reports it in a
DDATA with its birth datatype, except Stuck, which it ignores (a device that does not obey).
Commands read from stdin, one a line:
  ndeath               publishes an NDEATH carrying the bdSeq of the birth (the node goes offline)
  report METRIC VALUE  reports VALUE (an integer) for METRIC of Pump1 in a DDATA, as if the
                       device changed it by itself (e.g. applied an ignored command late)
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
    births = {
        "Setpoint": (psp.DataType.INT32, 100),
        "Speed": (psp.DataType.FLOAT, 1450.5),
        "Running": (psp.DataType.BOOLEAN, False),
        "Small": (psp.DataType.INT16, 3),
        "Stuck": (psp.DataType.INT32, 0),
    }
    node = None

    def on_dcmd(_node, message):
        metrics = message.payload.metrics
        say({
            "event": "dcmd",
            "topic": str(message.topic),
            "metrics": [
                {"name": m.name, "alias": m.alias, "datatype": m.datatype.name, "value": m.value}
                for m in metrics
            ],
        })
        report = []
        for m in metrics:
            if m.name not in births or m.name == "Stuck":
                continue
            datatype = births[m.name][0]
            report.append(psp.Metric(timestamp=ts(), name=m.name, datatype=datatype, value=m.value))
        if report:
            node.update_device("Pump1", report)
            say({"event": "ddata", "metrics": [m.name for m in report]})

    node = psp.EdgeNode(
        group_id=group,
        edge_node_id=node_id,
        metrics=[psp.Metric(timestamp=ts(), name="Uptime", datatype=psp.DataType.INT64, value=1)],
    )
    node.register(
        psp.Device(
            device_id="Pump1",
            metrics=[
                psp.Metric(timestamp=ts(), name=name, datatype=dt, value=v)
                for name, (dt, v) in births.items()
            ],
            cmd_callback=on_dcmd,
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

    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "ndeath":
            topic = psp.Topic(message_type=psp.MessageType.NDEATH, group_id=group, edge_node_id=node_id)
            payload = psp.NDeath(timestamp=ts(), bd_seq_metric=wills[0])
            node._client.publish(psp.Message(topic=topic, payload=payload, qos=psp.QoS.AT_MOST_ONCE, retain=False))
        elif words[0] == "report" and len(words) == 3 and words[1] in births:
            datatype = births[words[1]][0]
            node.update_device("Pump1", [psp.Metric(timestamp=ts(), name=words[1], datatype=datatype, value=int(words[2]))])
        else:
            say({"event": "error", "why": f"unknown command {words[0]!r}"})
            continue
        say({"event": "done", "command": words[0]})


if __name__ == "__main__":
    main()
