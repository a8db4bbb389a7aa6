"""A Wireshark dissector (Lua) generated from the wire declarations. No I/O: text out.

``mcm-emu wireshark`` writes the text of :func:`dissector` to a file. The plugin dissects:

* protocol frames (:mod:`.frames`) as protocol ``mcm``: the header, every body, the arguments and
  answers of every operation (:mod:`.ops`), enumerations named from :mod:`.vocabulary`, the CRC-32
  checked (expert info ``mcm.bad_crc``), anything that does not fit the layout marked malformed
  (``mcm.malformed``), bytes after the end of a body as ``mcm.trailing``;
* MQTT payloads on ``mcm/v1/...`` topics, through the heuristic table ``mqtt.topic`` of
  Wireshark's MQTT dissector (no preference to set);
* a serial line (:mod:`.mctp`): DSP0253 frames (``mcm_serial``, FCS checked, escapes undone) on
  the link type ``USER0`` (pcap link type 147), the MCTP packets in them (``mcm_mctp``, DSP0236
  transport header, messages reassembled from their packets per source, tag owner and tag), and
  the vendor-defined messages of this project (``mcm_vdm``, IANA enterprise number checked), whose
  frames go to ``mcm``.

Every field of every declaration becomes a filterable field ``mcm.<body>.<path>``, for example
``mcm.telemetry.snapshot.dies.temp_c`` or ``mcm.response.data.status.snapshot.power_w``; counts
of prefixed lists are ``<path>.count``. A declaration the generator cannot lay out raises
``TypeError`` when the plugin is generated, not in Wireshark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

import construct as c

from . import fields as f
from . import mctp
from .frames import AUTH_TRAILER_SIZE, BODIES, MAGIC, VERSION, AuthTrailer, Header
from .layout import _unwrap
from .ops import ARG_LAYOUTS, RESULT_LAYOUTS, Op
from .vocabulary import (
    Capability,
    ClockReason,
    CoolingMode,
    DeathReason,
    EccMode,
    EventCode,
    FaultKind,
    FrameFlags,
    LinkCondition,
    MsgType,
    NodeState,
    PumpFlags,
    RasFlags,
    RecoveryAction,
    Severity,
    SnapshotFlags,
    Status,
    ValveFlags,
)

USER_DLT = 147
"""pcap link type of serial captures (``LINKTYPE_USER0``): one DSP0253 frame, flags included, per record."""

ENUMS: dict[str, type[IntEnum] | type[IntFlag]] = {
    "header.type": MsgType,
    "header.flags": FrameFlags,
    "birth.capabilities": Capability,
    "death.reason": DeathReason,
    "snapshot.state": NodeState,
    "snapshot.mode": CoolingMode,
    "snapshot.flags": SnapshotFlags,
    "snapshot.recovery_action": RecoveryAction,
    "dies.reasons": ClockReason,
    "pumps.flags": PumpFlags,
    "valves.flags": ValveFlags,
    "command.op": Op,
    "response.op": Op,
    "response.status": Status,
    "link.condition": LinkCondition,
    "event.severity": Severity,
    "event.code": EventCode,
    "inject.kind": FaultKind,
    "clear_fault.kind": FaultKind,
    "faults.kind": FaultKind,
    "ras.ecc": EccMode,
    "ras.flags": RasFlags,
    "ras.recovery_action": RecoveryAction,
}
"""Which enumeration names the numbers of a field, by the last two parts of its path."""

HEX_FIELDS = frozenset({"auth.sender"})
"""Numbers shown in hex: identifiers rather than quantities."""

_NUMBERS = {
    "<B": ("uint8", 1, "u"),
    "<H": ("uint16", 2, "u"),
    "<I": ("uint32", 4, "u"),
    "<L": ("uint32", 4, "u"),
    "<Q": ("uint64", 8, "u64"),
    "<f": ("float", 4, "f"),
    "<d": ("double", 8, "f"),
}


def _enum_of(path: str) -> type[IntEnum] | type[IntFlag] | None:
    return ENUMS.get(".".join(path.split(".")[-2:]))


def _lua_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ident(path: str) -> str:
    return "d_" + path.replace(".", "_")


@dataclass
class _Generator:
    fields: dict[str, str] = field(default_factory=dict)  # abbrev -> ProtoField constructor
    functions: list[str] = field(default_factory=list)
    value_strings: dict[str, str] = field(default_factory=dict)  # enum name -> lua table
    flag_tables: dict[str, str] = field(default_factory=dict)

    def _field(self, path: str, ctor: str) -> str:
        if path in self.fields and self.fields[path] != ctor:
            raise TypeError(f"field {path!r} declared twice with different types")
        self.fields[path] = ctor
        return f"F[{_lua_str(path)}]"

    def _enum_args(self, path: str) -> tuple[str, str | None]:
        e = _enum_of(path)
        if e is None:
            return ("base.HEX" if path in HEX_FIELDS else "base.DEC"), None
        if issubclass(e, IntFlag):
            self.flag_tables[e.__name__] = "{" + ", ".join(f"{{{int(m)}, {_lua_str(str(m.name))}}}" for m in e) + "}"
            return "base.HEX", f"FLAGS_{e.__name__}"
        self.value_strings[e.__name__] = "{" + ", ".join(f"[{int(m)}] = {_lua_str(str(m.name))}" for m in e) + "}"
        return f"base.DEC, VS_{e.__name__}", None

    def number(self, path: str, con: c.FormatField) -> tuple[str, str]:
        try:
            kind, size, reader = _NUMBERS[con.fmtstr]
        except KeyError:
            raise TypeError(f"field {path!r}: format {con.fmtstr!r} has no Wireshark field") from None
        label = path.rsplit(".", 1)[-1]
        if reader == "f":
            ref = self._field(path, f"ProtoField.{kind}({_lua_str('mcm.' + path)}, {_lua_str(label)})")
            return f"num(ctx, off, tree, {ref}, {size}, nil, {_lua_str(path)})", reader
        base, flags = self._enum_args(path)
        ref = self._field(path, f"ProtoField.{kind}({_lua_str('mcm.' + path)}, {_lua_str(label)}, {base})")
        return f"num(ctx, off, tree, {ref}, {size}, {flags or 'nil'}, {_lua_str(path)})", reader

    def text(self, path: str) -> str:
        label = path.rsplit(".", 1)[-1]
        ref = self._field(path, f"ProtoField.string({_lua_str('mcm.' + path)}, {_lua_str(label)})")
        return f"text(ctx, off, tree, {ref}, {_lua_str(path)})"

    def node(self, path: str) -> str:
        label = path.rsplit(".", 1)[-1]
        return self._field(path, f"ProtoField.none({_lua_str('mcm.' + path)}, {_lua_str(label)})")

    def item(self, path: str, con: c.Construct) -> list[str]:
        """Lua lines that dissect one value of ``con`` at ``off`` into ``tree``, leaving its value
        (numbers only) in ``val`` and advancing ``off``."""
        con = _unwrap(con)
        if con is _unwrap(f.Text8) or (isinstance(con, c.StringEncoded) and con.encoding == "utf8"):
            return [f"off, val = {self.text(path)}"]
        if isinstance(con, c.FormatField):
            call, _ = self.number(path, con)
            return [f"off, val = {call}"]
        if isinstance(con, c.Bytes) and isinstance(con.length, int):
            label = path.rsplit(".", 1)[-1]
            ref = self._field(path, f"ProtoField.bytes({_lua_str('mcm.' + path)}, {_lua_str(label)})")
            return [f"off, val = raw(ctx, off, tree, {ref}, {con.length}, {_lua_str(path)})"]
        if isinstance(con, c.Struct):
            fn = self.struct(path, con)
            ref = self.node(path)
            return [f"off, val = sub(ctx, off, tree, {ref}, {fn}, {_lua_str(path)})"]
        raise TypeError(f"field {path!r}: {type(con).__name__} has no Wireshark layout")

    def struct(self, path: str, struct: c.Struct) -> str:
        """A Lua function dissecting ``struct``; its name."""
        name = _ident(path)
        if any(fn.startswith(f"function {name}(") for fn in self.functions):
            return name
        lines = [f"function {name}(ctx, off, tree)", "  local v = {}", "  local val"]
        for sub in struct.subcons:
            if sub is c.Terminated:
                continue
            if not sub.name:
                raise TypeError(f"{path}: unnamed member {sub!r}")
            p = f"{path}.{sub.name}"
            con = _unwrap(sub)
            if isinstance(con, c.Const) and isinstance(con.value, bytes):
                ref = self._field(p, f"ProtoField.bytes({_lua_str('mcm.' + p)}, {_lua_str(sub.name)})")
                lines.append(f"  off = const_bytes(ctx, off, tree, {ref}, {_lua_str(con.value.hex())}, {_lua_str(p)})")
                continue
            if isinstance(con, c.Const):
                inner = _unwrap(con.subcon)
                if not isinstance(inner, c.FormatField):
                    raise TypeError(f"field {p!r}: constant of {type(inner).__name__}")
                call, _ = self.number(p, inner)
                lines.append(f"  off, val = {call}")
                lines.append(f"  expect(ctx, tree, val == {int(con.value)}, {_lua_str(f'{p} must be {con.value}')})")
                lines.append(f"  v[{_lua_str(sub.name)}] = val")
                continue
            if isinstance(con, c.Array):
                count = f"n_{sub.name}"
                if str(con.count) not in (f"this.{count}", f"this[{count!r}]"):
                    raise TypeError(f"array {p!r} must be counted by a field {count!r} (got {con.count})")
                lines.append(f"  for i = 1, v[{_lua_str(count)}] do")
                lines += ["    " + x for x in self.item(p, con.subcon)]
                lines.append("  end")
                continue
            if isinstance(con, c.FocusedSeq) and [x.name for x in con.subcons] == ["count", "items"]:
                # PrefixedArray(count, item): FocusedSeq("items", "count"/Rebuild(...), "items"/Array)
                counter = _unwrap(con.subcons[0])
                if isinstance(counter, c.Rebuild):
                    counter = _unwrap(counter.subcon)
                items = _unwrap(con.subcons[1])
                if not isinstance(items, c.Array):
                    raise TypeError(f"list {p!r}: items of {type(items).__name__}")
                if not isinstance(counter, c.FormatField):
                    raise TypeError(f"list {p!r}: count of {type(counter).__name__}")
                call, _ = self.number(p + ".count", counter)
                lines.append(f"  local n_{sub.name}")
                lines.append(f"  off, n_{sub.name} = {call}")
                lines.append(f"  for i = 1, n_{sub.name} do")
                lines += ["    " + x for x in self.item(p, items.subcon)]
                lines.append("  end")
                continue
            lines += ["  " + x for x in self.item(p, con)]
            lines.append(f"  v[{_lua_str(sub.name)}] = val")
        lines += ["  return off, v", "end"]
        self.functions.append("\n".join(lines))
        return name

    def dispatch(self, table: str, prefix: str, layouts: dict[Op, c.Construct]) -> list[str]:
        out = [f"local {table} = {{}}"]
        for op, con in layouts.items():
            if not isinstance(con, c.Struct):
                raise TypeError(f"{op.name}: layout is {type(con).__name__}, not a Struct")
            path = f"{prefix}.{op.name.lower()}"
            fn = self.struct(path, con)
            ref = self.node(path)
            out.append(f"{table}[{int(op)}] = {{{fn}, {ref}}}")
        return out


def _bodies(gen: _Generator) -> list[str]:
    """Lua table BODY[type] = {function, tree field}; COMMAND and RESPONSE have their own."""
    lines = ["local BODY = {}"]
    for mtype, body in BODIES.items():
        path = mtype.name.lower()
        if mtype in (MsgType.COMMAND, MsgType.RESPONSE):
            continue
        if not isinstance(body, c.Struct):
            raise TypeError(f"{mtype.name}: body is {type(body).__name__}")
        fn = gen.struct(path, body)
        lines.append(f"BODY[{int(mtype)}] = {fn}")
    # COMMAND: request_id, op, args by op.  RESPONSE: request_id, op, status, message, data by op if OK.
    cmd_id, _ = gen.number("command.request_id", c.Int32ul)
    cmd_op, _ = gen.number("command.op", c.Int16ul)
    rsp_id, _ = gen.number("response.request_id", c.Int32ul)
    rsp_op, _ = gen.number("response.op", c.Int16ul)
    rsp_st, _ = gen.number("response.status", c.Int8ul)
    rsp_msg = gen.text("response.message")
    args_none = gen.node("command.args")
    data_none = gen.node("response.data")
    lines += gen.dispatch("ARGS", "command.args", ARG_LAYOUTS)
    lines += gen.dispatch("RESULTS", "response.data", RESULT_LAYOUTS)
    lines.append(
        f"""function {_ident("command")}(ctx, off, tree)
  local v, val = {{}}
  off, v.request_id = {cmd_id}
  off, v.op = {cmd_op}
  local d = ARGS[v.op]
  if d then
    off, val = sub(ctx, off, tree, d[2], d[1], "command.args")
  elseif off < ctx.limit then
    tree:add({args_none}, ctx.tvb(off, ctx.limit - off)):set_text("args of an unknown operation: " .. (ctx.limit - off) .. " bytes")
    off = ctx.limit
  end
  return off, v
