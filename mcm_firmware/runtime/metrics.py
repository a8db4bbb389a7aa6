"""Prometheus metrics of a running fleet (``mcm-emu run --metrics-port P``).

Names follow dcgm-exporter's (``DCGM_FI_DEV_GPU_TEMP`` ...) with the ``MCM_FI_`` prefix, so a
dashboard or alert written for dcgm-exporter reads an emulated fleet with one substitution; every
series carries ``fleet``, ``node`` and ``profile`` labels. The figures are the firmware's own
readings (sensor values, not the plant's truth), read from the shards' arrays when Prometheus
scrapes, so nothing is spent between scrapes.

Cardinality: ``module`` detail (the default) exports :data:`MODULE_METRICS` per node, 31 series a
node (10 of them the row remapper's counts, flags and bank histogram, and the last XID; 4 the energy
and violation counters; 2 the lifetime ECC counts, 3 the PCIe link's errors, 1 the power limit's
source): 310,000 series at 10,000 nodes; ``die`` detail adds :data:`DIE_METRICS` per die (4 more a die, 160,000
more for 10,000 four-die modules); the run's self-measurement (``mcm_run_*``) is a few dozen
series whatever the size. docs/performance.md has the cost of a scrape.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..protocol import SnapshotFlags
from ..transport.link_faults import LINK_FAULT_KINDS
from .fleet import Fleet
from .meter import DECIMATED, DROPPED, DUE, SENT
from .shard import Shard

LABELS = ("fleet", "node", "profile")

MODULE_METRICS: tuple[tuple[str, str, str], ...] = (  # name, help, type (all gauges: they reset with the node)
    ("MCM_FI_DEV_GPU_TEMP", "Hottest die temperature as the firmware reads it (C).", "gauge"),
    ("MCM_FI_DEV_MEMORY_TEMP", "Hottest HBM stack temperature as the firmware reads it (C).", "gauge"),
    ("MCM_FI_DEV_POWER_USAGE", "Module power (W).", "gauge"),
    ("MCM_FI_DEV_POWER_MGMT_LIMIT", "Power limit in force (W).", "gauge"),
    (
        "MCM_FI_DEV_POWER_LIMIT_SOURCE",
        "Who set the limit in force, the lowest set: 0 board default, 1 in-band, 2 out-of-band.",
        "gauge",
    ),
    ("MCM_FI_DEV_SM_CLOCK", "Mean die clock (MHz).", "gauge"),
    ("MCM_FI_DEV_CLOCK_THROTTLE_REASONS", "Clock-event reasons of any die (NVML bitmask).", "gauge"),
    ("MCM_FI_DEV_COOLANT_INLET_TEMP", "Coolant inlet temperature (C).", "gauge"),
    ("MCM_FI_DEV_COOLANT_FLOW", "Coolant flow through the module (L/min).", "gauge"),
    ("MCM_FI_DEV_ECC_SBE_VOL_TOTAL", "Corrected HBM errors since boot or clear.", "gauge"),
    ("MCM_FI_DEV_ECC_DBE_VOL_TOTAL", "Uncorrected HBM errors since boot or clear.", "gauge"),
    ("MCM_FI_DEV_LINK_UP", "1 when the node's link is up (its BIRTH published).", "gauge"),
    # the row remapper as NVML reports it (nvmlDeviceGetRemappedRows, nvmlDeviceGetRowRemapperHistogram)
    (
        "MCM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "Rows remapped for correctable HBM errors, pending ones included.",
        "gauge",
    ),
    (
        "MCM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "Rows remapped for uncorrectable HBM errors, pending ones included.",
        "gauge",
    ),
    ("MCM_FI_DEV_ROW_REMAP_PENDING", "1 when row remaps wait for a reset.", "gauge"),
    ("MCM_FI_DEV_ROW_REMAP_FAILURE", "1 once a row remap has failed (RMA criterion).", "gauge"),
    ("MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_MAX", "Banks with all their spare rows available.", "gauge"),
    ("MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_HIGH", "Banks with one spare row used.", "gauge"),
    (
        "MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_PARTIAL",
        "Banks with more than one spare row used, two or more left.",
        "gauge",
    ),
    ("MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_LOW", "Banks with one spare row available.", "gauge"),
    ("MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_NONE", "Banks with no spare row available.", "gauge"),
    ("MCM_FI_DEV_XID_ERRORS", "Value of the last XID logged since boot (0: none).", "gauge"),
    ("MCM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Energy drawn since the controller booted (mJ).", "gauge"),
    ("MCM_FI_DEV_POWER_VIOLATION", "Time the power cap held the clocks, since boot (us).", "gauge"),
    (
        "MCM_FI_DEV_THERMAL_VIOLATION",
        "Time a thermal slowdown (die or memory) held the clocks, since boot (us).",
        "gauge",
    ),
    ("MCM_FI_DEV_HW_SLOWDOWN_VIOLATION", "Time a hardware slowdown held the clocks, since boot (us).", "gauge"),
    ("MCM_FI_DEV_ECC_SBE_AGG_TOTAL", "Corrected HBM errors over the module's life.", "gauge"),
    ("MCM_FI_DEV_ECC_DBE_AGG_TOTAL", "Uncorrected HBM errors over the module's life.", "gauge"),
    ("MCM_FI_DEV_PCIE_REPLAY_COUNTER", "PCIe replays since boot.", "gauge"),
    ("MCM_FI_DEV_PCIE_AER_CORRECTABLE", "PCIe AER correctable errors since boot.", "gauge"),
    ("MCM_FI_DEV_PCIE_AER_UNCORRECTABLE", "PCIe AER uncorrectable (non-fatal) errors since boot.", "gauge"),
)
DIE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("MCM_FI_DEV_DIE_TEMP", "Die temperature as the firmware reads it (C).", "gauge"),
    ("MCM_FI_DEV_DIE_POWER_USAGE", "Die power (W).", "gauge"),
    ("MCM_FI_DEV_DIE_SM_CLOCK", "Die clock (MHz).", "gauge"),
    ("MCM_FI_DEV_DIE_CLOCK_THROTTLE_REASONS", "Die clock-event reasons (NVML bitmask).", "gauge"),
)


def _nanmax(values: np.ndarray) -> np.ndarray:
    out = np.full(values.shape[0], np.nan)
    ok = np.isfinite(values).any(axis=1)
    out[ok] = np.nanmax(values[ok], axis=1)
    return out


def module_values(shard: Shard) -> dict[str, np.ndarray]:
    """Every :data:`MODULE_METRICS` value of every row of ``shard``."""
    st, pl = shard.dvfs, shard.plant
    hbm = shard.s_hbm.value if shard.s_hbm.value.shape[1] else np.full((shard.n, 1), np.nan)
    return {
        "MCM_FI_DEV_GPU_TEMP": _nanmax(shard.s_die.value),
        "MCM_FI_DEV_MEMORY_TEMP": _nanmax(hbm),
        "MCM_FI_DEV_POWER_USAGE": pl.p_total,
        "MCM_FI_DEV_POWER_MGMT_LIMIT": st.cap_w,
        "MCM_FI_DEV_POWER_LIMIT_SOURCE": st.cap_source.astype(float),
        "MCM_FI_DEV_SM_CLOCK": st.mhz.mean(axis=1),
        "MCM_FI_DEV_CLOCK_THROTTLE_REASONS": np.bitwise_or.reduce(st.reasons, axis=1),
        "MCM_FI_DEV_COOLANT_INLET_TEMP": pl.t_inlet,
        "MCM_FI_DEV_COOLANT_FLOW": pl.flow_total,
        "MCM_FI_DEV_ECC_SBE_VOL_TOTAL": shard.ras_ce.sum(axis=1),
        "MCM_FI_DEV_ECC_DBE_VOL_TOTAL": shard.ras_ue.sum(axis=1),
        "MCM_FI_DEV_LINK_UP": shard.linked.astype(float),
        "MCM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": shard.ras_remapped[:, 0],
        "MCM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": shard.ras_remapped[:, 1],
        "MCM_FI_DEV_ROW_REMAP_PENDING": ((shard.ras_flags & SnapshotFlags.REMAP_PENDING) != 0).astype(float),
        "MCM_FI_DEV_ROW_REMAP_FAILURE": ((shard.ras_flags & SnapshotFlags.REMAP_FAILED) != 0).astype(float),
        "MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_MAX": shard.ras_histogram[:, 0],
        "MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_HIGH": shard.ras_histogram[:, 1],
        "MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_PARTIAL": shard.ras_histogram[:, 2],
        "MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_LOW": shard.ras_histogram[:, 3],
        "MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_NONE": shard.ras_histogram[:, 4],
        "MCM_FI_DEV_XID_ERRORS": shard.ras_last_xid,
        "MCM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": np.round(shard.energy_j * 1e3),
        "MCM_FI_DEV_POWER_VIOLATION": np.round(shard.violation_s[:, 0] * 1e6),
        "MCM_FI_DEV_THERMAL_VIOLATION": np.round((shard.violation_s[:, 1] + shard.violation_s[:, 2]) * 1e6),
        "MCM_FI_DEV_HW_SLOWDOWN_VIOLATION": np.round(shard.violation_s[:, 3] * 1e6),
        "MCM_FI_DEV_ECC_SBE_AGG_TOTAL": shard.ras_aggregate[:, 0],
        "MCM_FI_DEV_ECC_DBE_AGG_TOTAL": shard.ras_aggregate[:, 1],
        "MCM_FI_DEV_PCIE_REPLAY_COUNTER": shard.pcie.counts[:, 0],
        "MCM_FI_DEV_PCIE_AER_CORRECTABLE": shard.pcie.counts[:, 1],
        "MCM_FI_DEV_PCIE_AER_UNCORRECTABLE": shard.pcie.counts[:, 2],
    }


class FleetCollector(Collector):
    """A Prometheus collector over a :class:`~.fleet.Fleet` (register it with a registry)."""

    def __init__(self, fleet: Fleet, *, detail: str = "module") -> None:
        if detail not in ("module", "die"):
            raise ValueError(f"metrics detail {detail!r} is not module or die")
        self.fleet = fleet
        self.detail = detail
        self._labels: dict[str, list[list[str]]] = {}  # per shard: the label values of its rows

    def _rows(self, name: str, shard: Shard) -> list[list[str]]:
        labels = self._labels.get(name)
        if labels is None:
            nodes = self.fleet.members(name)
            labels = self._labels[name] = [[self.fleet.name, str(n.node_id), shard.profile.name] for n in nodes]
        return labels

    def collect(self) -> Iterator[Metric]:
        yield from self._modules()
        if self.detail == "die":
            yield from self._dies()
        yield from RunCollector(self.fleet).collect()

    def _modules(self) -> Iterator[Metric]:
        families = {name: GaugeMetricFamily(name, doc, labels=LABELS) for name, doc, _ in MODULE_METRICS}
        for sname, shard in self.fleet.shards.items():
            labels = self._rows(sname, shard)
            for name, values in module_values(shard).items():
                family = families[name]
                for row, value in enumerate(values.tolist()):
                    family.add_metric(labels[row], value)
        yield from families.values()

    def _dies(self) -> Iterator[Metric]:
        families = {name: GaugeMetricFamily(name, doc, labels=(*LABELS, "die")) for name, doc, _ in DIE_METRICS}
        for sname, shard in self.fleet.shards.items():
            labels = self._rows(sname, shard)
            for name, values in _die_arrays(shard).items():
                family = families[name]
                for die in range(values.shape[1]):
                    for row, value in enumerate(values[:, die].tolist()):
                        family.add_metric([*labels[row], str(die)], value)
        yield from families.values()


class RunCollector(Collector):
    """The run's own measurement (``mcm_run_*``): a few dozen series whatever the fleet's size."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        m = self.fleet.meter
        fleet = [self.fleet.name]
        tlm = CounterMetricFamily(
            "mcm_run_telemetry_frames", "Telemetry frames due and what became of them.", labels=("fleet", "outcome")
        )
        totals = m.tlm_totals()
        for outcome, idx in (("due", DUE), ("sent", SENT), ("dropped", DROPPED), ("decimated", DECIMATED)):
            tlm.add_metric([*fleet, outcome], float(totals[idx]))
        yield tlm
        ticks = CounterMetricFamily("mcm_run_ticks", "Control ticks run.", labels=("fleet",))
        ticks.add_metric(fleet, m.totals.ticks)
        yield ticks
        late = CounterMetricFamily(
            "mcm_run_periods_late", "Tick periods integrated late (real time fell behind).", labels=("fleet",)
        )
        late.add_metric(fleet, m.totals.periods_merged)
        yield late
        gc_time = CounterMetricFamily(
            "mcm_run_gc_seconds", "Time the garbage collector held the loop.", labels=("fleet",)
        )
        gc_time.add_metric(fleet, m.totals.gc_s)
        yield gc_time
        for metric, samples, doc in (
            (
                "mcm_run_tick_late_seconds",
                [s.recent(1200) for s in m.tick_late.values()],
                "Lateness of the recent control ticks (quantiles over the newest 1,200 of each shard).",
            ),
            ("mcm_run_loop_lag_seconds", [m.loop_lag.recent(600)], "Event-loop lag, recently (quantiles)."),
        ):
            values = np.concatenate(samples) if samples else np.zeros(0)
            family = GaugeMetricFamily(metric, doc, labels=("fleet", "quantile"))
            for q in (0.5, 0.99, 1.0):
                family.add_metric([*fleet, str(q)], float(np.quantile(values, q)) if len(values) else 0.0)
            yield family
        drops = CounterMetricFamily(
            "mcm_run_frames_refused",
            "Frames the nodes refused or dropped, by kind (since each node's boot): commands over the "
            "node's rate, frames rejected (undecodable, or refused by frame authentication, also counted "
            "as auth), responses and events lost to a full outbox.",
            labels=("fleet", "kind"),
        )
        sums = dict.fromkeys(("commands_refused", "rejected", "auth", "responses_dropped", "events_dropped"), 0)
        for node in self.fleet.nodes.values():
            c = node.counters
            sums["commands_refused"] += c.cmd_refused
            sums["rejected"] += c.rx_rejected
            sums["auth"] += c.auth_refused
            sums["responses_dropped"] += c.rsp_dropped
            sums["events_dropped"] += c.evt_dropped
        for kind, value in sums.items():
            drops.add_metric([*fleet, kind], float(value))
        yield drops
        faults = CounterMetricFamily(
            "mcm_run_link_fault_frames",
            "Frames the emulated link faults (link-drop, link-corrupt, ...) dropped, corrupted, duplicated "
            "or delayed, by direction (out: sent by the nodes, in: received) and kind (since each node's "
            "boot; a cleared fault's counts stay).",
            labels=("fleet", "direction", "kind"),
        )
        link = {(way, kind): 0 for way in ("out", "in") for kind in LINK_FAULT_KINDS if kind != "seen"}
        for node in self.fleet.nodes.values():
            for way, counts in node.link_counts.items():
                for kind, value in counts.items():
                    if kind != "seen":
                        link[way, kind] += value
        for (way, kind), value in link.items():
            faults.add_metric([*fleet, way, kind], float(value))
        yield faults
        up = GaugeMetricFamily(
            "mcm_run_nodes", "Nodes of this run, and how many have their link up.", labels=("fleet", "state")
        )
        up.add_metric([*fleet, "configured"], len(self.fleet.nodes))
        up.add_metric([*fleet, "link_up"], float(sum(int(s.linked.sum()) for s in self.fleet.shards.values())))
        yield up


