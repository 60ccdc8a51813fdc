#!/usr/bin/env python3
"""The differential conformance suite: each scenario runs against a local FIFO or Unix socket
(the oracle) and through pipegate, and what the program observed must be the same.

Usage: run.py [--group NAME]... [--scenario NAME]... [--list] [--table]
Environment: PIPEGATE_TEST_PIPEGATE, PIPEGATE_TEST_PIPEGATED (the binaries), PIPEGATE_TEST_PKI
(the test PKI, tests/make_test_pki.sh), PIPEGATE_TEST_TIMEOUT_MULTIPLIER, PIPEGATE_TEST_QUICK,
PIPEGATE_TEST_KEEP_TMP. See README.md.

Exit status: 0 if every scenario was SAME (or a DIFF marked known_issue: XFAIL), 1 otherwise.
"""

import argparse
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conformance import harness  # noqa: E402
from conformance import scenarios_apps, scenarios_fifo, scenarios_mount, scenarios_socket  # noqa: E402,F401


class Stopped(Exception):
    pass


def on_signal(signum, _frame):
    raise Stopped("stopped by signal %d" % signum)


def observe(group, scenario, side):
    ctx = harness.Context(group, scenario["name"], side)
    try:
        return str(scenario["run"](ctx))
    except harness.ScenarioError as error:
        return "ERROR: %s" % error
    except Stopped:
        raise
    except Exception as error:  # noqa: BLE001 - a broken scenario is a failure, not a crash.
        traceback.print_exc()
        return "ERROR: %s: %s" % (type(error).__name__, error)
    finally:
        ctx.close()


def run_group(name, scenarios):
    spec = harness.GROUPS[name]
    failed = False
    counts = {"SAME": 0, "DIFF": 0, "XFAIL": 0, "XPASS": 0, "SKIP": 0}
    started = time.monotonic()
    group = None
    try:
        group = harness.Group(name, spec["exports"], spec["extra_toml"], spec["setup"])
        for scenario in scenarios:
            if group.skip_reason:
                print("%-40s SKIP (%s)" % (scenario["name"], group.skip_reason), flush=True)
                counts["SKIP"] += 1
                continue
            t0 = time.monotonic()
            local = observe(group, scenario, "local")
            gate = observe(group, scenario, "pipegate")
            same = local == gate and not local.startswith("ERROR")
            if same:
                verdict = "SAME" if not scenario["known_issue"] else "XPASS"
            else:
                verdict = "XFAIL" if scenario["known_issue"] else "DIFF"
            counts[verdict] += 1
            if verdict == "DIFF":
                failed = True
            print("%-40s local: %s | pipegate: %s | %s (%.1f s)"
                  % (scenario["name"], local, gate, verdict, time.monotonic() - t0), flush=True)
            if verdict == "XFAIL":
                print("    known issue: %s" % scenario["known_issue"], flush=True)
            if verdict == "XPASS":
                print("    XPASS: now the same; remove known_issue=%r" % scenario["known_issue"],
                      flush=True)
            if verdict == "DIFF" and group.gateway:
                print("    gateway log tail:\n      " +
                      "\n      ".join(group.gateway.read_log().splitlines()[-15:]), flush=True)
    except (harness.ScenarioError, OSError) as error:
        print("group %s could not start: %s" % (name, error), flush=True)
        failed = True
    finally:
        if group:
            group.close(failed)
    print("group %s: %s in %.1f s" % (name, ", ".join("%d %s" % (v, k) for k, v in counts.items()
                                                        if v), time.monotonic() - started))
    return not failed


def cell(text):
    return text.replace("|", "\\|")


def table():
    print("| scenario | compares | oracle (local FIFO/socket) |")
    print("|---|---|---|")
    for s in harness.SCENARIOS:
        note = " (known issue)" if s["known_issue"] else ""
        print("| `%s`%s | %s | %s |" % (s["name"], note, cell(s["compares"]), cell(s["oracle"])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", action="append", default=[])
    parser.add_argument("--scenario", action="append", default=[])
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--list-groups", action="store_true")
    # Defaults from CMake; PIPEGATE_TEST_PIPEGATE/PIPEGATED/PKI in the environment beat them, so
    # the suite can test other (installed) binaries as the integration tests can.
    parser.add_argument("--pipegate")
    parser.add_argument("--pipegated")
    parser.add_argument("--pki")
    args = parser.parse_args()
    for variable, value in (("PIPEGATE_TEST_PIPEGATE", args.pipegate),
                            ("PIPEGATE_TEST_PIPEGATED", args.pipegated),
                            ("PIPEGATE_TEST_PKI", args.pki)):
        if value and not os.environ.get(variable):
            os.environ[variable] = os.path.abspath(value)
    if args.list_groups:
        print(";".join(harness.GROUPS))
        return 0
    if args.table:
        table()
        return 0
    if args.list:
        for s in harness.SCENARIOS:
            print("%s %s" % (s["group"], s["name"]))
        return 0
    for variable in ("PIPEGATE_TEST_PIPEGATE", "PIPEGATE_TEST_PIPEGATED", "PIPEGATE_TEST_PKI"):
        if not os.environ.get(variable):
            print("run.py: %s is not set (CTest passes it; see README.md)" % variable)
            return 1
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    groups = args.group or list(harness.GROUPS)
    ok = True
    for name in groups:
        if name not in harness.GROUPS:
            print("run.py: no group %r (have: %s)" % (name, ", ".join(harness.GROUPS)))
            return 1
        chosen = [s for s in harness.SCENARIOS if s["group"] == name and
                  (not args.scenario or s["name"] in args.scenario)]
        if chosen:
            ok = run_group(name, chosen) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
