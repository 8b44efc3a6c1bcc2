#!/usr/bin/env python3
"""nakcast network lab: real kernel packet loss between network-namespace hosts.

Builds one bridge namespace and N host namespaces (veth pair per host, 10.77.0.0/24 addresses
that exist only inside the namespaces, a 224.0.0.0/4 route per host), drops packets with
nftables rules on the hosts' *input* hook (`numgen random mod 100 < P drop`), runs
`nakcast pub` / `nakcast sub` in the hosts and checks the fault-injection scenarios of
issue 6. Python 3 standard library only.

Usage (as root):
    python3 tests/lab/lab.py                      # build, run every scenario
    python3 tests/lab/lab.py --only 1,4           # some scenarios
    python3 tests/lab/lab.py --update-docs        # also rewrite the table in docs/RELIABILITY.md
    python3 tests/lab/lab.py --cleanup            # only remove stale nkl* namespaces of dead runs
                                                  # (every run also does this first)

Prerequisites: Linux, root (CAP_NET_ADMIN and CAP_SYS_ADMIN for `ip netns`), iproute2,
nftables (`apt-get update && apt-get install -y nftables` on a fresh Debian/Ubuntu machine),
cargo (or --bin PATH --no-build). Without them the lab says why and exits 0, or 1 when
NAKCAST_LAB_REQUIRE=1.

Exit status: 0 all selected scenarios passed (or the lab was skipped), 1 a scenario failed
or the lab could not run although required, 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = f"nkl{os.getpid()}"
SUBNET = "10.77.0"
LOSS_DEADLINE_S = 2.0  # ReceiverConfig::default().loss_deadline
INACTIVITY_S = 5.0  # ReceiverConfig::default().inactivity_timeout

# nft payload matches on the nakcast frame, offsets in bits from the UDP header start
# (8-byte UDP header, then the 24-byte frame header: byte 4 version, 5 type, 6..8 flags LE).
NK = "meta l4proto udp @th,96,8 1"  # version 1
MATCH = {
    "udp": "meta l4proto udp",
    "data": f"{NK} @th,104,8 1",  # DATA, originals and repairs
    "orig": f"{NK} @th,104,8 1 @th,112,8 & 0x1 == 0x0",  # original DATA
    "repair": f"{NK} @th,104,8 1 @th,112,8 & 0x1 == 0x1",  # DATA with RETRANSMIT
    "nak": f"{NK} @th,104,8 3",  # NAK (arrives at the publisher's host)
    # original DATA frame whose first_seq (frame bytes 24..32) is 0: a session's first frame
    "first0": f"{NK} @th,104,8 1 @th,112,8 & 0x1 == 0x0 @th,256,64 0",
}

VERBOSE = False


def log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def vlog(msg: str) -> None:
    if VERBOSE:
        log(msg)


# --------------------------------------------------------------------------------------------
# Processes: every child is tracked, bounded in time and killed on exit.

_children: list[subprocess.Popen] = []
_children_lock = threading.Lock()


def run(args: list[str], timeout: float = 15, check: bool = True, input: str | None = None):
    vlog("$ " + " ".join(args))
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


class Proc:
    """A child in a namespace; stdout/stderr lines are kept with their arrival time."""

    def __init__(self, ns: str, args: list[str], name: str, timeout: float):
        self.name = name
        self.args = args
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self.timed_out = False
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        vlog(f"{name}: ip netns exec {ns} {' '.join(args)}")
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", ns, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        with _children_lock:
            _children.append(self.p)
        self._threads = [
            threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, sink):
        for raw in iter(stream.readline, b""):
            sink.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n")))
        stream.close()

    @property
    def pid(self) -> int:
        return self.p.pid  # `ip netns exec` execs the command: same pid

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def wait(self) -> int:
        """Wait until exit or the deadline (then SIGKILL); returns the exit status."""
        while self.p.poll() is None:
            if time.monotonic() > self.deadline:
                self.timed_out = True
                log(f"{self.name}: still running at its deadline, killed")
                _kill(self.p)
                break
            time.sleep(0.02)
        rc = self.p.wait()
        for t in self._threads:
            t.join(timeout=5)
        self.ended = time.monotonic()
        return rc

    @property
    def rc(self):
        return self.p.returncode

    def json(self) -> dict:
        for _, line in reversed(self.out):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    break
        return {}

    def tail(self, n: int = 5) -> str:
        return " | ".join(l for _, l in self.err[-n:])


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.kill(p.pid, signal.SIGCONT)  # a SIGSTOPped child must not linger
        except ProcessLookupError:
            pass


def kill_all_children() -> None:
    with _children_lock:
        for p in _children:
            _kill(p)
        for p in _children:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# --------------------------------------------------------------------------------------------
# The lab: namespaces, links, nftables.


class Lab:
    def __init__(self, hosts: int):
        self.n = hosts
        self.br = f"{PREFIX}br"
        self.hosts = [f"{PREFIX}h{i}" for i in range(hosts)]
        self.created: list[str] = []

    def ip(self, i: int) -> str:
        return f"{SUBNET}.{10 + i}"

    def add_ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.created.append(name)

    def up(self) -> None:
        self.add_ns(self.br)
        run(["ip", "-n", self.br, "link", "set", "lo", "up"])
        run(["ip", "-n", self.br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        run(["ip", "-n", self.br, "link", "set", "br0", "up"])
        for i, h in enumerate(self.hosts):
            self.add_ns(h)
            # Both ends are created inside namespaces: the root namespace is never touched.
            run(["ip", "-n", self.br, "link", "add", f"p{i}", "type", "veth",
                 "peer", "name", "eth0", "netns", h])
            run(["ip", "-n", self.br, "link", "set", f"p{i}", "master", "br0"])
            run(["ip", "-n", self.br, "link", "set", f"p{i}", "up"])
            run(["ip", "-n", h, "link", "set", "lo", "up"])
            run(["ip", "-n", h, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0"])
            # A NIC cuts a segmentation-offload (GSO) send into datagrams before the
            # wire; a veth would carry it to the other hosts whole, so their nft rules
            # would count and drop a burst of datagrams as one packet. One segment per
            # packet makes the sending host segment, as a NIC does.
            run(["ip", "-n", h, "link", "set", "eth0", "gso_max_segs", "1"])
            run(["ip", "-n", h, "link", "set", "eth0", "up"])
            run(["ip", "-n", h, "route", "add", "224.0.0.0/4", "dev", "eth0"])
            run(["ip", "netns", "exec", h, "nft", "-f", "-"], input=(
                "table inet lab {\n"
                "  chain in { type filter hook input priority 0; policy accept; }\n"
                "}\n"))
        # Wait for the links to be up (no STP, so ports forward at once).
        end = time.monotonic() + 5
        while time.monotonic() < end:
            r = run(["ip", "-n", self.hosts[-1], "-o", "link", "show", "eth0"], check=False)
            if "LOWER_UP" in r.stdout:
                break
            time.sleep(0.05)

    def down(self) -> None:
        for ns in reversed(self.created):
            r = run(["ip", "netns", "del", ns], check=False)
            if r.returncode != 0:
                log(f"could not delete namespace {ns}: {r.stderr.strip()}")
        self.created.clear()

    # nftables -----------------------------------------------------------------------------

    def clear_rules(self, i: int) -> None:
        run(["ip", "netns", "exec", self.hosts[i], "nft", "flush", "chain", "inet", "lab", "in"])

    def add_rule(self, i: int, kind: str, pct: int | None, label: str) -> None:
        """Drop `pct`% (None: only count) of the input packets matching `kind` on host i."""
        expr = MATCH[kind]
        if pct is None:
            action = "counter"
        elif pct >= 100:
            action = "counter drop"
        else:
            action = f"numgen random mod 100 < {int(pct)} counter drop"
        rule = f'add rule inet lab in {expr} {action} comment "{label}"\n'
        run(["ip", "netns", "exec", self.hosts[i], "nft", "-f", "-"], input=rule)

    def delete_rule(self, i: int, label: str) -> None:
        for r in self._rules(i):
            if r.get("comment") == label:
                run(["ip", "netns", "exec", self.hosts[i], "nft", "delete", "rule", "inet",
                     "lab", "in", "handle", str(r["handle"])])

    def _rules(self, i: int) -> list[dict]:
        r = run(["ip", "netns", "exec", self.hosts[i], "nft", "-j", "list", "chain", "inet",
                 "lab", "in"])
        return [x["rule"] for x in json.loads(r.stdout)["nftables"] if "rule" in x]

    def counters(self, i: int) -> dict[str, int]:
        out = {}
        for r in self._rules(i):
            for e in r.get("expr", []):
                if "counter" in e:
                    out[r.get("comment", str(r["handle"]))] = e["counter"]["packets"]
        return out

    def rcvbuf_errors(self, i: int) -> int:
        """UDP datagrams the host's kernel dropped because a socket buffer was full."""
        r = run(["ip", "netns", "exec", self.hosts[i], "cat", "/proc/net/snmp"], check=False)
        udp = [l.split() for l in r.stdout.splitlines() if l.startswith("Udp:")]
        if len(udp) == 2 and "RcvbufErrors" in udp[0]:
            return int(udp[1][udp[0].index("RcvbufErrors")])
        return 0

    def port_bound(self, i: int, port: int) -> bool:
        r = run(["ip", "netns", "exec", self.hosts[i], "ss", "-Hlun", f"sport = :{port}"],
                check=False)
        return r.returncode == 0 and r.stdout.strip() != ""


