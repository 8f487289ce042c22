"""A Modbus master (pymodbus) on both sides of a man in the middle: reads the utilities unit's
input registers 0..20 through the proxy and directly, decodes the tank level (f32 ABCD at 0-1)
with pymodbus's own converter, writes the level setpoint (holding 0, x0.1 %) through the proxy
and reads it back directly. Prints one line:
`DIRECT <level> PROXY <level> OTHERS_EQUAL <True|False> SETPOINT <raw read back>`.

Usage: modbus_mitm_read.py HOST PROXY_PORT DIRECT_PORT SETPOINT_RAW
"""

import sys

from pymodbus.client import ModbusTcpClient

UNIT = 2


def connect(host, port):
    client = ModbusTcpClient(host, port=int(port), timeout=5)
    if not client.connect():
        raise SystemExit(f"cannot connect to {host}:{port}")
    return client


def inputs(client):
    r = client.read_input_registers(0, count=20, device_id=UNIT)
    if r.isError():
        raise SystemExit(f"read refused: {r}")
    return r.registers


def level(client, regs):
    return client.convert_from_registers(
        regs[0:2], data_type=client.DATATYPE.FLOAT32, word_order="big"
    )


def main() -> int:
    host, proxy_port, direct_port, setpoint = sys.argv[1:5]
    proxy, direct = connect(host, proxy_port), connect(host, direct_port)
    try:
        bent, true = inputs(proxy), inputs(direct)
        w = proxy.write_register(0, int(setpoint), device_id=UNIT)
        if w.isError():
            raise SystemExit(f"write refused: {w}")
        back = direct.read_holding_registers(0, count=1, device_id=UNIT)
        if back.isError():
            raise SystemExit(f"read-back refused: {back}")
        print(
            f"DIRECT {level(direct, true)} PROXY {level(proxy, bent)} "
            f"OTHERS_EQUAL {bent[2:] == true[2:]} SETPOINT {back.registers[0]}",
            flush=True,
        )
        return 0
    finally:
        proxy.close()
        direct.close()


if __name__ == "__main__":
    sys.exit(main())
