"""A recording stand-in for Modal's server side, for tests and benchmarks only.

It is not Modal. It is a grpclib server implementing the few RPCs of Modal's API
(`modal_proto.api_grpc.ModalClientBase`) that the real modal client sends when the
gpu-mode gateway calls its container pools: the class lookup (ClassGet, FunctionGet,
FunctionBindParams), spawning and results (FunctionMap, FunctionGetOutputs),
cancellation (FunctionCallCancel) and queues (QueueGetOrCreate, QueueGetById,
QueueHeartbeat, QueuePut, QueueGet); for generator methods (the design mvgen used
before, kept for benchmarks) also FunctionCallPutDataOut and FunctionCallGetDataOut.
Any other RPC answers UNIMPLEMENTED, so a client path nobody expected fails loudly. A
modal client reaches it through modal's own `server_url` setting (MODAL_SERVER_URL);
see `connect`, and `standin_default_client` for the client modal uses when code names none.

It also plays the GPU containers: each spawned input runs `run_input(params, method,
args, kwargs)` as an asyncio task after a simulated cold start, and FunctionCallCancel
cancels that task, as Modal's container runtime does for an async input
(modal/_container_entrypoint.py, `call_function`). A generator's items go back the way
Modal's container runtime sends them: whatever is ready, in one FunctionCallPutDataOut
per batch (modal/_runtime/container_io_manager.py, `generator_output_sender`), here on a
plain grpclib channel to itself. What Modal's servers do in between (scheduling, the
container heartbeat that carries a cancellation, queue storage) is modelled only as far
as the client can observe it.

Every RPC is recorded (name, request, time) for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import modal
from google.protobuf import empty_pb2
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.server import Server
from modal._serialization import deserialize, serialize
from modal_proto import api_pb2
from modal_proto.api_grpc import ModalClientBase, ModalClientStub
from standin_vllm import free_port

RunInput = Callable[[dict[str, str], str, tuple, dict], Awaitable[Any]]

QUEUE_PARTITION_ITEMS = 5000  # modal.Queue's documented limit per partition
_PICKLE = api_pb2.DATA_FORMAT_PICKLE
_Result = api_pb2.GenericResult


@dataclass
class Rpc:
    name: str
    request: Any
    at: float  # time.monotonic() when it arrived


@dataclass
class SpawnedCall:
    call_id: str
    input_id: str
    method: str
    params: dict[str, str]
    args: tuple
    kwargs: dict
    invocation_type: int
    started: bool = False  # a "container" began running it
    result: Any = None  # api_pb2.GenericResult once over
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    generator: bool = False
    data_out: list[bytes] = field(default_factory=list)  # a generator's items so far
    more_data: asyncio.Event = field(default_factory=asyncio.Event)


class _Partition:
    def __init__(self) -> None:
        self.items: deque[bytes] = deque()
        self.changed = asyncio.Condition()


def _unimplemented(name: str) -> Callable[..., Awaitable[None]]:
    async def handler(self: ModalStandin, stream: Any) -> None:
        self._record(name, await stream.recv_message())
        raise GRPCError(Status.UNIMPLEMENTED, f"{name} is not part of the Modal stand-in")

    return handler


# Every RPC of Modal's API, answering UNIMPLEMENTED unless ModalStandin overrides it.
_AllUnimplemented = type(
    "_AllUnimplemented",
    (ModalClientBase,),
    {name: _unimplemented(name) for name in ModalClientBase.__abstractmethods__},
)


class ModalStandin(_AllUnimplemented):
    """One deployed app with one parametrized class (`class_name`, parameter `model`)
    whose methods are `methods` (plain async methods, as the generated pools have)."""

    def __init__(
        self,
        run_input: RunInput,
        *,
        app_name: str = "standin-app",
        class_name: str = "Vllm",
        methods: tuple[str, ...] = ("request", "stream"),
        generators: tuple[str, ...] = (),
        start_delay: float = 0.0,
        crash: bool = False,
    ) -> None:
        self.run_input = run_input
        self.app_name = app_name
        self.class_name = class_name
        self.methods = methods
        self.generators = generators  # methods (among `methods`) that are generators
        self.start_delay = start_delay  # the first input "starts a container"
        self.crash = crash  # every input ends as when its container died
        self.rpcs: list[Rpc] = []
        self.calls: dict[str, SpawnedCall] = {}
        self._bound: dict[str, dict[str, str]] = {}
        self._queues: dict[str, dict[bytes, _Partition]] = {}
        self._ids = itertools.count(1)
        self._ready_at: float | None = None
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- what tests read --------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def names(self) -> list[str]:
        return [rpc.name for rpc in self.rpcs]

    def requests(self, name: str) -> list[Any]:
        return [rpc.request for rpc in self.rpcs if rpc.name == name]

    def first(self, name: str) -> Rpc | None:
        return next((rpc for rpc in self.rpcs if rpc.name == name), None)

    def cancelled_call_ids(self) -> list[str]:
        return [request.function_call_id for request in self.requests("FunctionCallCancel")]

    def spawned(self, method: str | None = None) -> list[SpawnedCall]:
        return [c for c in self.calls.values() if method is None or c.method == method]

    def outcome(self, call: SpawnedCall) -> str | None:
        """ "success", "terminated" (cancelled), "failure", ... once the call is over."""
        if call.result is None:
            return None
        return _Result.GenericStatus.Name(call.result.status).removeprefix("GENERIC_STATUS_")

    # --- running ----------------------------------------------------------------------

    def start(self) -> ModalStandin:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the Modal stand-in did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        if self._thread is not None:
            self._thread.join(10)

    def call_soon(self, coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        """Run a coroutine on the stand-in's loop (where the "containers" run)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> ModalStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, started: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()

        async def main() -> None:
            self._server = Server([self])
            self.port = free_port()
            await self._server.start("127.0.0.1", self.port)
            started.set()
            await self._stopped.wait()
            self._server.close()
            await self._server.wait_closed()

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    async def _shutdown(self) -> None:
        tasks = [c.task for c in self.calls.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stopped.set()

    def _record(self, name: str, request: Any) -> Any:
        self.rpcs.append(Rpc(name, request, time.monotonic()))
        return request

    async def _recv(self, name: str, stream: Any) -> Any:
        return self._record(name, await stream.recv_message())

    # --- class lookup -------------------------------------------------------------------

    def _service_metadata(self) -> api_pb2.FunctionHandleMetadata:
        formats = [api_pb2.DATA_FORMAT_PICKLE, api_pb2.DATA_FORMAT_CBOR]
        methods = {
            name: api_pb2.FunctionHandleMetadata(
                function_name=f"{self.class_name}.{name}",
                function_type=api_pb2.Function.FUNCTION_TYPE_GENERATOR
                if name in self.generators
                else api_pb2.Function.FUNCTION_TYPE_FUNCTION,
                is_method=True,
                use_method_name=name,
                supported_input_formats=formats,
                supported_output_formats=formats,
            )
            for name in self.methods
        }
        model = api_pb2.ClassParameterSpec(name="model", type=api_pb2.PARAM_TYPE_STRING)
        return api_pb2.FunctionHandleMetadata(
            function_name=f"{self.class_name}.*",
            function_type=api_pb2.Function.FUNCTION_TYPE_FUNCTION,
            class_parameter_info=api_pb2.ClassParameterInfo(
                format=api_pb2.ClassParameterInfo.PARAM_SERIALIZATION_FORMAT_PROTO,
                schema=[model],
            ),
            method_handle_metadata=methods,
            supported_input_formats=formats,
            supported_output_formats=formats,
        )

    async def ClassGet(self, stream: Any) -> None:
        request = await self._recv("ClassGet", stream)
        if (request.app_name, request.object_tag) != (self.app_name, self.class_name):
            raise GRPCError(Status.NOT_FOUND, f"No class {request.object_tag!r}")
        await stream.send_message(
            api_pb2.ClassGetResponse(
                class_id="cs-standin", handle_metadata=api_pb2.ClassHandleMetadata()
            )
        )

    async def FunctionGet(self, stream: Any) -> None:
        request = await self._recv("FunctionGet", stream)
        if (request.app_name, request.object_tag) != (self.app_name, f"{self.class_name}.*"):
            raise GRPCError(Status.NOT_FOUND, f"No function {request.object_tag!r}")
        ranked = api_pb2.FunctionData.RankedFunction(function=api_pb2.Function())
        await stream.send_message(
            api_pb2.FunctionGetResponse(
                function_id="fu-standin",
                handle_metadata=self._service_metadata(),
                function=api_pb2.FunctionData(ranked_functions=[ranked]),
            )
        )

    async def FunctionBindParams(self, stream: Any) -> None:
        request = await self._recv("FunctionBindParams", stream)
        values = api_pb2.ClassParameterSet.FromString(request.serialized_params).parameters
        params = {value.name: value.string_value for value in values}
        bound_id = f"fu-standin-{len(self._bound) + 1}"
        self._bound[bound_id] = params
        await stream.send_message(
            api_pb2.FunctionBindParamsResponse(
                bound_function_id=bound_id, handle_metadata=self._service_metadata()
            )
        )

    # --- calls ----------------------------------------------------------------------------

    async def FunctionMap(self, stream: Any) -> None:
        request = await self._recv("FunctionMap", stream)
        params = self._bound.get(request.function_id)
        if params is None or len(request.pipelined_inputs) != 1:
            raise GRPCError(Status.INVALID_ARGUMENT, "the stand-in takes one input per call")
        item = request.pipelined_inputs[0]
        if item.input.data_format != _PICKLE:
            raise GRPCError(Status.INVALID_ARGUMENT, "the stand-in reads pickled inputs only")
        args, kwargs = deserialize(item.input.args, None)
        number = next(self._ids)
        call = SpawnedCall(
            f"fc-{number}",
            f"in-{number}",
            item.input.method_name,
            params,
            args,
            kwargs,
            request.function_call_invocation_type,
            generator=item.input.method_name in self.generators,
        )
        self.calls[call.call_id] = call
        call.task = asyncio.ensure_future(self._execute(call))
        response_item = api_pb2.FunctionPutInputsResponseItem(
            idx=0, input_id=call.input_id, input_jwt="standin-jwt"
        )
        await stream.send_message(
            api_pb2.FunctionMapResponse(
                function_call_id=call.call_id,
                pipelined_inputs=[response_item],
                function_call_jwt="standin-jwt",
            )
        )

    async def _execute(self, call: SpawnedCall) -> None:
        """The "container": wait for it to start, then run the input."""
        try:
            await self._container_started()
            call.started = True
            if self.crash:
                call.result = _Result(
                    status=_Result.GENERIC_STATUS_INTERNAL_FAILURE,
                    exception="The stand-in's container crashed.",
                )
                return
            value = await self.run_input(call.params, call.method, call.args, call.kwargs)
            if call.generator:
                total = await self._send_generator_output(call, value)
                data = api_pb2.GeneratorDone(items_total=total).SerializeToString()
            else:
                data = serialize(value)
            call.result = _Result(status=_Result.GENERIC_STATUS_SUCCESS, data=data)
        except asyncio.CancelledError:
            call.result = _Result(status=_Result.GENERIC_STATUS_TERMINATED)
        except Exception as exc:
            call.result = _Result(
                status=_Result.GENERIC_STATUS_FAILURE, exception=repr(exc), data=serialize(exc)
            )
        finally:
            call.done.set()
            call.more_data.set()

    async def _send_generator_output(self, call: SpawnedCall, items: Any) -> int:
        pending: asyncio.Queue[Any] = asyncio.Queue()
        end = object()

        async def read() -> None:
            async for item in items:
                await pending.put(item)
            await pending.put(end)

        reader = asyncio.ensure_future(read())
        channel = Channel("127.0.0.1", self.port)
        try:
            stub, sent = ModalClientStub(channel), 0
            while True:
                batch = [await pending.get()]
                while not pending.empty():
                    batch.append(pending.get_nowait())
                chunks = [
                    api_pb2.DataChunk(data_format=_PICKLE, data=serialize(item), index=sent + i + 1)
                    for i, item in enumerate(x for x in batch if x is not end)
                ]
                if chunks:
                    request = api_pb2.FunctionCallPutDataRequest(
                        function_call_id=call.call_id, data_chunks=chunks
                    )
                    await stub.FunctionCallPutDataOut(request)
                    sent += len(chunks)
                if batch[-1] is end:
                    return sent
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            channel.close()

    async def FunctionCallPutDataOut(self, stream: Any) -> None:
        request = await self._recv("FunctionCallPutDataOut", stream)
        call = self.calls[request.function_call_id]
        call.data_out += [chunk.data for chunk in request.data_chunks]
        call.more_data.set()
        await stream.send_message(empty_pb2.Empty())

    async def _container_started(self) -> None:
        # The first input starts the container; every input waits until it is up, even
        # after the caller that started it gave up (as on Modal).
        if self._ready_at is None:
            self._ready_at = time.monotonic() + self.start_delay
        await asyncio.sleep(max(0.0, self._ready_at - time.monotonic()))

    def container_started(self) -> bool:
        """The "container" the first input started has finished starting."""
        return self._ready_at is not None and time.monotonic() >= self._ready_at

    async def FunctionGetOutputs(self, stream: Any) -> None:
        request = await self._recv("FunctionGetOutputs", stream)
        call = self.calls.get(request.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, "No such function call")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.done.wait(), max(0.0, request.timeout))
        if call.result is None:
            await stream.send_message(api_pb2.FunctionGetOutputsResponse(num_unfinished_inputs=1))
            return
        done = call.generator and call.result.status == _Result.GENERIC_STATUS_SUCCESS
        data_format = api_pb2.DATA_FORMAT_GENERATOR_DONE if done else _PICKLE
        output = api_pb2.FunctionGetOutputsItem(
            result=call.result, idx=0, input_id=call.input_id, data_format=data_format
        )
        await stream.send_message(api_pb2.FunctionGetOutputsResponse(outputs=[output]))

    async def FunctionCallGetDataOut(self, stream: Any) -> None:
        """A generator's items as they come (index from 1), until the call is over."""
        request = await self._recv("FunctionCallGetDataOut", stream)
        call = self.calls.get(request.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, "No such function call")
        sent = request.last_index
        while True:
            call.more_data.clear()
            while sent < len(call.data_out):
                sent += 1
                chunk = api_pb2.DataChunk(
                    data_format=_PICKLE, data=call.data_out[sent - 1], index=sent
                )
                await stream.send_message(chunk)
            if call.done.is_set():
                return
            await call.more_data.wait()

    async def FunctionCallCancel(self, stream: Any) -> None:
        request = await self._recv("FunctionCallCancel", stream)
        call = self.calls.get(request.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, "No such function call")
        if call.task is not None and not call.task.done():
            call.task.cancel()
        await stream.send_message(empty_pb2.Empty())

    # --- queues ---------------------------------------------------------------------------

    async def QueueGetOrCreate(self, stream: Any) -> None:
        request = await self._recv("QueueGetOrCreate", stream)
        if request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL:
            raise GRPCError(Status.UNIMPLEMENTED, "the stand-in makes ephemeral queues only")
        queue_id = f"qu-{next(self._ids)}"
        self._queues[queue_id] = {}
        await stream.send_message(
            api_pb2.QueueGetOrCreateResponse(queue_id=queue_id, metadata=api_pb2.QueueMetadata())
        )

    async def QueueGetById(self, stream: Any) -> None:
        request = await self._recv("QueueGetById", stream)
        self._queue(request.queue_id)
        await stream.send_message(
            api_pb2.QueueGetByIdResponse(
                queue_id=request.queue_id, metadata=api_pb2.QueueMetadata()
            )
        )

    async def QueueHeartbeat(self, stream: Any) -> None:
        await self._recv("QueueHeartbeat", stream)
        await stream.send_message(empty_pb2.Empty())

    async def QueuePut(self, stream: Any) -> None:
        request = await self._recv("QueuePut", stream)
        partition = self._partition(request.queue_id, request.partition_key)
        if len(partition.items) + len(request.values) > QUEUE_PARTITION_ITEMS:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, "Queue partition is full")
        async with partition.changed:
            partition.items.extend(request.values)
            partition.changed.notify_all()
        await stream.send_message(empty_pb2.Empty())

    async def QueueGet(self, stream: Any) -> None:
        request = await self._recv("QueueGet", stream)
        partition = self._partition(request.queue_id, request.partition_key)
        async with partition.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    partition.changed.wait_for(lambda: bool(partition.items)),
                    max(0.0, request.timeout),
                )
            count = min(len(partition.items), max(1, request.n_values))
            values = [partition.items.popleft() for _ in range(count)]
        await stream.send_message(api_pb2.QueueGetResponse(values=values))

    def _queue(self, queue_id: str) -> dict[bytes, _Partition]:
        if queue_id not in self._queues:
            raise GRPCError(Status.NOT_FOUND, f"No queue {queue_id}")
        return self._queues[queue_id]

    def _partition(self, queue_id: str, key: bytes) -> _Partition:
        return self._queue(queue_id).setdefault(key, _Partition())


