"""Network policies: the language operators write, checked and compiled by the controller.

One YAML document says who may talk to whom; the controller checks it (syntax, names, the embedded
tests), compiles it into one `NodePolicy` (common.policy_format) per node and streams it in the
node's desired state; every node enforces it on its data path (ITR egress and ETR ingress) and the
embedded map-server refuses mappings a node may not use.

```yaml
version: 1                       # required: the language version
groups:                          # sets of nodes (and prefixes), by tag, by name, by host
  web: {tags: [web]}             # nodes whose join token carried `--tag web`
  db: {nodes: [n3]}              # nodes by name (a name not enrolled yet matches nothing)
  store: {labels: {app: db}}     # the replicas of apps labelled app=db
  office: {hosts: [backup, 192.0.2.0/24]}
hosts:                           # named hosts and prefixes (any instance-id)
  backup: 10.1.9.0/24            # one prefix or address, or a list of them
rules:                           # ordered: the first rule that matches decides; default deny
  - {name: web-to-db, from: web, to: db, proto: tcp, ports: [5432]}
  - {name: api-to-store, from: app:api, to: store, proto: tcp, ports: [5432]}
  - {name: ping-all, from: any, to: any, proto: icmp}
  - {name: no-backup, from: any, to: backup, action: deny}
tests:                           # checked before the policy is accepted
  - {from: n1, to: n3, proto: tcp, port: 5432, expect: allow}
  - {from: n3, to: n1, proto: tcp, port: 22, expect: deny}
```

- `from` / `to`: one selector or a list: `any`, a group, a host, a node name, `tag:NAME`,
  `app:NAME` (the replicas of an app), `label:KEY=VALUE` (the replicas of the apps carrying that
  label), or an address or prefix. Names must be known (groups, hosts, enrolled nodes), so a typo
  is an error, never a silent hole; apps come and go, so an app selector matching no placed
  replica is a warning (it matches nothing until one is placed).
- Groups take `apps: [NAME, ...]` and `labels: {KEY: VALUE, ...}` (apps carrying all of them)
  besides tags, nodes and hosts. An app selector stands for its placed replicas' EIDs and follows
  them: a replica placed, moved or scaled away changes every node's rules at once. A node's name
  or tag stands for the node's own EIDs, never for the apps it hosts.
- `proto`: tcp, udp, icmp (ICMP and ICMPv6), icmpv6, any (default) or a number 0..255.
- `ports`: destination ports, a number, "LOW-HIGH", or a list of them; tcp/udp (or any: then the
  rule matches TCP and UDP only).
- `action`: allow (default) or deny. `name`: optional (default rule-N), unique.
- Stateful: a rule allows new flows in its direction; their return traffic always passes.
- Segmentation: instance-ids are separate networks. Rules apply inside each instance-id; a node
  never reaches a node of another instance-id, whatever the rules say.
- `tests`: `from`/`to` are node names, `app:NAME` (its first placed replica), addresses
  (`[IID]ADDRESS` for another instance-id) or hosts; `proto` (tcp if a `port` is given),
  `port`, `expect: allow|deny`, optional `name`. A failing case refuses the whole policy and
  is named in the error.

Errors are one line with file, line and field:
`policy.yml:12: rules[2].proto: unknown protocol 'tcpp' (known: tcp, udp, icmp, icmpv6, any)`.
"""

from controller_api.policy.compile import compile_node, node_policy_to_proto, proto_to_node_policy
from controller_api.policy.evaluate import Decision, Evaluator, Explanation, TestFailure
from controller_api.policy.inventory import (
    Inventory,
    InventoryApp,
    InventoryNode,
    InventoryReplica,
)
from controller_api.policy.lang import PolicyDoc, PolicyError, parse_policy

__all__ = [
    "Decision",
    "Evaluator",
    "Explanation",
    "Inventory",
    "InventoryApp",
    "InventoryNode",
    "InventoryReplica",
    "PolicyDoc",
    "PolicyError",
    "TestFailure",
    "compile_node",
    "node_policy_to_proto",
    "parse_policy",
    "proto_to_node_policy",
]