# --------------------------------------------------------------------------------------------
# nakcast processes and their results.

SUMMARY = re.compile(
    r"sub: delivered (\d+) in [\d.]+ s = \d+ msg/s; lost (\d+), recovered (\d+), NAKs (\d+), "
    r"sessions (\d+)(?:; verify: corrupt (\d+), duplicates (\d+), out of order (\d+))?")
LOSS = re.compile(r"sub: lost \[(\d+), (\d+)\) \((\w+)\)(?: session ([0-9a-f]{16}))?")
RESTARTED = re.compile(r"sub: publisher \S+ restarted: new session ([0-9a-f]{16})")
REPAIR = re.compile(r"; repair p50 ([\d.]+) µs, p99 ([\d.]+) µs")
PRINTED = re.compile(r"#(\d+) index (\d+) \(")


@dataclass
class SubResult:
    name: str
    loss: str
    proc: Proc
    detail: bool
    stats: dict = field(default_factory=dict)
    # detail mode only:
    indices: list[tuple[float, int, int]] = field(default_factory=list)  # (t, seq, index)
    losses: list[tuple[float, int, int, str]] = field(default_factory=list)  # (t, a, b, why)
    loss_sessions: list[str | None] = field(default_factory=list)  # the session of each loss
    new_sessions: list[str] = field(default_factory=list)  # from "restarted" lines
    unparsed: int = 0

    def parse(self) -> None:
        if not self.detail:
            self.stats = self.proc.json()
            return
        for t, line in self.proc.out:
            m = PRINTED.match(line)
            if m:
                self.indices.append((t, int(m.group(1)), int(m.group(2))))
            elif line:
                self.unparsed += 1
        for t, line in self.proc.err:
            m = LOSS.search(line)
            if m:
                self.losses.append((t, int(m.group(1)), int(m.group(2)), m.group(3)))
                self.loss_sessions.append(m.group(4))
            m = RESTARTED.search(line)
            if m:
                self.new_sessions.append(m.group(1))
            m = SUMMARY.search(line)
            if m:
                g = [int(x) if x is not None else 0 for x in m.groups()]
                self.stats = dict(delivered=g[0], lost=g[1], recovered=g[2], naks_sent=g[3],
                                  sessions=g[4], corrupt=g[5], duplicates=g[6],
                                  out_of_order=g[7])
                r = REPAIR.search(line)
                if r:
                    self.stats.update(repair_p50_us=float(r.group(1)),
                                      repair_p99_us=float(r.group(2)))