end
BODY[{int(MsgType.COMMAND)}] = {_ident("command")}
function {_ident("response")}(ctx, off, tree)
  local v, val = {{}}
  off, v.request_id = {rsp_id}
  off, v.op = {rsp_op}
  off, v.status = {rsp_st}
  off, v.message = {rsp_msg}
  local d = RESULTS[v.op]
  if v.status == {int(Status.OK)} and d then
    off, val = sub(ctx, off, tree, d[2], d[1], "response.data")
  elseif v.status == {int(Status.OK)} and off < ctx.limit then
    tree:add({data_none}, ctx.tvb(off, ctx.limit - off)):set_text("data of an unknown operation: " .. (ctx.limit - off) .. " bytes")
    off = ctx.limit
  end
  return off, v
end
BODY[{int(MsgType.RESPONSE)}] = {_ident("response")}"""
    )
    return lines


def _header(gen: _Generator) -> list[str]:
    fn = gen.struct("header", Header)
    auth = gen.struct("auth", AuthTrailer)
    gen.node("auth")
    return [f"HEADER = {fn}", f"AUTH = {auth}"]


_RUNTIME = r"""
-- Reading primitives. A value that does not fit raises {malformed = text}; the dissector
-- catches it, marks the frame malformed and keeps what was dissected before.
local function need(ctx, off, n, what)
  if off + n > ctx.limit then
    error({malformed = string.format("%s: %d bytes needed at offset %d, %d left", what, n, off, ctx.limit - off)})
  end
