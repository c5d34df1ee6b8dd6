"""The gateway's lean HTTP/1.1 transport against a real uvicorn server, the server vLLM
itself runs on: chunked streams, sized bodies, keep-alive reuse, connections the server
closed, and bodies cut short. Loopback only."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from gateway_fixtures import serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mvgen.runtime.backends import new_http_client

pytestmark = pytest.mark.timeout(60)

PEERS: set[tuple[str, int]] = set()  # client (host, port) pairs the server has seen
GATE = threading.Event()


async def echo(request: Request) -> JSONResponse:
    PEERS.add(tuple(request.scope["client"]))
    return JSONResponse({"got": await request.json(), "path": request.url.path})


async def stream(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("n", "5"))

    async def events():
        for i in range(count):
            yield f"data: {i}\n\n".encode()
            if i == 0:  # hold the rest until the test has seen the first event
                while not GATE.is_set():
                    await asyncio.sleep(0.01)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def empty(request: Request) -> Response:
    return Response(status_code=204)


async def big(request: Request) -> Response:
    return Response(b"x" * 1_000_000, media_type="application/octet-stream")


APP = Starlette(
    routes=[
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/empty", empty),
        Route("/big", big),
    ]
)


@pytest.fixture(scope="module")
def server() -> str:
    with serve_asgi(APP) as url:
        yield url


def run(coro):
    return asyncio.run(coro)


def test_sized_json_and_keep_alive_reuse(server: str) -> None:
    async def go() -> list[dict]:
        async with new_http_client(10) as client:
            out = []
            for i in range(20):
                response = await client.post(f"{server}/echo", json={"i": i})
                out.append(response.json())
            return out

    PEERS.clear()
    answers = run(go())
    assert [a["got"]["i"] for a in answers] == list(range(20))
    assert len(PEERS) == 1  # one connection, reused for all 20 requests


def test_chunked_stream_arrives_piece_by_piece(server: str) -> None:
    GATE.clear()

    async def go() -> tuple[bytes, bytes]:
        async with new_http_client(10) as client:
            async with client.stream("GET", f"{server}/stream?n=4") as response:
                assert response.headers["transfer-encoding"] == "chunked"
                parts = response.aiter_raw()
                first = await asyncio.wait_for(parts.__anext__(), 5)  # before the rest exists
                GATE.set()
                rest = b"".join([p async for p in parts])
                return first, rest

    first, rest = run(go())
    assert first == b"data: 0\n\n"
    assert rest == b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: [DONE]\n\n"


def test_no_body_and_large_body(server: str) -> None:
    async def go() -> tuple[int, bytes, int]:
        async with new_http_client(10) as client:
            nothing = await client.get(f"{server}/empty")
            large = await client.get(f"{server}/big")
            return nothing.status_code, nothing.content, len(large.content)

    assert run(go()) == (204, b"", 1_000_000)


def test_connection_closed_by_the_server_while_idle_is_replaced() -> None:
    """A server that closes a keep-alive connection after each answer (as uvicorn does
    once its keep-alive timeout passes): the next request opens a new connection."""
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # idle timeout: the client still holds it as reusable

    async def go() -> list[bytes]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with new_http_client(5) as client:
                answers = []
                for _ in range(3):
                    answers.append((await client.get(f"http://127.0.0.1:{port}/")).content)
                    await asyncio.sleep(0.2)  # let the server's close arrive
                return answers
        finally:
            server.close()
            await server.wait_closed()

    assert run(go()) == [b"ok", b"ok", b"ok"]
    assert len(connections) == 3


def test_body_cut_short_is_a_protocol_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    async def go() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with new_http_client(5) as client:
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(f"http://127.0.0.1:{port}/")
        finally:
            server.close()
            await server.wait_closed()

    run(go())


def test_refused_connection_is_a_connect_error() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now

    async def go() -> None:
        async with new_http_client(5) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")

    run(go())
