"""How the gateway reaches a gpu-mode app's vLLM pools through Modal, and how a pool
answers: both ends of one protocol, and the plain-data wire format it carries.

Every call to a pool is spawned, so the gateway holds a `modal.FunctionCall` it can
cancel. In modal 1.6.4 `FunctionCall.cancel` is the only client call that stops work on
Modal's side: cancelling `.remote.aio()` or closing `.remote_gen.aio()` only stops the
local polling, and `spawn` refuses generator methods (docs/gateway.md cites the source).
So a stream is a plain method too: the pool puts the stream's items into an ephemeral
`modal.Queue` the gateway made for that request, and the gateway reads them from it.

When the client leaves, or the non-streaming budget ends, the gateway cancels the call.
Modal then cancels the input's asyncio task in the pool's container; that closes the
stream from vLLM, and vLLM aborts a request whose connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue as stdlib_queue
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

import modal

from .backends import UpstreamResponse, UpstreamStream, relay_headers
from .errors import ApiError, ModelNotDeployed, UpstreamError, UpstreamProtocolError
from .models import ServedModel

log = logging.getLogger("mvgen.modal")

# The gateway waits this long on its queue before checking that the pool's call is still
# running (a crashed container never puts the end of its stream).
QUEUE_POLL_SECONDS = 5.0
# Items taken from the queue per read: a read returns whatever is there, up to this.
READ_BATCH = 256
# A modal.Queue item may be up to 1 MiB (modal.Queue's docstring); joined chunks stay
# well under it, and so does one put.
MAX_ITEM_BYTES = 256 * 1024
MAX_PUT_BYTES = 1024 * 1024
# A pool whose queue stays full this long has lost its reader: it stops generating.
PUT_TIMEOUT = 60.0
# Items the pool reads ahead of vLLM while a put is in flight.
PENDING_ITEMS = 1024
# A FunctionCallCancel that has not returned by then is logged as failed.
CANCEL_TIMEOUT = 10.0

STREAM_END = None  # the last item of every stream in the queue

# A request waited for a container to start when the pool's vLLM became ready after the
# gateway spawned the call. The pool says how long ago it became ready (`ready_age`, on
# its answer or a stream's start item); the spawn was `waited` seconds ago at the
# gateway. The answer's trip back (under a second) is unknown, so a request counts as
# cold only when it waited this much longer than the pool had been ready.
COLD_START_MARGIN = 1.0


# --- Wire format between ModalBackend and PoolServer (plain picklable data) ----------


def response_to_wire(
    response: UpstreamResponse, *, ready_age: float | None = None
) -> dict[str, Any]:
    return {
        "status": response.status,
        "headers": dict(response.headers),
        "content": bytes(response.content),
        "ready_age": ready_age,
    }


def response_from_wire(data: Mapping[str, Any], *, waited: float | None = None) -> UpstreamResponse:
    return UpstreamResponse(
        int(data["status"]),
        relay_headers(data.get("headers") or {}),
        bytes(data["content"]),
        cold_start=waited_for_start(waited, data.get("ready_age")),
    )


def waited_for_start(waited: float | None, ready_age: Any) -> bool | None:
    """Whether a call spawned `waited` seconds ago met a container start, from the
    pool's `ready_age` (see COLD_START_MARGIN); None when the pool did not say."""
    if waited is None or not isinstance(ready_age, int | float) or isinstance(ready_age, bool):
        return None
    return waited > ready_age + COLD_START_MARGIN


def error_response(error: ApiError) -> UpstreamResponse:
    """An ApiError as an HTTP response, so a pool can answer with it like vLLM would."""
    headers = {"content-type": "application/json"}
    headers.update({k.lower(): v for k, v in error.headers().items()})
    return UpstreamResponse(error.status, headers, json.dumps(error.body()).encode())


def stream_start_to_wire(
    status: int, headers: Mapping[str, str], *, ready_age: float | None = None
) -> dict[str, Any]:
    return {"status": status, "headers": dict(headers), "ready_age": ready_age}


def stream_error_to_wire(error: ApiError) -> dict[str, Any]:
    """A failure after the stream started; the gateway turns it into an SSE error."""
    return {"error": error.to_wire()}


# --- Gateway side ---------------------------------------------------------------------


def _pool_failure(model: ServedModel, exc: BaseException) -> UpstreamError:
    return UpstreamProtocolError(
        f"The container pool for '{model.served_name}' failed ({type(exc).__name__}).",
        code="upstream_pool_error",
    )


