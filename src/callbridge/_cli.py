"""The `callbridge` command."""

from __future__ import annotations

import argparse
import logging
import logging.config
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from . import _callscli
from .config import ConfigError, Settings

__all__ = ["main"]

#: hypercorn's `graceful_timeout` under `callbridge serve`: what is still open once
#: the drain is over (calls it had to end at once, webhooks in flight) gets this long
GRACEFUL_TIMEOUT_S = 10.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callbridge",
        description="Bridge Twilio phone calls to realtime speech-to-speech models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the service: hypercorn's trio workers, the media stream on callbridge's own",
        description=(
            "Serve the Twilio voice webhook (/incoming-call) and Media Streams WebSocket "
            "(/media-stream). Without OPENAI_API_KEY it runs offline: calls are answered by a local"
            " echo agent. Configuration comes from the environment, or a .env file in the working "
            "directory (OPENAI_API_KEY, OPENAI_BASE_URL, CALLBRIDGE_PUBLIC_URL, "
            "CALLBRIDGE_TRUST_PROXY, CALLBRIDGE_AGENT=module:attribute for your own agent, or "
            "CALLBRIDGE_MODEL, CALLBRIDGE_VOICE, CALLBRIDGE_INSTRUCTIONS, CALLBRIDGE_GREETING; "
            "HOST, PORT, TWILIO_AUTH_TOKEN, CALLBRIDGE_ALLOW_UNSIGNED_STREAMS; CALLBRIDGE_MAX_CALLS"
            " per worker, CALLBRIDGE_BUSY_LINE for callers turned away); the options below override"
            " HOST and PORT. On SIGTERM or Ctrl-C it drains: new calls are turned away (GET /ready "
            "answers 503), the live ones go on for CALLBRIDGE_DRAIN_S (default 20 s), then the "
            "agent says CALLBRIDGE_DRAIN_LINE to each one still live and hangs up; see "
            "docs/drain.md. Runs hypercorn's trio workers with callbridge's front door: the media "
            "stream is served by callbridge's own WebSocket code (measured: 0.56-0.59x the CPU per "
            "call of the ASGI path), every other request by hypercorn, on one port; each worker "
            "listens on its own socket (SO_REUSEPORT), so calls spread evenly over workers. "
            "`hypercorn --worker-class trio callbridge.app:app` serves the same app through ASGI "
            "(slower). Messages are capped at 64 KiB, the drain is followed by a graceful timeout "
            "of 10 s, and callbridge's log lines are shown by every worker "
            "(CALLBRIDGE_LOG_FORMAT=json: one JSON object per line, with the call's SIDs)."
        ),
    )
    serve.add_argument("--host", help="address to listen on (default: $HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (default: $PORT or 8000)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes; calls are independent, and "
                            "CALLBRIDGE_MAX_CALLS is per worker (default: 1)")
    serve.add_argument("--certfile", help="serve TLS with this certificate (PEM), as hypercorn "
                                          "does; needs --keyfile (best: TLS in front, e.g. a "
                                          "load balancer, which keeps the fast path)")
    serve.add_argument("--keyfile", help="the private key for --certfile (PEM)")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"],
                       help="of hypercorn's and callbridge's log lines (default: info)")
    call = sub.add_parser(
        "call",
        help="place an outbound call that the service's agent answers",
        description=(
            "Have Twilio call TO from --from and connect the call to the running service "
            "(its public URL: --service-url or CALLBRIDGE_PUBLIC_URL), where the agent talks; "
            "print the call's status as it changes until it is over. Needs Twilio REST "
            "credentials: TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and "
            "TWILIO_API_SECRET (CALLBRIDGE_TWILIO_API_URL for another API base). Exits 0 when "
            "the call was answered and completed, 1 when it was not (busy, no-answer, "
            "failed, canceled), 2 on a configuration error."
        ),
    )
    call.add_argument("to", help="the number to call, E.164 (+14155550100)")
    call.add_argument("--from", dest="from_", required=True, metavar="NUMBER",
                      help="a Twilio number of the account, E.164")
    call.add_argument("--agent", metavar="MODULE:ATTRIBUTE",
                      help="the agent to answer with: one the service lists in CALLBRIDGE_AGENTS "
                           "(default: the service's agent)")
    call.add_argument("--machine-detection", action="store_true",
                      help="Twilio's answering-machine detection; the result reaches the agent "
                           "(CallContext.answered_by, Agent.on_answered_by)")
    call.add_argument("--service-url", metavar="URL",
                      help="the service's public https:// base (default: CALLBRIDGE_PUBLIC_URL)")
    demo = sub.add_parser(
        "demo",
        help="play a simulated call: barge-in, a tool, keypresses (VAPI's way with --backend "
             "vapi); no keys, nothing leaves this machine",
        description=(
            "Start callbridge under hypercorn's trio worker, the local realtime model and a "
            "synthetic Twilio caller, all on loopback in this process; play a 20-second "
            "pizza order in which the caller interrupts the agent, the agent places the "
            "order with a slow tool (saying a filler line while it runs), the caller "
            "confirms on the keypad and the agent says goodbye and hangs up through a local "
            "Twilio; print the timeline (who spoke when, clear and "
            "truncation with their milliseconds, the tool call, response latency) and "
            "write the call's two audio tracks as WAV files. Needs no keys and ignores "
            "OPENAI_API_KEY. With --backend vapi the model is VAPI's assistant on its "
            "WebSocket transport, played by a local VAPI (its REST API and call socket, "
            "PCM 16 kHz transcoded both ways; ignores VAPI_API_KEY): it greets first, the "
            "caller interrupts (Twilio's queue cleared at once, no truncation: VAPI cannot "
            "be told what was heard), it answers, takes the order, says goodbye and ends "
            "the call itself; no tools of callbridge's, no keypresses."
        ),
    )
    demo.add_argument("--out", default="callbridge-demo", metavar="DIR",
                      help="where to write caller.wav and agent.wav (default: ./callbridge-demo)")
    demo.add_argument("--in-memory", action="store_true",
                      help="no sockets: run the call in memory on virtual time (instant)")
    demo.add_argument("--backend", choices=["openai", "vapi"], default="openai",
                      help="the model's platform: openai (the local realtime model, OpenAI's "
                           "protocol) or vapi (a local VAPI in front of it: VAPI's assistant "
                           "greets, is interrupted, takes the order and hangs up itself); "
                           "default: openai")
    _callscli.add_parser(sub)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    import trio
    import trio.testing

    from ._demo import run_demo

    out = Path(args.out)
    settings = Settings.from_env()  # (CALLBRIDGE_DB: where the call's record goes)
    settings = Settings(db=settings.db, retention_days=settings.retention_days)
    if args.in_memory:
        clock = trio.testing.MockClock(autojump_threshold=0)
        trio.run(partial(run_demo, out, loopback=False, settings=settings,
                         backend=args.backend), clock=clock)
    else:
        trio.run(partial(run_demo, out, settings=settings, backend=args.backend))
    return 0


