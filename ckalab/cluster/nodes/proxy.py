"""A TCP relay from the real nodes' bridge to the API server on loopback.

    python -m ckalab.cluster.nodes.proxy LISTEN_IP:PORT TARGET_IP:PORT

The local control plane listens on 127.0.0.1 only, and a node's network namespace has its own
loopback. This relay listens on the bridge's host-side address (reachable only from the
namespaces on that bridge) and copies bytes both ways; TLS passes through untouched, so the
kubelet still verifies the API server's certificate (it names the server it expects with
tls-server-name in its kubeconfig).
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection(*target)
        except OSError:
            w.close()
            return
        await asyncio.gather(_pipe(r, tw), _pipe(tr, w))

    server = await asyncio.start_server(handle, *listen, reuse_address=True)
    async with server:
        await server.serve_forever()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m ckalab.cluster.nodes.proxy LISTEN_IP:PORT TARGET_IP:PORT", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(_addr(argv[0]), _addr(argv[1])))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
