#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""deploy/ against the daemons as built: every file parses, and the images, commands,
ports, environment variable names, probe paths and metric names it uses are the ones the
daemons really have (read from each binary's --help and the sources), the runtime image
installs the packages of every library the binaries link, and systemd-analyze verify
passes on the units.

    test_deploy.py SOURCE_DIR BUILD_DIR
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

SRC, BUILD = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
DEPLOY = os.path.join(SRC, "deploy")
BINARIES = {
    "msm-frontend": "frontend/msm-frontend",
    "msm-scheduler": "scheduler/msm-scheduler",
    "msm-flowcontrol": "flowcontrol/msm-flowcontrol",
    "msm-router": "router/msm-router",
    "msm-example-lambda": "lambda-sdk/msm-example-lambda",
}
PROBES = {"/healthz", "/readyz"}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def daemon_facts(binary):
    """The environment variables a binary reads and its default port, from its --help."""
    out = subprocess.run([os.path.join(BUILD, BINARIES[binary]), "--help"], check=True,
                         capture_output=True, text=True).stdout
    env, port = {}, None
    for line in out.splitlines():
        m = re.match(r"\s+--(\S+)\s+(?:\S+\s+)?(MSM_[A-Z0-9_]+)\s+(\S+)", line)
        if m:
            env[m.group(2)] = m.group(3)
            if m.group(1) in ("http.port", "port"):
                port = int(m.group(3))
    return env, port


FACTS = {b: daemon_facts(b) for b in BINARIES}


def port_of(binary, env):
    """The port a binary serves on under @env (its port variable, else its default)."""
    known, default = FACTS[binary]
    var = "MSM_HTTP_PORT" if "MSM_HTTP_PORT" in known else "MSM_PORT"
    return int(env.get(var, default))


def check_env(where, binary, names):
    known = FACTS[binary][0]
    for name in names:
        if name.startswith("MSM_"):
            check(name in known, f"{where}: {binary} has no setting read from {name}")


def binary_of(command, where):
    b = command[0] if command else None
    check(b in BINARIES, f"{where}: command {command} is not one of {sorted(BINARIES)}")
    return b if b in BINARIES else None


def url_port_path(url):
    m = re.match(r"https?://[^/:]+:(\d+)(/\S*)", url)
    return (int(m.group(1)), m.group(2)) if m else (None, None)


# ---- the image ----

dockerfile = open(os.path.join(DEPLOY, "Dockerfile")).read()
stages = dockerfile.split("\nFROM ")
runtime = stages[-1]
m = re.search(r"build -f deploy/Dockerfile -t (\S+) \.", dockerfile)
IMAGE = m.group(1) if check(m, "Dockerfile: no 'docker build ... -t IMAGE' line") else None
installed = set(re.findall(r"\b(lib[a-z0-9.+-]+|ca-certificates|curl)\b",
                           runtime.split("apt-get install", 1)[-1].split("&&")[0]))
BASE = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}  # in debian:12-slim
for binary, rel in BINARIES.items():
    out = subprocess.run(["readelf", "-d", os.path.join(BUILD, rel)], check=True,
                         capture_output=True, text=True).stdout
    for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", out):
        if re.match(r"lib(asan|ubsan|lsan|tsan)\.", lib):
            continue  # a sanitizer build (make test-asan); the image is a Release build
        found = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True).stdout
        pkgs = {l.split(":")[0] for l in found.splitlines() if ":" in l}
        check(pkgs & (installed | BASE),
              f"Dockerfile: {binary} links {lib} (package {sorted(pkgs)}), not installed at run time")
check("curl" in installed, "Dockerfile: the healthchecks use curl; the runtime image lacks it")

# ---- docker-compose.yml ----

compose = yaml.safe_load(open(os.path.join(DEPLOY, "docker-compose.yml")))
services = compose["services"]
check({"kafka", "redis"} <= set(services), "compose: needs the kafka and redis services")
check("KAFKA_PROCESS_ROLES" in services.get("kafka", {}).get("environment", {}),
      "compose: kafka must run in KRaft mode")
check("--appendonly" in services.get("redis", {}).get("command", []), "compose: redis without AOF")
seen = set()
for name, svc in services.items():
    if name in ("kafka", "redis"):
        continue
    where = f"compose service {name}"
    check(svc.get("image") == IMAGE, f"{where}: image {svc.get('image')} is not {IMAGE}")
    build = svc.get("build", {})
    check(os.path.exists(os.path.join(DEPLOY, build.get("context", ""), build.get("dockerfile", ""))),
          f"{where}: build dockerfile not found")
    b = binary_of(svc.get("command"), where)
    if not b:
        continue
    seen.add(b)
    env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
    check_env(where, b, env)
    port = port_of(b, env)
    for mapping in svc.get("ports", []):
        check(int(str(mapping).split(":")[-1]) == port, f"{where}: publishes {mapping}, serves {port}")
    test = svc.get("healthcheck", {}).get("test", [])
    url = next((t for t in test if t.startswith("http")), "")
    hp, path = url_port_path(url)
    check(hp == port and path in PROBES, f"{where}: healthcheck {url} is not :{port}/readyz|/healthz")
    for k, v in env.items():
        if k == "MSM_KAFKA_BROKERS":
            check(v.split(":")[0] in services, f"{where}: {k}={v} names no service")
        if k == "MSM_REDIS_URL":
            check(re.match(r"rediss?://([^:/@]+)", v).group(1) in services,
                  f"{where}: {k}={v} names no service")
