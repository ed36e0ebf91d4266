"""A Python gRPC client (grpcio) against a running zinit_server.

Generates stubs from the repo's proto with grpc_tools.protoc into a temporary
directory, connects to the unix socket, and checks ListUnits, ServerInfo,
GetUnit's error code, StreamLogs (follow=false) and StreamEvents around a
restart. Prints an "ok" line per check; exits 1 with a message on failure.

Run by tests/tests/foreign_clients.rs with the venv from venv.sh:
    client_test.py SOCKET UNIT... [--log-unit NAME --log-lines N]
        [--events-unit NAME] [--tag TAG]
"""

import argparse
import importlib.resources
import pathlib
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 20  # seconds: the deadline of every call and every retry loop


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def ok(message):
    print(f"ok {message}", flush=True)


def generate_stubs(out):
    """Compiles zinit/v1/control.proto into `out` and imports it."""
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{REPO / 'proto'}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "zinit/v1/control.proto",
        ]
    )
    check(code == 0, f"grpc_tools.protoc failed with exit code {code}")
    sys.path.insert(0, str(out))
    from zinit.v1 import control_pb2, control_pb2_grpc

    return control_pb2, control_pb2_grpc


def retry(what, attempt):
    """Calls attempt() until it returns a true value, for at most TIMEOUT s;
    `what()` says what was expected (and seen) if it never does."""
    end = time.monotonic() + TIMEOUT
    while True:
        result = attempt()
        if result:
            return result
        if time.monotonic() > end:
            raise Failure(f"{what()}: not within {TIMEOUT} s")
        time.sleep(0.1)


def run(args, pb, pb_grpc):
    # On a unix socket the authority must be set; tonic expects `localhost`.
    channel = grpc.insecure_channel(
        f"unix:{args.socket}", options=[("grpc.default_authority", "localhost")]
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    except grpc.FutureTimeoutError:
        raise Failure(f"could not connect to unix:{args.socket} within {TIMEOUT} s")
    stub = pb_grpc.ControlStub(channel)
    running = pb.UnitState.Value("UNIT_STATE_RUNNING")

    # ListUnits: every expected unit is there and running.
    seen = {}

    def all_running():
        units = stub.ListUnits(pb.ListUnitsRequest(), timeout=TIMEOUT).units
        seen.clear()
        seen.update({u.name: pb.UnitState.Name(u.state) for u in units})
        if all(seen.get(n) == "UNIT_STATE_RUNNING" for n in args.units):
            return units
        return None

    units = retry(lambda: f"units {args.units} running (seen {seen})", all_running)
    names = [u.name for u in units]
    check(names == sorted(names), f"ListUnits is not sorted by name: {names}")
    for unit in units:
        if unit.name in args.units:
            check(unit.kind == pb.UNIT_KIND_SERVICE, f"{unit.name}: kind {unit.kind}")
            check(unit.pid > 0, f"{unit.name}: no pid")
            check(unit.since.seconds > 0, f"{unit.name}: no since")
    ok(f"ListUnits: {', '.join(names)} running")

    # ServerInfo describes this server.
    info = stub.ServerInfo(pb.ServerInfoRequest(), timeout=TIMEOUT)
    check(info.pid > 0, "ServerInfo: no pid")
    check(info.version != "", "ServerInfo: no version")
    check(info.start_time.seconds > 0, "ServerInfo: no start_time")
    check(info.config_dir != "", "ServerInfo: no config_dir")
    check(
        info.socket == args.socket,
        f"ServerInfo: socket {info.socket!r}, expected {args.socket!r}",
    )
    ok(f"ServerInfo: zinit_server {info.version} pid {info.pid}")

    # Errors come back as standard status codes.
    try:
        stub.GetUnit(pb.GetUnitRequest(name="no-such-unit"), timeout=TIMEOUT)
        raise Failure("GetUnit of an unknown unit succeeded")
    except grpc.RpcError as e:
        check(
            e.code() == grpc.StatusCode.NOT_FOUND,
            f"GetUnit of an unknown unit: {e.code()} {e.details()}, expected NOT_FOUND",
        )
    ok("GetUnit: NOT_FOUND for an unknown unit")

    # StreamLogs without follow: the kept lines, then the stream ends.
    if args.log_unit:
        want = [f"line {i}" for i in range(1, args.log_lines + 1)]
        texts = []

        def logged():
            request = pb.StreamLogsRequest(name=args.log_unit, follow=False)
            lines = list(stub.StreamLogs(request, timeout=TIMEOUT))
            texts[:] = [line.text for line in lines]
            return lines if [t for t in texts if t.startswith("line ")] == want else None

        lines = retry(lambda: f"{args.log_unit} logged {want} (got {texts})", logged)
        seqs = [line.seq for line in lines]
        check(seqs == sorted(set(seqs)), f"StreamLogs: seq not increasing: {seqs}")
        for line in lines:
            check(line.unit == args.log_unit, f"StreamLogs: line of unit {line.unit!r}")
            check(line.stream == pb.LOG_STREAM_STDOUT, f"StreamLogs: stream {line.stream}")
        ok(f"StreamLogs: {len(lines)} lines of {args.log_unit}")

    # StreamEvents: subscribe, restart a unit, see it come back to running.
    if args.events_unit:
        name = args.events_unit
        events = stub.StreamEvents(pb.StreamEventsRequest(), timeout=TIMEOUT)
        try:
            # The server subscribes before it sends the headers.
            events.initial_metadata()
            before = stub.GetUnit(pb.GetUnitRequest(name=name), timeout=TIMEOUT).unit
            after = stub.RestartUnit(pb.RestartUnitRequest(name=name), timeout=TIMEOUT).unit
            check(after.state == running, f"RestartUnit: {name} is {after.state}")
            check(after.pid != before.pid, f"RestartUnit: {name} kept pid {after.pid}")
            seen = []
            for event in events:
                kind = event.WhichOneof("kind")
                if event.unit == name and kind == "state_changed":
                    change = event.state_changed
                    seen.append(pb.UnitState.Name(change.to))
                    if change.to == running:
                        break
            check(
                "UNIT_STATE_STOPPING" in seen,
                f"StreamEvents: {name} went {seen}, not through STOPPING",
            )
        finally:
            events.cancel()
        ok(f"StreamEvents: {name} went {' -> '.join(seen)}")
    channel.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="the server's unix socket")
    parser.add_argument("units", nargs="+", help="units expected to be running")
    parser.add_argument("--log-unit", help="a unit that printed `line 1`..`line N`")
    parser.add_argument("--log-lines", type=int, default=5, help="N")
    parser.add_argument("--events-unit", help="a unit to restart while streaming events")
    parser.add_argument("--tag", help="ignored: marks this process for the test's cleanup")
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="zinit-stubs-") as out:
            pb, pb_grpc = generate_stubs(pathlib.Path(out))
            run(args, pb, pb_grpc)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"FAIL: a call failed: {e.code()}: {e.details()}", file=sys.stderr)
        return 1
    print("ok all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
