"""The MQTT topic scheme: ``mcm/v1/<fleet>/<node_id>/<channel>``.

Transport-neutral (no MQTT library here): recordings, traces and views name frames by topic
without importing a client.
"""

from __future__ import annotations

from .base import Address, Channel, Subscription

PREFIX = "mcm/v1"


def topic(addr: Address) -> str:
    return f"{PREFIX}/{addr.fleet}/{addr.node}/{addr.channel.value}"


def topic_filter(sub: Subscription) -> str:
    node = "+" if sub.node is None else str(sub.node)
    channel = "+" if sub.channel is None else sub.channel.value
    return f"{PREFIX}/{sub.fleet}/{node}/{channel}"


def parse_topic(text: str) -> Address | None:
    """The address of a topic, or None for a topic outside the contract."""
    parts = text.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != PREFIX:
        return None
    _, _, fleet, node, channel = parts
    if not node.isdigit():
        return None
    try:
        return Address(fleet, int(node), Channel(channel))
    except ValueError:
        return None
