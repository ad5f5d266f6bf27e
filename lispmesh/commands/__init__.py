"""The verb groups of `lispmesh`, one module each (containerlab's `cmd/`, one verb per file).

Each group module has `register(subparsers)`; handlers take the parsed arguments and return an
exit code. What several groups share sits in three modules: `options` (the flags: which node,
which controller, timeouts), `output` (JSON for scripts, the console for people, files) and
`rpc` (a call to a node's control socket or to the controller's admin API). People-facing
rendering lives in `lispmesh.views`, one renderer per view. Errors are raised, never printed:
`lispmesh.cli.main` turns any `common.errors.LispmeshError` into one line and an exit code.
"""
