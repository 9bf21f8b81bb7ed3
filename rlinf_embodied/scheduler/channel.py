"""Channel: a named, bounded, keyed FIFO between Ray processes.

One async Ray actor per channel holds an asyncio.Queue per key, so a get waiting on key A never
stalls a put or get on key B. Large items (tensors above `INLINE_BYTES`) do not travel through the
actor: the producer `ray.put`s them and only the reference is queued, so the bytes are copied once
into the object store and read once by the consumer.

`maxsize` bounds each key's queue (0 = unbounded); a put on a full key waits (back-pressure),
nothing is dropped.

Transport: a Ray actor call costs about a millisecond, and the rollout loop makes four per env step
(obs put/get, action put/get). So the actor also serves its queues on a node-local Unix socket
(`node_local=True`, the default): a handle on the same node sends put/get as pickled frames over
it (tens of microseconds), one connection per thread; other nodes, `qsize` and the async methods go
through Ray. Both reach the same queues, so they mix freely.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pickle
import socket
import struct
import sys
import threading
import uuid
from collections import defaultdict
from typing import Any

import numpy as np
import ray

from .names import check_name

logger = logging.getLogger(__name__)

DEFAULT_KEY = "__default__"
INLINE_BYTES = 64 * 1024  # items below this go by value through the actor
_ACTOR_PREFIX = "rlinf_channel:"
CLOSE_TIMEOUT_S = 10.0  # how long destroy() waits for the actor to refuse further puts and gets
# Channels this process created: the creator's handle keeps a (non-detached) actor alive, so a
# channel lives until destroy() or the end of the creating process, even if its Channel is dropped.
_CREATED: dict[str, Any] = {}


# Node-local frames. Request: op (1 byte), key length (4), payload length (8), key, payload.
# Reply: status (1 byte), payload length (8), payload (the pickled item, or an error message).
_REQUEST, _REPLY = "<BIQ", "<BQ"  # struct formats (plain strings: the actor class must pickle)
_REQUEST_SIZE, _REPLY_SIZE = struct.calcsize(_REQUEST), struct.calcsize(_REPLY)
_PUT, _GET = 1, 2
_OK, _ERROR = 0, 1


class ChannelGoneError(RuntimeError):
    """The channel was destroyed, or its actor died."""


@ray.remote(num_cpus=0, max_concurrency=100_000)
class _ChannelActor:
    """The queues. Items are stored as given: ("val", item), ("ref", [ObjectRef]) or ("bytes", pickled)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queues: dict[str, asyncio.Queue] = defaultdict(lambda: asyncio.Queue(maxsize=self.maxsize))
        self.socket_address: str | None = None
        self.closed = False  # destroy() closes the channel before killing the actor
        self.writers: set[asyncio.StreamWriter] = set()  # the open node-local connections

    async def serve_node_local(self) -> tuple[str, str]:
        """Start the Unix-socket server (once); returns (node id, abstract socket address)."""
        if self.socket_address is None:
            address = f"\0rlinf-channel-{uuid.uuid4().hex}"  # Linux abstract namespace: no file to clean up
            try:
                self._server = await asyncio.start_unix_server(self._serve, path=address)
                self.socket_address = address
            except OSError as error:  # e.g. not Linux: every handle then uses Ray calls
                logger.warning("channel socket unavailable (%s); put/get go through Ray calls", error)
        return self.socket_route()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: requests are answered in order, a get waits for its item."""
        self.writers.add(writer)
        try:
            while True:
                op, key_len, payload_len = struct.unpack(_REQUEST, await reader.readexactly(_REQUEST_SIZE))
                key = (await reader.readexactly(key_len)).decode()
                payload = await reader.readexactly(payload_len)
                try:
                    if op == _PUT:
                        await self.queues[key].put(("bytes", payload))
                        status, reply = _OK, b""
                    elif op == _GET:
                        status, reply = _OK, await _as_bytes(await self.queues[key].get())
                    else:
                        status, reply = _ERROR, f"unknown channel op {op}".encode()
                except Exception as error:  # report to the caller, keep serving
                    status, reply = _ERROR, f"{type(error).__name__}: {error}".encode()
                writer.write(struct.pack(_REPLY, status, len(reply)))
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            self.writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        """Refuse every later put and get, on either transport. The process ends tens of ms after ray.kill
        returns, and until then it took puts (lost with it) without this."""
        self.closed = True
        if self.socket_address is not None:
            self._server.close()
        for writer in list(self.writers):
            writer.close()  # the client's next request (or the one it waits on) fails: ChannelGoneError

    def _check_open(self) -> None:
        if self.closed:
            raise ChannelGoneError("the channel was destroyed")

    async def put(self, key: str, wrapped: tuple) -> None:
        self._check_open()
        await self.queues[key].put(wrapped)

    async def get(self, key: str) -> tuple:
        self._check_open()
        return await self.queues[key].get()

    async def get_batch(self, key: str, n: int) -> list[tuple]:
        self._check_open()
        return [await self.queues[key].get() for _ in range(n)]

    def socket_route(self) -> tuple[str, str | None]:
        return ray.get_runtime_context().get_node_id(), self.socket_address

    def qsize(self, key: str | None) -> int:
        if key is None:
            return sum(q.qsize() for q in self.queues.values())
        return self.queues[key].qsize() if key in self.queues else 0

    def keys(self) -> list[str]:
        return [k for k, q in self.queues.items() if q.qsize()]


@dataclasses.dataclass
class PendingChannel:
    """A channel whose actor is starting (from `Channel.start`)."""

    channel: "Channel"
    ready: Any  # ObjectRef: resolves once the actor is registered (and listening, when node-local)

    def wait(self) -> "Channel":
        ray.get(self.ready)
        return self.channel


def estimate_bytes(item: Any, limit: int = INLINE_BYTES, _depth: int = 0) -> int:
    """Tensor/array bytes inside an item (dicts, lists, tuples, dataclasses); stops counting past limit."""
    torch = sys.modules.get("torch")  # no tensor can exist where torch was never imported (channel actors)
    if torch is not None and isinstance(item, torch.Tensor):
        return item.numel() * item.element_size()
    if isinstance(item, np.ndarray):
        return item.nbytes
    if isinstance(item, (bytes, bytearray, str)):
        return len(item)
    if _depth > 6:
        return 0
    if isinstance(item, dict):
        children = item.values()
    elif isinstance(item, (list, tuple)):
        children = item
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        children = (getattr(item, f.name) for f in dataclasses.fields(item))
    else:
        return 0
    total = 0
    for child in children:
        total += estimate_bytes(child, limit, _depth + 1)
        if total > limit:
            break
    return total


def _wrap(item: Any) -> tuple:
    if estimate_bytes(item) > INLINE_BYTES:
        return ("ref", [ray.put(item)])
    return ("val", item)


def _unwrap(wrapped: tuple) -> Any:
    kind, payload = wrapped
    if kind == "bytes":
        return pickle.loads(payload)
    return ray.get(payload[0]) if kind == "ref" else payload


async def _unwrap_async(wrapped: tuple) -> Any:
    kind, payload = wrapped
    if kind == "bytes":
        return pickle.loads(payload)
    return (await payload[0]) if kind == "ref" else payload


async def _as_bytes(wrapped: tuple) -> bytes:
    """A queued item as the pickled bytes a node-local reader expects."""
    if wrapped[0] == "bytes":
        return wrapped[1]
    return pickle.dumps(await _unwrap_async(wrapped), protocol=pickle.HIGHEST_PROTOCOL)


class _ChannelActorError(RuntimeError):
    """The channel actor answered a socket request with an error (e.g. it is shutting down)."""


class _SocketConnection:
    """A client connection to a channel actor's node-local socket (used by one thread)."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address)

    def request(self, op: int, key: str, payload: bytes = b"") -> bytes:
        key_bytes = key.encode()
        self.sock.sendall(struct.pack(_REQUEST, op, len(key_bytes), len(payload)) + key_bytes)
        if payload:
            self.sock.sendall(payload)
        status, length = struct.unpack(_REPLY, self._read(_REPLY_SIZE))
        body = self._read(length)
        if status != _OK:
            raise _ChannelActorError(body.decode())
        return body

    def _read(self, size: int) -> bytes:
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise ConnectionError("the channel actor closed the connection")
            got += n
        return bytes(buffer)

    def close(self) -> None:
        self.sock.close()