class Nakcast:
    def __init__(self, binary: str, lab: Lab):
        self.bin = binary
        self.lab = lab

    def pub(self, host: int, group: str, count: int, rate: int, size: int = 64,
            linger: float = 2, source_port: int | None = None, timeout: float = 60) -> Proc:
        args = [self.bin, "pub", "--group", group, "--interface", self.lab.ip(host),
                "--count", str(count), "--rate", str(rate), "--size", str(size),
                "--linger", str(linger), "--json"]
        if source_port:
            args += ["--source-port", str(source_port)]
        return Proc(self.lab.hosts[host], args, f"pub@h{host}", timeout)

    def sub(self, host: int, group: str, loss: str, count: int | None = None,
            detail: bool = False, from_oldest: bool = False, idle: float = 5,
            timeout: float = 60) -> SubResult:
        args = [self.bin, "sub", "--group", group, "--interface", self.lab.ip(host),
                "--verify", "--idle-timeout", str(idle)]
        if count is not None:
            args += ["--count", str(count)]
        if from_oldest:
            args += ["--from-oldest"]
        # Detail mode: every delivered index (--print) and every loss range with its reason
        # (stderr, printed only without --json); the summary line is parsed instead of JSON.
        args += ["--print"] if detail else ["--json"]
        p = Proc(self.lab.hosts[host], args, f"sub@h{host}", timeout)
        return SubResult(f"h{host}", loss, p, detail)

    def wait_bound(self, subs: list[tuple[int, SubResult]], port: int) -> None:
        end = time.monotonic() + 5
        pending = [h for h, _ in subs]
        while pending and time.monotonic() < end:
            pending = [h for h in pending if not self.lab.port_bound(h, port)]
            time.sleep(0.05)
        if pending:
            raise RuntimeError(f"subscribers on hosts {pending} did not bind port {port}")
        time.sleep(0.1)  # group joins are done right after bind


# --------------------------------------------------------------------------------------------
# Checks.


class Scenario:
    def __init__(self, num: int, title: str):
        self.num = num
        self.title = title
        self.checks: list[tuple[bool, str]] = []
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.error: str | None = None

    def check(self, ok: bool, what: str) -> bool:
        self.checks.append((bool(ok), what))
        log(f"  {'ok  ' if ok else 'FAIL'} {what}")
        return ok

    @property
    def passed(self) -> bool:
        return self.error is None and all(ok for ok, _ in self.checks)


def coverage(indices: list[int], losses: list[tuple[int, int]], lo: int, hi: int) -> str | None:
    """None when delivered indices and lost ranges partition [lo, hi) exactly, in order;
    otherwise what is wrong. Unfragmented messages: sequence number == message index."""
    prev = None
    for x in indices:
        if prev is not None and x <= prev:
            return f"index {x} delivered after {prev}"
        prev = x
    seen = set(indices)
    lost_n = 0
    for a, b in losses:
        lost_n += b - a
        both = [x for x in range(a, b) if x in seen][:1]
        if both:
            return f"lost range [{a}, {b}) overlaps delivered index {both[0]}"
    covered = set(seen)
    for a, b in losses:
        covered.update(range(max(a, lo), min(b, hi)))
    missing = [x for x in range(lo, hi) if x not in covered]
    if missing:
        return (f"{len(missing)} of [{lo}, {hi}) neither delivered nor reported lost "
                f"(first {missing[0]})")
    extra = sorted(x for x in seen if not lo <= x < hi)
    if extra:
        return f"delivered index {extra[0]} outside [{lo}, {hi})"
    return None


def reasons(s: SubResult) -> str:
    tally: dict[str, list[int]] = {}
    for _, a, b, why in s.losses:
        t = tally.setdefault(why, [0, 0])
        t[0] += 1
        t[1] += b - a
    return ", ".join(f"{w}: {n} ranges, {m} messages" for w, (n, m) in sorted(tally.items()))


def std_checks(sc: Scenario, s: SubResult, count: int | None, allow_loss: bool = False) -> None:
    st = s.stats
    sc.check(bool(st), f"{s.name}: produced a result (exit {s.proc.rc}; {s.proc.tail(2)})")
    if not st:
        return
    sc.check(not s.proc.timed_out, f"{s.name}: exited on its own (no timeout kill)")
    sc.check(st.get("corrupt", 1) == 0 and st.get("duplicates", 1) == 0
             and st.get("out_of_order", 1) == 0,
             f"{s.name}: verify clean (corrupt {st.get('corrupt')}, duplicates "
             f"{st.get('duplicates')}, out of order {st.get('out_of_order')})")
    if not allow_loss:
        sc.check(st.get("lost", 1) == 0, f"{s.name}: 0 lost (reported {st.get('lost')})")
        if count is not None:
            sc.check(st.get("delivered") == count,
                     f"{s.name}: delivered {st.get('delivered')} of {count}")


RCVBUF_BASE: dict[int, int] = {}
LAB: Lab | None = None


def row(sc: Scenario, s: SubResult, loss: str, messages: int, pub: dict, drops: int | None,
        note: str = "") -> None:
    st = s.stats
    h = int(s.name[1:])
    rcvbuf = LAB.rcvbuf_errors(h) - RCVBUF_BASE.get(h, 0) if LAB else None
    sc.rows.append(dict(
        scenario=sc.num, host=s.name, loss=loss, messages=messages,
        delivered=st.get("delivered"), recovered=st.get("recovered"), lost=st.get("lost"),
        naks_sent=st.get("naks_sent"), naks_received=pub.get("naks_received"),
        repairs=pub.get("retransmitted"), unavailable=pub.get("unavailable"),
        nft_drops=drops, rcvbuf_drops=rcvbuf, repair_p50=st.get("repair_p50_us"),
        repair_p99=st.get("repair_p99_us"), note=note))


def drops_of(lab: Lab, i: int, label_prefix: str = "drop") -> int:
    return sum(v for k, v in lab.counters(i).items() if k.startswith(label_prefix))


# --------------------------------------------------------------------------------------------
# Scenarios. Host 0 is the publisher; hosts 1..4 are subscribers. Each scenario uses its own
# group/port and resets every host's rules.

RATE = 50_000


