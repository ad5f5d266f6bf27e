"""The gRPC contract (proto/, generated gen/) and the reference controller."""

import os

# gRPC's C core logs every refused TLS handshake at info level on stderr; ours say it in one line.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
