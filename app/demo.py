"""`hushcc demo`: the whole system on loopback, every service a real process, then the refusals.

What a newcomer sees with `make demo`, in a temporary directory removed at the end:

1. a transparency log (`hushcc log serve`) receives this checkout's release: its
   self-measurement, logged with `hushcc log entry` and `hushcc log add`;
2. a Privacy Pass issuer (`hushcc issuer serve`) with a user's API key;
3. two nodes (`hushcc node serve`, simulated TEE, SmolLM2-135M-Instruct) stapling that release,
   and two more that must be refused: one started from a copy of the code with one byte
   changed (its measurement is not in the log), one stapling a checkpoint from a forked log
   (same log key, another history);
4. the relay (`hushcc relay serve`) listing all four;
5. the client SDK verifies every node before it sends a byte and prints the report;
6. it asks a question through the relay and streams the answer from a node chosen at random;
7. a relay that alters the bytes it passes on is detected.

Every stage is timed. Ctrl-C stops every service (SIGTERM, each exits 0). The demo prints public
facts and, on the client's side only, the answer: the one party allowed to see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.errors import HushError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from app.services import ServiceProcess
    from client.session import AsyncClient
    from hushcc.cliparse import OneLineErrorParser

DEMO_QUESTION = "In one sentence, what does a transparency log guarantee?"
ISSUER_NAME = "issuer.demo.hushcc"
ORIGIN_NAME = "relay.demo.hushcc"
API_KEY = "demo-user-api-key"


class DemoError(HushError):
    """A demo stage did not behave as the system promises."""


@dataclass
class Demo:
    """What the stages share: the folder, the running services and the client-side files."""

    workdir: Path
    stack: contextlib.ExitStack
    urls: dict[str, str] = field(default_factory=dict)
    node_ids: dict[str, str] = field(default_factory=dict)
    log_key: str = ""
    question: str = DEMO_QUESTION

    def path(self, name: str) -> Path:
        """A file of this demo."""
        return self.workdir / name

    def start(self, name: str, *args: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> ServiceProcess:
        """Start `hushcc ARGS` (a `serve`), stopped with SIGTERM when the demo ends."""
        from app.services import start_service  # noqa: PLC0415

        service = start_service(name, list(args), workdir=self.workdir, env=env, cwd=cwd)
        self.stack.callback(_stop, service)
        self.urls[name] = service.url
        return service


def _stop(service: ServiceProcess) -> None:
    if service.stop() != 0:
        raise DemoError(f"{service.name} did not exit cleanly")


def _say(text: str) -> None:
    print(f"   {text}", flush=True)


def hushcc(*args: str) -> str:
    """Run one `hushcc` command in this process; return what it printed.

    Raises:
        DemoError: it failed (its one-line error is in the message).
    """
    from app.cli import main  # noqa: PLC0415

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    if status != 0:
        raise DemoError(f"`hushcc {args[0]} {args[1]}` failed: {err.getvalue().strip()}")
    return out.getvalue()


def publish(demo: Demo, log: str, name: str, measurement: str) -> Path:
    """Log a release with this `sim` measurement; return the stapled release JSON file."""
    entry, release = demo.path(f"{name}.entry.json"), demo.path(f"{name}.release.json")
    hushcc("log", "entry", "--image-digest", "sha256:" + "00" * 32,
           "--measurement", f"sim={measurement}", "--out", str(entry))
    hushcc("log", "add", str(entry), "--url", demo.urls[log], "--release-key",
           str(demo.path("release.key")), "--log-key", str(demo.path("log.key.pub")),
           "--out", str(release))
    return release


def stage_log(demo: Demo, *, tiny_model: bool = False) -> None:
    """(1) The log, and this checkout's release in it.

    The release is what a genuine node started with flags only measures: code and the default
    model, or code alone with `tiny_model` (the in-memory test model).
    """
    from attestation.measure import measure_node, source_root  # noqa: PLC0415
    from node.service import NodeOptions, served_model_path  # noqa: PLC0415

    hushcc("log", "keygen", "--out", str(demo.path("log.key")), "--name", "log.demo.hushcc")
    hushcc("log", "keygen", "--out", str(demo.path("release.key")), "--name", "release.demo")
    demo.log_key = demo.path("log.key.pub").read_text().strip()
    demo.start("log", "log", "serve", "--host", "127.0.0.1", "--port", "0", "--state-dir",
               str(demo.path("log")), "--log-key", str(demo.path("log.key")),
               "--release-key", str(demo.path("release.key.pub")))
    # What the genuine nodes (flags only) measure at start: code + model file.
    served = served_model_path(NodeOptions(tiny_model=tiny_model))
    measured, files = measure_node(source_root(), served)
    _say(f"log {demo.urls['log']}, key {demo.log_key.split('+')[0]}")
    _say(f"node self-measurement over {len(files)} files (code and model): "
         f"{measured.digest.hex()[:32]}...")
    publish(demo, "log", "genuine", measured.digest.hex())
    publish(demo, "log", "earlier", "11" * 48)  # another release: the log grows to size 2
    release = publish(demo, "log", "genuine", measured.digest.hex())  # deduplicated: index 0
    _say(f"release logged; stapled proof against tree size 2 in {release.name}")


def stage_issuer(demo: Demo) -> None:
    """(2) The Privacy Pass issuer and a user's API key."""
    hushcc("issuer", "keygen", "--out", str(demo.path("issuer.key")))
    for name in ("api.keys", "api.key"):
        demo.path(name).write_text(API_KEY + "\n")
        demo.path(name).chmod(0o600)
    demo.start("issuer", "issuer", "serve", "--host", "127.0.0.1", "--port", "0", "--key",
               str(demo.path("issuer.key")), "--api-keys", str(demo.path("api.keys")))
    _say(f"issuer {demo.urls['issuer']} (RFC 9578 token type 2, blind RSA)")


