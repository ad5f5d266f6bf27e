# mypy: ignore-errors
from controller_api.gen.lispmesh.v1 import attestation_pb2 as _attestation_pb2
from controller_api.gen.lispmesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TpmIdentity(_message.Message):
    __slots__ = ("ek_public", "ek_certificate", "ak_public")
    EK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    EK_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    AK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    ek_public: bytes
    ek_certificate: bytes
    ak_public: bytes
    def __init__(self, ek_public: _Optional[bytes] = ..., ek_certificate: _Optional[bytes] = ..., ak_public: _Optional[bytes] = ...) -> None: ...

class TpmChallenge(_message.Message):
    __slots__ = ("challenge_id", "credential_blob", "encrypted_secret", "nonce", "pcrs")
    CHALLENGE_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_BLOB_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_SECRET_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PCRS_FIELD_NUMBER: _ClassVar[int]
    challenge_id: str
    credential_blob: bytes
    encrypted_secret: bytes
    nonce: bytes
    pcrs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, challenge_id: _Optional[str] = ..., credential_blob: _Optional[bytes] = ..., encrypted_secret: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., pcrs: _Optional[_Iterable[int]] = ...) -> None: ...

class TpmEvidence(_message.Message):
    __slots__ = ("challenge_id", "activation_proof", "mesh_key_public", "certify_attest", "certify_signature", "quote")
    CHALLENGE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_PROOF_FIELD_NUMBER: _ClassVar[int]
    MESH_KEY_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    CERTIFY_ATTEST_FIELD_NUMBER: _ClassVar[int]
    CERTIFY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    QUOTE_FIELD_NUMBER: _ClassVar[int]
    challenge_id: str
    activation_proof: bytes
    mesh_key_public: bytes
    certify_attest: bytes
    certify_signature: bytes
    quote: _attestation_pb2.TpmQuote
    def __init__(self, challenge_id: _Optional[str] = ..., activation_proof: _Optional[bytes] = ..., mesh_key_public: _Optional[bytes] = ..., certify_attest: _Optional[bytes] = ..., certify_signature: _Optional[bytes] = ..., quote: _Optional[_Union[_attestation_pb2.TpmQuote, _Mapping]] = ...) -> None: ...

class OnboardingCredential(_message.Message):
    __slots__ = ("certificate_der", "csr_signature")
    CERTIFICATE_DER_FIELD_NUMBER: _ClassVar[int]
    CSR_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    certificate_der: bytes
    csr_signature: bytes
    def __init__(self, certificate_der: _Optional[bytes] = ..., csr_signature: _Optional[bytes] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("join_token", "onboarding", "csr_der", "requested_name", "hostname", "agent_version", "tpm")
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ONBOARDING_FIELD_NUMBER: _ClassVar[int]
    CSR_DER_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_NAME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    join_token: str
    onboarding: OnboardingCredential
    csr_der: bytes
    requested_name: str
    hostname: str
    agent_version: str
    tpm: TpmEvidence
    def __init__(self, join_token: _Optional[str] = ..., onboarding: _Optional[_Union[OnboardingCredential, _Mapping]] = ..., csr_der: _Optional[bytes] = ..., requested_name: _Optional[str] = ..., hostname: _Optional[str] = ..., agent_version: _Optional[str] = ..., tpm: _Optional[_Union[TpmEvidence, _Mapping]] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("node_id", "node_name", "certificate_pem", "ca_certificate_pem", "instance_id", "eid_prefixes", "tags", "api_port", "api_addresses", "ca_cross_pem")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EID_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    API_PORT_FIELD_NUMBER: _ClassVar[int]
    API_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    CA_CROSS_PEM_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_name: str
    certificate_pem: bytes
    ca_certificate_pem: bytes
    instance_id: int
    eid_prefixes: _containers.RepeatedCompositeFieldContainer[_common_pb2.EidPrefix]
    tags: _containers.RepeatedScalarFieldContainer[str]
    api_port: int
    api_addresses: _containers.RepeatedScalarFieldContainer[str]
    ca_cross_pem: bytes
    def __init__(self, node_id: _Optional[str] = ..., node_name: _Optional[str] = ..., certificate_pem: _Optional[bytes] = ..., ca_certificate_pem: _Optional[bytes] = ..., instance_id: _Optional[int] = ..., eid_prefixes: _Optional[_Iterable[_Union[_common_pb2.EidPrefix, _Mapping]]] = ..., tags: _Optional[_Iterable[str]] = ..., api_port: _Optional[int] = ..., api_addresses: _Optional[_Iterable[str]] = ..., ca_cross_pem: _Optional[bytes] = ...) -> None: ...
