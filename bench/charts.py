"""Draws bench/run.sh's results as PNG charts (matplotlib).

    python3 bench/charts.py [--best] OUT_DIR results.jsonl [more.jsonl ...]

Each chart is drawn only when the results hold its scenario; with several
files (repeated runs), a point is the median over the runs (with --best: the
lowest, the run least disturbed by other work on a shared machine, since
background load only ever adds latency) and the bar spans the lowest to the
highest, so the noise shows. A report's `server_name` "wtgate-before" is drawn
as its own series (a build before a change, run side by side).

- latency-vs-rate.png  scenario (a): p50 and p99 against deliveries/s, per server
- p99-vs-loss.png      scenario (e): p99 and p99.9 against packet loss, per server
- rss-per-session.png  scenario (c): server RSS per idle session, per server
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

LABEL = {
    "wtgate": "wtgate",
    "wtgate-before": "wtgate before tuning",
    "wtgate-ws": "wtgate over WebSocket",
    "socketio": "Socket.IO",
    "socketio-rs": "Socket.IO (Rust generator)",
    "floor": "bare wtransport",
}
COLOR = {
    "wtgate": "tab:blue",
    "wtgate-before": "tab:cyan",
    "wtgate-ws": "tab:green",
    "socketio": "tab:orange",
    "socketio-rs": "tab:red",
    "floor": "tab:gray",
}
# The point drawn for a set of runs: the median, or with --best the lowest.
CENTRE = statistics.median


def load(paths):
    """Reports by file: a list of runs, each a list of report dicts."""
    runs = []
    for p in paths:
        rows = [json.loads(line) for line in Path(p).read_text().splitlines() if line.strip()]
        runs.append([r for r in rows if r.get("clients")])
    return runs


def gather(runs, scenario, x_of, y_of):
    """{server: {x: [y per run]}} for one scenario."""
    out = defaultdict(lambda: defaultdict(list))
    for rows in runs:
        for r in rows:
            if r.get("scenario") != scenario:
                continue
            y = y_of(r)
            if y is not None:
                out[r["server_name"]][x_of(r)].append(y)
    return out


def spread(values):
    """The centre and the distances down to the lowest and up to the highest."""
    mid = CENTRE(values)
    return mid, mid - min(values), max(values) - mid


def plot_series(ax, series, server, label, style):
    xs = sorted(series)
    mids, lows, highs = zip(*(spread(series[x]) for x in xs))
    ax.errorbar(xs, mids, yerr=[lows, highs], fmt=style, color=COLOR.get(server),
                capsize=3, label=label)


def latency_vs_rate(runs, out):
    got = {q: gather(runs, "a", lambda r: r["rate"] * r["clients"] / r["rooms"],
                     lambda r, q=q: r["latency_ms"][q] if r.get("lost") == 0 else None)
           for q in ("p50", "p99")}
    if not got["p99"]:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for server in got["p99"]:
        plot_series(ax, got["p50"][server], server, f"{LABEL.get(server, server)} p50", "o--")
        plot_series(ax, got["p99"][server], server, f"{LABEL.get(server, server)} p99", "s-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("deliveries per second (200 clients, 1 room, 10 senders)")
    ax.set_ylabel("one-way latency, ms")
    ax.set_title("Latency against rate (steps with no loss)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, out / "latency-vs-rate.png")


def p99_vs_loss(runs, out):
    got = {q: gather(runs, "e", lambda r: float(r["step"]), lambda r, q=q: r["latency_ms"][q])
           for q in ("p99", "p999")}
    if not got["p99"]:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for server in got["p99"]:
        plot_series(ax, got["p99"][server], server, f"{LABEL.get(server, server)} p99", "s-")
        plot_series(ax, got["p999"][server], server, f"{LABEL.get(server, server)} p99.9", "^:")
    ax.set_yscale("log")
    ax.set_xlabel("packets dropped at random on each end, %")
    ax.set_ylabel("one-way latency, ms")
    what = "lowest" if CENTRE is min else "median"
    ax.set_title("Tail latency under packet loss, %s of runs (bars: range)\n"
                 "(200 clients, 10 rooms, 20 senders, 200 msg/s)" % what)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(fig, out / "p99-vs-loss.png")


def rss_per_session(runs, out):
    got = gather(runs, "c", lambda r: r["clients"],
                 lambda r: (r.get("server") or {}).get("rss_kb_per_session"))
    if not got:
        return None
    servers = sorted(got, key=lambda s: list(LABEL).index(s) if s in LABEL else 99)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, server in enumerate(servers):
        values = [v for vs in got[server].values() for v in vs]
        mid, low, high = spread(values)
        ax.bar(i, mid, yerr=[[low], [high]], color=COLOR.get(server), capsize=4)
        ax.text(i, mid / 2, f"{mid:.1f}", ha="center", color="white", fontweight="bold")
    ax.set_xticks(range(len(servers)), [LABEL.get(s, s) for s in servers])
    ax.set_ylabel("server RSS per idle session, KiB")
    sessions = sorted({x for s in got.values() for x in s})
    ax.set_title(f"Memory per idle session ({', '.join(map(str, sessions))} sessions)")
    ax.grid(True, axis="y", alpha=0.3)
    return save(fig, out / "rss-per-session.png")


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    global CENTRE
    args = sys.argv[1:]
    if args[:1] == ["--best"]:
        CENTRE = min
        args = args[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    runs = load(args[1:])
    for draw in (latency_vs_rate, p99_vs_loss, rss_per_session):
        path = draw(runs, out)
        if path:
            print(f"chart: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
