"""The streaming front of a conversion: discover -> done-records and types -> plan, as two
threads joined by bounded queues, so the first document reaches a worker while the walk goes
on and the parent holds a bounded number of documents whatever the size of the run::

    discovery thread --(DOC_QUEUE documents)--> planner thread --(PLAN_QUEUE chunks)--> run (main thread)

A full queue blocks the stage before it (back-pressure): a walk of a million files runs at most
``DOC_QUEUE + (PLAN_QUEUE + HELPER_AHEAD + 1) * CHUNK`` documents ahead of what the run has taken, and the run
takes new documents only as its workers and commits have room (``run.run_batch``).

What needs more than one document, and how it stays correct:

- output keys for case-only twins (``A.pdf``, ``a.pdf``): ``store.KeyAssigner`` assigns them in
  discovery order, holding one 64-bit hash per document;
- the backend and tier (probed only when a PDF or image is among the inputs), ``--window-pages``
  spreading of a long PDF over idle workers, and fitting the worker count to the work: decided on
  the *first window* (:meth:`DocumentStream.take_window`: the first ``WINDOW_DOCS`` documents, or
  what ``WINDOW_SECONDS`` of walking found, or everything if the walk ended sooner). A run whose
  walk ends inside the window decides exactly as a run over a list did; a larger one probes the
  backend (as if a PDF were coming), does not spread PDFs (its work is shared among many
  documents anyway) and starts every worker;
- ``--order size``: sorts within a window of ``ORDER_WINDOW`` documents ready to convert
  (``run.run_batch``), not over the whole run.

Must not: decide what to do with one document (``plan``), read OUTPUT other than through the
done-record reader, or run anything (``run``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator

from .discover import Discovery, discover_iter
from .storage import is_url
from .plan import PlannedDocument, finished_expectations, kind_from_done_record, plan
from .sniff import IMAGE_TYPES, PDF_TYPES, SourceDocument, sniff_documents
from .store import KeyAssigner

DOC_QUEUE = 2048  # documents walked, not yet planned
CHUNK = 256  # documents planned together (one done-record read and one sniff batch)
REMOTE_AHEAD = 1000  # documents a remote listing runs ahead of the planner: one page (S3 gives 1,000 keys a page)
FIRST_PAGE_HOLD = 30.0  # seconds at most a listing page waits for the first planned documents (_pace)
FIRST_CHUNK = 16  # the planner's first chunk: one round of the 16 concurrent reads of remote documents (sniff.py)
PLAN_QUEUE = 4  # planned chunks the run has not taken yet
WINDOW_DOCS = 1000  # the first window: backend, tier and worker count are decided on it
WINDOW_SECONDS = 0.5
ORDER_WINDOW = 1000  # --order size sorts this many documents ready to convert
HELPER_AHEAD = 4  # chunks asked of the stat helper and not planned yet (records.RecordReader.ask): 100,000
# finished documents, median of 8 interleaved reruns: 3.75 s with one chunk ahead, 2.90 s with four

_END = object()


class DocumentStream:
    """The planned documents of one run, as they come.

    ``s``: Settings; ``input_options``: the inputs' storage options; ``skip_paths``: passed to
    ``discover.discover_iter``. Then :meth:`attach` gives ``out``, the opened ``store.Output``;
    ``reader``, the done-record reader (``records.open_record_reader``: ``read(keys)``,
    ``missing(key, record)``); and ``on_new_work()``, called (in the planner thread, or the
    caller's for the window) before the first input without a done-record is read: the write
    probe, so a read-only OUTPUT fails before the reads.

    The discovery thread starts at once, before :meth:`attach`. :meth:`take_window` (caller's thread) takes the first
    window of documents; :meth:`prepare` and :meth:`plan_chunk` plan it once the tier is known;
    :meth:`start_planner` plans the rest in the planner thread; :meth:`take` hands them out.
    ``found``: the ``discover.Discovery`` (errors, hidden and result folders ignored);
    ``found_count``: documents walked so far; ``discovery_ended``: epoch seconds when the walk
    ended, else None.
    """

    def __init__(self, s: Any, input_options: dict, skip_paths: list[str]) -> None:
        self.s, self.input_options = s, input_options
        self.out: Any = None
        self.reader: Any = None
        self.on_new_work: Callable[[], None] = lambda: None
        self.found = Discovery()
        self.found_count = 0
        self.discovery_ended: float | None = None
        self.stop_event = threading.Event()
        self.keys = KeyAssigner()
        self.tier: str | None = None
        self._planned: queue.Queue = queue.Queue(maxsize=PLAN_QUEUE)
        self._buffer: deque = deque()
        self._ended = False  # the planner's end marker was taken
        self._planner: threading.Thread | None = None
        self._warned = 0
        self._unsent: list = []  # what the planner held when the stream was stopped
        self._first_handed = threading.Event()  # the first planned documents were handed out (or the end)
        # remote prefixes: the listing runs ahead (it waits on the network); local folders: the
        # walk runs in bursts when the planner runs short (see Handoff)
        remote = any(is_url(i) for i in s.inputs)
        self._docs = Handoff(REMOTE_AHEAD if remote else DOC_QUEUE, self.stop_event, on_demand=not remote)
        self._discovery = threading.Thread(target=self._walk, args=(skip_paths,), name="mineru-cli-discover",
                                           daemon=True)
        self._discovery.start()

    def attach(self, out: Any, reader: Any, on_new_work: Callable[[], None]) -> None:
        """OUTPUT (``store.Output``), its done-record reader and the write probe, once opened:
        the walk starts before (an S3 listing's first page comes while OUTPUT is opened and
        probed); planning needs them."""
        self.out, self.reader, self.on_new_work = out, reader, on_new_work

    # --- discovery thread ---------------------------------------------------------------------

    def _put(self, q: queue.Queue, item: Any) -> bool:
        """Put ``item`` on ``q``, waiting while it is full; False when the stream was stopped."""
        while not self.stop_event.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _items(self, skip_paths: list[str]) -> Iterator[Any]:
        """The walk as items: each ``SourceDocument``, ``("warn", input, reason)`` for an input
        that could not be walked (before the documents found after it), ``("error", None,
        exception)`` when the walk itself failed, and ``_END`` last."""
        s = self.s
        try:
            for doc in discover_iter(s.inputs, self.found, include=s.include, exclude=s.exclude, hidden=s.hidden,
                                     follow_symlinks=s.follow_symlinks, skip_paths=skip_paths,
                                     storage_options=self.input_options, stop=self.stop_event,
                                     page_size=s.list_page_size, pace=self._pace):
                yield from self._new_errors()
                self.found_count += 1
                yield doc
            yield from self._new_errors()
        except Exception as exc:  # noqa: BLE001 - handed to the run, which raises it
            yield ("error", None, exc)
        self.discovery_ended = time.time()
        yield _END

    def _pace(self) -> None:
        """Before a listing page after a prefix's first: once the walk has found a first
        window's worth of documents (``WINDOW_DOCS``), wait until the first planned documents
        were handed out (or the run stops; at most ``FIRST_PAGE_HOLD`` seconds), so the first documents' reads
        (their type, the first chunk's sniff) do not queue behind the next page's listing at
        the server: the first dispatch comes first. Before that the window needs the pages."""
        if self.found_count < WINDOW_DOCS:
            return
        deadline = time.monotonic() + FIRST_PAGE_HOLD
        while not self._first_handed.wait(0.1) and not self.stop_event.is_set() and time.monotonic() < deadline:
            pass

    def _new_errors(self) -> Iterator[tuple]:
        while self._warned < len(self.found.errors):
            item, reason = self.found.errors[self._warned]
            self._warned += 1
            yield ("warn", item, reason)

    def _walk(self, skip_paths: list[str]) -> None:
        """The discovery thread: the walk's items into the handoff buffer."""
        for item in self._items(skip_paths):
            if not self._docs.put(item):
                return

    # --- the first window (caller's thread) -----------------------------------------------------

    def take_window(self, max_docs: int = WINDOW_DOCS, max_seconds: float = WINDOW_SECONDS
                    ) -> tuple[list[SourceDocument], list[tuple[str, str]], bool]:
        """The first documents walked: up to ``max_docs``, or what the walk found in
        ``max_seconds`` (at least one document unless the walk ended). Returns (documents,
        errors as (input, reason), whether the walk ended). Raises what discovery raised."""
        docs: list[SourceDocument] = []
        errors: list[tuple[str, str]] = []
        deadline = time.monotonic() + max_seconds
        while len(docs) < max_docs:
            timeout = deadline - time.monotonic()
            if docs and timeout <= 0:
                break
            got = self._docs.get_one(timeout if docs else 0.5)
            if got is None:
                continue
            item = got[0]
            if item is _END:
                return docs, errors, True
            if isinstance(item, tuple):
                if item[0] == "error":
                    raise item[2]
                errors.append((item[1], item[2]))
                continue
            docs.append(item)
        return docs, errors, False

    # --- planning (planner thread; the caller's for the window) ---------------------------------

    def ask_ahead(self, docs: list[SourceDocument]) -> list[str]:
        """Output keys of ``docs`` (``store.KeyAssigner``: call in discovery order), and their
        done-records asked for ahead of :meth:`prepare` (``records.RecordReader.ask``: a
        large local rerun's index lookups and stats run in the helper process meanwhile, which
        also finds the finished documents: ``records.Finished``)."""
        from .store import fail_names_remote_output_cannot_hold

        keys = [self.keys.key(d.rel) for d in docs]
        if not self.out.is_local:
            fail_names_remote_output_cannot_hold(docs, keys)
        if not self.s.force and self.reader.asks_ahead:
            asked = [(d, k) for d, k in zip(docs, keys) if not d.problem]
            # an unread local input's size and time: the helper judges whether it is finished
            self.reader.ask([k for _d, k in asked], [(d.size, d.mtime) if d.extra.get("unread") is True and d.is_local
                                                     else (None, None) for d, _k in asked])
        return keys

    def prepare(self, docs: list[SourceDocument],
                keys: list[str] | None = None) -> tuple[list[str], dict[str, dict | None]]:
        """Output keys (``store.KeyAssigner``, discovery order; or ``keys`` from
        :meth:`ask_ahead`) and done-records of ``docs`` (none with ``--force``), and the type of
        each: from its done-record when it is unchanged (``plan.kind_from_done_record``), else by
        reading it (``sniff.sniff_documents``). Raises ``errors.EnvironmentProblem`` when OUTPUT
        cannot be read."""
        from .errors import EnvironmentProblem
        from .store import fail_names_remote_output_cannot_hold

        if keys is None:
            keys = [self.keys.key(d.rel) for d in docs]
            if not self.out.is_local:
                fail_names_remote_output_cannot_hold(docs, keys)
        try:
            records = {} if self.s.force else self.reader.read([k for d, k in zip(docs, keys) if not d.problem])
        except Exception as exc:  # noqa: BLE001 - the storage failed after the probe passed (one line, exit 3)
            from .redact import redact_url
            from .storage import explain_storage_error

            raise EnvironmentProblem(f"output {redact_url(self.s.output)}: cannot read the done-records: "
                                     f"{explain_storage_error(exc, self.s.output)}") from None
        if any(records.get(k) is None for d, k in zip(docs, keys) if not d.problem):
            self.on_new_work()
        for d, k in zip(docs, keys):
            if d.extra.get("unread") is True:
                kind_from_done_record(d, records.get(k))
        sniff_documents(docs, self.input_options)
        return keys, records

    def plan_chunk(self, docs: list[SourceDocument], keys: list[str], records: dict) -> list[PlannedDocument]:
        """``plan.plan`` of one chunk at the run's tier (set :attr:`tier` first)."""
        planned = plan(docs, self.s, self.out, self.tier or "flash", keys=keys, records=records,
                       input_options=self.input_options,
                       missing_files=self.reader.missing if self.out.is_local else self._missing)
        for p in planned:  # a render-only commit builds its record from the whole done-record
            if p.action == "render":
                p.record = self.reader.full(p.key, p.record)
        if not self.out.is_local and self.s.executor == "local":  # a remote result folder known empty:
            converting = [p for p in planned if p.action == "convert"]  # its commit looks for nothing old
            try:
                fresh = self.reader.fresh([p.key for p in converting]) if converting else set()
            except Exception:  # noqa: BLE001 - the listing failed: commits look for old files as usual
                fresh = set()
            for p in converting:
                p.fresh = p.key in fresh
        return planned

    def _missing(self, key: str, record: dict) -> list[str]:
        """A remote OUTPUT's ``reader.missing``, its storage errors as one line (a local one is
        called directly: a stat per file there, OSError taken as missing)."""
        from .errors import EnvironmentProblem

        try:
            return self.reader.missing(key, record)
        except Exception as exc:  # noqa: BLE001
            from .redact import redact_url
            from .storage import explain_storage_error

            raise EnvironmentProblem(f"output {redact_url(self.s.output)}: cannot list the results: "
                                     f"{explain_storage_error(exc, self.s.output)}") from None

    def start_planner(self, first: list[PlannedDocument], ended: bool,
                      unplanned: list[SourceDocument] | None = None) -> None:
        """Hand out ``first`` (the planned window), then plan the rest of the walk in the
        planner thread (none when the walk ``ended`` inside the window), beginning with
        ``unplanned`` (the window, when it was not planned in the caller's thread: the
        planner's first chunk is small, so the first document reaches a worker soon)."""
        self._buffer.extend(first)
        if first or ended:
            self._first_handed.set()
        if ended:
            self._ended = True
            return
        if unplanned:
            self._docs.push_front(unplanned)
        if not self.s.force:  # a walk longer than the window: a large run, its checks in the helper process
            self.reader.use_helper(finished_expectations(self.s, self.tier or "flash"))
        self._planner = threading.Thread(target=self._plan_loop, name="mineru-cli-plan", daemon=True)
        self._planner.start()

    def _plan_loop(self) -> None:
        # Each chunk is asked for (ask_ahead) when it is full and planned once HELPER_AHEAD more
        # are asked for: the done-record checks of a large local rerun run in the helper process
        # while the planner gathers the next chunks. Planned at once: the first chunk (the first
        # dispatch), and whatever is there when the walk is slower than the planning.
        chunk: list[SourceDocument] = []
        ahead: deque = deque()  # (documents, keys) asked for, not planned yet, in discovery order
        left: list = []  # items taken from the walk after a stop, handed back with the rest

        def plan_asked(keep: int) -> bool:  # plan all but ``keep`` asked chunks; False when stopped
            while len(ahead) > keep:
                docs, keys = ahead[0]
                keys, records = self.prepare(docs, keys)
                planned = self.plan_chunk(docs, keys, records)
                ahead.popleft()
                if not self._put(self._planned, planned):
                    self._unsent.extend(planned)
                    return False
                self._first_handed.set()
            return True

        def flush(now: bool) -> bool:
            nonlocal chunk
            keys = self.ask_ahead(chunk)
            ahead.append((chunk, keys))
            chunk = []
            return plan_asked(0 if now or not self.reader.asks_ahead else HELPER_AHEAD)

        size = FIRST_CHUNK  # then CHUNK
        try:
            while not self.stop_event.is_set():
                items = self._docs.get_many(size - len(chunk), 0.1)
                for i, item in enumerate(items):
                    if isinstance(item, SourceDocument):
                        chunk.append(item)
                        continue
                    if not (flush(True) if chunk else plan_asked(0)):  # what came before first: discovery order
                        left.extend(items[i:])
                        return
                    if item is _END:
                        self._put(self._planned, _END)
                        return
                    if not self._put(self._planned, [item]):  # ("warn", input, reason), ("error", ...)
                        left.extend(items[i:])
                        return
                if chunk and (len(chunk) >= size or not items):
                    if not flush(now=not items or size == FIRST_CHUNK):
                        return
                    size = CHUNK
                elif not items and not plan_asked(0):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the run, which raises it
            self._put(self._planned, [("error", None, exc)])
        finally:
            self._first_handed.set()  # planning ended (stopped, an error): the listing waits for nothing
            for docs, _keys in ahead:
                self._unsent.append(("unplanned", None, docs))
            for item in left:  # after a stop: in discovery order, after what was gathered before them
                if isinstance(item, SourceDocument):
                    chunk.append(item)
                    continue
                if chunk:
                    self._unsent.append(("unplanned", None, chunk))
                    chunk = []
                if item is not _END:
                    self._unsent.append(item)
            if chunk:
                self._unsent.append(("unplanned", None, chunk))

    # --- the run's side (caller's thread) -------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every document was handed out (the walk and the planning ended)."""
        return self._ended and not self._buffer

    def take(self, limit: int, wait: float = 0.0) -> list:
        """Up to ``limit`` items in discovery order, waiting up to ``wait`` seconds for the first:
        ``plan.PlannedDocument`` s, and ``("warn", input, reason)`` for an input that could not be
        walked. Raises what a stage raised (``errors.EnvironmentProblem`` when OUTPUT's
        done-records cannot be read or listed: exit 3, one line)."""
        if not self._buffer and not self._ended:
            self._fill(wait)
        items = []
        while self._buffer and len(items) < limit:
            item = self._buffer.popleft()
            if isinstance(item, tuple) and item[0] == "error":
                raise item[2]
            items.append(item)
            if not self._buffer and not self._ended:
                self._fill(0.0)
        return items

    def _fill(self, wait: float) -> None:
        try:
            got = self._planned.get(timeout=wait) if wait > 0 else self._planned.get_nowait()
        except queue.Empty:
            return
        if got is _END:
            self._ended = True
        else:
            self._buffer.extend(got)

    def stop(self) -> list:
        """Stop walking and planning; return what was walked but not handed out, in discovery
        order: planned documents, ``("warn", input, reason)``, and ``("unplanned", None,
        [SourceDocument])`` for documents walked but not planned (a run interrupted by a signal
        reports them all as not started)."""
        self.stop_event.set()
        self._first_handed.set()
        if self._planner is not None:
            self._planner.join(timeout=30)
        left = list(self._buffer)
        self._buffer.clear()
        while True:
            try:
                got = self._planned.get_nowait()
            except queue.Empty:
                break
            if got is not _END:
                left.extend(got)
        left.extend(self._unsent)
        self._unsent = []
        unplanned = []
        for item in self._docs.drain():
            if isinstance(item, SourceDocument):
                unplanned.append(item)
        if unplanned:
            left.append(("unplanned", None, unplanned))
        self._ended = True
        return [i for i in left if not (isinstance(i, tuple) and i[0] == "error")]


class Handoff:
    """A bounded first-in first-out buffer from the discovery thread to the planner, cheaper per
    item than ``queue.Queue`` (a ``deque``; the condition is taken only when a side must wait).
    ``put`` gives up (False) once ``stop`` (a ``threading.Event``) is set.

    Two ways of running the producer:

    - free (``on_demand=False``, remote prefixes): the walk runs ahead until ``maxsize`` items
      are held (back-pressure); a listing waits on the network, so fetching the next page while
      the planner works is worth it.
    - on demand (local folders): the walk produces a burst of up to ``burst`` items when the
      consumer runs short, and the consumer waits for the burst to end (or ``timeout``) before
      taking from it. The two threads then take turns instead of competing for the GIL at
      every ``stat`` (on 100,000 finished documents a rerun took 6 s with both running, 4.3 s
      in turns); a walk that stalls (a slow network mount) still lets the planner go on with
      what it has after ``timeout``, so the first documents reach workers.
    """

    def __init__(self, maxsize: int, stop: threading.Event, *, on_demand: bool = False, burst: int = 1024) -> None:
        self._items: deque = deque()
        self._max = maxsize
        self._stop = stop
        self._cond = threading.Condition()
        self._on_demand = on_demand
        self._burst = burst
        self._allowance = 0  # on demand: items the producer may still put in this burst
        self._producing = False  # on demand: a burst is under way
        self._ended = False  # the walk's end marker was put
        self._getter_waits = False

    def put(self, item: Any) -> bool:
        """Append ``item`` (waiting while the buffer is full, or on demand for the next burst);
        False when stopped."""
        items = self._items
        if self._on_demand:
            if self._allowance <= 0:
                with self._cond:
                    self._producing = False
                    self._cond.notify_all()  # the burst is over: the consumer goes on
                    while self._allowance <= 0:
                        if self._stop.is_set():
                            return False
                        self._cond.wait(0.2)
            self._allowance -= 1
        elif len(items) >= self._max:
            with self._cond:
                while len(items) >= self._max:
                    if self._stop.is_set():
                        return False
                    self._cond.wait(0.2)
        items.append(item)
        if item is _END:
            with self._cond:
                self._ended, self._producing = True, False
                self._cond.notify_all()
        elif self._getter_waits:
            with self._cond:
                self._cond.notify_all()
        return True

    def get_many(self, limit: int, timeout: float) -> list:
        """Up to ``limit`` items, in order. When fewer are held and the walk has not ended: free,
        wait up to ``timeout`` seconds for the first; on demand, ask for a burst and wait up to
        ``timeout`` seconds for it to end. An empty list when none came."""
        items = self._items
        if len(items) < limit and timeout > 0 and not self._ended:
            with self._cond:
                if self._on_demand:
                    if not self._producing and len(items) < self._max:
                        self._allowance = min(self._burst, self._max - len(items))
                        self._producing = True
                        self._cond.notify_all()
                    deadline = time.monotonic() + timeout
                    while self._producing and not self._ended:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                elif not items:
                    self._getter_waits = True
                    self._cond.wait(timeout)
                    self._getter_waits = False
        was_full = len(items) >= self._max
        out = []
        while items and len(out) < limit:
            out.append(items.popleft())
        if was_full and out and not self._on_demand:
            with self._cond:  # a producer waiting for room
                self._cond.notify_all()
        return out

    def push_front(self, items: list) -> None:
        """Put ``items`` (in their order) before everything held (may pass ``maxsize``)."""
        self._items.extendleft(reversed(items))

    def drain(self) -> list:
        """Everything held, without waiting."""
        return self.get_many(1 << 62, 0.0)

    def get_one(self, timeout: float) -> tuple | None:
        """``(item,)``, waiting up to ``timeout`` seconds (see :meth:`get_many`), or None."""
        got = self.get_many(1, timeout)
        return (got[0],) if got else None


def needs_tier(docs: list[SourceDocument], ended: bool) -> bool:
    """Whether the tier matters for the run: some PDF or image among ``docs`` (the first window),
    or the walk went on past the window (a PDF may still come)."""
    return not ended or any((d.kind in PDF_TYPES or d.kind in IMAGE_TYPES) and not d.problem for d in docs)
