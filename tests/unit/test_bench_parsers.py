"""Parsers of the side-by-side benchmark: wrk's and hey's outputs (captured from real runs on this
machine) and `/proc/PID/stat` CPU fields."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loadtests import bench_cpu, bench_tools

# --- captured outputs (wrk 4.1.0, hey 0.1.4) ----------------------------------------------------

WRK_OK = (
    'Running 2s test @ http://127.0.0.1:18971/\n'
    '  1 threads and 32 connections\n'
    '  Thread Stats   Avg      Stdev     Max   +/- Stdev\n'
    '    Latency   594.49us    2.74ms  36.40ms   98.17%\n'
    '    Req/Sec   103.69k    19.86k  134.06k    65.00%\n'
    '  Latency Distribution\n'
    '     50%  199.00us\n'
    '     75%  304.00us\n'
    '     90%  386.00us\n'
    '     99%   15.31ms\n'
    '  206137 requests in 2.00s, 28.90MB read\n'
    'Requests/sec: 102997.95\n'
    'Transfer/sec:     14.44MB\n'
)


WRK_404 = (
    'Running 1s test @ http://127.0.0.1:42371/\n'
    '  1 threads and 8 connections\n'
    '  Thread Stats   Avg      Stdev     Max   +/- Stdev\n'
    '    Latency   195.40us  261.24us   4.07ms   97.27%\n'
    '    Req/Sec    48.82k     5.02k   52.29k    90.00%\n'
    '  Latency Distribution\n'
    '     50%  150.00us\n'
    '     75%  165.00us\n'
    '     90%  203.00us\n'
    '     99%    1.55ms\n'
    '  48435 requests in 1.00s, 7.11MB read\n'
    '  Non-2xx or 3xx responses: 48435\n'
    'Requests/sec:  48363.95\n'
    'Transfer/sec:      7.10MB\n'
)


WRK_SOCKET_ERRORS = (
    'Running 1s test @ http://127.0.0.1:43895/\n'
    '  1 threads and 4 connections\n'
    '  Thread Stats   Avg      Stdev     Max   +/- Stdev\n'
    '    Latency     0.00us    0.00us   0.00us    -nan%\n'
    '    Req/Sec     0.00      0.00     0.00      -nan%\n'
    '  0 requests in 1.00s, 0.00B read\n'
    '  Socket errors: connect 0, read 46467, write 0, timeout 0\n'
    'Requests/sec:      0.00\n'
    'Transfer/sec:       0.00B\n'
)


WRK_NOTHING = (
    'Running 3s test @ http://127.0.0.1:43517/\n'
    '  1 threads and 4 connections\n'
    '  Thread Stats   Avg      Stdev     Max   +/- Stdev\n'
    '    Latency     0.00us    0.00us   0.00us    -nan%\n'
    '    Req/Sec     0.00      0.00     0.00      -nan%\n'
    '  0 requests in 3.00s, 0.00B read\n'
    'Requests/sec:      0.00\n'
    'Transfer/sec:       0.00B\n'
)


HEY_OK = (
    '\n'
    'Summary:\n'
    '  Total:\t2.0052 secs\n'
    '  Slowest:\t0.0066 secs\n'
    '  Fastest:\t0.0000 secs\n'
    '  Average:\t0.0003 secs\n'
    '  Requests/sec:\t1969.9055\n'
    '  \n'
    '\n'
    'Response time histogram:\n'
    '  0.000 [1]\t|\n'
    '  0.001 [3854]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■\n'
    '  0.001 [61]\t|■\n'
    '  0.002 [16]\t|\n'
    '  0.003 [8]\t|\n'
    '  0.003 [2]\t|\n'
    '  0.004 [0]\t|\n'
    '  0.005 [0]\t|\n'
    '  0.005 [0]\t|\n'
    '  0.006 [0]\t|\n'
    '  0.007 [8]\t|\n'
    '\n'
    '\n'
    'Latency distribution:\n'
    '  10% in 0.0001 secs\n'
    '  25% in 0.0002 secs\n'
    '  50% in 0.0002 secs\n'
    '  75% in 0.0003 secs\n'
    '  90% in 0.0004 secs\n'
    '  95% in 0.0005 secs\n'
    '  99% in 0.0013 secs\n'
    '\n'
    'Details (average, fastest, slowest):\n'
    '  DNS+dialup:\t0.0000 secs, 0.0000 secs, 0.0066 secs\n'
    '  DNS-lookup:\t0.0000 secs, 0.0000 secs, 0.0000 secs\n'
    '  req write:\t0.0000 secs, 0.0000 secs, 0.0013 secs\n'
    '  resp wait:\t0.0002 secs, 0.0000 secs, 0.0066 secs\n'
    '  resp read:\t0.0000 secs, 0.0000 secs, 0.0030 secs\n'
    '\n'
    'Status code distribution:\n'
    '  [200]\t3950 responses\n'
    '\n'
    '\n'
    '\n'
)


HEY_404_SMALL = (
    '\n'
    'Summary:\n'
    '  Total:\t0.0024 secs\n'
    '  Slowest:\t0.0007 secs\n'
    '  Fastest:\t0.0000 secs\n'
    '  Average:\t0.0001 secs\n'
    '  Requests/sec:\t16764.1010\n'
    '  \n'
    '  Total data:\t1720 bytes\n'
    '  Size/request:\t43 bytes\n'
    '\n'
    'Response time histogram:\n'
    '  0.000 [1]\t|■\n'
    '  0.000 [29]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■\n'
    '  0.000 [7]\t|■■■■■■■■■■\n'
    '  0.000 [0]\t|\n'
    '  0.000 [1]\t|■\n'
    '  0.000 [1]\t|■\n'
    '  0.000 [0]\t|\n'
    '  0.001 [0]\t|\n'
    '  0.001 [0]\t|\n'
    '  0.001 [0]\t|\n'
    '  0.001 [1]\t|■\n'
    '\n'
    '\n'
    'Latency distribution:\n'
    '  10% in 0.0000 secs\n'
    '  25% in 0.0001 secs\n'
    '  50% in 0.0001 secs\n'
    '  75% in 0.0001 secs\n'
    '  90% in 0.0001 secs\n'
    '  95% in 0.0004 secs\n'
    '  0% in 0.0000 secs\n'
    '\n'
    'Details (average, fastest, slowest):\n'
    '  DNS+dialup:\t0.0000 secs, 0.0000 secs, 0.0007 secs\n'
    '  DNS-lookup:\t0.0000 secs, 0.0000 secs, 0.0000 secs\n'
    '  req write:\t0.0000 secs, 0.0000 secs, 0.0001 secs\n'
    '  resp wait:\t0.0001 secs, 0.0000 secs, 0.0003 secs\n'
    '  resp read:\t0.0000 secs, 0.0000 secs, 0.0001 secs\n'
    '\n'
    'Status code distribution:\n'
    '  [404]\t40 responses\n'
    '\n'
    '\n'
    '\n'
)


HEY_REFUSED = (
    '\n'
    'Summary:\n'
    '  Total:\t0.0013 secs\n'
    '  Slowest:\t0.0000 secs\n'
    '  Fastest:\t0.0000 secs\n'
    '  Average:\t NaN secs\n'
    '  Requests/sec:\t15237.7469\n'
    '  \n'
    '\n'
    'Response time histogram:\n'
    '\n'
    '\n'
    'Latency distribution:\n'
    '\n'
    'Details (average, fastest, slowest):\n'
    '  DNS+dialup:\t NaN secs, 0.0000 secs, 0.0000 secs\n'
    '  DNS-lookup:\t NaN secs, 0.0000 secs, 0.0000 secs\n'
    '  req write:\t NaN secs, 0.0000 secs, 0.0000 secs\n'
    '  resp wait:\t NaN secs, 0.0000 secs, 0.0000 secs\n'
    '  resp read:\t NaN secs, 0.0000 secs, 0.0000 secs\n'
    '\n'
    'Status code distribution:\n'
    '\n'
    'Error distribution:\n'
    '  [20]\tGet "http://127.0.0.1:18972/": dial tcp 127.0.0.1:18972: connect: connection refused\n'
    '\n'
)


# --- wrk -----------------------------------------------------------------------------------------


def test_wrk_ok() -> None:
    r = bench_tools.parse_wrk(WRK_OK)
    assert r.requests == 206137
    assert r.duration_s == pytest.approx(2.0)
    assert r.rps == pytest.approx(102997.95)
    assert r.non_2xx == 0 and r.socket_errors == {} and r.errors == 0
    assert r.latency_s["p50"] == pytest.approx(199e-6)
    assert r.latency_s["p99"] == pytest.approx(15.31e-3)
    assert set(r.latency_s) == {"p50", "p75", "p90", "p99"}


def test_wrk_non_2xx() -> None:
    r = bench_tools.parse_wrk(WRK_404)
    assert r.requests == 48435
    assert r.non_2xx == 48435
    assert r.errors == 48435
    assert r.rps == pytest.approx(48363.95)


def test_wrk_socket_errors() -> None:
    r = bench_tools.parse_wrk(WRK_SOCKET_ERRORS)
    assert r.requests == 0 and r.rps == 0
    assert r.socket_errors == {"read": 46467}
    assert r.errors == 46467
    assert r.latency_s == {}


def test_wrk_nothing_answered() -> None:
    r = bench_tools.parse_wrk(WRK_NOTHING)
    assert r.requests == 0 and r.duration_s == pytest.approx(3.0) and r.errors == 0


def test_wrk_garbage() -> None:
    with pytest.raises(bench_tools.ToolError):
        bench_tools.parse_wrk("Usage: wrk <options> <url>\n")


def test_wrk_argv() -> None:
    argv = bench_tools.wrk_argv("http://127.0.0.1:1/", connections=32, duration_s=5, host="a.b")
    assert argv[:5] == ["wrk", "-t1", "-c32", "-d5s", "--timeout"]
    assert argv[-3:-1] == ["-H", "Host: a.b"] and argv[-1] == "http://127.0.0.1:1/"


# --- hey -----------------------------------------------------------------------------------------


def test_hey_ok() -> None:
    r = bench_tools.parse_hey(HEY_OK)
    assert r.requests == 3950
    assert r.status == {200: 3950}
    assert r.rps == pytest.approx(1969.9055)
    assert r.total_s == pytest.approx(2.0052)
    assert r.latency_s["p50"] == pytest.approx(0.0002)
    assert r.latency_s["p90"] == pytest.approx(0.0004)
    assert r.latency_s["p99"] == pytest.approx(0.0013)
    assert r.latency_s["max"] == pytest.approx(0.0066)
    assert r.latency_s["avg"] == pytest.approx(0.0003)
    assert r.errors == {} and r.error_count == 0


def test_hey_non_2xx_and_small_sample() -> None:
    r = bench_tools.parse_hey(HEY_404_SMALL)
    assert r.status == {404: 40}
    assert r.non_2xx == 40 and r.error_count == 40
    assert "p99" not in r.latency_s  # hey prints "0% in" when it has too few samples for p99
    assert r.latency_s["p50"] == pytest.approx(0.0001)


def test_hey_errors_and_nan() -> None:
    r = bench_tools.parse_hey(HEY_REFUSED)
    assert r.requests == 0 and r.status == {}
    assert r.latency_s["avg"] is None
    assert r.latency_s["max"] == 0.0
    assert sum(r.errors.values()) == 20
    assert any("connection refused" in k for k in r.errors)
    assert r.error_count == 20


def test_hey_garbage() -> None:
    with pytest.raises(bench_tools.ToolError):
        bench_tools.parse_hey("flag provided but not defined: -x\n")


def test_hey_argv_rate_is_per_worker() -> None:
    argv = bench_tools.hey_argv("http://127.0.0.1:1/", rate=1000, duration_s=5, workers=8, host="h")
    assert argv[argv.index("-q") + 1] == "125.00"
    assert argv[argv.index("-c") + 1] == "8"
    assert argv[argv.index("-z") + 1] == "5s"
    assert argv[argv.index("-host") + 1] == "h"


# --- CPU of process trees ---------------------------------------------------------------------

def test_cpu_accounting_from_synthetic_readings() -> None:
    before = {1: 100, 2: 50, 3: 10}
    after = {1: 150, 2: 50, 4: 5}  # 3 exited (not counted), 4 is new (counted in full)
    ticks = bench_cpu.delta_ticks(before, after)
    assert ticks == 55
    # 55 ticks at 100 Hz = 0.55 s over 10,000 requests = 55 µs per request
    assert bench_cpu.us_per_request(ticks, 10_000, clk_tck=100) == pytest.approx(55.0)
    assert bench_cpu.us_per_request(ticks, 0) is None
    assert bench_cpu.cpu_fraction(90, 1.0, clk_tck=100) == pytest.approx(0.9)
    assert bench_cpu.cpu_fraction(90, 0.0) == 0.0
    assert bench_cpu.ticks_to_s(250, clk_tck=100) == 2.5


def test_delta_ignores_a_reused_pid_going_backwards() -> None:
    assert bench_cpu.delta_ticks({1: 500}, {1: 20}) == 0


def test_tree_ticks_of_a_busy_child_and_run_reads_a_zombie() -> None:
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    run = bench_tools.run([sys.executable, "-c", busy + "print('done')"], timeout_s=20)
    assert run.returncode == 0 and run.stdout.strip() == "done"
    assert run.cpu_ticks >= 0.25 * bench_cpu.CLK_TCK  # read from /proc before the reap
    assert 0 < run.cpu_fraction <= 1.5
    me = bench_cpu.tree_ticks([os.getpid()])
    assert os.getpid() in me and me[os.getpid()] > 0


def test_run_kills_on_timeout() -> None:
    run = bench_tools.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert run.returncode != 0 and run.wall_s < 10


def test_process_ticks_gone() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert bench_cpu.process_ticks(p.pid) is None