class ModalBackend:
    """Calls a Modal parametrized class: `cls(model=key).request.spawn.aio(path, body)`
    and `cls(model=key).stream.spawn.aio(path, body, queue_id)`. `cls` is the class, or a
    mapping of model key to class when an app has several pools. `client` is the modal
    client for the queues (None: Modal's default, inside a container its own)."""

    def __init__(
        self,
        cls: Any,
        *,
        client: modal.Client | None = None,
        poll_interval: float = QUEUE_POLL_SECONDS,
    ) -> None:
        self._cls = cls
        self._client = client
        self.poll_interval = poll_interval
        self._pools: dict[str, Any] = {}
        self._calls: set[modal.FunctionCall] = set()  # spawned, not known to be finished
        self._cancels: set[asyncio.Task[None]] = set()

    def _pool(self, model: ServedModel) -> Any:
        if model.key not in self._pools:
            cls = self._cls
            if isinstance(cls, Mapping):
                if model.key not in cls:
                    raise ModelNotDeployed(model.served_name)
                cls = cls[model.key]
            self._pools[model.key] = cls(model=model.key)
        return self._pools[model.key]

    async def request(self, model: ServedModel, path: str, body: dict) -> UpstreamResponse:
        started = time.monotonic()
        wire = await self._call(model, "request", path, body)
        return response_from_wire(wire, waited=time.monotonic() - started)

    async def stream(self, model: ServedModel, path: str, body: dict) -> UpstreamStream:
        pool = self._pool(model)
        exits = contextlib.AsyncExitStack()
        try:
            queue = await exits.enter_async_context(modal.Queue.ephemeral(client=self._client))
            started = time.monotonic()
            call = await self._spawn(pool.stream, path, body, queue.object_id)
        except BaseException as exc:
            await exits.aclose()
            if isinstance(exc, Exception) and not isinstance(exc, ApiError):
                raise _pool_failure(model, exc) from exc
            raise
        reader = _QueueReader(self, model, call, queue, exits)
        try:
            # The first item arrives once a container runs the call: this is the cold start.
            first = await reader.next_item()
        except BaseException:  # also cancelled: the client left or the budget ran out
            await reader.aclose()
            raise
        if not isinstance(first, dict) or "status" not in first:
            await reader.aclose()
            raise UpstreamProtocolError(
                f"The container pool for '{model.served_name}' ended the stream early."
            )
        return UpstreamStream(
            int(first["status"]),
            relay_headers(first.get("headers") or {}),
            reader.chunks(),
            reader.aclose,
            cold_start=waited_for_start(time.monotonic() - started, first.get("ready_age")),
        )

    async def aclose(self) -> None:
        """Cancels every call still running (the gateway is shutting down)."""
        await asyncio.gather(*(self._cancel(call) for call in list(self._calls)))
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)
        self._pools.clear()

    async def _call(self, model: ServedModel, method: str, *args: Any) -> Any:
        """Spawn `method` on the model's pool and wait for its result; cancelled, it
        cancels the call on Modal's side before giving up."""
        try:
            call = await self._spawn(getattr(self._pool(model), method), *args)
        except ApiError:
            raise
        except Exception as exc:
            raise _pool_failure(model, exc) from exc
        try:
            return await call.get.aio()
        except Exception as exc:  # the call failed: nothing left to cancel
            raise _pool_failure(model, exc) from exc
        except BaseException:
            await self._cancel(call)
            raise
        finally:
            self._calls.discard(call)

    async def _spawn(self, method: Any, *args: Any) -> modal.FunctionCall:
        spawning = asyncio.ensure_future(method.spawn.aio(*args))
        try:
            call = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # Modal may hold the call already: cancel it as soon as its id arrives.
            spawning.add_done_callback(self._cancel_once_spawned)
            raise
        self._calls.add(call)
        return call

    def _cancel_once_spawned(self, spawning: asyncio.Future[modal.FunctionCall]) -> None:
        if not spawning.cancelled() and spawning.exception() is None:
            self._start_cancel(spawning.result())

    async def _cancel(self, call: modal.FunctionCall) -> None:
        """Send FunctionCallCancel, once per call, and wait for it. Shielded: a second
        cancellation of the waiting task does not stop the RPC."""
        if call in self._calls:
            await asyncio.shield(self._start_cancel(call))

    def _start_cancel(self, call: modal.FunctionCall) -> asyncio.Task[None]:
        self._calls.discard(call)
        task = asyncio.ensure_future(_send_cancel(call))
        self._cancels.add(task)  # a running task must stay referenced
        task.add_done_callback(self._cancels.discard)
        return task


async def _send_cancel(call: modal.FunctionCall) -> None:
    try:
        async with asyncio.timeout(CANCEL_TIMEOUT):
            await call.cancel.aio()
    except Exception as exc:
        log.error(
            "could not cancel Modal call %s (%s): its generation may keep running",
            call.object_id,
            type(exc).__name__,
        )