def _call(args: argparse.Namespace) -> int:
    import trio

    from .outbound import place_call, watch_call
    from .twilio_rest import TwilioRest, TwilioRestError

    try:
        settings = Settings.from_env()
        rest = TwilioRest.from_env()
    except ConfigError as exc:
        print(f"callbridge: configuration error: {exc}", file=sys.stderr)
        return 2
    service_url = args.service_url or settings.public_url
    if rest is None or service_url is None:
        missing = ("Twilio REST credentials (TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or an "
                   "API key pair)" if rest is None else "--service-url or CALLBRIDGE_PUBLIC_URL")
        print(f"callbridge: placing a call needs {missing}", file=sys.stderr)
        return 2

    async def place() -> str:
        async with rest:
            placed = await place_call(rest, to=args.to, from_=args.from_,
                                      service_url=service_url, agent=args.agent,
                                      machine_detection=args.machine_detection)
            print(f"callbridge: call {placed.sid} to {placed.to}: {placed.status}", flush=True)
            status = placed.status
            async for status in watch_call(rest, placed.sid):
                print(f"callbridge: call {placed.sid}: {status}", flush=True)
            return status

    try:
        final = trio.run(place)
    except TwilioRestError as exc:
        print(f"callbridge: Twilio refused: {exc}", file=sys.stderr)
        return 1
    return 0 if final == "completed" else 1


def served_app(level: str, fmt: str = "text") -> Any:
    """`callbridge.app:app`, as each worker of `callbridge serve` loads it, with
    callbridge's log lines configured first (`callbridge._logs`: a worker is a new
    process, spawned, and hypercorn's own logging config is applied only after the
    app's startup), and the front door installed (`callbridge._frontdoor`)."""
    from ._logs import log_config

    logging.config.dictConfig(log_config(level, fmt))
    from .app import app

    app.front_door = True
    app.serves_metrics_bind = False  # the main process serves CALLBRIDGE_METRICS_BIND
    return app


