"""A pymodbus TCP server with known register contents, for Ironplant's interop tests.

Binds 127.0.0.1 on a free port, prints "PORT <n>" once listening, and serves until stdin closes.
Values are encoded here with Python's struct module, independently of Ironplant's codec.
"""

import asyncio
import struct
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def words(fmt, value):
    """Big-endian 16-bit words of a packed value (ABCD order)."""
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def holding():
    regs = [0] * 64
    regs[0] = 1234                                   # u16
    regs[1] = words("h", -1234)[0]                   # i16
    regs[10:12] = words("f", 123.456)                # f32, big-endian word order (ABCD)
    regs[20:22] = list(reversed(words("f", -98.765)))  # f32, little-endian word order (CDAB)
    regs[30] = 2345                                  # scaled integer: 234.5 with scale 0.1
    regs[40:42] = words("I", 3_000_000_000)          # u32
    regs[50:54] = words("d", 6.02214076e23)          # f64
    return regs


def inputs():
    regs = [0] * 16
    regs[0:2] = words("f", 21.5)
    regs[5] = 777
    regs[6] = 0b0000_0000_0010_0100                  # bits 2 and 5 set
    return regs


async def main():
    device = SimDevice(
        id=1,
        simdata=(
            [SimData(address=0, values=[True, False, True, True, False, False, False, False], datatype=DataType.BITS)],
            [SimData(address=0, values=[False, True, True, False, False, False, False, False], datatype=DataType.BITS)],
            [SimData(address=0, values=holding(), datatype=DataType.REGISTERS)],
            [SimData(address=0, values=inputs(), datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    # Serve until the test closes our stdin (or kills us).
    await loop.run_in_executor(None, sys.stdin.read)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
