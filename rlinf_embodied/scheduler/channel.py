"""Channel: a named, bounded, keyed FIFO between Ray processes.

One async Ray actor per channel holds an asyncio.Queue per key, so a get waiting on key A never
stalls a put or get on key B. Large items (tensors above `INLINE_BYTES`) do not travel through the
actor: the producer `ray.put`s them and only the reference is queued, so the bytes are copied once
into the object store and read once by the consumer.

`maxsize` bounds each key's queue (0 = unbounded); a put on a full key waits (back-pressure),
nothing is dropped.

`put(item, block=False)` saves a round trip on the hot path (env worker -> rollout worker and back):
it submits the item and returns without waiting for the actor's acknowledgement. It first confirms
this handle's previous unconfirmed put of the same key, so per-key order is kept and a producer runs
at most one item past the bound; a failed put raises at the next put of that key or at `flush()`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from typing import Any

import numpy as np
import ray
import torch

logger = logging.getLogger(__name__)

DEFAULT_KEY = "__default__"
INLINE_BYTES = 64 * 1024  # items below this go by value through the actor
_ACTOR_PREFIX = "rlinf_channel:"
# Channels this process created: the creator's handle keeps a (non-detached) actor alive, so a
# channel lives until destroy() or the end of the creating process, even if its Channel is dropped.
_CREATED: dict[str, Any] = {}


@ray.remote(num_cpus=0, max_concurrency=100_000)
class _ChannelActor:
    """The queues. Items are stored as given: ("val", item) or ("ref", [ObjectRef])."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queues: dict[str, asyncio.Queue] = defaultdict(lambda: asyncio.Queue(maxsize=self.maxsize))

    async def put(self, key: str, wrapped: tuple) -> None:
        await self.queues[key].put(wrapped)

    async def get(self, key: str) -> tuple:
        return await self.queues[key].get()

    async def get_batch(self, key: str, n: int) -> list[tuple]:
        return [await self.queues[key].get() for _ in range(n)]

    def qsize(self, key: str | None) -> int:
        if key is None:
            return sum(q.qsize() for q in self.queues.values())
        return self.queues[key].qsize() if key in self.queues else 0

    def keys(self) -> list[str]:
        return [k for k, q in self.queues.items() if q.qsize()]


def estimate_bytes(item: Any, limit: int = INLINE_BYTES, _depth: int = 0) -> int:
    """Tensor/array bytes inside an item (dicts, lists, tuples, dataclasses); stops counting past limit."""
    if isinstance(item, torch.Tensor):
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
    return ray.get(payload[0]) if kind == "ref" else payload


async def _unwrap_async(wrapped: tuple) -> Any:
    kind, payload = wrapped
    return (await payload[0]) if kind == "ref" else payload


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
        self._unconfirmed: dict[str, Any] = {}  # key -> ObjectRef of this handle's last put(block=False)

    # ---- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, maxsize: int = 0) -> "Channel":
        """A fresh, empty channel; one that already has this name is destroyed first."""
        if not isinstance(maxsize, int) or maxsize < 0:
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
        ray.get(actor.qsize.remote(None))  # started and registered
        _CREATED[name] = actor
        return cls(name, actor)

    @classmethod
    def connect(cls, name: str) -> "Channel":
        channel = cls(name)
        channel._handle()
        return channel

    def _handle(self):
        if self._actor is None:
            try:
                self._actor = ray.get_actor(_ACTOR_PREFIX + self.name)
            except ValueError:
                raise ValueError(f"no channel named {self.name!r}; create it first with "
                                 f"Channel.create({self.name!r}) in the driver") from None
        return self._actor

    def destroy(self) -> None:
        ray.kill(self._handle())
        _CREATED.pop(self.name, None)
        self._actor = None

    def __getstate__(self) -> dict:
        return {"name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.name, self._actor, self._unconfirmed = state["name"], None, {}

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"

    # ---- blocking -----------------------------------------------------------------------------
    def put(self, item: Any, key: str | None = None, block: bool = True) -> None:
        """Append. block=True: return once the item is queued (waits while the key's queue is full).
        block=False: return once it is submitted, after the previous put of this key was queued."""
        key = _key(key)
        previous = self._unconfirmed.pop(key, None)
        if previous is not None:
            ray.get(previous)
        ref = self._handle().put.remote(key, _wrap(item))
        if block:
            ray.get(ref)
        else:
            self._unconfirmed[key] = ref

    def flush(self) -> None:
        """Wait until every put(block=False) of this handle is queued; raises a failed put's error."""
        pending, self._unconfirmed = list(self._unconfirmed.values()), {}
        ray.get(pending)

    def get(self, key: str | None = None) -> Any:
        """Take the oldest item of `key`; blocks until there is one."""
        return _unwrap(ray.get(self._handle().get.remote(_key(key))))

    def get_batch(self, n: int, key: str | None = None) -> list[Any]:
        """The next n items of `key`, in order (blocks until all n arrived)."""
        if n < 0:
            raise ValueError(f"get_batch(n={n}): n must be >= 0")
        wrapped = ray.get(self._handle().get_batch.remote(_key(key), n))
        refs = [w[1][0] for w in wrapped if w[0] == "ref"]
        values = iter(ray.get(refs)) if refs else iter(())
        return [next(values) if w[0] == "ref" else w[1] for w in wrapped]

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
