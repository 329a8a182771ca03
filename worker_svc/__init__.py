"""Execution plane: runs `bash -c COMMAND` attempts and reports on them; no database."""

import os

# A worker that runs commands as another user (--run-as) starts them with fork(), not vfork():
# gRPC's fork handlers would then run in the child while the worker's streams are busy, and
# the child can crash before it reaches exec (the command "exits" 139). The child only drops
# privileges and execs, which needs none of them. Read by gRPC when it first initialises, so
# set before any of the worker's modules opens a channel or a server.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
