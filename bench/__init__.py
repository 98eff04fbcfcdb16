"""Benchmarks (not tests): the edge against nginx, HAProxy and Caddy (run.py), deploys and
cold starts on network-namespace hosts (deploy.py). See bench/README.md."""
