#!/usr/bin/env python3
"""Soak test of a running `mambaserve serve`: many concurrent clients doing everything a real fleet
of clients does, good and bad, for a while, and then the server must be none the worse for it.

The load, against 127.0.0.1, from --clients concurrent workers for --duration-s seconds:
  * streams with mixed prompts (text and token ids, 1 to ~400 tokens) and max_tokens;
  * ~10% cancelled mid-stream, ~5% with short deadlines (20-100 ms), some slow readers, a few
    readers that stop reading for longer than the server's --stalled-reader-timeout-s (2 s here);
  * sessions: create, a few turns, sometimes export + import, delete;
  * small unary calls (Tokenize/Detokenize, GetModelInfo, ListSessions).
Beside the workers: `mambactl generate` subprocesses SIGKILLed mid-stream, and bursts of garbage:
raw TCP connections that write random bytes, and gRPC calls of random (or corrupted) bytes to every
method. The server is started with a small batch, queue and stream buffer so overload is reached.

Every call's outcome is classified by status code. Acceptable: OK (and an OK stream must be
well-formed: exactly one response carries a finish_reason and it is the last, no more tokens than
max_tokens, usage on the last), CANCELLED where the client cancelled, DEADLINE_EXCEEDED where the
client set a short deadline or stopped reading, RESOURCE_EXHAUSTED (overload), and for garbage the
codes a refused request gets. INTERNAL or UNKNOWN on a well-formed request fails the soak. How
often RESOURCE_EXHAUSTED carries `retry-after-ms` trailing metadata is reported, not required; half
the time a refused client waits as long as it says, else it retries within 100 ms.

Afterwards (up to 10 s to settle) the server must still run, report running, waiting and
slots_in_use all 0, hold no session (every one made was deleted: no leak), have grown its resident
memory by less than --rss-growth-limit since the first 20% of the run (warm), and exit 0 on SIGTERM.
Two things grow that are not leaks: the server's bounded memory of deleted session ids (see
Soak.session_name) and glibc's per-thread malloc arenas under random-sized garbage (a slow creep that
MALLOC_ARENA_MAX=1 removes); the growth bound leaves room for the second.

  build/pyenv/bin/python3 tests/soak/soak.py --binary build/cpu/bin/mambaserve \\
      --mambactl build/cpu/bin/mambactl --proto-dir proto --duration-s 30 --clients 48 [--json OUT]

Exits non-zero, saying why, when any check fails.
"""
import argparse
import asyncio
import collections
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
from proto_stubs import compile_protos  # noqa: E402
from serve_process import ServeProcess  # noqa: E402

pb = None
pb_grpc = None

RPC_TIMEOUT_S = 30  # every call has a deadline, so nothing here can hang
SETTLE_S = 10
STALLED_READER_TIMEOUT_S = 2
MAX_TOKENS_LIMIT = 512
SERVE_FLAGS = [  # small enough that 32+ clients overload it: queue full, streams paused
    "--max-batch", "8", "--max-queue", "16", "--max-sessions", "32", "--stream-buffer", "4",
    "--stalled-reader-timeout-s", str(STALLED_READER_TIMEOUT_S), "--max-tokens-limit", str(MAX_TOKENS_LIMIT),
    "--max-prompt-tokens", "1024", "--shutdown-grace-s", "5", "--metrics-listen", "127.0.0.1:0"]
METHODS = {  # every method, with how its calls are shaped
    "Generate": "unary_stream", "CreateSession": "unary_unary", "GetSession": "unary_unary",
    "ListSessions": "unary_unary", "DeleteSession": "unary_unary", "ExportSession": "unary_stream",
    "ImportSession": "stream_unary", "Tokenize": "unary_unary", "Detokenize": "unary_unary",
    "GetModelInfo": "unary_unary"}
WORDS = ("the state space model reads one token at a time and keeps a fixed size summary of the past "
         "so a long conversation costs no more memory than a short one while attention must remember "
         "every token it has seen").split()
