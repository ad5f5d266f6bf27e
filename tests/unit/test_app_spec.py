"""The app spec (issue 14 item 1): the example parses to the values written, and every wrong
field is refused with one line naming file:line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller_api.apps import AppSpecError, parse_app
from controller_api.apps.spec import (
    Affinity,
    Constraints,
    DisconnectPolicy,
    LabelMatch,
    Port,
    Reschedule,
    Resources,
    Spread,
    UpdateStrategy,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "app.yml"
DIGEST = "sha256:" + "ab" * 32
MINIMAL = f"""\
apiVersion: lispmesh/v1
kind: App
metadata:
  name: web
spec:
  image: {DIGEST}
"""


def test_the_example_parses_to_what_it_says() -> None:
    app = parse_app(EXAMPLE.read_text(), "app.yml")
    assert app.name == "sensor-hub"
    assert app.labels == (("app", "sensor"),)
    assert app.image.startswith("registry.local/sensor-hub@sha256:")
    assert (app.kind, app.replicas) == ("container", 3)
    assert app.resources == Resources(memory=512 << 20, millicpu=500, disk=1 << 30)
    assert app.constraints == Constraints((LabelMatch("site", ("factory",)),), None, True)
    assert app.spread == (Spread("zone", 50),)
    assert app.ports == (Port("tcp", 8080),)
    assert app.env == (("LOG_LEVEL", "info"),)
    assert app.update == UpdateStrategy("rolling", 1)
    assert app.disconnect == DisconnectPolicy(300.0, "keep-original")
    assert app.reschedule == Reschedule(30.0, 3600.0)
    with pytest.raises(AttributeError):
        app.replicas = 4  # type: ignore[misc]  # frozen


def test_defaults_of_a_minimal_spec() -> None:
    app = parse_app(MINIMAL)
    assert (app.kind, app.replicas, app.scoring) == ("container", 1, "binpack")
    assert app.resources == Resources()
    assert app.constraints == Constraints()
    assert (app.eid.pool, app.eid.mode) == ("apps", "per-replica")


def test_vm_with_hypervisor_and_cpu_forms() -> None:
    app = parse_app(
        MINIMAL
        + "  kind: vm\n  resources: {cpu: 2, memory: 1Gi}\n"
        + "  constraints: {hypervisor: kvm, labels: {site: [a, b]}}\n"
        + "  affinities: [{label: zone, value: z1, weight: -20}]\n"
        + "  ports: [53, udp/53]\n  env: {A: 1, B: true}\n"
    )
    assert app.resources.millicpu == 2000
    assert app.constraints.hypervisor == "kvm"
    assert app.constraints.labels == (LabelMatch("site", ("a", "b")),)
    assert app.affinities == (Affinity("zone", "z1", -20),)
    assert app.ports == (Port("tcp", 53), Port("udp", 53))
    assert app.env == (("A", "1"), ("B", "true"))
    assert parse_app(MINIMAL + "  resources: {cpu: '0.25'}\n").resources.millicpu == 250


def _spec(extra: str) -> str:
    return MINIMAL + extra


# (text, expected line, expected field and message fragment)
BAD = [
    ("", 1, "the file is empty"),
    ("a: [1\n", 2, "YAML syntax"),
    ("- 1\n", 1, "expected a mapping, got a list"),
    (MINIMAL.replace("lispmesh/v1", "lispmesh/v2"), 1, "apiVersion: unsupported apiVersion"),
    (MINIMAL.replace("apiVersion: lispmesh/v1\n", ""), 1, "apiVersion is required"),
    (MINIMAL.replace("kind: App", "kind: Job"), 2, "kind: expected kind: App, got 'Job'"),
    (MINIMAL.replace("  name: web\n", "  name: Web_1\n"), 4, "metadata.name: 'Web_1' is not"),
    (MINIMAL.replace("metadata:\n  name: web\n", "metadata: {}\n"), 3, "metadata.name: is req"),
    (MINIMAL.replace("metadata:\n  name: web\n", ""), 1, "metadata: is required"),
    (MINIMAL + "  flavour: big\n", 7, "spec.flavour: unknown field 'flavour'"),
    (MINIMAL + "status: {}\n", 7, "status: unknown field"),
    (MINIMAL.replace(DIGEST, "nginx:latest"), 6, "spec.image: 'nginx:latest' is not pinned"),
    (MINIMAL.replace(DIGEST, "sha256:abc"), 6, "spec.image: 'sha256:abc' is not pinned"),
    (MINIMAL.replace(f"  image: {DIGEST}\n", "  replicas: 1\n"), 6, "spec.image: is required"),
    (_spec("  kind: pod\n"), 7, "spec.kind: 'pod' is not container or vm"),
    (_spec("  replicas: -1\n"), 7, "spec.replicas: -1 is not in 0..100000"),
    (_spec("  replicas: two\n"), 7, "spec.replicas: expected a whole number, got 'two'"),
    (_spec("  replicas: true\n"), 7, "spec.replicas: expected a whole number, got True"),
    (_spec("  resources:\n    memory: 512MB\n"), 8, "spec.resources.memory: '512MB' is not a"),
    (_spec("  resources:\n    memory: 0\n"), 8, "spec.resources.memory: 0 is not a size"),
    (_spec("  resources:\n    cpu: 5m\n"), 8, "spec.resources.cpu: '5m' is not a CPU"),
    (_spec("  resources:\n    cpu: lots\n"), 8, "spec.resources.cpu: 'lots' is not a CPU"),
    (_spec("  resources:\n    cpu: 0.0001\n"), 8, "spec.resources.cpu: 0.0001 is not a CPU"),
    (_spec("  resources:\n    disk: [1]\n"), 8, "spec.resources.disk: [1] is not a size"),
    (_spec("  resources:\n    gpu: 1\n"), 8, "spec.resources.gpu: unknown field"),
    (_spec("  resources: 5\n"), 7, "spec.resources: expected a mapping, got 5"),
    (_spec("  constraints:\n    labels: [site]\n"), 8, "spec.constraints.labels: expected a"),
    (_spec("  constraints:\n    labels: {Site: a}\n"), 8, "labels.Site: 'Site' is not a label"),
    (_spec("  constraints:\n    labels: {site: 'a b'}\n"), 8, "'a b' is not a label value"),
    (_spec("  constraints:\n    labels:\n      site: []\n"), 9, "an empty list matches no node"),
    (_spec("  constraints:\n    labels:\n      site: [a, {}]\n"), 9, "site[1]: expected a label"),
    (_spec("  constraints:\n    hypervisor: kvm\n"), 8, "hypervisor: only a vm needs"),
    (_spec("  kind: vm\n  constraints:\n    hypervisor: xen\n"), 9, "'xen' is not kvm or tcg"),
    (_spec("  constraints:\n    distinct_hosts: yes-ish\n"), 8, "expected true or false"),
    (_spec("  scoring: random\n"), 7, "spec.scoring: 'random' is not binpack or spread"),
    (_spec("  affinities: {label: a}\n"), 7, "spec.affinities: expected a list, got a mapping"),
    (_spec("  affinities:\n    - {value: a}\n"), 8, "spec.affinities[0].label: is required"),
    (_spec("  affinities:\n    - {label: a}\n"), 8, "spec.affinities[0].value: is required"),
    (_spec("  affinities:\n    - {label: a, value: b, weight: 0}\n"), 8, "weight of 0"),
    (_spec("  affinities:\n    - {label: a, value: b, weight: 101}\n"), 8, "101 is not in"),
    (_spec("  affinities:\n    - {label: a, value: b, why: x}\n"), 8, "[0].why: unknown field"),
    (_spec("  spread:\n    - {label: site}\n    - {label: site}\n"), 9, "[1].label: spread by"),
    (_spec("  spread:\n    - {label: site, weight: 0}\n"), 8, "spread[0].weight: 0 is not in"),
    (_spec("  ports: [http]\n"), 7, "spec.ports[0]: 'http' is not a port"),
    (_spec("  ports: [tcp/70000]\n"), 7, "spec.ports[0]: 'tcp/70000' is not a port"),
    (_spec("  ports:\n    - 80\n    - tcp/80\n"), 9, "spec.ports[1]: tcp/80 is given twice"),
    (_spec("  env: [A=1]\n"), 7, "spec.env: expected a mapping of NAME: value, got a list"),
    (_spec("  env:\n    1A: x\n"), 8, "spec.env.1A: '1A' is not an environment variable"),
    (_spec("  env:\n    A: {b: c}\n"), 8, "spec.env.A: expected a value, got a mapping"),
    (_spec("  eid:\n    mode: multicast\n"), 8, "spec.eid.mode: 'multicast' is not per-replica"),
    (_spec("  eid:\n    pool: Apps!\n"), 8, "spec.eid.pool: 'Apps!' is not a name"),
    (_spec("  update:\n    strategy: bluegreen\n"), 8, "spec.update.strategy: 'bluegreen'"),
    (_spec("  update:\n    max_unavailable: 0\n"), 8, "max_unavailable: 0 is not in 1.."),
    (_spec("  replicas: 2\n  update:\n    max_unavailable: 3\n"), 9, "3 is more than the 2"),
    (_spec("  disconnect:\n    lost_after: soon\n"), 8, "lost_after: 'soon' is not a duration"),
    (_spec("  disconnect:\n    reconcile: best\n"), 8, "reconcile: 'best' is not keep-original"),
    (_spec("  reschedule:\n    delay: 0s\n"), 8, "spec.reschedule.delay: must be at least 1s"),
    (_spec("  reschedule:\n    delay: 1h\n    max_delay: 1m\n"), 9, "60s is less than"),
    (_spec("  env:\n    A: 1\n    A: 2\n"), 9, "spec.env.A: defined twice"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD)
def test_a_bad_spec_is_one_line_naming_file_line_and_field(
    text: str, line: int, fragment: str
) -> None:
    with pytest.raises(AppSpecError) as caught:
        parse_app(text, "apps/web.yml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"apps/web.yml:{line}: "), message
    assert fragment in message, message
