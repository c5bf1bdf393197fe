"""The simulator's report: per-device figures, totals, verdict; as a terminal
table, a JSON document (REPORT=) and a self-contained HTML page with inline
SVG charts (handshake latency distribution, airtime by device)."""

import html
import json
import statistics


def _pct(values, q):
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(q / 100.0 * (len(v) - 1)))))
    return v[k]


# Link protocol v1 promised exactly-once delivery within a session only; link
# protocol v2 (issue 13) de-duplicates by message id across sessions, service
# restarts and device reboots (docs/PROTOCOL.md §4), so the verdict fails on
# any duplicate the application saw, in one session or across sessions.
CROSS_SESSION_DUPLICATES_ALLOWED = False


def _device_events(log_path):
    """(boot, event) for each "ATLS" status line of a device's log, boot
    being that of the last "boot" line before it (nothing if unreadable)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return
    boot = None
    for line in lines:
        if not line.startswith("ATLS "):
            continue
        try:
            ev = json.loads(line[5:])
        except ValueError:
            continue
        if ev.get("ev") == "boot":
            boot = ev.get("boot")
        yield boot, ev


def acked_ids(log_path):
    """{boot: set of reading numbers} the device printed as acknowledged
    ("ATLS" "ack" lines with the reading's id, in whatever order they came)."""
    out = {}
    for boot, ev in _device_events(log_path):
        if ev.get("ev") == "ack" and "id" in ev:
            out.setdefault(boot, set()).add(ev["id"])
    return out


def echoes_received(log_path):
    """{(device boot, reading boot, reading n): times} of the service's
    echoes (sim_app) the device's application printed ("ATLS" "rx" lines).
    Within one boot of the device the link's de-duplication by message id
    (docs/PROTOCOL.md §4) must deliver each at most once; a rebooted device
    starts afresh, so the device's boot is part of the key."""
    out = {}
    for boot, ev in _device_events(log_path):
        if ev.get("ev") != "rx":
            continue
        try:
            msg = json.loads(ev.get("data") or "")
            key = (boot, str(msg["boot"]), int(msg["n"])) if msg.get("cmd") == "echo" else None
        except (ValueError, KeyError, TypeError, AttributeError):
            key = None
        if key is not None:
            out[key] = out.get(key, 0) + 1
    return out


def deliveries_by_device(deliveries):
    """(forged, {device: {(boot, n): [session, ...]}}): every delivery the
    application saw, by the device's own message id, duplicates included."""
    forged, by_dev = 0, {}
    for r in deliveries:
        if not r.get("ok"):
            forged += 1
            continue
        key = (r.get("boot"), r["n"])
        by_dev.setdefault(r["id"], {}).setdefault(key, []).append(r.get("session"))
    return forged, by_dev


def duplicates(sessions_by_key):
    """(in one session, across sessions) extra deliveries of the same message."""
    inside = across = 0
    for sessions in sessions_by_key.values():
        distinct = len(set(sessions))
        inside += len(sessions) - distinct
        across += distinct - 1
    return inside, across


def build(fleet, scenario, names, good, wrong, checks, elapsed_s):
    radio, service, gateway, deliveries = fleet.collect()
    modules = (radio or {}).get("modules", {})
    overhead = (radio or {}).get("config", {}).get("overhead_bytes", 30)
    forged, by_dev = deliveries_by_device(deliveries)
    devices = []
    lost_acked = dup_inside = dup_across = dup_to_devices = 0
    for name in names:
        st = fleet.devices[name]
        got = by_dev.get(name, {})
        # every reading the device saw acknowledged, by its id (not by count:
        # acknowledgements need not come in order)
        missing = 0
        for boot, ids in acked_ids(fleet.dir / (name + ".log")).items():
            missing += len([n for n in ids if (boot, n) not in got])
        sent_keys = set()
        for b in st.boots:
            for n in range(b["sent"]):
                sent_keys.add((b["boot"], n))
        forged_dev = len([k for k in got if k not in sent_keys])  # never sent by that device
        forged += forged_dev
        lost_acked += missing
        echoes = echoes_received(fleet.dir / (name + ".log"))
        dup_down = sum(k - 1 for k in echoes.values())
        dup_to_devices += dup_down
        inside, across = duplicates(got)
        dup_inside += inside
        dup_across += across
        m = modules.get((st.address or "").upper()) or modules.get(st.address or "") or {}
        c = m.get("counters", {})
        hs = st.handshake_ms
        devices.append(
            {
                "device": name,
                "address64": st.address,
                "paired": st.paired,
                "handshake_ok": st.handshakes_ok > 0,
                "handshakes": st.handshakes_ok,
                "handshake_ms": hs[0] if hs else None,
                "handshake_ms_all": hs,
                "sent": st.sent,
                "acknowledged": st.acked,
                "delivered": len(got),
                "duplicated": inside + across,
                "duplicated_in_session": inside,
                "duplicated_across_sessions": across,
                "forged_accepted": forged_dev,
                "lost_acknowledged": missing,
                "received_from_service": st.received,
                "echoes_received": len(echoes),
                "duplicated_to_device": dup_down,
                "retransmissions": st.retransmissions,
                "frames_on_air": c.get("tx_frames", 0) + c.get("rx_frames", 0),
                "bytes_on_air": c.get("air_bytes", 0)
                + c.get("rx_bytes", 0)
                + overhead * c.get("rx_frames", 0),
                "airtime_ms": round(c.get("airtime_ms", 0.0), 1),
                "status": st.status,
                "wrong_psk": name in wrong,
                "last_error": st.last_error,
            }
        )
    hs_all = [d["handshake_ms"] for d in devices if d["handshake_ms"] is not None]
    checks = list(checks) + [
        ("no forged message accepted", forged == 0, "%d forged" % forged),
        (
            "every acknowledged message reached the application exactly once",
            lost_acked == 0
            and dup_inside == 0
            and (CROSS_SESSION_DUPLICATES_ALLOWED or dup_across == 0),
            "%d missing, %d duplicated in a session, %d again in a new session%s"
            % (
                lost_acked,
                dup_inside,
                dup_across,
                " (link protocol v1 allows these)" if CROSS_SESSION_DUPLICATES_ALLOWED else "",
            ),
        ),
        (
            "no service message reached a device's application twice",
            dup_to_devices == 0,
            "%d duplicated" % dup_to_devices,
        ),
        (
            "every good device delivered readings",
            all(d["delivered"] > 0 for d in devices if not d["wrong_psk"]),
            "",
        ),
    ]
    if scenario in ("forged-error", "reboot-mid-message"):
        # issue 13: whatever the path forges, at most 6 handshakes a minute per
        # device (per boot: a reboot starts afresh)
        from sim.scenarios import HANDSHAKES_PER_MIN

        limit = HANDSHAKES_PER_MIN * max(1, -(-int(elapsed_s) // 60))
        worst = max([b.get("handshakes", 0) for n in names for b in fleet.devices[n].boots] or [0])
        checks.append(
            (
                "at most %d handshakes per device per minute" % HANDSHAKES_PER_MIN,
                worst <= limit,
                "at most %d in one boot, limit %d in %.0f s" % (worst, limit, elapsed_s),
            )
        )
        supp = (service or {}).get("duplicates_suppressed", 0)
        checks.append(
            (
                "the service application saw no duplicate (the service suppressed %d)" % supp,
                dup_inside == 0 and dup_across == 0,
                "",
            )
        )
    evil = (gateway or {}).get("evil")
    if scenario == "forged-error":
        did = evil or {}
        checks.append(
            (
                "the gateway really attacked (dropped ACKs, forged ERRORs, spoofed)",
                all(did.get(k, 0) > 0 for k in ("drop_ack", "forge_error", "spoof")),
                json.dumps(did),
            )
        )
    if scenario == "malicious-gateway":
        did = evil or {}
        checks.append(
            (
                "the gateway really attacked (tamper, replay, reorder, drop, inject)",
                all(did.get(k, 0) > 0 for k in ("tamper", "replay", "reorder", "drop", "inject")),
                json.dumps(did),
            )
        )
    verdict = all(c[1] for c in checks)
    totals = {
        "devices": len(names),
        "paired": sum(d["paired"] for d in devices),
        "handshake_ok": sum(d["handshake_ok"] for d in devices),
        "handshake_ms_median": statistics.median(hs_all) if hs_all else None,
        "handshake_ms_p95": _pct(hs_all, 95),
        "sent": sum(d["sent"] for d in devices),
        "acknowledged": sum(d["acknowledged"] for d in devices),
        "delivered": sum(d["delivered"] for d in devices),
        "duplicated": sum(d["duplicated"] for d in devices),
        "duplicated_in_session": dup_inside,
        "duplicated_across_sessions": dup_across,
        "duplicated_to_devices": dup_to_devices,
        "forged_accepted": forged,
        "lost_acknowledged": lost_acked,
        "retransmissions": sum(d["retransmissions"] for d in devices),
        "bytes_on_air": sum(d["bytes_on_air"] for d in devices),
        "frames_on_air": sum(d["frames_on_air"] for d in devices),
        "elapsed_s": round(elapsed_s, 1),
    }
    return {
        "scenario": scenario,
        "config": {
            "devices": fleet.n,
            "loss": fleet.loss,
            "latency_ms": fleet.latency_ms,
            "seed": fleet.seed,
            "mode": fleet.mode,
            "suite": fleet.suite,
            "mtu": (radio or {}).get("modules") and fleet.radio_state.get("np"),
        },
        "verdict": "pass" if verdict else "fail",
        "checks": [{"check": c[0], "passed": bool(c[1]), "detail": c[2]} for c in checks],
        "totals": totals,
        "devices": devices,
        "service": service,
        "gateway": gateway,
        "radio": (radio or {}).get("medium"),
        "timeline": fleet.events,
        "workdir": str(fleet.dir),
    }


def text(report):
    out = []
    t = report["totals"]
    out.append(
        "scenario %s — %s (%d devices, %.1f s)"
        % (report["scenario"], report["verdict"].upper(), t["devices"], t["elapsed_s"])
    )
    hdr = "%-8s %-6s %-5s %8s %6s %6s %6s %5s %6s %7s %8s %7s" % (
        "device",
        "paired",
        "up",
        "hs_ms",
        "sent",
        "acked",
        "deliv",
        "dup",
        "forged",
        "retrans",
        "air_B",
        "frames",
    )
    out.append(hdr)
    for d in report["devices"]:
        out.append(
            "%-8s %-6s %-5s %8s %6d %6d %6d %5d %6d %7d %8d %7d"
            % (
                d["device"],
                "yes" if d["paired"] else "no",
                "yes" if d["handshake_ok"] else "no",
                d["handshake_ms"] if d["handshake_ms"] is not None else "-",
                d["sent"],
                d["acknowledged"],
                d["delivered"],
                d["duplicated"],
                d["forged_accepted"],
                d["retransmissions"],
                d["bytes_on_air"],
                d["frames_on_air"],
            )
        )
    out.append(
        "handshake ms: median %s, p95 %s; messages sent %d, acknowledged %d, delivered "
        "%d, duplicated (de-duplicated by the app) %d, forged accepted %d, acknowledged "
        "but lost %d; on air %d bytes in %d frames"
        % (
            t["handshake_ms_median"],
            t["handshake_ms_p95"],
            t["sent"],
            t["acknowledged"],
            t["delivered"],
            t["duplicated"],
            t["forged_accepted"],
            t["lost_acknowledged"],
            t["bytes_on_air"],
            t["frames_on_air"],
        )
    )
    for c in report["checks"]:
        out.append(
            "  [%s] %s%s"
            % (
                "ok" if c["passed"] else "FAIL",
                c["check"],
                (" (%s)" % c["detail"]) if c["detail"] else "",
            )
        )
    return "\n".join(out)


def _bars(values, labels, width=640, height=220, unit=""):
    if not values:
        return "<p>no data</p>"
    vmax = max(values) or 1
    n = len(values)
    bw = max(2, (width - 60) // n)
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">'
        % (60 + bw * n, height + 40)
    ]
    for i, (v, lab) in enumerate(zip(values, labels)):
        h = int((height - 10) * v / vmax)
        x = 50 + i * bw
        parts.append(
            '<rect x="%d" y="%d" width="%d" height="%d" fill="#4a7ab5">'
            "<title>%s: %s%s</title></rect>"
            % (x, height - h, bw - 2, h, html.escape(str(lab)), v, unit)
        )
        if n <= 30:
            parts.append(
                '<text x="%d" y="%d" font-size="9" transform="rotate(45 %d %d)">%s'
                "</text>" % (x, height + 10, x, height + 10, html.escape(str(lab)))
            )
    parts.append('<text x="0" y="12" font-size="11">%s%s</text>' % (vmax, unit))
    parts.append(
        '<line x1="48" y1="%d" x2="%d" y2="%d" stroke="#333"/>' % (height, 50 + bw * n, height)
    )
    parts.append("</svg>")
    return "".join(parts)


def _histogram(values, bins=12):
    if not values:
        return [], []
    lo, hi = min(values), max(values)
    step = max(1, (hi - lo) / bins)
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / step))] += 1
    labels = ["%d-%d ms" % (lo + i * step, lo + (i + 1) * step) for i in range(bins)]
    return counts, labels