def run_workers(config: Any, on_exit: Callable[[int], None] = lambda pid: None) -> int:
    """hypercorn's `run` for the trio worker, except that each worker binds its own
    listening socket (SO_REUSEPORT with more than one): the kernel spreads new
    connections evenly over the workers, where one shared socket let the busiest
    worker take most of them (measured: 92 % / 33 % CPU over two). As under
    hypercorn, SIGINT and SIGTERM set the workers' shutdown event (each drains,
    `callbridge._drain`), a worker that exits on its own is replaced (one drained
    alone), and one that fails stops them all. Returns the exit code: the first
    failing worker's, else 0. `on_exit` is told each worker's pid once it exited."""
    import signal
    from multiprocessing import get_context
    from multiprocessing.connection import wait

    from hypercorn.trio.run import trio_worker

    context = get_context("spawn")
    shutdown = context.Event()

    def start() -> Any:
        worker = context.Process(target=trio_worker, kwargs={
            "config": config, "sockets": None, "shutdown_event": shutdown})
        worker.start()
        return worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers inherit it: we tell them
    workers = [start() for _ in range(config.workers)]
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), lambda *_: shutdown.set())
    code = 0
    while not shutdown.is_set():
        wait([worker.sentinel for worker in workers])
        for worker in [w for w in workers if w.exitcode is not None]:
            workers.remove(worker)
            on_exit(worker.pid)
            code = worker.exitcode or 0
            if code:
                shutdown.set()
                break
            if not shutdown.is_set():
                workers.append(start())
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # a drain under way goes on (docs/drain.md)
    for worker in workers:
        worker.join()
        on_exit(worker.pid)
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "call":
        return _call(args)
    if args.command == "calls":
        return _callscli.main(args)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()  # fail here, before any worker starts
        if settings.db is not None:
            _check_store(settings.db)
    except ConfigError as exc:
        print(f"callbridge: configuration error: {exc}", file=sys.stderr)
        return 2
    from hypercorn.config import Config

    from .app import MAX_TWILIO_MESSAGE, OFFLINE_NOTICE, OFFLINE_VAPI_NOTICE, UNGUARDED_NOTICE

    config = Config()
    # (hypercorn's `module:factory()`, called in each worker)
    config.application_path = (f"callbridge._cli:served_app({args.log_level.upper()!r}, "
                               f"{settings.log_format!r})")
    config.worker_class = "trio"
    config.workers = max(1, args.workers)
    config.bind = [f"{args.host or settings.host}:{args.port or settings.port}"]
    config.accesslog = None
    config.websocket_max_message_size = MAX_TWILIO_MESSAGE  # refused as it streams in: 1009
    config.loglevel = args.log_level.upper()
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    if bool(args.certfile) != bool(args.keyfile):
        print("callbridge: --certfile and --keyfile go together", file=sys.stderr)
        return 2
    config.certfile, config.keyfile = args.certfile, args.keyfile
    if settings.offline:
        vapi = settings.backend == "vapi"
        print(f"callbridge: {OFFLINE_VAPI_NOTICE if vapi else OFFLINE_NOTICE}", flush=True)
    if settings.twilio_auth_token is None:
        print(f"callbridge: WARNING: {UNGUARDED_NOTICE}", flush=True)
    if settings.offline:
        model = "local echo agent" + (" behind a local VAPI" if settings.backend == "vapi" else "")
    elif settings.backend == "vapi":
        model = f"VAPI assistant {settings.vapi_assistant_id}"
    elif settings.agent_spec is not None:
        model = f"agent {settings.agent_spec}"
    else:
        model = f"model {settings.model}"
    scheme = "https" if config.ssl_enabled else "http"
    print(f"callbridge: serving on {scheme}://{config.bind[0]} "
          f"(webhook /incoming-call, stream /media-stream, {model})", flush=True)
    if settings.metrics_token is None and settings.metrics_bind is None:
        return run_workers(config)
    return _with_metrics(config, settings)


def _check_store(db: str) -> None:
    """Open the call-record store once (migrating its schema) before any worker
    starts, so a store that cannot be used stops `serve` with its name."""
    from ._callscli import redacted
    from ._store import open_sink

    try:
        open_sink(db).close()
    except Exception as exc:
        raise ConfigError(f"CALLBRIDGE_DB={redacted(db)!r}: cannot open it: {exc} (`off`: keep "
                          "no call records)") from exc


def _with_metrics(config: Any, settings: Settings) -> int:
    """`run_workers` with prometheus-client's multiprocess mode: the workers write
    their metrics to a private directory (any worker's `/metrics` sums them all), and
    this process serves `CALLBRIDGE_METRICS_BIND`, if set, from the same files."""
    import shutil

    from ._metrics import prepare_multiprocess, start_bind_server, worker_exited

    directory = prepare_multiprocess()  # before any worker starts: they inherit it
    try:
        stop = None
        if settings.metrics_bind is not None:
            stop = start_bind_server(*settings.metrics_bind)
            print(f"callbridge: metrics on http://{_netloc(*settings.metrics_bind)}/metrics",
                  flush=True)
        try:
            return run_workers(config, on_exit=worker_exited)
        finally:
            if stop is not None:
                stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