def s1(lab: Lab, nk: Nakcast, sc: Scenario) -> None:
    count, group, port = 200_000, "239.77.0.1:41001", 41001
    losses = {1: 1, 2: 5, 3: 20}
    for h, p in losses.items():
        # Count-only rules first (they see every packet): they validate the payload matches.
        lab.add_rule(h, "orig", None, "seen-orig")
        lab.add_rule(h, "repair", None, "seen-repair")
        lab.add_rule(h, "udp", p, "drop-udp")
    # Subscribers started before the publisher use --from-oldest: with the default join
    # policy (first seen) a dropped first frame silently moves the join point (scenario 7).
    subs = {h: nk.sub(h, group, f"{p}% all UDP", count=count, idle=5, timeout=60,
                      from_oldest=True)
            for h, p in losses.items()}
    nk.wait_bound(list(subs.items()), port)
    pub = nk.pub(0, group, count, RATE, linger=3, timeout=40)
    pub.wait()
    for s in subs.values():
        s.proc.wait()
        s.parse()
    pj = pub.json()
    sc.check(pub.rc == 0 and pj.get("sent") == count,
             f"pub: sent {pj.get('sent')} of {count} (exit {pub.rc})")
    for h, s in subs.items():
        std_checks(sc, s, count)
        c = lab.counters(h)
        sc.check(c.get("seen-orig") == pj.get("data_frames"),
                 f"{s.name}: nft saw {c.get('seen-orig')} original DATA frames = publisher's "
                 f"data_frames {pj.get('data_frames')} (payload match on the flag works)")
        # A subscriber that is done leaves the group: repairs for the others after that
        # no longer reach its input hook. Each repair datagram may go out more than once
        # (`repair_copies`, default 2): the copies carry the flag too.
        sent = pj.get("retransmitted", 0) + pj.get("repair_copies_sent", 0)
        sc.check(0 < c.get("seen-repair", 0) <= sent,
                 f"{s.name}: nft saw {c.get('seen-repair')} repair frames, publisher "
                 f"sent {pj.get('retransmitted')} repairs + {pj.get('repair_copies_sent')} "
                 f"copies (payload match on the flag works)")
        row(sc, s, s.loss, count, pj, c.get("drop-udp"), note="--from-oldest")


def s7(lab: Lab, nk: Nakcast, sc: Scenario) -> None:
    """Not in issue 6: the default join policy (first seen) with the subscriber already
    listening when the publisher starts, and the session's first frame dropped."""
    count, group, port = 20_000, "239.77.0.7:41007", 41007
    lab.add_rule(1, "first0", 100, "drop-first0")
    head = nk.sub(1, group, "first frame of the session; default join", count=count, idle=4,
                  timeout=30)
    ref = nk.sub(2, group, "none; default join", count=count, idle=4, timeout=30)
    nk.wait_bound([(1, head), (2, ref)], port)
    pub = nk.pub(0, group, count, RATE, linger=2, timeout=20)
    pub.wait()
    for s in (head, ref):
        s.proc.wait()
        s.parse()
    pj = pub.json()
    std_checks(sc, ref, count)
    row(sc, ref, ref.loss, count, pj, 0)
    std_checks(sc, head, count, allow_loss=True)
    st = head.stats
    sc.check(drops_of(lab, 1) == 1, f"{head.name}: exactly one frame dropped ({drops_of(lab, 1)})")
    sc.check(st.get("delivered", 0) + st.get("lost", 0) == count,
             f"{head.name}: delivered {st.get('delivered')} + reported lost {st.get('lost')} "
             f"= {count} (no silent loss at the head of a stream it was waiting for)")
    row(sc, head, head.loss, count, pj, drops_of(lab, 1))


def s2(lab: Lab, nk: Nakcast, sc: Scenario) -> None:
    count, group, port = 100_000, "239.77.0.2:41002", 41002
    lab.add_rule(1, "udp", 50, "drop-udp")
    lossy = nk.sub(1, group, "50% all UDP", count=count, detail=True, idle=6, timeout=60,
                   from_oldest=True)
    clean = [nk.sub(h, group, "none", count=count, idle=6, timeout=60,
                   from_oldest=True) for h in (2, 3)]
    nk.wait_bound([(1, lossy), (2, clean[0]), (3, clean[1])], port)
    pub = nk.pub(0, group, count, RATE, linger=3, timeout=40)
    pub.wait()
    for s in [lossy, *clean]:
        s.proc.wait()
        s.parse()
    pj = pub.json()
    sc.check(pub.rc == 0 and pj.get("sent") == count, f"pub: sent {pj.get('sent')} of {count}")
    for s in clean:
        std_checks(sc, s, count)
        row(sc, s, s.loss, count, pj, 0)
    std_checks(sc, lossy, count, allow_loss=True)
    idx = [i for _, _, i in lossy.indices]
    ranges = [(a, b) for _, a, b, _ in lossy.losses]
    bad = coverage(idx, ranges, 0, count)
    sc.check(bad is None, f"{lossy.name}: delivered {len(idx)} + reported lost "
             f"{sum(b - a for a, b in ranges)} in {len(ranges)} ranges partition [0, {count}) "
             f"exactly{'' if bad is None else ': ' + bad}")
    sc.check(lossy.stats.get("lost", -1) == sum(b - a for a, b in ranges),
             f"{lossy.name}: summary lost {lossy.stats.get('lost')} = sum of reported ranges")
    sc.check(lossy.unparsed == 0, f"{lossy.name}: every stdout line parsed "
             f"({lossy.unparsed} not)")
    if lossy.losses:
        sc.notes.append(f"50% subscriber's loss: {reasons(lossy)}; first ranges: "
                        + ", ".join(f"[{a}, {b})" for _, a, b, _ in lossy.losses[:5]))
    row(sc, lossy, lossy.loss, count, pj, drops_of(lab, 1))