C = grpc.StatusCode
# What each kind of call may end with. Garbage that happens to parse is an ordinary request; the
# rest is refused with INVALID_ARGUMENT saying it could not be parsed (Generate parses its own
# request; for the others the server corrects gRPC's bare UNIMPLEMENTED), or INTERNAL saying so.
EXPECTED = {
    "generate": {C.OK, C.RESOURCE_EXHAUSTED},
    "cancel": {C.OK, C.CANCELLED, C.RESOURCE_EXHAUSTED},
    "deadline": {C.OK, C.DEADLINE_EXCEEDED, C.RESOURCE_EXHAUSTED},
    "slow": {C.OK, C.RESOURCE_EXHAUSTED},
    "stall": {C.OK, C.DEADLINE_EXCEEDED, C.RESOURCE_EXHAUSTED},  # the server ends a stalled reader
    "session": {C.OK, C.RESOURCE_EXHAUSTED},
    "session_cancel": {C.OK, C.CANCELLED, C.RESOURCE_EXHAUSTED},
    "unary": {C.OK, C.RESOURCE_EXHAUSTED},
    "garbage": {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION, C.OUT_OF_RANGE,
                C.RESOURCE_EXHAUSTED, C.DEADLINE_EXCEEDED, C.ALREADY_EXISTS, C.INTERNAL},
}
UNPARSEABLE = re.compile(r"pars|deserializ|decode", re.I)


class Tally:
    """Every outcome, and what went wrong."""

    def __init__(self):
        self.codes = collections.Counter()  # (kind, code name) -> calls
        self.failures = []
        self.streams_ok = 0
        self.tokens = 0
        self.stream_s = []
        self.exhausted = 0
        self.retry_after = 0
        self.no_retry_after = collections.Counter()  # kind (method) -> RESOURCE_EXHAUSTED without it
        self.raw = collections.Counter()
        self.killed = collections.Counter()

    def record(self, kind, code, details="", trailing=None, what=""):
        self.codes[(kind, code.name)] += 1
        if code == C.RESOURCE_EXHAUSTED:
            self.exhausted += 1
            if trailing and any(k == "retry-after-ms" for k, _ in trailing):
                self.retry_after += 1
            else:
                self.no_retry_after[f"{kind} {what}".strip()] += 1
        details = details or ""
        unexpected = code not in EXPECTED[kind] or (
            code == C.INTERNAL and not UNPARSEABLE.search(details))
        if unexpected:
            self.fail(f"{kind}: {what}{code.name}: {details}")

    def fail(self, what):
        if len(self.failures) < 200:
            self.failures.append(what)


def stream_problems(responses, code, max_tokens, exact_length):
    """What is wrong with a stream: finals only last, and on OK exactly one, with usage and at most
    max_tokens tokens (exactly max_tokens, finish LENGTH, when neither EOS nor a stop can end it)."""
    finals = [i for i, r in enumerate(responses) if r.finish_reason]
    tokens = sum(len(r.token_ids) for r in responses)
    if finals and finals != [len(responses) - 1]:
        return f"finish_reason on responses {finals} of {len(responses)}"
    if code != C.OK:
        return None
    if not finals:
        return "OK stream without a finish_reason"
    last = responses[-1]
    if not last.HasField("usage"):
        return "no usage on the last response"
    if tokens > max_tokens:
        return f"{tokens} tokens > max_tokens {max_tokens}"
    if last.usage.generated_tokens != tokens:
        return f"usage says {last.usage.generated_tokens} tokens, the stream carried {tokens}"
    if exact_length and (tokens != max_tokens or last.finish_reason != pb.FINISH_REASON_LENGTH):
        return f"ignore_eos without stops: {tokens}/{max_tokens} tokens, finish {last.finish_reason}"
    return None