def _check_name(name: Any) -> None:
    check_name(name, "channel", "env_to_rollout")


def _key(key: str | None) -> str:
    if key is None:
        return DEFAULT_KEY
    if not isinstance(key, str):
        raise TypeError(f"channel key {key!r} must be a str (or None for the default key)")
    return key


class Channel:
    """Create in the driver with `Channel.create(name)`, `Channel.connect(name)` anywhere else.

    Pickles as its name: pass it into worker methods freely.
    """

    def __init__(self, name: str, actor: Any = None):
        self.name = name
        self._actor = actor
        self._route: str | bool | None = None  # node-local socket address; False: use Ray; None: not asked
        self._local = threading.local()  # .connection: this thread's _SocketConnection

    # ---- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, maxsize: int = 0, node_local: bool = True) -> "Channel":
        """A fresh, empty channel; one that already has this name is destroyed first.

        node_local: also serve put/get over a Unix socket to handles on the actor's node (fast);
        False sends everything through Ray actor calls."""
        return cls.start(name, maxsize, node_local).wait()

    @classmethod
    def start(cls, name: str, maxsize: int = 0, node_local: bool = True) -> "PendingChannel":
        """`create` without waiting for the channel's actor process: start several channels (and worker
        groups) at once, then `.wait()` each; a process start costs seconds."""
        _check_name(name)
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"Channel {name!r}: maxsize={maxsize!r}; use 0 (unbounded) or a positive int")
        try:
            old = ray.get_actor(_ACTOR_PREFIX + name)
        except ValueError:
            old = None
        if old is not None:
            logger.info("Channel %r exists; replacing it with an empty one", name)
            ray.kill(old)
            _wait_name_free(_ACTOR_PREFIX + name)
        actor = _ChannelActor.options(name=_ACTOR_PREFIX + name).remote(maxsize)
        ready = actor.serve_node_local.remote() if node_local else actor.qsize.remote(None)
        _CREATED[name] = actor
        return PendingChannel(cls(name, actor), ready)

    @classmethod
    def connect(cls, name: str) -> "Channel":
        _check_name(name)
        channel = cls(name)
        channel._handle()
        return channel

    def _handle(self):
        if self._actor is None:
            try:
                self._actor = ray.get_actor(_ACTOR_PREFIX + self.name)
            except ValueError:
                raise ValueError(
                    f"no channel named {self.name!r}; create it first with Channel.create({self.name!r}) in the driver"
                ) from None
        return self._actor

    def _connection(self) -> _SocketConnection | None:
        """This thread's node-local connection, or None where the channel is reached through Ray."""
        if self._route is None:
            node_id, address = ray.get(self._handle().socket_route.remote())
            self._route = address if address and node_id == ray.get_runtime_context().get_node_id() else False
        if self._route is False:
            return None
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = self._local.connection = _SocketConnection(self._route)
            except OSError as error:  # e.g. another network namespace: Ray still works
                logger.warning("channel %r: node-local socket unavailable (%s); using Ray calls", self.name, error)
                self._route = False
                return None
        return connection

    def _request(self, connection: _SocketConnection, op: int, key: str, payload: bytes = b"") -> bytes:
        try:
            return connection.request(op, key, payload)
        except (ConnectionError, OSError) as error:
            connection.close()
            self._local.connection = None
            raise ChannelGoneError(
                f"channel {self.name!r} is gone (its actor was destroyed or died): {error}"
            ) from error
        except _ChannelActorError as error:
            raise RuntimeError(f"channel {self.name!r}: the channel actor failed the request: {error}") from error

    def destroy(self) -> None:
        """Kill the channel's actor; from the return on, every put and get on it fails (ChannelGoneError)."""
        actor = self._handle()
        try:
            ray.get(actor.close.remote(), timeout=CLOSE_TIMEOUT_S)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass  # dead already, or stuck: the kill ends it
        ray.kill(actor)
        _CREATED.pop(self.name, None)
        self._actor = None

    def __getstate__(self) -> dict:
        return {"name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["name"])

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"

    # ---- blocking -----------------------------------------------------------------------------
    def put(self, item: Any, key: str | None = None) -> None:
        """Append; blocks while the key's queue is full."""
        connection = self._connection()
        if connection is not None:
            self._request(connection, _PUT, _key(key), pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
            return
        ray.get(self._handle().put.remote(_key(key), _wrap(item)))

    def get(self, key: str | None = None) -> Any:
        """Take the oldest item of `key`; blocks until there is one."""
        connection = self._connection()
        if connection is not None:
            return pickle.loads(self._request(connection, _GET, _key(key)))
        return _unwrap(ray.get(self._handle().get.remote(_key(key))))

    def get_batch(self, n: int, key: str | None = None) -> list[Any]:
        """The next n items of `key`, in order (blocks until all n arrived)."""
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"get_batch(n={n!r}): n must be an int >= 0, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"get_batch(n={n}): n must be >= 0")
        if self._connection() is not None:
            return [self.get(key) for _ in range(n)]
        wrapped = ray.get(self._handle().get_batch.remote(_key(key), n))
        refs = [w[1][0] for w in wrapped if w[0] == "ref"]
        values = iter(ray.get(refs)) if refs else iter(())
        return [next(values) if w[0] == "ref" else _unwrap(w) for w in wrapped]

    def qsize(self, key: str | None = None) -> int:
        """Items waiting under `key`; with key=None, the default key's items."""
        return ray.get(self._handle().qsize.remote(_key(key)))

    def total_size(self) -> int:
        """Items waiting under every key."""
        return ray.get(self._handle().qsize.remote(None))

    # ---- async --------------------------------------------------------------------------------
    async def put_async(self, item: Any, key: str | None = None) -> None:
        await self._handle().put.remote(_key(key), _wrap(item))

    async def get_async(self, key: str | None = None) -> Any:
        return await _unwrap_async(await self._handle().get.remote(_key(key)))


def _wait_name_free(name: str, timeout_s: float = 10.0) -> None:
    """ray.kill is asynchronous: wait until the name can be taken again."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name)
        except ValueError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"channel actor {name!r} did not go away within {timeout_s}s")
