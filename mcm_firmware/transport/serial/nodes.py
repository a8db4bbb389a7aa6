"""Serial links for a fleet's nodes: one port per node, a new pty per node, or one port shared by
all of them, told apart by EID."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...protocol import mctp
from ..base import NodeLinks, TransportError, TransportFactory
from ..pcap import SerialCapture
from .endpoint import FIRST_NODE_EID, SerialTransport
from .link import SerialLink
from .port import parse_port_url


@dataclass(frozen=True, slots=True)
class NodeLink:
    node: int
    link: SerialLink
    eid: int

    def factory(self, fleet: str) -> TransportFactory:
        """A transport factory (client id -> transport) for this node on its link."""
        return lambda client_id: SerialTransport(self.link, role="node", eid=self.eid, fleet=fleet, node=self.node)


def plan_node_links(urls: list[str], nodes: list[int], *, mux: bool = False) -> list[NodeLink]:
    """Links for ``nodes`` (not yet open): one URL per node; or ``pty`` once, a new pseudo-terminal
    per node; or one URL (or ``pty`` with ``mux``) shared by all, told apart by EID (9, 10, ...)."""
    specs = [parse_port_url(u) for u in urls]
    if not specs:
        raise ValueError("no serial port given")
    if len(specs) == len(nodes) and not mux:
        return [NodeLink(n, SerialLink(s), FIRST_NODE_EID) for n, s in zip(nodes, specs, strict=True)]
    if len(specs) == 1 and specs[0].url == "pty" and not mux:
        return [NodeLink(n, SerialLink(specs[0]), FIRST_NODE_EID) for n in nodes]
    if len(specs) == 1:
        if len(nodes) > 254 - FIRST_NODE_EID + 1:
            raise ValueError(
                f"{len(nodes)} nodes do not fit on one serial link "
                f"(EIDs {FIRST_NODE_EID}..254: at most {254 - FIRST_NODE_EID + 1})"
            )
        link = SerialLink(specs[0])
        return [NodeLink(n, link, FIRST_NODE_EID + k) for k, n in enumerate(nodes)]
    raise ValueError(
        f"--serial is given {len(specs)} times for {len(nodes)} nodes: give it once "
        "(pty: one pseudo-terminal per node; a port: all nodes on it) or once per node"
    )


class SerialNodeLinks(NodeLinks):
    """The serial links of a fleet's nodes (:func:`plan_node_links`)."""

    def __init__(self, plan: list[NodeLink], *, fleet: str) -> None:
        self.by_node = {p.node: p for p in plan}
        self.fleet = fleet
        self.links = list({id(p.link): p.link for p in plan}.values())
        self._captures: list[tuple[str, SerialCapture]] = []

    @classmethod
    def plan(cls, urls: list[str], nodes: list[int], *, fleet: str, mux: bool = False) -> SerialNodeLinks:
        return cls(plan_node_links(urls, nodes, mux=mux), fleet=fleet)

    async def open(self) -> None:
        try:
            for link in self.links:
                await link.open()
        except TransportError:
            await self.close()
            raise

    async def close(self) -> None:
        for link in self.links:
            await link.close()
        for _, cap in self._captures:
            cap.close()

    def factory(self, node: int) -> TransportFactory:
        return self.by_node[node].factory(self.fleet)

    def host_url(self, node: int) -> str:
        link = self.by_node[node].link
        spec = link.spec
        options = "&".join(
            o
            for o in (
                f"baud={spec.baud}" if spec.paced else "",
                f"mtu={spec.mtu}" if spec.mtu != mctp.BASELINE_MTU else "",
            )
            if o
        )
        return f"serial://{link.path or spec.url}" + (f"?{options}" if options else "")

    def describe(self) -> list[str]:
        out = []
        for p in self.by_node.values():
            link = p.link
            rate = f"{link.spec.baud} baud" if link.spec.paced else "unpaced"
            out.append(
                f"serial: node {p.node} at {link.path or link.spec.url} (EID {p.eid}, {rate}, MTU {link.spec.mtu})"
            )
        mtus = sorted({p.link.spec.mtu for p in self.by_node.values() if p.link.spec.mtu > mctp.BASELINE_MTU})
        if mtus:
            out.append(
                f"serial: warning: MTU {', '.join(map(str, mtus))} is above DSP0236's baseline of "
                f"{mctp.BASELINE_MTU}: a standard MCTP peer drops larger packets unless it is set to the same unit"
            )
        return out

    def summary(self) -> list[str]:
        out = [f"serial: {link.path or link.spec.url}: {link.summary()}" for link in self.links]
        out += [f"serial: captured {cap.records} frames to {path}" for path, cap in self._captures]
        return out

    def capture(self, path: str) -> list[str]:
        """Capture every link (call after :meth:`open`): to ``path`` when there is one link, else
        to ``<stem>-<first node>.pcap`` per link. The files written, for the user to be told."""
        base = Path(path)
        firsts = {id(link): min(n for n, p in self.by_node.items() if p.link is link) for link in self.links}
        paths = []
        for link in self.links:
            target = base if len(self.links) == 1 else base.with_name(f"{base.stem}-{firsts[id(link)]}{base.suffix}")
            cap = SerialCapture(target)
            link.capture(cap)
            self._captures.append((str(target), cap))
            paths.append(str(target))
        return paths