def s3(lab: Lab, nk: Nakcast, sc: Scenario) -> None:
    count, group, port = 100_000, "239.77.0.3:41003", 41003
    lab.add_rule(0, "nak", None, "seen-nak")
    lab.add_rule(0, "nak", 20, "drop-nak")
    for h in (1, 2, 3):
        lab.add_rule(h, "data", 5, "drop-data")
    subs = {h: nk.sub(h, group, "5% DATA; 20% NAKs at pub", count=count, idle=6, timeout=60,
                      from_oldest=True)
            for h in (1, 2, 3)}
    nk.wait_bound(list(subs.items()), port)
    pub = nk.pub(0, group, count, RATE, linger=3, timeout=40)
    pub.wait()
    for s in subs.values():
        s.proc.wait()
        s.parse()
    pj = pub.json()
    sc.check(pub.rc == 0 and pj.get("sent") == count, f"pub: sent {pj.get('sent')} of {count}")
    c0 = lab.counters(0)
    naks_sent = sum(s.stats.get("naks_sent", 0) for s in subs.values())
    sc.check(c0.get("seen-nak") == naks_sent,
             f"h0: nft saw {c0.get('seen-nak')} NAK frames = subscribers' naks_sent {naks_sent}")
    sc.check(c0.get("drop-nak", 0) > 0 and
             pj.get("naks_received") == c0.get("seen-nak", 0) - c0.get("drop-nak", 0),
             f"h0: {c0.get('drop-nak')} NAKs dropped; publisher received "
             f"{pj.get('naks_received')} = seen - dropped")
    for h, s in subs.items():
        std_checks(sc, s, count)
        row(sc, s, s.loss, count, pj, drops_of(lab, h))
    sc.notes.append(f"NAKs dropped at the publisher's host: {c0.get('drop-nak')} of "
                    f"{c0.get('seen-nak')}")


def s4(lab: Lab, nk: Nakcast, sc: Scenario) -> None:
    group, port, sport = "239.77.0.4:41004", 41004, 47004
    count2 = 50_000
    # h1: 20% original-DATA loss, and every repair dropped during the last 0.4 s before the
    #     kill, so the old session certainly has unrepaired gaps (its tail) at the restart.
    # h2: clean.
    # h3: clean, but the restarted session's very first original frame is dropped.
    lab.add_rule(1, "orig", 20, "drop-orig")
    # --from-oldest, as in every scenario: with the default join policy a dropped first
    # frame of the new session silently moves its join point (scenario 7).
    subs = {1: nk.sub(1, group, "20% original DATA; repairs blocked 0.4 s before kill",
                      detail=True, idle=6, timeout=60, from_oldest=True),
            2: nk.sub(2, group, "none", detail=True, idle=6, timeout=60, from_oldest=True),
            3: nk.sub(3, group, "new session's first frame", detail=True, idle=6,
                      timeout=60, from_oldest=True)}
    nk.wait_bound(list(subs.items()), port)
    pub1 = nk.pub(0, group, 10_000_000, RATE, linger=1, source_port=sport, timeout=20)
    time.sleep(1.6)
    lab.add_rule(1, "repair", 100, "drop-repair")
    time.sleep(0.4)
    pub1.signal(signal.SIGKILL)
    t_kill = time.monotonic()
    pub1.wait()
    lab.delete_rule(1, "drop-repair")
    lab.add_rule(3, "first0", 100, "drop-first0")
    time.sleep(0.2)
    t_restart = time.monotonic()
    pub2 = nk.pub(0, group, count2, RATE, linger=2, source_port=sport, timeout=30)
    pub2.wait()
    for s in subs.values():
        s.proc.wait()
        s.parse()
    pj = pub2.json()
    sc.check(pub1.rc == -signal.SIGKILL, f"pub #1 killed by SIGKILL (status {pub1.rc})")
    sc.check(pub2.rc == 0 and pj.get("sent") == count2,
             f"pub #2 (same source port {sport}) sent {pj.get('sent')} of {count2}")
    sc.notes.append(f"restart {t_restart - t_kill:.2f} s after the SIGKILL (inactivity timeout "
                    f"{INACTIVITY_S:.0f} s)")
    for h, s in subs.items():
        st = s.stats
        sc.check(bool(st), f"{s.name}: produced a summary (exit {s.proc.rc}; {s.proc.tail(2)})")
        if not st:
            continue
        sc.check(not s.proc.timed_out, f"{s.name}: exited on its own (CLOSE of session 2)")
        sc.check(st["corrupt"] == 0 and st["duplicates"] == 0 and st["out_of_order"] == 0,
                 f"{s.name}: verify clean per session")
        sc.check(st["sessions"] == 2, f"{s.name}: 2 sessions seen ({st['sessions']})")
        # Split the delivered indices at the restart: the index falls back to 0.
        split = next((k for k in range(1, len(s.indices))
                      if s.indices[k][2] < s.indices[k - 1][2]), len(s.indices))
        old = s.indices[:split]
        new = s.indices[split:]
        # A loss belongs to the new session if it names it; lines without a session (an
        # older binary) are split by time, which races with losses reported at the restart.
        new_sess = s.new_sessions[-1] if s.new_sessions else None

        def is_old(k: int) -> bool:
            t, _, _, why = s.losses[k]
            sess = s.loss_sessions[k] if k < len(s.loss_sessions) else None
            if sess is not None and new_sess is not None:
                return sess != new_sess
            return why == "PublisherRestarted" or t < t_restart

        old_loss = [(a, b, why) for k, (_, a, b, why) in enumerate(s.losses) if is_old(k)]
        new_loss = [(a, b, why) for k, (_, a, b, why) in enumerate(s.losses) if not is_old(k)]
        inactive = [x for x in s.losses if x[3] == "PublisherInactive"]
        sc.check(not inactive, f"{s.name}: no PublisherInactive loss (restart detected by "
                 f"session change, not timeout)")
        old_idx = [i for _, _, i in old]
        if old_idx:
            hi = max([old_idx[-1] + 1] + [b for _, b, _ in old_loss])
            bad = coverage(old_idx, [(a, b) for a, b, _ in old_loss], old_idx[0], hi)
            sc.check(bad is None, f"{s.name}: old session: delivered {len(old_idx)} "
                     f"[{old_idx[0]}..{old_idx[-1]}] + lost "
                     f"{sum(b - a for a, b, _ in old_loss)} partition [{old_idx[0]}, {hi}) "
                     f"exactly{'' if bad is None else ': ' + bad}")
        else:
            sc.check(False, f"{s.name}: delivered nothing of the old session")
        if s.losses:
            sc.notes.append(f"{s.name} loss: {reasons(s)}")
        if h == 1:
            tail = [(t, a, b) for t, a, b, why in s.losses if why == "PublisherRestarted"]
            sc.check(bool(tail), f"{s.name}: old session's unrepaired tail reported lost as "
                     f"PublisherRestarted ({sum(b - a for _, a, b in tail)} messages in "
                     f"{len(tail)} ranges)")
            if tail:
                dt = tail[0][0] - t_restart
                sc.check(0 <= dt < 1.0, f"{s.name}: tail reported {dt * 1000:.0f} ms after the "
                         f"restarted publisher started (at its first packet, not after "
                         f"{INACTIVITY_S:.0f} s)")
        if h == 2:
            sc.check(not old_loss, f"{s.name}: old session lost nothing ({old_loss[:3]})")
        new_idx = [i for _, _, i in new]
        if new:
            dt = new[0][0] - t_restart
            sc.check(dt < 1.0, f"{s.name}: first message of the new session delivered "
                     f"{dt * 1000:.0f} ms after the restart (stdout is buffered: upper bound)")
        head_ok = coverage(new_idx, [(a, b) for a, b, _ in new_loss], 0, count2)
        what = (f"{s.name}: new session: delivered {len(new_idx)} "
                f"[{new_idx[0] if new_idx else '-'}..{new_idx[-1] if new_idx else '-'}] + "
                f"lost {sum(b - a for a, b, _ in new_loss)} partition [0, {count2})")
        sc.check(head_ok is None, what + ("" if head_ok is None else ": " + head_ok))
        if h != 3:
            sc.check(not new_loss, f"{s.name}: new session lost nothing")
        drops = drops_of(lab, h)
        row(sc, s, s.loss, len(old_idx) + sum(b - a for a, b, _ in old_loss) + count2, pj,
            drops, note=f"old session: {len(old_idx)} delivered, "
            f"{sum(b - a for a, b, _ in old_loss)} lost; new: {len(new_idx)} delivered")


