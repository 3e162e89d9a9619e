"""The offline kit for GPU nodes: `make gpu-kit` builds it here (build.py), and on a node with no
network its `run` script installs it and runs `make gpu-check` or a sweep (node.py)."""