# --- the fast path: the same text, rendered from the arrays ------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Renderer:
    """The text :func:`prometheus_client.generate_latest` makes of a :class:`FleetCollector`,
    byte for byte (``tests/runtime/test_metrics.py`` compares them), without a Python object per
    sample: each row's label set is written once, and a scrape joins them with the formatted values.
    At 10,000 nodes the library's own path holds the interpreter for most of a second a scrape."""

    def __init__(self, collector: FleetCollector) -> None:
        self.collector = collector
        self._prefix: dict[tuple[str, str], list[str]] = {}  # (family, shard) -> "NAME{labels} "
        self._run_registry = CollectorRegistry(auto_describe=False)
        self._run_registry.register(RunCollector(collector.fleet))

    def _prefixes(self, family: str, shard: str, labels: list[list[str]], die: int | None = None) -> list[str]:
        """``NAME{labels} `` of every row, labels in name order as the library writes them."""
        key = (f"{family}/{die}", shard)
        out = self._prefix.get(key)
        if out is None:
            first = f'die="{die}",' if die is not None else ""  # "die" sorts before fleet, node, profile
            out = self._prefix[key] = [
                family + "{" + first + ",".join(f'{k}="{_escape(v)}"' for k, v in zip(LABELS, row, strict=True)) + "} "
                for row in labels
            ]
        return out

    def modules(self) -> str:
        c = self.collector
        values = {name: module_values(shard) for name, shard in c.fleet.shards.items()}
        parts = []
        for name, doc, kind in MODULE_METRICS:
            parts.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            for sname, shard in c.fleet.shards.items():
                prefixes = self._prefixes(name, sname, c._rows(sname, shard))
                parts.append("".join(map(str.__add__, prefixes, map(_line_value, values[sname][name].tolist()))))
        return "".join(parts)

    def dies(self) -> str:
        c = self.collector
        parts = []
        for name, doc, kind in DIE_METRICS:
            parts.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            for sname, shard in c.fleet.shards.items():
                rows = c._rows(sname, shard)
                values = _die_arrays(shard)[name]
                for die in range(values.shape[1]):
                    prefixes = self._prefixes(name, sname, rows, die)
                    parts.append("".join(map(str.__add__, prefixes, map(_line_value, values[:, die].tolist()))))
        return "".join(parts)

    def render(self) -> bytes:
        """The whole exposition (what Prometheus scrapes)."""
        text = self.modules() + (self.dies() if self.collector.detail == "die" else "")
        return text.encode() + generate_latest(self._run_registry)

    async def render_async(self) -> bytes:
        """:meth:`render` a family and shard at a time, letting the event loop run between them,
        so that a scrape of a large fleet never holds the control ticks for long."""
        c = self.collector
        parts: list[str] = []
        families: list[tuple[str, str, str, bool]] = [(n, d, k, False) for n, d, k in MODULE_METRICS]
        if c.detail == "die":
            families += [(n, d, k, True) for n, d, k in DIE_METRICS]
        values: dict[str, dict[str, np.ndarray]] = {}
        for name, doc, kind, per_die in families:
            parts.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            for sname, shard in c.fleet.shards.items():
                rows = c._rows(sname, shard)
                if per_die:
                    arr = _die_arrays(shard)[name]
                    for die in range(arr.shape[1]):
                        prefixes = self._prefixes(name, sname, rows, die)
                        parts.append("".join(map(str.__add__, prefixes, map(_line_value, arr[:, die].tolist()))))
                else:
                    if sname not in values:
                        values[sname] = module_values(shard)
                    prefixes = self._prefixes(name, sname, rows)
                    parts.append("".join(map(str.__add__, prefixes, map(_line_value, values[sname][name].tolist()))))
                await asyncio.sleep(0)
        return "".join(parts).encode() + generate_latest(self._run_registry)