def s5(lab: Lab, nk: Nakcast, sc: Scenario) -> None:
    count, group, port = 400_000, "239.77.0.5:41005", 41005
    stop_at, stopped_for = 1.5, 3.0
    victim = nk.sub(1, group, f"SIGSTOP {stopped_for:.0f} s", count=count, detail=True, idle=6,
                    timeout=60, from_oldest=True)
    others = [nk.sub(h, group, "none", count=count, idle=6, timeout=60, from_oldest=True)
              for h in (2, 3)]
    nk.wait_bound([(1, victim), (2, others[0]), (3, others[1])], port)
    pub = nk.pub(0, group, count, RATE, linger=3, timeout=40)
    time.sleep(stop_at)
    victim.proc.signal(signal.SIGSTOP)
    time.sleep(stopped_for)
    victim.proc.signal(signal.SIGCONT)
    t_cont = time.monotonic()
    pub.wait()
    for s in [victim, *others]:
        s.proc.wait()
        s.parse()
    pj = pub.json()
    expect = count / RATE
    sc.check(pub.rc == 0 and pj.get("sent") == count, f"pub: sent {pj.get('sent')} of {count}")
    sc.check(pj.get("elapsed_s", 1e9) <= expect * 1.05 + 0.2,
             f"pub never blocked: {count} messages in {pj.get('elapsed_s')} s "
             f"(paced {expect:.1f} s)")
    sc.check(pj.get("unavailable", 0) > 0,
             f"pub: the stopped subscriber fell behind the ring (UNAVAILABLE sent "
             f"{pj.get('unavailable')})")
    for s in others:
        std_checks(sc, s, count)
        row(sc, s, s.loss, count, pj, 0)
    std_checks(sc, victim, count, allow_loss=True)
    idx = [i for _, _, i in victim.indices]
    ranges = [(a, b) for _, a, b, _ in victim.losses]
    bad = coverage(idx, ranges, 0, count)
    sc.check(bad is None, f"{victim.name}: delivered {len(idx)} + reported lost "
             f"{sum(b - a for a, b in ranges)} in {len(ranges)} ranges partition [0, {count}) "
             f"exactly{'' if bad is None else ': ' + bad}")
    sc.check(bool(ranges), f"{victim.name}: loss reported ({len(ranges)} ranges, reasons "
             f"{sorted(set(w for *_, w in victim.losses))})")
    if victim.losses:
        last = max(t for t, *_ in victim.losses) - t_cont
        sc.check(last <= LOSS_DEADLINE_S + 0.5,
                 f"{victim.name}: every loss reported within {last:.2f} s of SIGCONT "
                 f"(loss_deadline {LOSS_DEADLINE_S:.0f} s)")
        sc.notes.append(f"loss ranges of the stopped subscriber: "
                        + ", ".join(f"[{a}, {b}) {w} at +{t - t_cont:.2f} s"
                                    for t, a, b, w in victim.losses[:6])
                        + (" ..." if len(victim.losses) > 6 else ""))
    after = [i for t, _, i in victim.indices if t > t_cont + LOSS_DEADLINE_S + 0.5]
    sc.check(bool(idx) and idx[-1] == count - 1 and len(after) > 0,
             f"{victim.name}: carried on to the last message ({idx[-1] if idx else None})")
    row(sc, victim, victim.loss, count, pj, None)


def s6(lab: Lab, nk: Nakcast, sc: Scenario) -> None:
    # 20k msg/s: one message per frame, so the 65536-frame ring holds ~3.3 s; the late joiner
    # starts at +1.5 s, before the publisher evicts anything (scenario 8: a full ring).
    late_joiner(lab, nk, sc, count=100_000, rate=20_000, join_at=1.5, port=41006)


def s8(lab: Lab, nk: Nakcast, sc: Scenario) -> None:
    """Not in issue 6: the late joiner starts when the ring is full and evicting at 50k msg/s,
    so the oldest retained data is the next to go."""
    late_joiner(lab, nk, sc, count=300_000, rate=RATE, join_at=3.0, port=41008)


