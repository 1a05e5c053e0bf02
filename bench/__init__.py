"""wgpy's benchmark harness: ``python -m bench`` measures wgpy, wireguard-go
and the in-kernel WireGuard side by side in network namespaces and writes
JSON, a Markdown table and PNG charts (see bench/README.md)."""