class Soak:
    def __init__(self, args, server, info, tally, end_at):
        self.args = args
        self.server = server
        self.target, self.port = server.target, server.port
        self.vocab = min(v for v in (info.vocab_size, info.tokenizer_vocab_size) if v > 0)
        self.tally = tally
        self.end_at = end_at
        # Several connections, as a fleet of clients would use; local subchannel pools keep them apart.
        self.channels = [grpc.aio.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(max(1, args.clients // 16))]
        self.stubs = [pb_grpc.MambaServeStub(c) for c in self.channels]
        # Stalled readers get a connection of their own whose flow-control window does not grow
        # (no BDP probing), so that not reading soon backs up to the server.
        self.channels.append(grpc.aio.insecure_channel(
            self.target, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)]))
        self.stall_stub = pb_grpc.MambaServeStub(self.channels[-1])

    def running(self):
        # A dead server fails the soak anyway; calls to it would only spin.
        return time.monotonic() < self.end_at and self.server.proc.poll() is None

    # --- requests
    def prompt(self, rng, request):
        n = rng.choice((rng.randint(1, 8), rng.randint(9, 64), rng.randint(65, 400)))
        if rng.random() < 0.5:
            request.text = " ".join(rng.choice(WORDS) for _ in range(max(1, n // 2)))
        else:
            request.tokens.ids.extend(rng.randrange(1, self.vocab) for _ in range(n))

    def sampling(self, rng, request, max_tokens):
        s = request.sampling
        s.max_tokens = max_tokens
        s.temperature = rng.choice((0.0, 0.7, 1.0))
        s.seed = rng.getrandbits(32)
        s.ignore_eos = rng.random() < 0.7
        if rng.random() < 0.2:
            s.top_k, s.top_p = rng.randint(1, 50), rng.uniform(0.5, 1.0)
        if rng.random() < 0.1:
            s.stop.append(rng.choice(WORDS))
        return s.ignore_eos and not s.stop

    async def generate(self, stub, rng, kind, request, exact, *, timeout=RPC_TIMEOUT_S, cancel_after=None,
                       read_delay=None, stall_at=None, metadata=None):
        """One Generate stream, read as `kind` says; records its outcome. Returns (code, last response)."""
        t0 = time.monotonic()
        call = stub.Generate(request, timeout=timeout, metadata=metadata)
        responses = []
        try:
            async for response in call:
                responses.append(response)
                if cancel_after is not None and len(responses) >= cancel_after:
                    call.cancel()
                    break
                if stall_at is not None and len(responses) == stall_at:
                    await asyncio.sleep(STALLED_READER_TIMEOUT_S + 1.5)  # long enough to be ended
                elif read_delay:
                    await asyncio.sleep(rng.uniform(0, read_delay))
        except grpc.aio.AioRpcError:
            pass  # the code, below, says what happened
        code = await call.code()
        trailing = await call.trailing_metadata() if code == C.RESOURCE_EXHAUSTED else None
        self.tally.record(kind, code, await call.details(), trailing)
        problem = stream_problems(responses, code, request.sampling.max_tokens, exact)
        if problem:
            self.tally.fail(f"{kind}: malformed stream ({code.name}): {problem}")
        elif code == C.OK:
            self.tally.streams_ok += 1
            self.tally.tokens += sum(len(r.token_ids) for r in responses)
            self.tally.stream_s.append(time.monotonic() - t0)
        if code == C.RESOURCE_EXHAUSTED:
            # Told to retry later: half the time as told (retry-after-ms, when the server sends it),
            # else soon, as an impatient client would, which keeps the server overloaded.
            after = next((v for k, v in trailing or () if k == "retry-after-ms"), "")
            patient = after.isdigit() and rng.random() < 0.5
            await asyncio.sleep(min(int(after), 2000) / 1000 if patient else rng.uniform(0.02, 0.1))
        return code, responses[-1] if responses else None

    # --- what a client does
    async def one_generate(self, stub, rng):
        r = rng.random()
        request = pb.GenerateRequest()
        self.prompt(rng, request)
        max_tokens = rng.choice((rng.randint(1, 16), rng.randint(17, 128), rng.randint(129, 400)))
        exact = self.sampling(rng, request, max_tokens)
        if r < 0.10:
            await self.generate(stub, rng, "cancel", request, exact, cancel_after=rng.randint(1, 8))
        elif r < 0.15:
            await self.generate(stub, rng, "deadline", request, exact, timeout=rng.uniform(0.02, 0.1))
        elif r < 0.25:
            request.sampling.max_tokens = min(max_tokens, 64)
            await self.generate(stub, rng, "slow", request, exact, read_delay=0.05)
        elif r < 0.27:
            # Big responses (20 logprobs each) so the stream fills the transport's window and the
            # server's buffer, then no reading for longer than the stalled-reader timeout.
            request.sampling.max_tokens = MAX_TOKENS_LIMIT
            request.sampling.logprobs = 20
            await self.generate(self.stall_stub, rng, "stall", request, exact, stall_at=2)
        else:
            await self.generate(stub, rng, "generate", request, exact)

    @staticmethod
    def session_name(rng, i):
        """Most sessions are named from their client's own pool of four, one in ten is named by the
        server. The server remembers recently deleted ids (up to 100,000: a bounded ~30 MiB of its own)
        so that a late use gets a clear NOT_FOUND; a reused name replaces its entry, so the pool keeps
        that store from passing for a leak in the RSS check. A client's sessions never overlap."""
        return "" if rng.random() < 0.1 else f"soak-{i}-{rng.randrange(4)}"

    async def one_session(self, stub, rng, i):
        created = await self.unary_ok("session", stub.CreateSession,
                                      pb.CreateSessionRequest(session_id=self.session_name(rng, i)))
        if created is None:
            return
        sid = created.session_id
        imported = None
        try:
            length = 0
            turns = rng.randint(1, 4)
            for turn in range(turns):
                request = pb.GenerateRequest()
                self.prompt(rng, request)
                exact = self.sampling(rng, request, rng.randint(1, 32))
                metadata = None
                if rng.random() < 0.5:
                    request.session_id = sid
                else:
                    metadata = (("x-session-id", sid),)  # the header a load balancer hashes on
                cancel = turn == turns - 1 and rng.random() < 0.2
                code, last = await self.generate(stub, rng, "session_cancel" if cancel else "session", request,
                                                 exact, metadata=metadata,
                                                 cancel_after=rng.randint(1, 4) if cancel else None)
                if code == C.OK and last is not None:
                    length = last.usage.session_length
            if rng.random() < 0.3 and not cancel:
                name = self.session_name(rng, i)
                imported = await self.export_import(stub, sid, length, name and name + "-copy")
        finally:
            await self.delete(stub, sid)
            if imported:
                await self.delete(stub, imported)

    async def export_import(self, stub, sid, length, name):
        """Moves a session through its blob; the copy must be as long as the original."""
        call = stub.ExportSession(pb.ExportSessionRequest(session_id=sid), timeout=RPC_TIMEOUT_S)
        chunks = []
        try:
            async for chunk in call:
                chunks.append(chunk.blob_chunk)
        except grpc.aio.AioRpcError:
            pass
        code = await call.code()
        self.tally.record("session", code, await call.details(), what="ExportSession ")
        if code != C.OK:
            return None
        blob = b"".join(chunks)
        pieces = [blob[i:i + 4096] for i in range(0, len(blob), 4096)]
        session = await self.unary_ok("session", stub.ImportSession,
                                      iter([pb.ImportSessionRequest(session_id=name if n == 0 else "", blob_chunk=p)
                                            for n, p in enumerate(pieces)]))
        if session is None:
            return None
        if session.length_tokens != length:
            self.tally.fail(f"session: imported {session.length_tokens} tokens, exported {length}")
        return session.session_id

    async def delete(self, stub, sid):
        """Deletes a session. A cancelled turn may hold it a moment (FAILED_PRECONDITION): retried."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            try:
                await stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=RPC_TIMEOUT_S)
                self.tally.record("session", C.OK)
                return
            except grpc.aio.AioRpcError as e:
                if e.code() != C.FAILED_PRECONDITION or time.monotonic() > deadline:
                    self.tally.record("session", e.code(), e.details(), what=f"DeleteSession {sid} ")
                    return
            await asyncio.sleep(0.05)

    async def unary_ok(self, kind, method, request, **kwargs):
        try:
            response = await method(request, timeout=RPC_TIMEOUT_S, **kwargs)
        except grpc.aio.AioRpcError as e:
            self.tally.record(kind, e.code(), e.details(), e.trailing_metadata())
            return None
        self.tally.record(kind, C.OK)
        return response

    async def one_unary(self, stub, rng):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
        tokens = await self.unary_ok("unary", stub.Tokenize, pb.TokenizeRequest(text=text))
        if tokens is not None:
            back = await self.unary_ok("unary", stub.Detokenize, pb.DetokenizeRequest(token_ids=tokens.token_ids))
            if back is not None and back.text != text:
                self.tally.fail(f"unary: Detokenize(Tokenize({text!r})) = {back.text!r}")
        await self.unary_ok("unary", stub.GetModelInfo, pb.GetModelInfoRequest())
        await self.unary_ok("unary", stub.ListSessions, pb.ListSessionsRequest())

    async def client(self, i):
        rng = random.Random(self.args.seed * 100003 + i)
        stub = self.stubs[i % len(self.stubs)]
        while self.running():
            r = rng.random()
            try:
                if r < 0.80:
                    await self.one_generate(stub, rng)
                elif r < 0.92:
                    await self.one_session(stub, rng, i)
                else:
                    await self.one_unary(stub, rng)
            except Exception as e:  # a bug here, or a server answer the client library chokes on
                self.tally.fail(f"client {i}: {e!r}")
                await asyncio.sleep(0.1)

    # --- beside the clients
    async def killed_clients(self):
        """`mambactl generate` processes SIGKILLed once their stream has started: the server must
        notice the dead connection and free the slot."""
        rng = random.Random(self.args.seed + 1)
        while self.running():
            outcome = await asyncio.to_thread(self.kill_one, rng)
            self.tally.killed[outcome] += 1
            await asyncio.sleep(rng.uniform(0.5, 1.5) if outcome == "mid_stream" else 0.1)

    def kill_one(self, rng):
        """One mambactl, killed a moment after its first output. A plain Popen in a thread, so
        that it alone reaps the child and a kill can never reach a recycled pid."""
        ids = ",".join(str(rng.randrange(1, self.vocab)) for _ in range(rng.randint(1, 64)))
        with subprocess.Popen([self.args.mambactl, "--target", self.target, "generate", "--tokens", ids,
                               "--max-tokens", str(MAX_TOKENS_LIMIT), "--ignore-eos", "--timeout-s",
                               str(RPC_TIMEOUT_S)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
            started = select.select([proc.stdout], [], [], 10)[0] and proc.stdout.read(1)
            time.sleep(rng.uniform(0, 0.1))
            if proc.poll() is not None:
                return "exited_before_kill"  # e.g. refused: the queue was full
            proc.kill()
            proc.wait()
            return "mid_stream" if started else "before_first_output"

    async def raw_garbage(self, rng):
        """A TCP connection that writes random bytes (sometimes after a valid HTTP/2 preface) and closes."""
        payload = os.urandom(rng.randint(1, 4096))
        if rng.random() < 0.5:
            payload = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + payload
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
        except (OSError, asyncio.TimeoutError) as e:
            self.tally.raw["connect_failed"] += 1
            self.tally.fail(f"raw: could not connect: {e!r}")
            return
        try:
            writer.write(payload)
            await asyncio.wait_for(writer.drain(), 5)
            await asyncio.wait_for(reader.read(1024), rng.uniform(0, 0.2))
            self.tally.raw["sent"] += 1
        except asyncio.TimeoutError:
            self.tally.raw["sent"] += 1
        except OSError:
            self.tally.raw["reset"] += 1  # the server dropping a garbage connection is fine
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (OSError, asyncio.TimeoutError):
                pass

    def garbage_payload(self, rng, method):
        """Random bytes, or a valid request of `method` with some bytes corrupted."""
        if rng.random() < 0.5:
            return os.urandom(rng.randint(0, 256))
        valid = {
            "Generate": pb.GenerateRequest(tokens=pb.TokenIds(ids=[rng.randrange(1, self.vocab)] * 4),
                                           sampling=pb.SamplingParams(max_tokens=8)),
            "Tokenize": pb.TokenizeRequest(text="hello world"),
            "Detokenize": pb.DetokenizeRequest(token_ids=[1, 2, 3]),
        }.get(method, pb.GetSessionRequest(session_id="soak-garbage"))
        data = bytearray(valid.SerializeToString())
        for _ in range(rng.randint(1, 3)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)

    async def grpc_garbage(self, rng, channel, method, shape):
        path = "/mambaserve.v1.MambaServe/" + method
        callable_ = getattr(channel, shape)(path, request_serializer=None, response_deserializer=None)
        payload = self.garbage_payload(rng, method)
        try:
            if shape == "unary_stream":
                call = callable_(payload, timeout=RPC_TIMEOUT_S)
                async for _ in call:
                    pass
                code, details, trailing = await call.code(), await call.details(), await call.trailing_metadata()
            elif shape == "stream_unary":
                response = await callable_(iter([payload, os.urandom(rng.randint(0, 64))]), timeout=RPC_TIMEOUT_S)
                code, details, trailing = C.OK, "", None
                await self.drop_created(response)
            else:
                response = await callable_(payload, timeout=RPC_TIMEOUT_S)
                code, details, trailing = C.OK, "", None
                if method == "CreateSession":
                    await self.drop_created(response)
        except grpc.aio.AioRpcError as e:
            code, details, trailing = e.code(), e.details(), e.trailing_metadata()
        self.tally.record("garbage", code, details, trailing, what=f"{method} ")

    async def drop_created(self, response):
        """Garbage that parsed into a session-making request made a session; it must not stay."""
        session = pb.Session.FromString(response)
        if session.session_id:
            await self.delete(self.stubs[0], session.session_id)

    async def garbage(self):
        rng = random.Random(self.args.seed + 2)
        while self.running():
            tasks = [self.raw_garbage(rng) for _ in range(8)]
            tasks += [self.grpc_garbage(rng, self.channels[0], m, s) for m, s in METHODS.items()]
            await asyncio.gather(*tasks)
            await asyncio.sleep(rng.uniform(0.5, 1.5))

    async def guarded(self, name, job):
        """A side job that breaks (e.g. mambactl cannot be started) is a failure, not a crash."""
        try:
            await job
        except Exception as e:
            self.tally.fail(f"{name}: {e!r}")

    async def run(self):
        jobs = [self.client(i) for i in range(self.args.clients)] + [
            self.guarded("killed clients", self.killed_clients()), self.guarded("garbage", self.garbage())]
        try:
            # In-flight calls end within their deadline after the end; beyond that something hangs.
            await asyncio.wait_for(asyncio.gather(*jobs), self.end_at - time.monotonic() + RPC_TIMEOUT_S + 15)
        finally:
            for c in self.channels:
                await c.close()


class RssSampler:
    """The server's resident memory (VmRSS), once a second, on its own schedule."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []  # (seconds since start, MiB)
        self.t0 = time.monotonic()

    def read(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None

    async def run(self):
        while True:
            mib = self.read()
            if mib is not None:
                self.samples.append((time.monotonic() - self.t0, mib))
            await asyncio.sleep(1)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


async def wait_loaded(stub):
    """The server listens before its model is loaded (UNAVAILABLE meanwhile)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        except grpc.aio.AioRpcError as e:
            if e.code() != C.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def settle(stub, server):
    """Waits up to SETTLE_S for the scheduler to be idle; returns the last GetModelInfo and sessions."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        sessions = (await stub.ListSessions(pb.ListSessionsRequest(), timeout=10)).sessions
        idle = info.running == 0 and info.waiting == 0 and info.slots_in_use == 0 and not sessions
        if idle or time.monotonic() > deadline or server.proc.poll() is not None:
            return info, sessions
        await asyncio.sleep(0.2)


def scrape_metrics(log_path):
    """A few Prometheus figures, when the log names the /metrics address (it picked its own port)."""
    with open(log_path, errors="replace") as f:
        m = re.search(r"metrics on (http://\S+/metrics)", f.read(1 << 20))
    if not m:
        return None
    text = urllib.request.urlopen(m.group(1), timeout=10).read().decode()
    wanted = ("mambaserve_admission_rejections_total", "mambaserve_requests_admitted_total")
    figures = {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in wanted:
            figures[name] = figures.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return figures


async def soak(args, server):
    tally = Tally()
    checks = {}
    rss = RssSampler(server.proc.pid)
    sampler = asyncio.ensure_future(rss.run())
    channel = grpc.aio.insecure_channel(server.target)
    stub = pb_grpc.MambaServeStub(channel)
    info = await wait_loaded(stub)
    start = time.monotonic()
    load = Soak(args, server, info, tally, start + args.duration_s)
    error = None
    try:
        await load.run()
    except asyncio.TimeoutError:
        error = "the load did not finish within its deadlines: something hangs"
    elapsed = time.monotonic() - start
    checks["load finished in time"] = error is None
    checks["server alive after the load"] = server.proc.poll() is None
    final, sessions, metrics = None, [], None
    try:
        if checks["server alive after the load"]:
            final, sessions = await settle(stub, server)
            metrics = scrape_metrics(server.log_path)
    except grpc.aio.AioRpcError as e:
        tally.fail(f"after the load: {e.code().name}: {e.details()}")
    except OSError as e:
        tally.fail(f"after the load: /metrics: {e!r}")
    checks["idle: running, waiting, slots_in_use 0"] = final is not None and (
        final.running == 0 and final.waiting == 0 and final.slots_in_use == 0)
    checks["no session left (no leak)"] = final is not None and not sessions
    sampler.cancel()
    end_mib = rss.read()
    await channel.close()
    warm_at = (start - rss.t0) + 0.2 * args.duration_s  # warmed up: a fifth into the load
    warm = next((mib for t, mib in rss.samples if t >= warm_at), None)
    mibs = [mib for _, mib in rss.samples] + ([end_mib] if end_mib else [])
    growth = (end_mib - warm) / warm if warm and end_mib else None
    checks[f"RSS growth after warm-up < {args.rss_growth_limit:.0%}"] = (
        growth is not None and growth < args.rss_growth_limit)
    checks["no unexpected status, no malformed stream"] = not tally.failures
    checks["some streams completed"] = tally.streams_ok > 0
    totals = collections.Counter()
    for (_, code), n in tally.codes.items():
        totals[code] += n
    result = {
        "duration_s": round(elapsed, 1),
        "clients": args.clients,
        "model": f"d_model={info.d_model} layers={info.n_layers} vocab={info.vocab_size}",
        "server_flags": " ".join(SERVE_FLAGS),
        "status_totals": dict(sorted(totals.items())),
        "status_by_kind": {kind: {code: n for (k, code), n in sorted(tally.codes.items()) if k == kind}
                           for kind in sorted({k for k, _ in tally.codes})},
        "streams_ok": tally.streams_ok,
        "tokens_generated": tally.tokens,
        "tokens_per_s": round(tally.tokens / elapsed, 1),
        "stream_s_p50": round(percentile(tally.stream_s, 0.5) or 0, 4),
        "stream_s_p99": round(percentile(tally.stream_s, 0.99) or 0, 4),
        "killed_clients": dict(tally.killed),
        "raw_garbage_connections": dict(tally.raw),
        "resource_exhausted": tally.exhausted,
        "resource_exhausted_with_retry_after_ms": tally.retry_after,
        "resource_exhausted_without_retry_after_ms_by_kind": dict(tally.no_retry_after),
        "rss_mib": {"start": round(mibs[0], 1) if mibs else None, "warm": round(warm, 1) if warm else None,
                    "end": round(end_mib, 1) if end_mib else None, "max": round(max(mibs), 1) if mibs else None,
                    "growth_after_warm": round(growth, 4) if growth is not None else None,
                    # every 10th sample (s since the server started, MiB): a leak climbs, a warm-up levels off
                    "timeline": [[round(t), round(mib, 1)] for t, mib in rss.samples[::10]]},
        "final_model_info": {"running": final.running, "waiting": final.waiting,
                             "slots_in_use": final.slots_in_use, "sessions": len(sessions)} if final else None,
        "metrics": metrics,
        "failures": tally.failures[:50] + ([error] if error else []),
        "checks": checks,
    }
    return result


def main():
    global pb, pb_grpc
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="mambaserve")
    parser.add_argument("--mambactl", required=True)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--duration-s", type=float, default=30)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--json", help="FILE: the summary as JSON")
    parser.add_argument("--rss-growth-limit", type=float, default=0.25,
                        help="largest relative RSS growth from the warm sample to the end")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="mambaserve-soak-")
    keep = False
    try:
        pb, pb_grpc = compile_protos(args.proto_dir, work)
        # mambactl is started many times over the run: a copy of its own, so that a rebuild of the
        # original meanwhile cannot make a start fail.
        args.mambactl = shutil.copy2(args.mambactl, os.path.join(work, "mambactl"))
        model = os.path.join(work, "model")
        make = [args.binary, "make-model", "--preset", "tiny", "--seed", str(args.seed), "--out", model]
        subprocess.run(make, check=True, stdout=subprocess.DEVNULL)
        server = ServeProcess(args.binary, model, work, *SERVE_FLAGS)
        try:
            result = asyncio.run(soak(args, server))
        finally:
            alive = server.proc.poll() is None
            if alive:
                server.proc.send_signal(signal.SIGTERM)
            try:
                code = server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                code = f"none: still running 30 s after SIGTERM (killed; {server.proc.wait()})"
            server.log.close()
        result["server_exit"] = code
        result["checks"]["SIGTERM -> exit 0"] = alive and code == 0
        passed = all(result["checks"].values())
        result["passed"] = passed
        report(result)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
                f.write("\n")
        if not passed:
            keep = True
            with open(server.log_path, errors="replace") as f:
                tail = f.read()[-4000:]
            print(f"\nSOAK FAILED; server log kept in {server.log_path}, its tail:\n{tail}", file=sys.stderr)
            return 1
        return 0
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def report(r):
    print(f"soak: {r['clients']} clients for {r['duration_s']} s ({r['model']})")
    print("  status totals: " + ", ".join(f"{k} {v}" for k, v in r["status_totals"].items()))
    for kind, codes in r["status_by_kind"].items():
        print(f"    {kind:15} " + ", ".join(f"{k} {v}" for k, v in codes.items()))
    print(f"  streams ok {r['streams_ok']}, tokens {r['tokens_generated']} ({r['tokens_per_s']}/s), "
          f"stream p50 {r['stream_s_p50']} s p99 {r['stream_s_p99']} s")
    print(f"  killed clients {r['killed_clients']}, raw garbage connections {r['raw_garbage_connections']}")
    print(f"  RESOURCE_EXHAUSTED {r['resource_exhausted']}, with retry-after-ms "
          f"{r['resource_exhausted_with_retry_after_ms']} (without, by kind: "
          f"{r['resource_exhausted_without_retry_after_ms_by_kind']})")
    print(f"  RSS MiB {dict((k, v) for k, v in r['rss_mib'].items() if k != 'timeline')}, "
          f"server exit {r['server_exit']}")
    for failure in r["failures"]:
        print(f"  FAILURE {failure}")
    for check, ok in r["checks"].items():
        print(f"  [{'ok' if ok else 'FAILED'}] {check}")
    print("soak " + ("passed" if r["passed"] else "FAILED"))


if __name__ == "__main__":
    sys.exit(main())