def late_joiner(lab: Lab, nk: Nakcast, sc: Scenario, count: int, rate: int, join_at: float,
                port: int) -> None:
    group = f"239.77.0.{port - 41000}:{port}"
    early = nk.sub(1, group, "none (from start)", count=count, idle=6, timeout=60,
                   from_oldest=True)
    nk.wait_bound([(1, early)], port)
    pub = nk.pub(0, group, count, rate, linger=2, timeout=40)
    t_pub = time.monotonic()
    time.sleep(join_at)
    late = nk.sub(2, group, f"none; {rate // 1000}k msg/s, joins at +{join_at:.1f} s "
                  f"--from-oldest", detail=True,
                  from_oldest=True, idle=6, timeout=60)
    t_join = time.monotonic()
    pub.wait()
    for s in (early, late):
        s.proc.wait()
        s.parse()
    pj = pub.json()
    sc.check(pub.rc == 0 and pj.get("sent") == count, f"pub: sent {pj.get('sent')} of {count}")
    std_checks(sc, early, count)
    row(sc, early, early.loss, count, pj, 0, note=f"{rate // 1000}k msg/s")
    std_checks(sc, late, None)
    idx = [i for _, _, i in late.indices]
    sent_at_join = int((t_join - t_pub) * rate)
    if late.losses:
        sc.notes.append("late joiner's loss: " + reasons(late) + "; ranges: " + ", ".join(
            f"[{a}, {b}) at +{t - t_join:.2f} s" for t, a, b, _ in late.losses[:8]))
    if idx:
        ranges = [(a, b) for _, a, b, _ in late.losses]
        bad = coverage(idx, ranges, min([idx[0]] + [a for a, _ in ranges]), count)
        sc.check(bad is None, f"{late.name}: delivered {len(idx)} + reported lost "
                 f"{sum(b - a for a, b in ranges)} partition [{idx[0]}, {count}) exactly"
                 f"{'' if bad is None else ': ' + bad}")
        start = min([idx[0]] + [a for _, a, _, _ in late.losses])
        backlog = sent_at_join - start
        sc.check(backlog >= 10_000,
                 f"{late.name}: started at the retained backlog: join point {start}, about "
                 f"{sent_at_join} sent when it started, backlog ~{backlog} messages")
        sc.notes.append(f"late joiner: first index {idx[0]}, ~{sent_at_join} sent at its start "
                        f"(backlog ~{backlog}), {len(idx)} delivered")
    else:
        sc.check(False, f"{late.name}: delivered nothing")
    row(sc, late, late.loss, count - (idx[0] if idx else 0), pj, 0,
        note=f"{rate // 1000}k msg/s; messages = backlog from the oldest retained + live")


SCENARIOS = {
    1: ("1 publisher, 3 subscribers at 1%, 5%, 20% input loss, 200k messages", s1),
    2: ("one subscriber at 50% loss beside two clean ones", s2),
    3: ("20% of NAKs dropped at the publisher's host, 5% DATA loss at subscribers", s3),
    4: ("publisher SIGKILLed mid-stream and restarted on the same source port", s4),
    5: ("a subscriber SIGSTOPped until it falls behind the ring, then continued", s5),
    6: ("late joiner with --from-oldest: retained backlog, then live, in order", s6),
    7: ("(extra) default join policy, subscriber waiting, the session's first frame dropped",
        s7),
    8: ("(extra) late joiner with --from-oldest when the ring is full (50k msg/s, joins at +3 s)",
        s8),
}


# --------------------------------------------------------------------------------------------
# Report.

DOC = os.path.join(ROOT, "docs", "RELIABILITY.md")
BEGIN, END = "<!-- lab:begin (generated by tests/lab/lab.py --update-docs) -->", "<!-- lab:end -->"


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {cpus} CPUs ({model})"


def report_md(results: list[Scenario], cmd: str, commit: str) -> str:
    f = lambda v: "–" if v is None else str(v)  # noqa: E731

    def repair(r: dict) -> str:
        p50, p99 = r.get("repair_p50"), r.get("repair_p99")
        if p50 is None:
            return "–"
        return f"{p50:.0f} / {p99:.0f} µs"

    lines = [
        BEGIN,
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()}, nakcast {commit}, "
        f"with `{cmd}` (as root). Message size 64 B, publisher paced at {RATE} msg/s unless "
        f"stated. Loss is nftables `numgen random` drops on the subscriber host's input hook "
        f"unless stated. *nft drops*: packets the loss rules dropped on that host; *rcvbuf "
        f"drops*: datagrams that host's kernel dropped for a full socket buffer (2 cores shared "
        f"by every process); NAKs sent are the subscriber's, NAKs received / repairs / "
        f"UNAVAILABLE the publisher's (all subscribers together). *Repair latency*: per fragment "
        f"recovered after a NAK, the time from detecting its gap to delivering it in order "
        f"(`sub --json` `repair_p50_us` / `repair_p99_us`).",
        "",
        "| # | host | loss | messages | delivered | recovered | lost (reported) | NAKs sent "
        "| NAKs rcvd (pub) | repairs (pub) | UNAVAILABLE (pub) | nft drops | rcvbuf drops | repair "
        "latency p50 / p99 | result |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- | --- |",
    ]
    for sc in results:
        res = "pass" if sc.passed else "FAIL"
        if not sc.rows:
            lines.append(f"| {sc.num} | – | – | | | | | | | | | | | | {res}"
                         f"{': ' + sc.error if sc.error else ''} |")
        for r in sc.rows:
            lines.append(
                f"| {r['scenario']} | {r['host']} | {r['loss']} | {f(r['messages'])} | "
                f"{f(r['delivered'])} | {f(r['recovered'])} | {f(r['lost'])} | "
                f"{f(r['naks_sent'])} | {f(r['naks_received'])} | {f(r['repairs'])} | "
                f"{f(r['unavailable'])} | {f(r['nft_drops'])} | {f(r['rcvbuf_drops'])} | "
                f"{repair(r)} | {res} |")
    lines.append("")
    for sc in results:
        lines.append(f"- Scenario {sc.num} ({sc.title}): **{'pass' if sc.passed else 'FAIL'}**"
                     f" — {sum(ok for ok, _ in sc.checks)}/{len(sc.checks)} checks.")
        for n in sc.notes:
            lines.append(f"  - {n}")
        for ok, what in sc.checks:
            if not ok:
                lines.append(f"  - FAILED: {what}")
        for r in sc.rows:
            if r["note"]:
                lines.append(f"  - {r['host']}: {r['note']}")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def update_doc(md: str) -> None:
    text = open(DOC).read() if os.path.exists(DOC) else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        a = text.index(BEGIN)
        b = text.index(END) + len(END)
        text = text[:a] + md.rstrip("\n") + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + md
    with open(DOC, "w") as fh:
        fh.write(text)
    log(f"wrote the table into {DOC}")