def _die_arrays(shard: Shard) -> dict[str, np.ndarray]:
    st = shard.dvfs
    return {
        "MCM_FI_DEV_DIE_TEMP": shard.s_die.value,
        "MCM_FI_DEV_DIE_POWER_USAGE": shard.plant.p_die,
        "MCM_FI_DEV_DIE_SM_CLOCK": st.mhz,
        "MCM_FI_DEV_DIE_CLOCK_THROTTLE_REASONS": st.reasons,
    }


def _line_value(value: float) -> str:
    return floatToGoString(value) + "\n"


class LoopCollector(Collector):
    """What only the fleet's event loop can say, collected on it: its asyncio tasks
    (``mcm_run_tasks``: two a node and a few of the run's; a count that only grows is a leak)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mcm_run_tasks",
            "Asyncio tasks of the run's event loop (two a node and a few of the run's).",
            labels=("fleet",),
        )
        family.add_metric([self.fleet.name], float(len(asyncio.all_tasks())))
        yield family


class MetricsServer:
    """``/metrics`` over HTTP, from a thread of its own; each scrape is rendered on the fleet's
    event loop (between two of its tasks, never beside them), then written from the thread, with
    :class:`LoopCollector`'s figures after the renderer's."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self, renderer: Renderer, loop: asyncio.AbstractEventLoop, *, address: str, port: int) -> None:
        self.renderer = renderer
        self.loop = loop
        self.scrapes = 0
        self._loop_registry = CollectorRegistry(auto_describe=False)
        self._loop_registry.register(LoopCollector(renderer.collector.fleet))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/", "/metrics"):
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    body = asyncio.run_coroutine_threadsafe(server._render(), server.loop).result(30)
                except Exception as e:  # noqa: BLE001 - the loop stopped, or the render failed: say so
                    self.send_error(503, f"metrics unavailable: {type(e).__name__}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", MetricsServer.CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a scrape every few seconds is not news

        self._http = ThreadingHTTPServer((address, port), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, name="metrics-http", daemon=True)

    async def _render(self) -> bytes:
        self.scrapes += 1
        body = await self.renderer.render_async()
        return body + generate_latest(self._loop_registry)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)
