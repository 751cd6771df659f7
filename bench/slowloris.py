"""Slow clients: N connections that trickle request headers and never finish them.

Each connection sends a request line, then one header line every INTERVAL seconds, and
reconnects when the server closes it. Stops by itself after SECONDS and prints how many
connections were open at the end and how many the server closed on the way.

usage: slowloris.py HOST PORT COUNT SECONDS [INTERVAL]
"""

import asyncio
import json
import sys


async def trickle(host, port, stop_at, interval, state):
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            state["connect_failures"] += 1
            await asyncio.sleep(0.2)
            continue
        state["open"] += 1
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            await writer.drain()
            n = 0
            while loop.time() < stop_at:
                try:
                    await asyncio.wait_for(reader.read(1024), timeout=interval)
                    # Data or EOF: the server answered (e.g. 408) or closed; start over.
                    state["closed_by_server"] += 1
                    break
                except asyncio.TimeoutError:
                    pass
                n += 1
                writer.write(b"X-Trickle-%d: x\r\n" % n)
                await writer.drain()
        except OSError:
            state["closed_by_server"] += 1
        finally:
            state["open"] -= 1
            writer.close()


async def main():
    host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    state = {"open": 0, "closed_by_server": 0, "connect_failures": 0, "open_max": 0}
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds

    async def watch():
        while loop.time() < stop_at:
            state["open_max"] = max(state["open_max"], state["open"])
            await asyncio.sleep(0.1)

    state_end = {}

    async def snapshot():
        await asyncio.sleep(max(0.0, seconds - 0.3))
        state_end["open_at_end"] = state["open"]

    await asyncio.gather(
        watch(), snapshot(), *(trickle(host, port, stop_at, interval, state) for _ in range(count))
    )
    state.update(state_end)
    del state["open"]
    print(json.dumps(state), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