end

function num(ctx, off, tree, fld, size, flags, what)
  need(ctx, off, size, what)
  local r = ctx.tvb(off, size)
  local item = tree:add_le(fld, r)
  local val
  if size == 8 then val = r:le_uint64() else val = r:le_uint() end
  if flags and size <= 4 then
    local names = {}
    for _, bitname in ipairs(flags) do
      if bit32.band(val, bitname[1]) ~= 0 then names[#names + 1] = bitname[2] end
    end
    if #names > 0 then item:append_text(" (" .. table.concat(names, ", ") .. ")") end
  end
  return off + size, val
end

function text(ctx, off, tree, fld, what)
  need(ctx, off, 1, what)
  local n = ctx.tvb(off, 1):le_uint()
  need(ctx, off + 1, n, what)
  local s = ""
  if n > 0 then s = ctx.tvb(off + 1, n):string(ENC_UTF_8) end
  tree:add(fld, ctx.tvb(off, 1 + n), s)
  return off + 1 + n, s
end

function sub(ctx, off, tree, fld, fn, what)
  need(ctx, off, 1, what)
  local st = tree:add(fld, ctx.tvb(off, 1))
  local ok, new_off, v = pcall(fn, ctx, off, st)
  if not ok then
    st:set_len(ctx.limit - off)
    error(new_off, 0)
  end
  st:set_len(new_off - off)
  return new_off, v
end

function raw(ctx, off, tree, fld, n, what)
  need(ctx, off, n, what)
  tree:add(fld, ctx.tvb(off, n))
  return off + n, nil
end

function const_bytes(ctx, off, tree, fld, hex, what)
  local n = #hex / 2
  need(ctx, off, n, what)
  tree:add(fld, ctx.tvb(off, n))
  if tostring(ctx.tvb(off, n):bytes()):lower() ~= hex then
    error({malformed = what .. " must be 0x" .. hex})
  end
  return off + n
end

function expect(ctx, tree, ok, text)
  if not ok then error({malformed = text}) end
end

-- CRC-32/ISO-HDLC (zlib.crc32), table-driven
local CRC32 = {}
for i = 0, 255 do
  local cr = i
  for _ = 1, 8 do
    if bit32.band(cr, 1) ~= 0 then cr = bit32.bxor(bit32.rshift(cr, 1), 0xEDB88320) else cr = bit32.rshift(cr, 1) end
  end
  CRC32[i] = cr
end
local function crc32(tvb, off, n)
  local crc = 0xFFFFFFFF
  local bytes = tvb(off, n):bytes()
  for i = 0, n - 1 do
    crc = bit32.bxor(CRC32[bit32.band(bit32.bxor(crc, bytes:get_index(i)), 0xFF)], bit32.rshift(crc, 8))
  end
  return bit32.bxor(crc, 0xFFFFFFFF)
end

-- CRC-16/MCRF4XX (DSP0253 FCS) over a ByteArray
local function crc16_mcrf4xx(bytes)
  local crc = 0xFFFF
  for i = 0, bytes:len() - 1 do
    crc = bit32.bxor(crc, bytes:get_index(i))
    for _ = 1, 8 do
      if bit32.band(crc, 1) ~= 0 then crc = bit32.bxor(bit32.rshift(crc, 1), 0x8408) else crc = bit32.rshift(crc, 1) end
    end
  end
  return crc
end

local TYPE_NAMES = VS_MsgType

-- a tree that keeps nothing, for the dry pass over a body
local NULL_TREE = {}
local function null_self() return NULL_TREE end
for _, m in ipairs({"add", "add_le", "set_len", "set_text", "append_text", "add_proto_expert_info", "set_generated"}) do
  NULL_TREE[m] = null_self
end

-- One protocol frame in tvb (the whole of it). Returns the number of bytes it took.
local function dissect_frame(tvb, pinfo, tree, info_prefix)
  local total = tvb:len()
  local root = tree:add(mcm, tvb())
  local ctx = {tvb = tvb, limit = math.min(total, HEADER_SIZE)}
  local ok, off, h = pcall(HEADER, ctx, 0, root)
  if not ok then
    if type(off) ~= "table" then error(off, 0) end
    root:add_proto_expert_info(E.malformed, off.malformed)
    pinfo.cols.info:append((info_prefix or "") .. " [malformed MCM frame]")
    return total
  end
  local tname = TYPE_NAMES[h.type] or ("type " .. h.type)
  root:append_text(string.format(", %s, node %d, seq %d", tname, h.node_id, h.seq))
  pinfo.cols.protocol = "MCM"
  local info = string.format("%s node=%d seq=%d", tname, h.node_id, h.seq)
  local problems = {}
  if h.version ~= VERSION then problems[#problems + 1] = "version " .. h.version .. " is not " .. VERSION end
  local body_end = HEADER_SIZE + h.payload_len
  if body_end + CRC_SIZE > total then
    problems[#problems + 1] = string.format("payload_len %d needs %d bytes, the frame has %d", h.payload_len, body_end + CRC_SIZE, total)
  end
  local dissect_body = BODY[h.type]
  if not dissect_body then problems[#problems + 1] = "unknown message type " .. h.type end
  if #problems == 0 and h.version == VERSION then
    local body = root:add(F["body"], tvb(HEADER_SIZE, math.max(h.payload_len, 0)))
    body:set_text(tname .. " body (" .. h.payload_len .. " bytes)")
    ctx.limit = body_end
    -- a dry pass first: a body that does not fit its layout shows no fields at all (values read
    -- from the wrong offsets would be wrong values), only the reason
    local bok, boff, v = pcall(dissect_body, ctx, HEADER_SIZE, NULL_TREE)
    if bok then bok, boff, v = pcall(dissect_body, ctx, HEADER_SIZE, body) end
    if not bok then
      if type(boff) ~= "table" then error(boff, 0) end
      problems[#problems + 1] = boff.malformed
      body:append_text(": not dissected, it does not fit the " .. tname .. " layout")
    else
      if boff < body_end then
        body:add_proto_expert_info(E.trailing, string.format("%d bytes after the end of the %s body", body_end - boff, tname))
        problems[#problems + 1] = "trailing bytes"
      end
      if h.type == COMMAND or h.type == RESPONSE then
        info = info .. string.format(" req=%d %s", v.request_id, OP_NAMES[v.op] or ("op 0x" .. string.format("%04x", v.op)))
        if h.type == RESPONSE then info = info .. " " .. (VS_Status[v.status] or tostring(v.status)) end
      elseif h.type == EVENT then
        info = info .. " " .. (VS_EventCode[v.code] or tostring(v.code))
      end
    end
  end
  if body_end + CRC_SIZE <= total then
    local r = tvb(body_end, CRC_SIZE)
    local item = root:add_le(F["crc"], r)
    local want = crc32(tvb, 0, body_end)
    if r:le_uint() ~= want then
      item:add_proto_expert_info(E.bad_crc, string.format("CRC-32 is 0x%08x, the bytes give 0x%08x", r:le_uint(), want))
      problems[#problems + 1] = "bad CRC"
      info = info .. " [BAD CRC]"
    end
    local rest = total - body_end - CRC_SIZE
    if bit32.band(h.flags, FLAG_AUTH) ~= 0 and rest == AUTH_TRAILER_SIZE then
      local actx = {tvb = tvb, limit = total}
      local at = root:add(F["auth"], tvb(body_end + CRC_SIZE, rest))
      AUTH(actx, body_end + CRC_SIZE, at)
      at:append_text(" (sealed; the tag is not verified here: the dissector holds no keys)")
      info = info .. " [sealed]"
    elseif bit32.band(h.flags, FLAG_AUTH) ~= 0 then
      problems[#problems + 1] = string.format("AUTH flag set: %d trailer bytes after the CRC, %d expected", rest, AUTH_TRAILER_SIZE)
    elseif rest > 0 then
      root:add_proto_expert_info(E.trailing, string.format("%d bytes after the CRC", rest))
    end
  end
  for _, p in ipairs(problems) do
    if p ~= "bad CRC" and p ~= "trailing bytes" then
      root:add_proto_expert_info(E.malformed, p)
      info = info .. " [malformed]"
    end
  end
  pinfo.cols.info:append((info_prefix or "") .. info)
  return total
end

function mcm.dissector(tvb, pinfo, tree)
  pinfo.cols.info:clear()
  return dissect_frame(tvb, pinfo, tree, "")
end

-- MQTT payloads on mcm/v1/... topics
local mqtt_topic = Field.new("mqtt.topic")
local function heur_mqtt(tvb, pinfo, tree)
  local t = mqtt_topic()
  if not t or string.sub(tostring(t.value), 1, #TOPIC_PREFIX) ~= TOPIC_PREFIX then return false end
  pinfo.cols.info:append(" ")
  dissect_frame(tvb, pinfo, tree, "")
  return true
end
mcm:register_heuristic("mqtt.topic", heur_mqtt)

-- ---------------------------------------------------------------------------------------------
-- Serial line: DSP0253 frames, MCTP packets (DSP0236), vendor-defined messages of this project
-- ---------------------------------------------------------------------------------------------
local serial = Proto("mcm_serial", "MCTP serial framing (DSP0253)")
local mctpp = Proto("mcm_mctp", "MCTP transport (DSP0236)")
local vdm = Proto("mcm_vdm", "MCTP vendor-defined message (IANA) of mcm-emu")

local SF = {
  flag = ProtoField.uint8("mcm_serial.flag", "flag", base.HEX),
  revision = ProtoField.uint8("mcm_serial.revision", "revision", base.HEX),
  count = ProtoField.uint8("mcm_serial.count", "byte count", base.DEC),
  fcs = ProtoField.uint16("mcm_serial.fcs", "FCS", base.HEX),
  escapes = ProtoField.uint16("mcm_serial.escapes", "escaped bytes", base.DEC),
}
serial.fields = {SF.flag, SF.revision, SF.count, SF.fcs, SF.escapes}
local SE = {
  bad_fcs = ProtoExpert.new("mcm_serial.bad_fcs", "Bad FCS", expert.group.CHECKSUM, expert.severity.ERROR),
  malformed = ProtoExpert.new("mcm_serial.malformed", "Malformed DSP0253 frame", expert.group.MALFORMED, expert.severity.ERROR),
}
serial.experts = {SE.bad_fcs, SE.malformed}

local MF = {
  version = ProtoField.uint8("mcm_mctp.version", "header version", base.DEC, nil, 0x0F),
  dest = ProtoField.uint8("mcm_mctp.dest", "destination EID", base.DEC),
  src = ProtoField.uint8("mcm_mctp.src", "source EID", base.DEC),
  som = ProtoField.bool("mcm_mctp.som", "start of message", 8, nil, 0x80),
  eom = ProtoField.bool("mcm_mctp.eom", "end of message", 8, nil, 0x40),
  seq = ProtoField.uint8("mcm_mctp.seq", "packet sequence", base.DEC, nil, 0x30),
  tag_owner = ProtoField.bool("mcm_mctp.tag_owner", "tag owner", 8, nil, 0x08),
  tag = ProtoField.uint8("mcm_mctp.tag", "message tag", base.DEC, nil, 0x07),
  payload = ProtoField.bytes("mcm_mctp.payload", "packet payload"),
  reassembled_in = ProtoField.framenum("mcm_mctp.reassembled_in", "message reassembled in"),
  packets = ProtoField.uint16("mcm_mctp.packets", "packets of the message", base.DEC),
  msg_type = ProtoField.uint8("mcm_mctp.msg_type", "message type", base.HEX, {[0] = "MCTP control", [0x7E] = "vendor-defined (PCI)", [0x7F] = "vendor-defined (IANA)"}, 0x7F),
  ic = ProtoField.bool("mcm_mctp.ic", "integrity check", 8, nil, 0x80),
}
mctpp.fields = {MF.version, MF.dest, MF.src, MF.som, MF.eom, MF.seq, MF.tag_owner, MF.tag, MF.payload, MF.reassembled_in, MF.packets, MF.msg_type, MF.ic}
local ME = {
  lost = ProtoExpert.new("mcm_mctp.lost", "MCTP packet lost or out of sequence", expert.group.SEQUENCE, expert.severity.WARN),
  malformed = ProtoExpert.new("mcm_mctp.malformed", "Malformed MCTP packet", expert.group.MALFORMED, expert.severity.ERROR),
}
mctpp.experts = {ME.lost, ME.malformed}

local VF = {
  iana = ProtoField.uint32("mcm_vdm.iana", "IANA enterprise number", base.DEC),
  kind = ProtoField.uint8("mcm_vdm.kind", "kind", base.DEC, VS_Kind),
  channel = ProtoField.uint8("mcm_vdm.channel", "channel", base.DEC, VS_Channel),
  flags = ProtoField.uint8("mcm_vdm.flags", "flags", base.HEX),
  retain = ProtoField.bool("mcm_vdm.retain", "retain", 8, nil, VENDOR_RETAIN),
  node = ProtoField.uint32("mcm_vdm.node", "node id", base.DEC),
}
vdm.fields = {VF.iana, VF.kind, VF.channel, VF.flags, VF.retain, VF.node}
local VE = {
  malformed = ProtoExpert.new("mcm_vdm.malformed", "Malformed vendor-defined message", expert.group.MALFORMED, expert.severity.ERROR),
}
vdm.experts = {VE.malformed}

-- reassembly state, rebuilt on every first pass over a capture
local partial = {}   -- key (src, to, tag) -> {first = frame number, seq = n, bytes = ByteArray, packets = n}
local done = {}      -- frame number -> {bytes = ByteArray, first = frame number, packets = n}
local reassembled_in = {}  -- frame number of a packet -> frame number where its message completed
local losses = {}    -- frame number -> text
function mctpp.init()
  partial, done, reassembled_in, losses = {}, {}, {}, {}
end

local function dissect_vendor(tvb, pinfo, tree)
  local vt = tree:add(vdm, tvb())
  if tvb:len() < VENDOR_HEADER_SIZE then
    vt:add_proto_expert_info(VE.malformed, string.format("%d bytes, shorter than the %d-byte vendor header", tvb:len(), VENDOR_HEADER_SIZE))
    return
  end
  vt:add(VF.iana, tvb(1, 4))
  local pen = tvb(1, 4):uint()
  if pen ~= IANA_PEN then
    vt:add_proto_expert_info(VE.malformed, "IANA enterprise number " .. pen .. " is not " .. IANA_PEN)
    return
  end
  vt:add(VF.kind, tvb(5, 1))
  vt:add(VF.channel, tvb(6, 1))
  local fl = vt:add(VF.flags, tvb(7, 1))
  fl:add(VF.retain, tvb(7, 1))
  vt:add(VF.node, tvb(8, 4))
  local kind = tvb(5, 1):uint()
  local kname = VS_Kind[kind]
  if not kname then
    vt:add_proto_expert_info(VE.malformed, "unknown vendor message kind " .. kind)
    return
  end
  vt:append_text(string.format(", %s, node %d", kname, tvb(8, 4):uint()))
  pinfo.cols.protocol = "MCTP/mcm"
  if kind == KIND_FRAME and not VS_Channel[tvb(6, 1):uint()] then
    vt:add_proto_expert_info(VE.malformed, "unknown channel code " .. tvb(6, 1):uint())
    return
  end
  if tvb:len() > VENDOR_HEADER_SIZE then
    local prefix = kname .. " "
    if kind == KIND_FRAME then prefix = "" end
    pinfo.cols.info:append(prefix)
    dissect_frame(tvb(VENDOR_HEADER_SIZE):tvb(), pinfo, tree, "")
  else
    pinfo.cols.info:append(kname .. string.format(" node=%d", tvb(8, 4):uint()))
  end
end

local function dissect_message(tvb, pinfo, tree)
  local b0 = tvb(0, 1):uint()
  tree:add(MF.msg_type, tvb(0, 1))
  tree:add(MF.ic, tvb(0, 1))
  if bit32.band(b0, 0x7F) == 0x7F then
    dissect_vendor(tvb, pinfo, tree)
  else
    pinfo.cols.info:append(string.format("MCTP message type 0x%02x (not dissected)", bit32.band(b0, 0x7F)))
  end
end

function mctpp.dissector(tvb, pinfo, tree)
  local t = tree:add(mctpp, tvb())
  if tvb:len() < 5 then
    t:add_proto_expert_info(ME.malformed, tvb:len() .. " bytes: shorter than a header and one byte")
    return
  end
  local b3 = tvb(3, 1):uint()
  t:add(MF.version, tvb(0, 1))
  t:add(MF.dest, tvb(1, 1))
  t:add(MF.src, tvb(2, 1))
  t:add(MF.som, tvb(3, 1)); t:add(MF.eom, tvb(3, 1)); t:add(MF.seq, tvb(3, 1)); t:add(MF.tag_owner, tvb(3, 1)); t:add(MF.tag, tvb(3, 1))
  local ver = bit32.band(tvb(0, 1):uint(), 0x0F)
  local src, dest = tvb(2, 1):uint(), tvb(1, 1):uint()
  local som, eom = bit32.band(b3, 0x80) ~= 0, bit32.band(b3, 0x40) ~= 0
  local seq, to, tag = bit32.band(bit32.rshift(b3, 4), 3), bit32.band(bit32.rshift(b3, 3), 1), bit32.band(b3, 7)
  t:append_text(string.format(", %d -> %d, tag %d%s%s%s seq %d", src, dest, tag, to == 1 and " (owner)" or "", som and " SOM" or "", eom and " EOM" or "", seq))
  pinfo.cols.src = tostring(src)
  pinfo.cols.dst = tostring(dest)
  if ver ~= 1 then
    t:add_proto_expert_info(ME.malformed, "MCTP header version " .. ver .. " is not 1")
    return
  end
  local payload = tvb(4)
  t:add(MF.payload, payload)
  local n = pinfo.number
  if not pinfo.visited then
    local key = src .. "/" .. to .. "/" .. tag
    if som then
      if partial[key] then losses[n] = "a new SOM while a message with this tag was incomplete (its packets are lost)" end
      partial[key] = nil
      if eom then
        done[n] = {bytes = payload:bytes(), first = n, packets = 1}
      else
        partial[key] = {first = n, seq = seq, bytes = payload:bytes(), packets = 1, frames = {n}}
      end
    else
      local held = partial[key]
      if not held then
        losses[n] = "middle or last packet of a message whose start was not seen"
      elseif seq ~= (held.seq + 1) % 4 then
        losses[n] = "packet sequence " .. seq .. " after " .. held.seq .. ": a packet was lost, the message is dropped"
        partial[key] = nil
      else
        held.bytes:append(payload:bytes())
        held.seq = seq
        held.packets = held.packets + 1
        held.frames[#held.frames + 1] = n
        if eom then
          done[n] = {bytes = held.bytes, first = held.first, packets = held.packets}
          for _, fnum in ipairs(held.frames) do reassembled_in[fnum] = n end
          partial[key] = nil
        end
      end
    end
  end
  if losses[n] then
    t:add_proto_expert_info(ME.lost, losses[n])
  end
  local msg = done[n]
  if msg then
    local mtvb
    if msg.packets > 1 then
      mtvb = msg.bytes:tvb("Reassembled MCTP message")
      t:add(MF.packets, msg.packets):set_generated()
    else
      mtvb = payload:tvb()
    end
    dissect_message(mtvb, pinfo, tree)
  elseif reassembled_in[n] then
    t:add(MF.reassembled_in, reassembled_in[n]):set_generated()
    pinfo.cols.info:append(string.format("MCTP fragment (message in frame %d)", reassembled_in[n]))
  elseif som then
    pinfo.cols.info:append("MCTP fragment (message incomplete)")
  end
end

function serial.dissector(tvb, pinfo, tree)
  pinfo.cols.protocol = "DSP0253"
  pinfo.cols.info:clear()
  local n = tvb:len()
  local t = tree:add(serial, tvb())
  -- idle and leading flags
  local i = 0
  while i < n and tvb(i, 1):uint() == FLAG do i = i + 1 end
  if i == 0 or i >= n then
    t:add_proto_expert_info(SE.malformed, "no frame: bytes outside a flag-delimited frame")
    pinfo.cols.info:append("[bytes outside a frame]")
    return n
  end
  t:add(SF.flag, tvb(i - 1, 1))
  if i + 2 > n then
    t:add_proto_expert_info(SE.malformed, "frame cut short after the opening flag")
    pinfo.cols.info:append("[malformed DSP0253 frame]")
    return n
  end
  t:add(SF.revision, tvb(i, 1))
  t:add(SF.count, tvb(i + 1, 1))
  local rev, count = tvb(i, 1):uint(), tvb(i + 1, 1):uint()
  if rev ~= REVISION then
    t:add_proto_expert_info(SE.malformed, string.format("revision 0x%02x is not 0x%02x", rev, REVISION))
    pinfo.cols.info:append("[malformed DSP0253 frame]")
    return n
  end
  if count == 0 then
    t:add_proto_expert_info(SE.malformed, "byte count 0")
    pinfo.cols.info:append("[malformed DSP0253 frame]")
    return n
  end
  -- undo the escapes of count bytes
  local out = ByteArray.new()
  out:set_size(count)
  local j, k, escapes = i + 2, 0, 0
  while k < count and j < n do
    local b = tvb(j, 1):uint()
    if b == FLAG then break end
    if b == ESC then
      if j + 1 >= n then break end
      local nb = tvb(j + 1, 1):uint()
      if nb == 0x5E then b = 0x7E elseif nb == 0x5D then b = 0x7D else
        t:add_proto_expert_info(SE.malformed, string.format("escape 7D %02x at offset %d", nb, j))
        pinfo.cols.info:append("[malformed DSP0253 frame]")
        return n
      end
      j = j + 1
      escapes = escapes + 1
    end
    out:set_index(k, b)
    k = k + 1
    j = j + 1
  end
  if k < count then
    t:add_proto_expert_info(SE.malformed, string.format("byte count %d, the frame holds %d bytes", count, k))
    pinfo.cols.info:append("[malformed DSP0253 frame: truncated]")
    return n
  end
  t:add(SF.escapes, escapes):set_generated()
  if j + 2 > n then
    t:add_proto_expert_info(SE.malformed, "no FCS after the packet")
    pinfo.cols.info:append("[malformed DSP0253 frame]")
    return n
  end
  local fcs_item = t:add(SF.fcs, tvb(j, 2))
  local check = ByteArray.new()
  check:set_size(2)
  check:set_index(0, REVISION)
  check:set_index(1, count)
  check:append(out)
  local want = crc16_mcrf4xx(check)
  local fcs = tvb(j, 2):uint()
  if fcs ~= want then
    fcs_item:add_proto_expert_info(SE.bad_fcs, string.format("FCS is 0x%04x, the bytes give 0x%04x", fcs, want))
    pinfo.cols.info:append("[BAD FCS] ")
  end
  if j + 2 < n then
    if tvb(j + 2, 1):uint() ~= FLAG then
      t:add_proto_expert_info(SE.malformed, string.format("byte 0x%02x where the closing flag belongs", tvb(j + 2, 1):uint()))
      pinfo.cols.info:append("[malformed DSP0253 frame]")
      return n
    end
    t:add(SF.flag, tvb(j + 2, 1))
  end
  if fcs ~= want then return n end
  mctpp.dissector(out:tvb("MCTP packet"), pinfo, tree)
  return n
end

DissectorTable.get("wtap_encap"):add(wtap_encaps.USER0, serial)
"""


def dissector(version: str = "", topic_prefix: str = "mcm/v1/") -> str:
    """The text of the Lua plugin; ``topic_prefix`` starts the MQTT topics of the protocol."""
    gen = _Generator()
    gen._field("body", 'ProtoField.none("mcm.body", "body")')
    gen._field("crc", 'ProtoField.uint32("mcm.crc", "crc32", base.HEX)')
    lines_header = _header(gen)
    lines_bodies = _bodies(gen)
    functions = [fn.split("(", 1)[0].removeprefix("function ") for fn in gen.functions]
    out = [
        f"-- mcm-emu {version} Wireshark dissector, generated by `mcm-emu wireshark` from the protocol",
        "-- declarations (wire format v1). Do not edit: generate it again. Load it with",
        "--   tshark -X lua_script:mcm.lua ...   or copy it to ~/.local/lib/wireshark/plugins/",
        "-- Protocols: mcm (frames, also on MQTT mcm/v1/... topics), mcm_serial (DSP0253),",
        "-- mcm_mctp (DSP0236 packets, reassembly), mcm_vdm (vendor-defined messages, IANA PEN).",
        "",
        'local mcm = Proto("mcm", "MCM management protocol (mcm-emu)")',
        "local "
        + ", ".join(
            [
                "num",
                "text",
                "sub",
                "raw",
                "const_bytes",
                "expect",
                "HEADER",
                "AUTH",
                "d_command",
                "d_response",
                *functions,
            ]
        ),
        f"local HEADER_SIZE = {Header.sizeof()}",
        "local CRC_SIZE = 4",
        f"local VERSION = {VERSION}",
        f"local MAGIC = {_lua_str(MAGIC.decode())}",
        f"local TOPIC_PREFIX = {_lua_str(topic_prefix)}",
        f"local COMMAND, RESPONSE, EVENT = {int(MsgType.COMMAND)}, {int(MsgType.RESPONSE)}, {int(MsgType.EVENT)}",
        f"local FLAG, ESC, REVISION = {mctp.FLAG}, {mctp.ESC}, {mctp.REVISION}",
        f"local IANA_PEN, VENDOR_HEADER_SIZE, VENDOR_RETAIN = {mctp.IANA_PEN}, {mctp.VENDOR_HEADER_SIZE}, {mctp.VENDOR_RETAIN}",
        f"local KIND_FRAME = {int(mctp.Kind.FRAME)}",
        f"local FLAG_AUTH, AUTH_TRAILER_SIZE = {int(FrameFlags.AUTH)}, {AUTH_TRAILER_SIZE}",
        "local VS_Kind = {" + ", ".join(f"[{int(k)}] = {_lua_str(k.name)}" for k in mctp.Kind) + "}",
        "local VS_Channel = {" + ", ".join(f"[{int(k)}] = {_lua_str(k.name)}" for k in mctp.ChannelCode) + "}",
        "local OP_NAMES = {" + ", ".join(f"[{int(o)}] = {_lua_str(o.label)}" for o in Op) + "}",
    ]
    out += [f"local VS_{name} = {table}" for name, table in sorted(gen.value_strings.items())]
    out += [f"local FLAGS_{name} = {table}" for name, table in sorted(gen.flag_tables.items())]
    out.append("local F = {}")
    out += [f"F[{_lua_str(path)}] = {ctor}" for path, ctor in gen.fields.items()]
    out.append("do local list = {} for _, fld in pairs(F) do list[#list + 1] = fld end mcm.fields = list end")
    out.append(
        "local E = {\n"
        '  malformed = ProtoExpert.new("mcm.malformed", "Malformed MCM frame", expert.group.MALFORMED, expert.severity.ERROR),\n'
        '  bad_crc = ProtoExpert.new("mcm.bad_crc", "Bad CRC-32", expert.group.CHECKSUM, expert.severity.ERROR),\n'
        '  trailing = ProtoExpert.new("mcm.trailing", "Bytes after the end", expert.group.MALFORMED, expert.severity.WARN),\n'
        "}\n"
        "mcm.experts = {E.malformed, E.bad_crc, E.trailing}"
    )
    out += gen.functions
    out += lines_header + lines_bodies
    out.append(_RUNTIME)
    return "\n".join(out) + "\n"


def field_names() -> list[str]:
    """The filterable field names of the ``mcm`` protocol (``mcm.header.seq`` ...)."""
    gen = _Generator()
    _header(gen)
    _bodies(gen)
    return ["mcm." + p for p in gen.fields]