def _tampered_copy(demo: Demo) -> Path:
    """This checkout's code with one byte of one file changed."""
    from attestation.measure import SOURCE_PACKAGES, source_root  # noqa: PLC0415

    root = demo.path("tampered")
    for package in SOURCE_PACKAGES:
        shutil.copytree(source_root() / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    victim = root / "node" / "gateway.py"
    data = bytearray(victim.read_bytes())
    data[data.index(b"The OHTTP gateway")] = ord("t")  # one byte, in a docstring
    victim.write_bytes(bytes(data))
    return root


def _forked_release(demo: Demo, measurement: str) -> Path:
    """A second log with the same key and another history, holding the genuine release."""
    demo.start("forked-log", "log", "serve", "--host", "127.0.0.1", "--port", "0",
               "--state-dir", str(demo.path("forked-log")), "--log-key",
               str(demo.path("log.key")), "--release-key", str(demo.path("release.key.pub")))
    publish(demo, "forked-log", "forked", measurement)
    publish(demo, "forked-log", "other", "22" * 48)  # size 2 like the real log, another root
    return publish(demo, "forked-log", "forked", measurement)


def stage_nodes(demo: Demo) -> None:
    """(3) Two genuine nodes, a tampered one and one stapling a forked log's checkpoint."""
    import json  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from attestation.measure import measure_sources, source_root  # noqa: PLC0415

    genuine = str(demo.path("genuine.release.json"))
    # The forked node runs the tiny in-memory model: it measures the code alone, which its
    # release lists, so it is refused at the log step (7) and nowhere before.
    forked = str(_forked_release(demo, measure_sources(source_root())[0].digest.hex()))
    tampered = _tampered_copy(demo)
    base = ["node", "serve", "--host", "127.0.0.1", "--port", "0", "--tee", "simulated"]
    plans = {
        "node-a": ([*base, "--release", genuine], None),
        "node-b": ([*base, "--release", genuine], None),
        "node-tampered": ([*base, "--release", genuine, "--tiny-model"], tampered),
        "node-forked": ([*base, "--release", forked, "--tiny-model"], None),
    }
    started = time.monotonic()
    with ThreadPoolExecutor(len(plans)) as pool:
        futures = {name: pool.submit(demo.start, name, *args, cwd=cwd,
                                     env={**os.environ, "PYTHONPATH": str(cwd)} if cwd else None)
                   for name, (args, cwd) in plans.items()}
        for future in futures.values():
            future.result()
    for name in plans:
        with urllib.request.urlopen(f"{demo.urls[name]}/attestation", timeout=30) as reply:  # noqa: S310 - loopback
            demo.node_ids[name] = json.loads(reply.read())["node_id"]
        _say(f"{name}: {demo.urls[name]}, node id {demo.node_ids[name][:16]}...")
    _say(f"4 nodes ready in {time.monotonic() - started:.1f} s (SmolLM2-135M-Instruct on a and b; "
         "tiny models on the two that will be refused)")


def stage_relay(demo: Demo) -> None:
    """(4) The relay, listing every node."""
    flags = [f for name, node_id in demo.node_ids.items()
             for f in ("--node", f"{node_id}={demo.urls[name]}")]
    demo.start("relay", "relay", "serve", "--host", "127.0.0.1", "--port", "0", "--issuer-key",
               str(demo.path("issuer.key.pub")), "--issuer-name", ISSUER_NAME,
               "--origin-name", ORIGIN_NAME, *flags)
    _say(f"relay {demo.urls['relay']}: sees only ciphertext and tokens, lists "
         f"{len(demo.node_ids)} nodes")


def client(demo: Demo, relay_url: str | None = None, *, token_batch: int = 4) -> AsyncClient:
    """The SDK as a user configures it (state in the demo's temporary config folder)."""
    from attestation.policy import parse_policy  # noqa: PLC0415
    from client.attest import PolicyVerifier  # noqa: PLC0415
    from client.session import AsyncClient, TokenSettings  # noqa: PLC0415
    from relay.issuer_keys import read_pinned_key  # noqa: PLC0415

    policy = parse_policy(f'allow_simulated = true\nlog_key = "{demo.log_key}"\n')
    tokens = TokenSettings(read_pinned_key(demo.path("issuer.key.pub")), ISSUER_NAME,
                           ORIGIN_NAME, API_KEY, batch=token_batch)
    return AsyncClient(relay_url or demo.urls["relay"], demo.urls["issuer"], demo.log_key,
                       policy, tokens=tokens, log_url=demo.urls["log"],
                       state_dir=demo.path("client-config"),
                       verifier=PolicyVerifier.from_policy(policy, demo.log_key))


async def _verify(demo: Demo) -> None:
    from client.cli import print_report  # noqa: PLC0415

    sdk = client(demo)
    try:
        report = await sdk.verify()
    finally:
        await sdk.close()
    print_report(report, detail=False)
    usable = {node.node_id for node in report.usable}
    if usable != {demo.node_ids["node-a"], demo.node_ids["node-b"]}:
        raise DemoError("the client did not accept exactly the two genuine nodes")
    failures = {n.node_id: n.report.first_failure for n in report.nodes if n.verified is None}
    tampered = failures[demo.node_ids["node-tampered"]]
    forked = failures[demo.node_ids["node-forked"]]
    if tampered is None or not tampered.name.startswith("(4) measurement"):
        raise DemoError("the tampered node was not refused for its measurement")
    if forked is None or "FORK" not in forked.reason:
        raise DemoError("the node stapling a forked log was not refused as a fork")
    _say("refused: the tampered node (its measurement is not in the log) and the node "
         "stapling a forked log (both checkpoints shown above)")


def stage_verify(demo: Demo) -> None:
    """(5) The client verifies every node before sending a byte."""
    asyncio.run(_verify(demo))


async def _ask(demo: Demo) -> None:
    sdk = client(demo)
    try:
        started = time.monotonic()
        stream = await sdk.chat.completions.create(
            model="smollm2-135m-instruct", stream=True, max_tokens=48, temperature=0,
            messages=[{"role": "user", "content": demo.question}])
        first, pieces = None, []
        async for chunk in stream:  # type: ignore[union-attr]
            for choice in chunk.choices:
                first = first or time.monotonic()
                pieces.append(choice.delta.content or "")
    finally:
        await sdk.close()
    answer = "".join(pieces).strip()
    if not answer:
        raise DemoError("no answer arrived")
    _say(f"Q: {demo.question}")
    _say(f"A: {answer}")
    _say(f"first token after {(first or started) - started:.2f} s, {len(pieces)} events in "
         f"{time.monotonic() - started:.2f} s (verify, token, OHTTP, relay, node, stream)")


def stage_ask(demo: Demo) -> None:
    """(6) A private question through the relay to a node chosen at random."""
    asyncio.run(_ask(demo))


def stage_altering_relay(demo: Demo) -> None:
    """(7) A relay that flips one bit of every answer it passes on is detected."""
    from app.demo_adversary import altering_proxy  # noqa: PLC0415
    from hushcc.errors import DecryptError  # noqa: PLC0415

    async def go() -> None:
        async with altering_proxy(demo.urls["relay"]) as proxy_url:
            sdk = client(demo, proxy_url)
            try:
                await sdk.chat.completions.create(
                    model="smollm2-135m-instruct", max_tokens=4,
                    messages=[{"role": "user", "content": DEMO_QUESTION}])
            except DecryptError as detected:
                _say(f"detected: {detected} (the answer does not open; nothing is shown)")
                return
            finally:
                await sdk.close()
        raise DemoError("an altered answer was accepted")

    asyncio.run(go())


STAGES = (
    ("transparency log: a real log server, this checkout's release in it", stage_log),
    ("Privacy Pass issuer", stage_issuer),
    ("nodes: two genuine, one tampered, one stapling a forked log", stage_nodes),
    ("relay", stage_relay),
    ("client: verify every node before sending a byte", stage_verify),
    ("ask: chunked OHTTP through the relay, streamed back", stage_ask),
    ("an altering relay", stage_altering_relay),
)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hushcc-demo-") as tmp:
        yield Path(tmp)


def run_demo(question: str = DEMO_QUESTION) -> int:
    """Run every stage; stop every service; remove every file."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    total = time.monotonic()
    with _workdir() as workdir, contextlib.ExitStack() as stack:
        demo = Demo(workdir, stack, question=question)
        for title, stage in STAGES:
            print(f"== {title}", flush=True)
            started = time.monotonic()
            stage(demo)
            _say(f"({time.monotonic() - started:.1f} s)")
        kept = sorted(p.name for p in demo.path("client-config").iterdir())
        print(f"== done in {time.monotonic() - total:.1f} s; the client kept only: "
              f"{', '.join(kept)} (then the whole demo folder is removed)", flush=True)
    return 0


def _handle(args: argparse.Namespace) -> int:
    try:
        return run_demo(args.question)
    except KeyboardInterrupt:
        print("\ninterrupted: every service was stopped", file=sys.stderr)
        return 130


def register(subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    """Add `hushcc demo`."""
    from hushcc.cliparse import short_text  # noqa: PLC0415

    text = ("run the whole system on loopback (log, issuer, relay, nodes), ask a question "
            "privately, and show what is refused")
    demo = subparsers.add_parser("demo", help="run the end-to-end demo on loopback",
                                 description=text)
    demo.add_argument("--question", default=DEMO_QUESTION, type=short_text(2000),
                      help="what the client asks (encrypted on the client's side; the "
                           "answer is decrypted only there)")
    demo.set_defaults(handler=_handle)