class _QueueReader:
    """The gateway's end of one stream: the spawned call and the queue it fills."""

    def __init__(
        self,
        backend: ModalBackend,
        model: ServedModel,
        call: modal.FunctionCall,
        queue: modal.Queue,
        exits: contextlib.AsyncExitStack,
    ) -> None:
        self._backend = backend
        self._model = model
        self._call = call
        self._queue = queue
        self._exits = exits  # leaves the ephemeral queue's context
        self._items: deque[Any] = deque()
        self._outcome: ApiError | None = None  # set once the call is over
        self._finished = False  # the pool sent its last item, or its call is over
        self._closed = False

    async def next_item(self) -> Any:
        try:
            while not self._items:
                self._items.extend(await self._read())
        except ApiError:
            raise
        except Exception as exc:
            raise _pool_failure(self._model, exc) from exc
        item = self._items.popleft()
        if item is STREAM_END:
            self._finished = True
        return item

    async def _read(self) -> list[Any]:
        """The next items; while none arrive, check now and then that the call still
        runs. Once it is over, what it put before ending is still read, then its outcome
        is raised."""
        if self._outcome is not None:
            batch = await self._queue.get_many.aio(READ_BATCH, block=False)
            if not batch:
                raise self._outcome
            return batch
        try:
            return await self._queue.get_many.aio(READ_BATCH, timeout=self._backend.poll_interval)
        except stdlib_queue.Empty:
            self._outcome = await self._call_outcome()
            return []

    async def _call_outcome(self) -> ApiError | None:
        """None while the call runs (a cold start, a slow model); once it is over without
        having put the end of its stream, the error to answer with."""
        try:
            await self._call.get.aio(timeout=0)
        except TimeoutError:  # builtin: still running (modal/_functions.py poll_function)
            return None
        except Exception as exc:
            self._finished = True
            return _pool_failure(self._model, exc)
        self._finished = True
        return UpstreamProtocolError(
            f"The container pool for '{self._model.served_name}' ended the stream early."
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self.next_item()
            if item is STREAM_END:
                return
            if isinstance(item, dict):
                self._finished = True  # an error is the pool's last word
                raise ApiError.from_wire(item["error"])
            yield bytes(item)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._finished:
                self._backend._calls.discard(self._call)
            else:
                await self._backend._cancel(self._call)
        finally:
            await self._exits.aclose()


# --- Pool side (inside the GPU container) -----------------------------------------------


async def send_stream(
    items: AsyncIterator[Any], queue_id: str, *, client: modal.Client | None = None
) -> None:
    """Put a pool stream's wire items, then STREAM_END, into the gateway's queue.

    Items that arrive while a put is in flight go out together in the next put (as
    modal's own generator output sender does), with consecutive chunks joined. Cancelled
    (the gateway cancelled the call), it closes `items`, which closes the connection to
    vLLM, which makes vLLM abort the generation.
    """
    queue = modal.Queue.from_id(queue_id, client=client)
    pending: asyncio.Queue[Any] = asyncio.Queue(PENDING_ITEMS)

    async def read() -> None:
        async with contextlib.aclosing(items) as stream:
            async for item in stream:
                await pending.put(item)
        await pending.put(STREAM_END)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(read())
        await queue.hydrate.aio()  # one lookup, while vLLM computes the first token
        ended = False
        while not ended:
            batch = [await pending.get()]
            while not pending.empty():
                batch.append(pending.get_nowait())
            ended = batch[-1] is STREAM_END
            for values in put_batches(batch):
                await queue.put_many.aio(values, timeout=PUT_TIMEOUT)


def put_batches(items: list[Any]) -> list[list[Any]]:
    """`items` as puts: consecutive chunks joined up to MAX_ITEM_BYTES (a large chunk is
    split), each put at most MAX_PUT_BYTES of chunks."""
    puts: list[list[Any]] = [[]]
    size = 0
    for item in _join_chunks(items):
        length = len(item) if isinstance(item, bytes) else 0
        if puts[-1] and size + length > MAX_PUT_BYTES:
            puts.append([])
            size = 0
        puts[-1].append(item)
        size += length
    return puts


def _join_chunks(items: list[Any]) -> list[Any]:
    joined: list[Any] = []
    buffer = bytearray()
    for item in items:
        if isinstance(item, bytes):
            buffer += item
            while len(buffer) > MAX_ITEM_BYTES:
                joined.append(bytes(buffer[:MAX_ITEM_BYTES]))
                del buffer[:MAX_ITEM_BYTES]
            continue
        if buffer:
            joined.append(bytes(buffer))
            buffer.clear()
        joined.append(item)
    if buffer:
        joined.append(bytes(buffer))
    return joined
