"""Node certificates of the mesh CA: their format, key and certificate files, verifiers.

The bottom of the identity code, shared by `mesh` (the key exchange), `node` (enrollment) and
`controller_api` (the CA); it imports only `common`.
"""