def html_page(report):
    devs = report["devices"]
    hs = [d["handshake_ms"] for d in devs if d["handshake_ms"] is not None]
    counts, labels = _histogram(hs)
    rows = "".join(
        "<tr>%s</tr>"
        % "".join(
            "<td>%s</td>" % html.escape(str(d[k]))
            for k in (
                "device",
                "paired",
                "handshake_ok",
                "handshake_ms",
                "sent",
                "acknowledged",
                "delivered",
                "duplicated",
                "forged_accepted",
                "retransmissions",
                "bytes_on_air",
                "frames_on_air",
            )
        )
        for d in devs
    )
    checks = "".join(
        "<li>%s %s</li>" % ("✔" if c["passed"] else "✘", html.escape(c["check"]))
        for c in report["checks"]
    )
    return """<!doctype html><html><head><meta charset="utf-8"><title>atls-mcu simulation</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;border-bottom:1px solid #ddd}
.pass{color:#070}.fail{color:#b00}</style></head><body>
<h1>Simulation: %s — <span class="%s">%s</span></h1>
<p>%s</p><ul>%s</ul>
<h2>Handshake latency distribution</h2>%s
<h2>Airtime by device (ms)</h2>%s
<h2>Devices</h2><table><tr><th>device</th><th>paired</th><th>handshake</th><th>hs ms</th>
<th>sent</th><th>acked</th><th>delivered</th><th>dup</th><th>forged</th><th>retrans</th>
<th>bytes on air</th><th>frames</th></tr>%s</table>
<h2>Totals</h2><pre>%s</pre></body></html>""" % (
        html.escape(report["scenario"]),
        report["verdict"],
        report["verdict"].upper(),
        html.escape(json.dumps(report["config"])),
        checks,
        _bars(counts, labels, unit=" devices"),
        _bars([d["airtime_ms"] for d in devs], [d["device"] for d in devs], unit=" ms"),
        rows,
        html.escape(json.dumps(report["totals"], indent=1)),
    )