check(seen == set(BINARIES), f"compose: runs {sorted(seen)}, not every binary")

# ---- k8s ----

docs = []
for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))):
    docs += [(os.path.basename(path), d) for d in yaml.safe_load_all(open(path)) if d]
by_kind = {}
for f, d in docs:
    check("apiVersion" in d and "kind" in d and d.get("metadata", {}).get("name"),
          f"{f}: a document without apiVersion, kind or metadata.name")
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
config = {}
for cm in by_kind.get("ConfigMap", {}).values():
    config.update({k: str(v) for k, v in cm.get("data", {}).items()})
deployments = by_kind.get("Deployment", {})
seen = set()
for name, dep in deployments.items():
    where = f"k8s Deployment {name}"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items()),
          f"{where}: selector does not match its pod labels")
    for c in dep["spec"]["template"]["spec"]["containers"]:
        check(c.get("image") == IMAGE, f"{where}: image {c.get('image')} is not {IMAGE}")
        b = binary_of(c.get("command"), where)
        if not b:
            continue
        seen.add(b)
        env = {}
        for src in c.get("envFrom", []):
            ref = src.get("configMapRef", {}).get("name")
            check(ref in by_kind.get("ConfigMap", {}), f"{where}: ConfigMap {ref} not found")
            env.update(by_kind.get("ConfigMap", {}).get(ref, {}).get("data", {}))
        env.update({e["name"]: str(e.get("value", "")) for e in c.get("env", [])})
        check_env(where, b, env)
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        check(port_of(b, env) in ports.values(), f"{where}: does not expose port {port_of(b, env)}")
        for probe in ("livenessProbe", "readinessProbe"):
            g = c.get(probe, {}).get("httpGet", {})
            check(g.get("path") in PROBES and g.get("port") in ports,
                  f"{where}: {probe} {g} is not /healthz or /readyz on a named port")
annot_ports = {}
for name, svc in by_kind.get("Service", {}).items():
    dep = deployments.get(name)
    if not check(dep, f"k8s Service {name}: no Deployment of that name"):
        continue
    c = dep["spec"]["template"]["spec"]["containers"][0]
    names = {p["name"] for p in c.get("ports", [])}
    for p in svc["spec"]["ports"]:
        check(p["targetPort"] in names, f"k8s Service {name}: targetPort {p['targetPort']} unknown")
for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
    sel = pdb["spec"]["selector"]["matchLabels"]
    check(any(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
              for d in deployments.values()), f"k8s PDB {name}: selects no Deployment")
metric_sources = " ".join(open(p).read() for p in glob.glob(os.path.join(SRC, "*/src/*.c")))
for name, so in by_kind.get("ScaledObject", {}).items():
    check(so["spec"]["scaleTargetRef"]["name"] in deployments,
          f"k8s ScaledObject {name}: target is no Deployment")
    for t in so["spec"]["triggers"]:
        for metric in re.findall(r"\b(msm_[a-z_]+)\{", t["metadata"].get("query", "")):
            check(f'"{metric}"' in metric_sources, f"k8s ScaledObject {name}: no metric {metric}")
check(seen == set(BINARIES), f"k8s: runs {sorted(seen)}, not every binary")

# ---- systemd ----

units = sorted(glob.glob(os.path.join(DEPLOY, "systemd", "*.service")))
check(units, "systemd: no units")
env_file = {}
for line in open(os.path.join(DEPLOY, "systemd", "msm.env")):
    if "=" in line and not line.lstrip().startswith("#"):
        env_file[line.split("=", 1)[0].strip()] = line.split("=", 1)[1].strip()
work = tempfile.mkdtemp()
try:
    for unit in units:
        text = open(unit).read()
        where = f"systemd {os.path.basename(unit)}"
        m = re.search(r"^ExecStart=/usr/local/bin/(\S+)", text, re.M)
        if not check(m and m.group(1) in BINARIES, f"{where}: ExecStart is no msm binary"):
            continue
        b = m.group(1)
        env = dict(env_file)
        env.update(dict(re.findall(r"^Environment=(MSM_[A-Z0-9_]+)=(\S*)", text, re.M)))
        check_env(where, b, env)
        for opt in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "Restart="):
            check(opt in text, f"{where}: lacks {opt}")
        # verify needs the binary where ExecStart says: point it at the build's
        with open(os.path.join(work, os.path.basename(unit)), "w") as f:
            f.write(text.replace("/usr/local/bin/" + b, os.path.join(BUILD, BINARIES[b])))
    analyze = shutil.which("systemd-analyze")
    if check(analyze, "systemd-analyze not found (install systemd)"):
        r = subprocess.run([analyze, "verify"] + glob.glob(os.path.join(work, "*.service")),
                           capture_output=True, text=True)
        check(r.returncode == 0 and not r.stderr.strip(),
              f"systemd-analyze verify: {r.returncode} {r.stderr.strip()}")
finally:
    shutil.rmtree(work)

for f in failures:
    print("FAIL:", f)
print(f"deploy: {len(failures)} problem(s); checked {len(services)} compose services, "
      f"{len(docs)} k8s documents, {len(units)} systemd units against "
      f"{len(BINARIES)} binaries")
sys.exit(1 if failures else 0)
