"""A pymodbus TCP server with known register contents, for Ironplant's interop tests.

Binds 127.0.0.1 on a free port, prints "PORT <n>" once listening, and serves until stdin closes.
Values are encoded here with Python's struct module, independently of Ironplant's codec.

While serving it answers questions about its own datastore read from stdin, one a line, with a
JSON line each (what pymodbus stored, decoded here with struct):
  holding ADDR COUNT       {"registers": [...]}        holding registers as stored
  coils ADDR COUNT         {"bits": [...]}
  decode ADDR FMT ORDER    {"value": x}                struct format (h H i I f d ...) over
                                                       the registers at ADDR; ORDER abcd or cdab
"""

import asyncio
import json
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
    regs[56] = 0b1000_0000_0000_0001                 # bits 0 and 15 set (bit writes)
    return regs


def inputs():
    regs = [0] * 16
    regs[0:2] = words("f", 21.5)
    regs[5] = 777
    regs[6] = 0b0000_0000_0010_0100                  # bits 2 and 5 set
    regs[8:11] = [words("h", v)[0] for v in (-5, 0, 300)]   # i16 × 3 (an array tag, count = 3)
    regs[12:16] = words("f", 1.5) + words("f", -2.25)       # f32 × 2 (an array tag, count = 2)
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
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        words = line.split()
        if words:
            print(json.dumps(await answer(server.context, words)), flush=True)
    await server.shutdown()


async def answer(context, words):
    """What the datastore holds (function codes: 1 coils, 3 holding registers)."""
    try:
        if words[0] == "holding":
            return {"registers": await context.async_getValues(1, 3, int(words[1]), int(words[2]))}
        if words[0] == "coils":
            return {"bits": await context.async_getValues(1, 1, int(words[1]), int(words[2]))}
        if words[0] == "decode":
            fmt, order = words[2], words[3]
            count = struct.calcsize(">" + fmt) // 2
            regs = list(await context.async_getValues(1, 3, int(words[1]), count))
            if order == "cdab":
                regs.reverse()
            raw = b"".join(r.to_bytes(2, "big") for r in regs)
            return {"value": struct.unpack(">" + fmt, raw)[0]}
        return {"error": f"unknown question {words[0]!r}"}
    except Exception as e:  # report, do not die: the test prints it
        return {"error": repr(e)}


if __name__ == "__main__":
    asyncio.run(main())
