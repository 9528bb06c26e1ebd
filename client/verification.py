"""Verify-then-send, the verifying half: the relay's node directory, every bundle, the log view.

`verify_directory` is pure apart from the log view's tile reads: it takes the directory's bytes,
a bundle verifier (attestation's fail-closed `verify_bundle`, configured by the caller with the
policy, pinned log key and trust anchors) and the client's log view, and returns a
`DirectoryReport` with one row per node and step. Only nodes whose every step passed are
`usable`: the SDK sends to none other (DESIGN.md verification steps 1-6, plus (7) below).

First, when the client knows the log's URL, the log's own current checkpoint is checked against
the one this client persisted and becomes the reference (step "log checkpoint"); a log that
shows this client a history inconsistent with what it saw before fails everything. Then, per
node, steps (0)-(6) are attestation's (parse, CPU evidence, GPU evidence, binding, measurement,
log inclusion, validity), and (7) "log view" checks the node's stapled checkpoint against the
client's (consistent, never smaller; a fork shows both notes).

Invariants: a directory that is not `{"nodes": [bundle, ...]}` fails as a whole (A8: fail
closed); one bad bundle never makes another node unusable; no bundle content but public facts
(node id, step names, reasons) reaches the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from attestation.bundle import Bundle
from attestation.report import AttestationError, Step, VerificationReport
from client.logview import accept_checkpoint
from hushcc.errors import ProtocolError, VerificationError
from transparency_log.client import ForkDetectedError

if TYPE_CHECKING:
    from datetime import datetime

    from attestation.verify_bundle import VerifiedBundle
    from client.transport import Transport
    from transparency_log.client import LogClient

MAX_NODES = 256
LOG_VIEW_STEP = "(7) log view"
LOG_STEP = "log checkpoint"


class BundleVerifier(Protocol):
    """Verifies one bundle fail-closed (attestation.verify_bundle with the client's settings)."""

    def __call__(self, bundle: bytes, *, now: datetime) -> VerifiedBundle:
        """Return the verified bundle or raise `AttestationError` with the report."""


@dataclass(frozen=True, slots=True)
class NodeResult:
    """One node's verification: its report, and the verified bundle when every step passed."""

    node_id: str
    report: VerificationReport
    verified: VerifiedBundle | None


@dataclass(frozen=True, slots=True)
class DirectoryReport:
    """What `client.verify()` returns: every node, every step, and the verdict."""

    nodes: tuple[NodeResult, ...]
    fork_evidence: tuple[bytes, bytes] | None = field(default=None)
    log_step: Step | None = None

    @property
    def usable(self) -> tuple[NodeResult, ...]:
        """The nodes whose every step passed: the only ones a request may go to."""
        return tuple(n for n in self.nodes if n.verified is not None)

    def render(self) -> str:
        """Plain text, one line per step (`rich` tables are the CLI's business)."""
        lines = [f"{len(self.usable)} of {len(self.nodes)} node(s) verified"]
        if self.log_step is not None:
            lines.append(self.log_step.line())
        for node in self.nodes:
            verdict = "VERIFIED" if node.verified is not None else "REJECTED"
            lines.append(f"node {node.node_id[:16]}...: {verdict}")
            lines.extend(f"  {step.line()}" for step in node.report.steps)
        return "\n".join(lines)


def parse_directory(data: bytes) -> list[bytes]:
    """The bundles of a relay directory `{"nodes": [bundle, ...]}`, each as JSON bytes.

    Raises:
        ProtocolError: not such a document (the whole directory is refused).
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("node directory is not JSON") from exc
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
        raise ProtocolError('node directory is not {"nodes": [bundle, ...]}')
    if len(nodes) > MAX_NODES:
        raise ProtocolError("node directory lists too many nodes")
    return [json.dumps(n).encode() for n in nodes]


def _node_id(bundle: bytes) -> str:
    try:
        return Bundle.from_json(bundle).node_id.hex()
    except ProtocolError:
        return "unparseable"


async def sync_log(log: LogClient, transport: Transport, log_url: str, *, now: datetime
                   ) -> tuple[Step, tuple[bytes, bytes] | None]:
    """The "log checkpoint" step: the log's current checkpoint, consistent with the persisted one.

    Raises:
        TransportError: the log could not be reached.
    """
    reply = await transport.get(f"{log_url}/checkpoint")
    if reply.status != 200:
        return Step(LOG_STEP, passed=False, reason=f"log answered {reply.status}"), None
    try:
        checkpoint = await accept_checkpoint(log, transport, log_url, reply.body,
                                             now=int(now.timestamp()))
    except ForkDetectedError as exc:
        return Step(LOG_STEP, passed=False, reason=f"FORK: {exc}"), (exc.old_note, exc.new_note)
    except (VerificationError, ProtocolError) as exc:
        return Step(LOG_STEP, passed=False, reason=str(exc)), None
    return Step(LOG_STEP, passed=True, reason=(
        f"the log's checkpoint of size {checkpoint.size} is consistent with the one last seen")
    ), None


async def verify_directory(  # noqa: PLR0913 - the inputs of one verification, all named
    directory: bytes, *, verify: BundleVerifier, log: LogClient, transport: Transport,
    log_url: str | None, now: datetime,
) -> DirectoryReport:
    """Verify the log view and every node of a directory (see the module docstring).

    Raises:
        ProtocolError: the directory itself is malformed.
        TransportError: the log could not be reached.
    """
    bundles = parse_directory(directory)
    log_step: Step | None = None
    fork: tuple[bytes, bytes] | None = None
    if log_url is not None:
        log_step, fork = await sync_log(log, transport, log_url, now=now)
        if not log_step.passed:
            refused = [NodeResult(_node_id(b), VerificationReport("attestation bundle", [
                Step(LOG_STEP, passed=False, reason="the log itself did not verify")]), None)
                for b in bundles]
            return DirectoryReport(tuple(refused), fork, log_step)
    results: list[NodeResult] = []
    for bundle in bundles:
        node_id = _node_id(bundle)
        try:
            verified = verify(bundle, now=now)
        except AttestationError as exc:
            results.append(NodeResult(node_id, exc.report, None))
            continue
        report = VerificationReport(verified.report.subject, list(verified.report.steps))
        note = Bundle.from_json(bundle).release.checkpoint.encode()
        try:
            checkpoint = await accept_checkpoint(log, transport, log_url, note,
                                                 now=int(now.timestamp()))
        except ForkDetectedError as exc:
            fork = fork or (exc.old_note, exc.new_note)
            report.steps.append(Step(LOG_VIEW_STEP, passed=False, reason=f"FORK: {exc}"))
            results.append(NodeResult(node_id, report, None))
            continue
        except VerificationError as exc:
            report.steps.append(Step(LOG_VIEW_STEP, passed=False, reason=str(exc)))
            results.append(NodeResult(node_id, report, None))
            continue
        report.steps.append(Step(LOG_VIEW_STEP, passed=True, reason=(
            f"checkpoint of size {checkpoint.size} is consistent with the one last seen")))
        results.append(NodeResult(node_id, report, verified))
    return DirectoryReport(tuple(results), fork, log_step)

