"""The generated stubs carry Falco 0.43.1's wire contract (proto/README.md says what it is)."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

from gateway.falco_pb import (
    outputs_pb2,
    outputs_pb2_grpc,
    schema_pb2,
    version_pb2,
    version_pb2_grpc,
)


def test_method_paths() -> None:
    service = outputs_pb2.DESCRIPTOR.services_by_name["service"]
    assert service.full_name == "falco.outputs.service"
    sub = service.methods_by_name["sub"]
    get = service.methods_by_name["get"]
    assert (sub.client_streaming, sub.server_streaming) == (True, True)
    assert (get.client_streaming, get.server_streaming) == (False, True)
    assert sub.input_type.full_name == "falco.outputs.request"
    assert sub.output_type.full_name == "falco.outputs.response"
    version = version_pb2.DESCRIPTOR.services_by_name["service"].methods_by_name["version"]
    assert version.full_name == "falco.version.service.version"
    assert hasattr(outputs_pb2_grpc, "serviceStub")
    assert hasattr(version_pb2_grpc, "serviceStub")


def test_response_fields() -> None:
    fields = {f.name: f for f in outputs_pb2.response.DESCRIPTOR.fields}
    expected = {
        "time": (1, "google.protobuf.Timestamp"),
        "priority": (2, "falco.schema.priority"),
        "source_deprecated": (3, "falco.schema.source"),
        "rule": (4, None),
        "output": (5, None),
        "output_fields": (6, "falco.outputs.response.OutputFieldsEntry"),
        "hostname": (7, None),
        "tags": (8, None),
        "source": (9, None),
    }
    assert set(fields) == set(expected)
    for name, (number, type_name) in expected.items():
        field = fields[name]
        assert field.number == number, name
        kind = field.message_type or field.enum_type
        assert (kind.full_name if kind else None) == type_name, name
    assert fields["tags"].is_repeated
    assert fields["rule"].type == FieldDescriptor.TYPE_STRING
    assert fields["source"].type == FieldDescriptor.TYPE_STRING
    assert outputs_pb2.request.DESCRIPTOR.fields == []


def test_priority_enum_with_aliases() -> None:
    enum = schema_pb2.DESCRIPTOR.enum_types_by_name["priority"]
    assert enum.GetOptions().allow_alias
    names = [
        "EMERGENCY",
        "ALERT",
        "CRITICAL",
        "ERROR",
        "WARNING",
        "NOTICE",
        "INFORMATIONAL",
        "DEBUG",
    ]
    for number, name in enumerate(names):
        for alias in (name, name.lower(), name.capitalize()):
            assert enum.values_by_name[alias].number == number


def test_source_enum_with_aliases() -> None:
    enum = schema_pb2.DESCRIPTOR.enum_types_by_name["source"]
    expected = {
        "SYSCALL": 0, "syscall": 0, "Syscall": 0,
        "K8S_AUDIT": 1, "k8s_audit": 1, "K8s_audit": 1, "K8S_audit": 1,
        "INTERNAL": 2, "internal": 2, "Internal": 2,
        "PLUGIN": 3, "plugin": 3, "Plugin": 3,
    }  # fmt: skip
    assert {v.name: v.number for v in enum.values} == expected


def test_version_fields() -> None:
    fields = {f.name: (f.number, f.type) for f in version_pb2.response.DESCRIPTOR.fields}
    s, u = FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_UINT32
    assert fields == {
        "version": (1, s), "major": (2, u), "minor": (3, u), "patch": (4, u),
        "prerelease": (5, s), "build": (6, s), "engine_minor": (7, u),
        "engine_fields_checksum": (8, s), "engine_major": (9, u), "engine_patch": (10, u),
        "engine_version": (11, s),
    }  # fmt: skip


def test_falco_encoded_bytes_decode() -> None:
    # A response serialised by hand from the field numbers: what Falco puts on the wire.
    wire = (
        b"\x0a\x06\x08\xc3\xb9\x86\x81\x06"  # 1: time {seconds}
        b"\x10\x05"  # 2: priority NOTICE
        b"\x22\x1bTerminal shell in container"  # 4: rule
        b"\x3a\x08minikube"  # 7: hostname
        b"\x42\x05shell"  # 8: tags
        b"\x4a\x07syscall"  # 9: source
    )
    response = outputs_pb2.response.FromString(wire)
    assert response.rule == "Terminal shell in container"
    assert response.priority == schema_pb2.NOTICE
    assert response.hostname == "minikube"
    assert list(response.tags) == ["shell"]
    assert response.source == "syscall"
    assert response.time.seconds == 1612815555