@contextlib.contextmanager
def _modal_settings(url: str) -> Iterator[None]:
    """modal's `server_url` setting (MODAL_SERVER_URL) and a dummy token, for making a
    client; modal reads them only then."""
    settings = {"MODAL_SERVER_URL": url, "MODAL_TOKEN_ID": "ak-standin",
                "MODAL_TOKEN_SECRET": "as-standin"}  # fmt: skip
    old = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connect(url: str) -> modal.Client:
    """A real modal client whose server is the stand-in at `url`. The token is a dummy."""
    with _modal_settings(url):
        return modal.Client.from_credentials("ak-standin", "as-standin")


@contextlib.contextmanager
def standin_client(standin: ModalStandin) -> Iterator[modal.Client]:
    """`connect` to the stand-in, closed afterwards."""
    client = connect(standin.url)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def standin_default_client(standin: ModalStandin) -> Iterator[modal.Client]:
    """Make the stand-in the server of modal's default client (`modal.Client.from_env()`,
    what modal objects made without `client=` use, as code inside a Modal container does)
    until the block ends. modal makes that client once per process and forgets it when it
    is closed, so nothing else in the process may have made it before."""
    with _modal_settings(standin.url):
        client = modal.Client.from_env()
    try:
        yield client
    finally:
        client.close()
