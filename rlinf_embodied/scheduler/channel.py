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
through Ray. Both reach the same queues and serialize alike, so they mix freely: an item is pickled as Ray
pickles (ray.cloudpickle: lambdas, classes of the driver's `__main__` and modules registered with
`ray.cloudpickle.register_pickle_by_value` travel by value; everything else by reference, so its module must be
importable where it is read). Large items put through the socket travel through the actor as bytes (the Ray path
`ray.put`s them, see above).

An item that cannot be pickled is refused at `put` (TypeError naming its type). An item that cannot be unpickled
where it is read (its class's module is not importable there) raises ChannelItemError at `get`, naming its type
and the reason, and stays first in its key's queue: nothing is lost. `get(timeout=...)` bounds a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import pickle
import socket
import struct
import sys
import threading
import types
import uuid
from collections import defaultdict
from typing import Any

import numpy as np
import ray
import ray.cloudpickle

from .names import NameInUseError, check_name, in_use_message

logger = logging.getLogger(__name__)

DEFAULT_KEY = "__default__"
INLINE_BYTES = 64 * 1024  # items below this go by value through the actor
_ACTOR_PREFIX = "rlinf_channel:"
CLOSE_TIMEOUT_S = 10.0  # how long destroy() waits for the actor to refuse further puts and gets
# Channels this process created: the creator's handle keeps a (non-detached) actor alive, so a
# channel lives until destroy() or the end of the creating process, even if its Channel is dropped.
_CREATED: dict[str, Any] = {}


# Node-local frames. Request: op (1 byte), key length (4), item type length (4), payload length (8), key, item type,
# payload (a put's pickled item; a get's timeout as a double, or nothing).
# Reply: status (1 byte), item type length (4), payload length (8), item type, payload (the pickled item, or an
# error message).
_REQUEST, _REPLY = "<BIIQ", "<BIQ"  # struct formats (plain strings: the actor class must pickle)
_REQUEST_SIZE, _REPLY_SIZE = struct.calcsize(_REQUEST), struct.calcsize(_REPLY)
_PUT, _GET, _UNGET = 1, 2, 3  # _UNGET: put an item a reader could not unpickle back, first in its queue
_OK, _ERROR, _TIMEOUT, _UNREADABLE = 0, 1, 2, 3
_TIMEOUT_FORMAT = "<d"
# Channel names under this prefix are worker groups' p2p mailboxes (scheduler/worker.py).
RESERVED_PREFIX = "__p2p__/"


class ChannelGoneError(RuntimeError):
    """The channel was destroyed, or its actor died."""


class ChannelItemError(RuntimeError):
    """An item of the channel cannot be unpickled in the reading process; it stays first in its key's queue."""


def _type_name(item: Any) -> str:
    cls = type(item)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _by_value_modules() -> set:
    return getattr(getattr(ray.cloudpickle, "cloudpickle", None), "_PICKLE_BY_VALUE_MODULES", set())


def _needs_by_value(item: Any, depth: int = 2) -> bool:
    """Whether `item`, or a value of a dict / list / tuple within `depth` levels of it, is (an instance of) a class
    or function of `__main__` or of a module registered by value, which stdlib pickle would store by reference.
    Types are checked, not the pickled bytes: scanning a 16 MB tensor's bytes for the module names cost 6 ms, half
    again its pickling. Deeper ones are pickled by reference, and a reader that cannot resolve them gets
    ChannelItemError naming the item's type, the item staying first in its queue."""
    for obj in (item, type(item)):
        module = getattr(obj, "__module__", None) if isinstance(obj, (type, types.FunctionType)) else None
        if module is not None and (module == "__main__" or module in _by_value_modules()):
            return True
    if depth and isinstance(item, dict):
        return any(_needs_by_value(value, depth - 1) for value in item.values())
    if depth and isinstance(item, (list, tuple)) and len(item) <= 64:
        return any(_needs_by_value(value, depth - 1) for value in item)
    return False


def _dumps(item: Any) -> bytes:
    """`item` pickled as Ray pickles it (ray.cloudpickle), through the faster stdlib pickle where that gives what
    cloudpickle would: stdlib pickle stores every class and function by reference, which a worker cannot resolve for
    one of the driver's `__main__` or of a module registered by value (before: accepted by put, then the get failed
    in the worker, and the item was lost), and refuses lambdas and local classes (before: refused by put on this
    transport and accepted by put_async). TypeError naming the item's type where neither can pickle it."""
    try:
        if not _needs_by_value(item):
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - any failure (a lambda, a local class): cloudpickle decides
        pass
    try:
        return ray.cloudpickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # noqa: BLE001
        raise TypeError(
            f"a channel item of type {_type_name(item)} cannot be pickled ({type(error).__name__}: {error}); "
            "put plain data, tensors, arrays or instances of importable classes"
        ) from None


class _ItemUnreadable(Exception):
    """The channel actor could not unpickle a queued item (a large one put through Ray) for a socket reader."""


class _KeyQueue(asyncio.Queue):
    """asyncio.Queue that can put an item back first (a reader could not unpickle it)."""

    def put_front_nowait(self, item: Any) -> None:
        """First in the queue, beyond maxsize if need be (it held the item a moment ago)."""
        self._queue.appendleft(item)
        self._unfinished_tasks += 1
        self._finished.clear()
        self._wakeup_next(self._getters)


async def _take(queue: asyncio.Queue, timeout: float | None) -> tuple:
    """The queue's next item; asyncio.TimeoutError after `timeout` s (None: waits for ever). A get that times
    out takes nothing."""
    if timeout is None:
        return await queue.get()
    return await asyncio.wait_for(queue.get(), timeout)


@ray.remote(num_cpus=0, max_concurrency=100_000)
class _ChannelActor:
    """The queues. Items are stored with their type's name: ("bytes", pickled, type) or, a large item put through
    Ray, ("ref", [ObjectRef], type). The actor unpickles no item but a large one a socket reader takes."""

    def __init__(self, maxsize: int, owner_job: str = ""):
        self.maxsize = maxsize
        self.owner_job = owner_job  # the Ray job (run) that created the channel: another run's create refuses it
        self.queues: dict[str, _KeyQueue] = defaultdict(lambda: _KeyQueue(maxsize=self.maxsize))
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
                header = await reader.readexactly(_REQUEST_SIZE)
                op, key_len, type_len, payload_len = struct.unpack(_REQUEST, header)
                names = await reader.readexactly(key_len + type_len)  # one read for both: each await costs time
                key, type_name = names[:key_len].decode(), names[key_len:].decode()
                payload = await reader.readexactly(payload_len)
                status, reply_type, reply = _OK, "", b""
                try:
                    if op == _PUT:
                        await self.queues[key].put(("bytes", payload, type_name))
                    elif op == _UNGET:
                        self.queues[key].put_front_nowait(("bytes", payload, type_name))
                    elif op == _GET:
                        timeout = struct.unpack(_TIMEOUT_FORMAT, payload)[0] if payload else None
                        wrapped = await _take(self.queues[key], timeout)
                        reply_type, reply = wrapped[2], await self._as_bytes(key, wrapped)
                    else:
                        status, reply = _ERROR, f"unknown channel op {op}".encode()
                except asyncio.TimeoutError:
                    status = _TIMEOUT
                except _ItemUnreadable as error:
                    status, reply_type, reply = _UNREADABLE, wrapped[2], str(error).encode()
                except Exception as error:  # report to the caller, keep serving
                    status, reply = _ERROR, f"{type(error).__name__}: {error}".encode()
                writer.write(struct.pack(_REPLY, status, len(reply_type.encode()), len(reply)))
                writer.write(reply_type.encode())
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

    async def _as_bytes(self, key: str, wrapped: tuple) -> bytes:
        """A queued item as the pickled bytes a node-local reader expects. A large item put through Ray (an
        object-store reference) is read here: where this process cannot unpickle it, it goes back first in its
        queue, and _ItemUnreadable tells the reader."""
        if wrapped[0] == "bytes":
            return wrapped[1]
        try:
            return _dumps(await _unwrap_async(wrapped))
        except Exception as error:  # noqa: BLE001 - an unpickling error of any type
            self.queues[key].put_front_nowait(wrapped)
            cause = getattr(error, "cause", None) or error
            raise _ItemUnreadable(f"{type(cause).__name__}: {cause}") from None

    async def put(self, key: str, wrapped: tuple) -> None:
        self._check_open()
        await self.queues[key].put(wrapped)

    def unget(self, key: str, items: list[tuple]) -> None:
        """Put `items` back first in `key`'s queue, in their order (a reader could not unpickle one of them)."""
        for wrapped in reversed(items):
            self.queues[key].put_front_nowait(wrapped)

    async def get(self, key: str, timeout: float | None = None) -> tuple:
        self._check_open()
        try:
            return await _take(self.queues[key], timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no item under key {key!r} within {timeout} s") from None

    async def get_batch(self, key: str, n: int) -> list[tuple]:
        self._check_open()
        items = []
        try:
            for _ in range(n):
                items.append(await self.queues[key].get())
        except BaseException:
            self.unget(key, items)
            raise
        return items

    def owner(self) -> str:
        return self.owner_job

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
    """An item put through Ray: small ones pickled here, as the socket path does (the actor never unpickles them,
    and a reader that cannot gets an error it can recover from), large ones into the object store."""
    if estimate_bytes(item) > INLINE_BYTES:
        try:
            return ("ref", [ray.put(item)], _type_name(item))
        except Exception as error:  # noqa: BLE001 - Ray's serialization error, named like _dumps'
            raise TypeError(
                f"a channel item of type {_type_name(item)} cannot be pickled ({type(error).__name__}: {error})"
            ) from None
    return ("bytes", _dumps(item), _type_name(item))


def _unwrap(wrapped: tuple) -> Any:
    kind, payload = wrapped[:2]
    if kind == "bytes":
        return pickle.loads(payload)
    return ray.get(payload[0]) if kind == "ref" else payload


async def _unwrap_async(wrapped: tuple) -> Any:
    kind, payload = wrapped[:2]
    if kind == "bytes":
        return pickle.loads(payload)
    return (await payload[0]) if kind == "ref" else payload


class _ChannelActorError(RuntimeError):
    """The channel actor answered a socket request with an error (e.g. it is shutting down)."""


class _ChannelTimeout(Exception):
    """The channel actor answered a get: no item within its timeout."""


class _ChannelItemUnreadable(Exception):
    """The channel actor answered a get: it could not unpickle the item (which stays first in the queue)."""

    def __init__(self, reason: str, type_name: str):
        super().__init__(reason)
        self.reason, self.type_name = reason, type_name


class _SocketConnection:
    """A client connection to a channel actor's node-local socket (used by one thread)."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address)

    def request(self, op: int, key: str, payload: bytes = b"", type_name: str = "") -> tuple[memoryview, str]:
        """(the reply's payload, its item type); _ChannelTimeout where a get's timeout passed."""
        key_bytes, type_bytes = key.encode(), type_name.encode()
        header = struct.pack(_REQUEST, op, len(key_bytes), len(type_bytes), len(payload))
        self.sock.sendall(header + key_bytes + type_bytes)
        if payload:
            self.sock.sendall(payload)
        status, type_len, length = struct.unpack(_REPLY, self._read(_REPLY_SIZE))
        typed_body = memoryview(self._read(type_len + length))  # one read for both; sliced without a copy
        reply_type, body = bytes(typed_body[:type_len]).decode(), typed_body[type_len:]
        if status == _TIMEOUT:
            raise _ChannelTimeout()
        if status == _UNREADABLE:
            raise _ChannelItemUnreadable(bytes(body).decode(), reply_type)
        if status != _OK:
            raise _ChannelActorError(bytes(body).decode())
        return body, reply_type

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


def _require_ray(name: str) -> None:
    """Refuse to work without Ray in this process: a Ray call would start a Ray instance of its own (outside the
    rlinf_embodied namespace, without the simulated GPUs a later Cluster needs)."""
    if not ray.is_initialized():
        raise RuntimeError(
            f"Channel {name!r}: Ray is not running in this process; start a Cluster first (Cluster(...) starts or "
            "joins Ray), then create or connect channels"
        )


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"timeout={timeout!r}: give seconds >= 0, or None to wait for ever")
    return float(timeout)


class Channel:
    """Create in the driver with `Channel.create(name)`, `Channel.connect(name)` anywhere else.

    Pickles as its name: pass it into worker methods freely.
    """

    def __init__(self, name: str, actor: Any = None):
        self.name = name
        self._actor = actor
        self._route: str | bool | None = None  # node-local socket address; False: use Ray; None: not asked
        self._local = threading.local()  # .connection: this thread's _SocketConnection
        self._destroyed = False  # destroy() was called on this handle

    # ---- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, maxsize: int = 0, node_local: bool = True) -> "Channel":
        """A fresh, empty channel. One that already has this name is destroyed first where this run (this process's
        Ray job) made it, or the run that made it has ended; one of another running run is left alone, and
        NameInUseError says so (before: destroyed, and that run's workers waited on a channel that was gone).

        node_local: also serve put/get over a Unix socket to handles on the actor's node (fast);
        False sends everything through Ray actor calls."""
        return cls.start(name, maxsize, node_local).wait()

    @classmethod
    def start(cls, name: str, maxsize: int = 0, node_local: bool = True, *, _mailbox: bool = False) -> "PendingChannel":
        """`create` without waiting for the channel's actor process: start several channels (and worker
        groups) at once, then `.wait()` each; a process start costs seconds."""
        _check_name(name)
        if name.startswith(RESERVED_PREFIX) and not _mailbox:  # before: replaced a running group's mailbox
            group = name[len(RESERVED_PREFIX) :]
            raise ValueError(
                f"channel name {name!r} is reserved: names under {RESERVED_PREFIX!r} are worker groups' p2p mailboxes "
                f"(worker group {group!r} uses this one); give the channel another name"
            )
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"Channel {name!r}: maxsize={maxsize!r}; use 0 (unbounded) or a positive int")
        _require_ray(name)
        try:
            old = ray.get_actor(_ACTOR_PREFIX + name)
        except ValueError:
            old = None
        if old is not None:
            holder = _holder_of(old)
            if holder is not None:
                raise NameInUseError(in_use_message([], [name], cluster_address(), [describe_run(holder)]))
            logger.info(
                "Channel %r exists (this run's, or left by a run that ended); replacing it with an empty one", name
            )
            ray.kill(old)
            _wait_name_free(_ACTOR_PREFIX + name)
        # A name another run takes meanwhile makes this raise (Ray's names are unique): nothing is replaced.
        actor = _ChannelActor.options(name=_ACTOR_PREFIX + name).remote(maxsize, current_job())
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
            if self._destroyed:
                raise ChannelGoneError(f"channel {self.name!r} is gone (destroy() was called on this handle)")
            _require_ray(self.name)
            try:
                self._actor = ray.get_actor(_ACTOR_PREFIX + self.name)
            except ValueError:
                raise ValueError(
                    f"no channel named {self.name!r}; create it first with Channel.create({self.name!r}) in the driver"
                ) from None
        return self._actor

    @contextlib.contextmanager
    def _through_ray(self):
        """A Ray call to the channel's actor: its death (destroy() from another handle, the creating process's
        end) raises ChannelGoneError, as the socket path does (before: Ray's ActorDiedError)."""
        try:
            yield
        except ray.exceptions.RayActorError as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            raise ChannelGoneError(
                f"channel {self.name!r} is gone (its actor was destroyed or died): {lines[0] if lines else error}"
            ) from None

    @contextlib.contextmanager
    def _timing_out(self, key: str, timeout: float | None):
        """The actor's TimeoutError (a get through Ray) as the socket path's, without the remote traceback."""
        try:
            yield
        except TimeoutError:
            raise TimeoutError(f"channel {self.name!r}: no item under key {key!r} within {timeout} s") from None

    def _connection(self) -> _SocketConnection | None:
        """This thread's node-local connection, or None where the channel is reached through Ray."""
        if self._route is None:
            with self._through_ray():
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

    def _request(
        self, connection: _SocketConnection, op: int, key: str, payload: bytes = b"", type_name: str = ""
    ) -> tuple[bytes, str]:
        try:
            return connection.request(op, key, payload, type_name)
        except (ConnectionError, OSError) as error:
            connection.close()
            self._local.connection = None
            raise ChannelGoneError(
                f"channel {self.name!r} is gone (its actor was destroyed or died): {error}"
            ) from error
        except _ChannelActorError as error:
            raise RuntimeError(f"channel {self.name!r}: the channel actor failed the request: {error}") from error

    def destroy(self) -> None:
        """Kill the channel's actor; from the return on, every put and get on it fails (ChannelGoneError), through
        any handle. Destroying a channel that is gone already does nothing (before: "create it first")."""
        if self._destroyed:
            return
        try:
            actor = self._handle()
        except ValueError:
            logger.debug("channel %r: destroy() of a channel that is gone already", self.name)
            self._destroyed = True
            return
        try:
            ray.get(actor.close.remote(), timeout=CLOSE_TIMEOUT_S)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass  # dead already, or stuck: the kill ends it
        ray.kill(actor)
        if _CREATED.get(self.name) is actor:
            _CREATED.pop(self.name)
        self._actor, self._destroyed = None, True

    def __getstate__(self) -> dict:
        return {"name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["name"])

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"

    # ---- reading what was put ---------------------------------------------------------------------
    def _unreadable(
        self, key: str, type_name: str, error: BaseException | str, where: str = "this process"
    ) -> ChannelItemError:
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return ChannelItemError(
            f"channel {self.name!r}, key {key!r}: an item of type {type_name or '?'} cannot be unpickled in {where} "
            f"({reason}); it stays first in the queue. Its class must be importable where it is read: define it in "
            "a module that process can import, or register that module with "
            "ray.cloudpickle.register_pickle_by_value(module) in the process that puts it"
        )

    def _decode(self, key: str, items: list[tuple]) -> list[Any]:
        """The items (got through Ray) unpickled; where one cannot be, all of them go back first in the queue, in
        order, and ChannelItemError names its type."""
        refs = [w[1][0] for w in items if w[0] == "ref"]
        try:
            fetched = iter(ray.get(refs)) if refs else iter(())
        except ray.exceptions.RayError as error:
            failed = next(w for w in items if w[0] == "ref")
            self._unget(key, items)
            raise self._unreadable(key, failed[2], getattr(error, "cause", None) or error) from None
        values = []
        for wrapped in items:
            try:
                values.append(next(fetched) if wrapped[0] == "ref" else _unwrap(wrapped))
            except Exception as error:  # noqa: BLE001 - an unpickling error of any type
                self._unget(key, items)
                raise self._unreadable(key, wrapped[2], error) from None
        return values

    def _unget(self, key: str, items: list[tuple]) -> None:
        with self._through_ray():
            ray.get(self._handle().unget.remote(key, items))

    def _socket_get(self, connection: _SocketConnection, key: str, timeout: float | None) -> tuple[bytes, str]:
        payload = b"" if timeout is None else struct.pack(_TIMEOUT_FORMAT, timeout)
        try:
            return self._request(connection, _GET, key, payload)
        except _ChannelTimeout:
            raise TimeoutError(f"channel {self.name!r}: no item under key {key!r} within {timeout} s") from None
        except _ChannelItemUnreadable as error:
            raise self._unreadable(key, error.type_name, error.reason, where="the channel's actor") from None

    def _socket_decode(self, connection: _SocketConnection, key: str, raw: list[tuple[bytes, str]]) -> list[Any]:
        values = []
        for payload, type_name in raw:
            try:
                values.append(pickle.loads(payload))
            except Exception as error:  # noqa: BLE001 - an unpickling error of any type
                for back_payload, back_type in reversed(raw):  # first again, in their order
                    self._request(connection, _UNGET, key, back_payload, back_type)
                raise self._unreadable(key, type_name, error) from None
        return values

    # ---- blocking -----------------------------------------------------------------------------
    def put(self, item: Any, key: str | None = None) -> None:
        """Append; blocks while the key's queue is full. TypeError where the item cannot be pickled."""
        connection = self._connection()
        if connection is not None:
            self._request(connection, _PUT, _key(key), _dumps(item), _type_name(item))
            return
        wrapped = _wrap(item)
        with self._through_ray():
            ray.get(self._handle().put.remote(_key(key), wrapped))

    def get(self, key: str | None = None, timeout: float | None = None) -> Any:
        """Take the oldest item of `key`; blocks until there is one, or raises TimeoutError after `timeout` s
        (nothing is taken then). ChannelItemError where the item cannot be unpickled here (it stays queued)."""
        key, timeout = _key(key), _check_timeout(timeout)
        connection = self._connection()
        if connection is not None:
            raw = self._socket_get(connection, key, timeout)
            return self._socket_decode(connection, key, [raw])[0]
        with self._through_ray(), self._timing_out(key, timeout):
            wrapped = ray.get(self._handle().get.remote(key, timeout))
        return self._decode(key, [wrapped])[0]

    def get_batch(self, n: int, key: str | None = None) -> list[Any]:
        """The next n items of `key`, in order (blocks until all n arrived)."""
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"get_batch(n={n!r}): n must be an int >= 0, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"get_batch(n={n}): n must be >= 0")
        key = _key(key)
        connection = self._connection()
        if connection is not None:
            raw = [self._socket_get(connection, key, None) for _ in range(n)]
            return self._socket_decode(connection, key, raw)
        with self._through_ray():
            wrapped = ray.get(self._handle().get_batch.remote(key, n))
        return self._decode(key, wrapped)

    def qsize(self, key: str | None = None) -> int:
        """Items waiting under `key`; with key=None, the default key's items."""
        with self._through_ray():
            return ray.get(self._handle().qsize.remote(_key(key)))

    def total_size(self) -> int:
        """Items waiting under every key."""
        with self._through_ray():
            return ray.get(self._handle().qsize.remote(None))

    # ---- async --------------------------------------------------------------------------------
    async def put_async(self, item: Any, key: str | None = None) -> None:
        wrapped = _wrap(item)
        with self._through_ray():
            await self._handle().put.remote(_key(key), wrapped)

    async def get_async(self, key: str | None = None, timeout: float | None = None) -> Any:
        key, timeout = _key(key), _check_timeout(timeout)
        with self._through_ray(), self._timing_out(key, timeout):
            wrapped = await self._handle().get.remote(key, timeout)
        try:
            return await _unwrap_async(wrapped)
        except Exception as error:  # noqa: BLE001 - an unpickling error of any type
            with self._through_ray():
                await self._handle().unget.remote(key, [wrapped])
            raise self._unreadable(key, wrapped[2], getattr(error, "cause", None) or error) from None


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


# ---- which run holds a name ---------------------------------------------------------------------------
def current_job() -> str:
    """This process's Ray job id (hex): one per driver, so one per training run; its workers' actors share it."""
    return ray.get_runtime_context().get_job_id()


def cluster_address() -> str:
    """The address of the Ray cluster this process is connected to, as cluster.address takes it."""
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - e.g. Ray Client
        return "?"


def _job_entry(job_id: str) -> dict | None:
    """Ray's job table entry of `job_id`; None where it cannot be read (then nobody may take its names)."""
    try:
        from ray._private import state

        return next((job for job in state.state.job_table() if job["JobID"] == job_id), None)
    except Exception:  # noqa: BLE001 - a private API: read what it gives, assume the job runs otherwise
        return None


def other_run(job_id: str | None) -> dict | None:
    """Where `job_id` is another Ray job than this process's and has not ended: its job table entry (just its id
    where the table says nothing: taken for running). None for this process's job, one that ended, or none."""
    if not job_id or job_id == current_job():
        return None
    entry = _job_entry(job_id)
    if entry is None:
        return {"JobID": job_id}
    return None if entry.get("IsDead") else entry


def describe_run(entry: dict) -> str:
    """A run for a user: its Ray job, driver process and command."""
    text = f"Ray job {entry.get('JobID', '?')}"
    if entry.get("DriverPid"):
        text += f", driver pid {entry['DriverPid']}"
    if entry.get("DriverIPAddress"):
        text += f" on {entry['DriverIPAddress']}"
    command = str(entry.get("Entrypoint") or "").strip()
    if command:
        text += f": {command[:160]}{'...' if len(command) > 160 else ''}"
    return text


def _actor_job(actor: Any) -> str | None:
    """The Ray job that created `actor` (its id holds it): no call to the actor, which may still be starting."""
    try:
        job = actor._actor_id.job_id
        return (job() if callable(job) else job).hex()
    except Exception:  # noqa: BLE001 - a private attribute: ask the actor instead
        pass
    try:
        return ray.get(actor.owner.remote(), timeout=CLOSE_TIMEOUT_S) or None
    except ray.exceptions.RayActorError:
        return None  # gone (with the run that made it)
    except ray.exceptions.GetTimeoutError:
        return "?"  # unknown: taken for another run's


def _holder_of(actor: Any) -> dict | None:
    """The running run (job table entry) other than this one that made channel actor `actor`; None where this run
    made it or its run ended (it may be replaced)."""
    return other_run(_actor_job(actor))


def channel_holder(name: str) -> dict | None:
    """The running run other than this one that holds channel `name` (its job table entry); None where no channel
    has the name, this run made it, or the run that made it ended. Touches nothing."""
    try:
        actor = ray.get_actor(_ACTOR_PREFIX + name)
    except ValueError:
        return None
    return _holder_of(actor)
