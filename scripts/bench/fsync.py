#!/usr/bin/env python3
"""What an `fdatasync` after a small append costs on this disk (BENCHMARKS.md, eighteenth
session): a growing file, one whose blocks were reserved first (fallocate), and one
filled with zeros first. usage: fsync.py [DIR]  (default: the current directory)"""
import os, resource, sys, time

path = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "fsync-probe.tmp")


def run(mode, n=3000, sz=600):
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
    if mode == "zeros":
        os.write(fd, b"\0" * (n * sz + 4096)); os.fdatasync(fd); os.lseek(fd, 0, 0)
    if mode == "falloc":
        os.posix_fallocate(fd, 0, n * sz + 4096); os.fsync(fd)
    buf, lat = b"x" * sz, []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        t = time.perf_counter(); os.write(fd, buf); os.fdatasync(fd); lat.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    os.close(fd); lat.sort()
    return lat[n // 2] * 1e6, (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n * 1e6


res = {"grow": [], "falloc": [], "zeros": []}
for _ in range(4):
    for m in res:
        res[m].append(run(m))
os.remove(path)
for m, v in res.items():
    print(m, " ".join(f"{a:.0f}us/{c:.0f}cpu" for a, c in v))