# --------------------------------------------------------------------------------------------
# Main.


def skip(msg: str) -> int:
    required = os.environ.get("NAKCAST_LAB_REQUIRE") == "1"
    print(f"nakcast lab {'cannot run' if required else 'skipped'}: {msg}", file=sys.stderr)
    if required:
        print("(NAKCAST_LAB_REQUIRE=1: failing)", file=sys.stderr)
        return 1
    print("Set NAKCAST_LAB_REQUIRE=1 to make this an error.", file=sys.stderr)
    return 0


def prerequisites() -> str | None:
    if sys.platform != "linux":
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (ip netns, nftables); run with sudo"
    for tool, hint in (("ip", "apt-get install -y iproute2"),
                       ("nft", "apt-get update && apt-get install -y nftables"),
                       ("ss", "apt-get install -y iproute2")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found; install it: {hint}"
    probe = f"{PREFIX}probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        r = subprocess.run(["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "p"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return f"nftables does not work in a namespace: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


# Every namespace a run creates is named PREFIX + one of these suffixes (Lab.br, Lab.hosts,
# the probe in prerequisites()), PREFIX being "nkl" + the run's pid.
STALE_NAME = re.compile(r"^nkl(\d+)(?:br|h\d+|probe)$")


def cleanup_stale(quiet: bool = False) -> int:
    """Delete the namespaces left by earlier runs that died without tearing down (SIGKILL,
    power loss): those named by this harness's scheme (STALE_NAME) whose pid is not a live
    lab.py. Namespaces of this run, of a run still alive, and any other name are left alone.
    Returns how many were deleted."""
    r = run(["ip", "netns", "list"], check=False)
    n = 0
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = STALE_NAME.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        if os.path.exists(f"/proc/{pid}"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"lab.py" in f.read():
                        log(f"{name}: its run (pid {pid}) is alive, left alone")
                        continue
            except OSError:
                pass
        d = run(["ip", "netns", "del", name], check=False)
        if d.returncode == 0:
            n += 1
        else:
            log(f"could not delete stale namespace {name}: {d.stderr.strip()}")
    if n or not quiet:
        log(f"removed {n} stale namespace(s)")
    return n


def main() -> int:
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated scenario numbers (default: all)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "nakcast"))
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    ap.add_argument("--update-docs", action="store_true",
                    help="rewrite the generated table in docs/RELIABILITY.md")
    ap.add_argument("--json-out", help="write the results as JSON to this file")
    ap.add_argument("--cleanup", action="store_true", help="remove stale nkl* namespaces")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    VERBOSE = a.verbose
    try:
        only = sorted({int(x) for x in a.only.split(",")}) if a.only else sorted(SCENARIOS)
        if any(x not in SCENARIOS for x in only):
            raise ValueError
    except ValueError:
        print(f"--only: scenario numbers among {sorted(SCENARIOS)}", file=sys.stderr)
        return 2

    why = prerequisites()
    if why:
        return skip(why)
    if a.cleanup:
        cleanup_stale()
        return 0
    # Leftovers of earlier runs that were killed before their teardown (same name scheme).
    cleanup_stale(quiet=True)

    if not a.no_build:
        log("cargo build --release")
        r = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
        if r.returncode != 0:
            log("cargo build failed")
            return 1
    if not os.access(a.bin, os.X_OK):
        log(f"{a.bin} is not an executable")
        return 1
    binary = os.path.abspath(a.bin)
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "unknown"

    lab = Lab(5)

    def on_signal(sig, _frame):
        log(f"signal {sig}: tearing down")
        kill_all_children()
        lab.down()
        os._exit(130 if sig == signal.SIGINT else 143)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    results: list[Scenario] = []
    t0 = time.monotonic()
    try:
        log(f"lab {PREFIX}: bridge + {lab.n} hosts")
        lab.up()
        nk = Nakcast(binary, lab)
        global LAB
        LAB = lab
        for num in only:
            title, fn = SCENARIOS[num]
            sc = Scenario(num, title)
            log(f"scenario {num}: {title}")
            for i in range(lab.n):
                lab.clear_rules(i)
                RCVBUF_BASE[i] = lab.rcvbuf_errors(i)
            ts = time.monotonic()
            try:
                fn(lab, nk, sc)
            except Exception as e:  # a harness or set-up error fails the scenario
                sc.error = f"{type(e).__name__}: {e}"
                log(f"  FAIL scenario {num} aborted: {sc.error}")
            finally:
                kill_all_children()
                with _children_lock:
                    _children.clear()
            log(f"scenario {num}: {'pass' if sc.passed else 'FAIL'} "
                f"({time.monotonic() - ts:.1f} s)")
            results.append(sc)
    finally:
        kill_all_children()
        lab.down()

    cmd = "sudo python3 tests/lab/lab.py" + (f" --only {a.only}" if a.only else "") + \
        (" --update-docs" if a.update_docs else "")
    md = report_md(results, cmd, commit)
    print(md)
    if a.update_docs:
        update_doc(md)
    if a.json_out:
        with open(a.json_out, "w") as fh:
            json.dump([dict(num=s.num, title=s.title, passed=s.passed, error=s.error,
                            checks=s.checks, rows=s.rows, notes=s.notes) for s in results],
                      fh, indent=1)
    failed = [s.num for s in results if not s.passed]
    log(f"{len(results) - len(failed)}/{len(results)} scenarios passed in "
        f"{time.monotonic() - t0:.0f} s" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
